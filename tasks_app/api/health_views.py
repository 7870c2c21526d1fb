"""``/healthz`` and ``/readyz``: plain Django views, cheap and without authentication."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe

from .. import health
from .errors import error_response


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. It asks nothing else, so it never flaps."""
    return JsonResponse({"status": "ok"})


@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and the broker answer, and no shutdown has begun."""
    checks = health.readiness_checks()
    report = {check.name: check.detail for check in checks}
    failed = [check for check in checks if not check.ok]
    if not failed:
        return JsonResponse({"status": "ready", "checks": report})
    message = "; ".join(f"{check.name}: {check.detail}" for check in failed)
    # The API's error shape with a code of its own: this is a probe's report, and
    # "closed" (the API's 503) would say something about the scheduler instead.
    return error_response(
        "not_ready", message, http_status=503, status="not ready", checks=report
    )
