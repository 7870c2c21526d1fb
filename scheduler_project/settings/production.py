"""Production settings: DEBUG off, secrets and hosts from the environment, auth on."""

import environ

from .base import *  # noqa: F403

_env = environ.Env()

DEBUG = False
SECRET_KEY = _env.str("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = _env.list("DJANGO_ALLOWED_HOSTS")
SCHEDULER_AUTH_REQUIRED = True
