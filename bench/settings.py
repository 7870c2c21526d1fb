"""The settings our processes run the benchmarks with: production's, less the secrets.

``DEBUG`` is off as in production (on, Django keeps every query and wraps every cursor
in a debug wrapper); authentication is off, as the seed's embedded defaults have it,
so the HTTP figures need no token. Everything else is ``scheduler_project.settings``'s.
"""

import environ

from scheduler_project.settings.base import *  # noqa: F403

DEBUG = False
SCHEDULER_AUTH_REQUIRED = False

# BENCH_SERVER_SIDE_BINDING=1 measures a proposal rather than the platform as shipped:
# psycopg then sends parameters apart from the SQL, bytes in binary, instead of inlining
# them in the SQL text as hex (see docs/benchmarks.md, the 64 MiB request).
if environ.Env().bool("BENCH_SERVER_SIDE_BINDING", default=False):
    DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True  # noqa: F405
