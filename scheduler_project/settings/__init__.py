"""Development settings: the embedded defaults, authentication off.

``scheduler_project.settings.production`` is the module for deployments.
"""

from .base import *  # noqa: F403

DEBUG = True
SCHEDULER_AUTH_REQUIRED = False
