"""Django settings of the Celery + django-celery-results baseline: nothing but the app.

``CELERY_DB_REUSE_MAX`` comes from the environment: unset is Celery's stock behaviour
(a new database connection around every task), set is the documented remedy.
"""

from __future__ import annotations

import os

import environ

SECRET_KEY = "bench-only"
USE_TZ = True
INSTALLED_APPS = ["django_celery_results"]
DATABASES = {"default": environ.Env().db_url_config(os.environ["BENCH_DATABASE_URL"])}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CELERY_BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = "django-db"
if os.environ.get("BENCH_DB_REUSE_MAX"):
    CELERY_DB_REUSE_MAX = int(os.environ["BENCH_DB_REUSE_MAX"])
