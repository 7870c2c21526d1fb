"""``GET /metrics``: Prometheus text, without authentication, as the contract says.

The counters of every web process on this host (the multiprocess folder's sum) and
the cluster's gauges from the database, in one answer.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .files import process_registry
from .gauges import DatabaseGauges


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    registry = process_registry()
    registry.register(DatabaseGauges())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
