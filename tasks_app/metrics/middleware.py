"""Counting the HTTP API's admissions, duplicates and refusals from its answers.

The scheduler's admission code has no metrics of its own, so the web process counts
what it answered: ``POST /api/tasks`` with 201 (admitted) or 200 (a duplicate), a retry
with 200, and either with the error codes of a refusal. The codes are the contract's
(``closed``, ``queue_full``, ``too_large``), so this depends on nothing the API may
change. Only those two routes are looked at, and only an error body is parsed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

from . import counters

SUBMIT_PATH = "/api/tasks"
RETRY_PATH = re.compile(r"^/api/tasks/[^/]+/retry$")
REFUSAL_STATUSES = frozenset({413, 429, 503})


def error_code(response: HttpResponseBase) -> str:
    content = getattr(response, "content", b"")
    try:
        body = json.loads(content)
    except (TypeError, ValueError):
        return ""
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else ""


class AdmissionMetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if request.method == "POST":
            if request.path == SUBMIT_PATH:
                self._count(response, admitted=201, duplicate=200, kind="new")
            elif RETRY_PATH.match(request.path):
                self._count(response, admitted=200, duplicate=None, kind="retry")
        return response

    @staticmethod
    def _count(
        response: HttpResponseBase, *, admitted: int, duplicate: int | None, kind: str
    ) -> None:
        status = response.status_code
        if status == admitted:
            counters.count_admission(kind)
        elif status == duplicate:
            counters.count_dedup_hit()
        elif status in REFUSAL_STATUSES:
            counters.count_refusal(error_code(response))
