"""Django's own 404 and 405 answers, in the API's JSON error shape.

Unrouted paths never reach ninja, and ninja answers a wrong method with a bare
``HttpResponseNotAllowed``; both would otherwise be HTML (a debug page, with DEBUG on).
The admin keeps its HTML pages: people read those, not programs.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase
from django.urls import reverse

from .errors import error_response

_REWRITTEN_STATUSES = frozenset({404, 405})


class JsonErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self._admin_prefix: str | None = None

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if (
            response.status_code not in _REWRITTEN_STATUSES
            or response.get("Content-Type", "").startswith("application/json")
            or request.path.startswith(self.admin_prefix)
        ):
            return response
        if response.status_code == 404:
            return error_response(
                "not_found", f"nothing is at {request.method} {request.path}"
            )
        methods = (method.strip() for method in response.get("Allow", "").split(","))
        allowed = ", ".join(sorted(method for method in methods if method))
        return error_response(
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path}; allowed: {allowed}",
            headers={"Allow": allowed},
        )

    @property
    def admin_prefix(self) -> str:
        if self._admin_prefix is None:
            # Resolved on first use: the URLconf is not loaded when middleware is built.
            self._admin_prefix = reverse("admin:index")
        return self._admin_prefix
