"""The settings our processes run the benchmarks with: production's, less the secrets.

``DEBUG`` is off as in production (on, Django keeps every query and wraps every cursor
in a debug wrapper); authentication is off, as the seed's embedded defaults have it,
so the HTTP figures need no token. Everything else is ``scheduler_project.settings``'s.
"""

from scheduler_project.settings.base import *  # noqa: F403

DEBUG = False
SCHEDULER_AUTH_REQUIRED = False
