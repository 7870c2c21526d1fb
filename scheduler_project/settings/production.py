"""Production settings: DEBUG off, secrets and hosts from the environment, auth on, HTTPS.

``DJANGO_SECRET_KEY`` and ``DJANGO_ALLOWED_HOSTS`` are required; nothing secret has a
default here. TLS is expected to end at an ingress that sets ``X-Forwarded-Proto``;
plain HTTP is redirected to HTTPS, except the probes, which a kubelet or Prometheus
sends over plain HTTP to the pod. ``manage.py check --deploy`` passes with these.
"""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import env


def _required(name: str, example: str) -> str:
    value = env.str(name, default="").strip()
    if not value:
        raise ImproperlyConfigured(
            f"{name} is required with scheduler_project.settings.production; "
            f"set it in the environment, e.g. {name}={example}"
        )
    return value


DEBUG = False
SCHEDULER_AUTH_REQUIRED = True

# DJANGO_SECRET_KEY: signs sessions and CSRF tokens; at least 50 random characters.
SECRET_KEY = _required(
    "DJANGO_SECRET_KEY",
    "\"$(python -c 'import secrets; print(secrets.token_urlsafe(50))')\"",
)
# DJANGO_ALLOWED_HOSTS: comma-separated; include the names the probes send as Host.
ALLOWED_HOSTS = [
    host.strip()
    for host in _required("DJANGO_ALLOWED_HOSTS", "scheduler.example.com").split(",")
    if host.strip()
]

# --- HTTPS ------------------------------------------------------------------------------
# The ingress terminates TLS and says so in X-Forwarded-Proto. It must set or strip
# that header on every request, or a client could claim HTTPS over plain HTTP.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
# Probes and the metrics scrape come over plain HTTP from inside the cluster; a
# redirect would fail them. Patterns match the path without its leading slash.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# DJANGO_SECURE_HSTS_SECONDS: how long browsers keep to HTTPS; a year by default.
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True
)
# The header only makes the domain eligible; the owner still submits it to the list.
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
