"""Celery with django-celery-results on PostgreSQL (see ``dcr_settings``)."""

from __future__ import annotations

import os
import time

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.dcr_settings")

app = Celery("bench_celery_dcr")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.task(name="bench.work")
def work(seconds: float, payload: str) -> str:
    if seconds:
        time.sleep(seconds)
    return payload
