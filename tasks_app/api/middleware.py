"""Django's own 400, 404 and 405 answers, in the API's JSON error shape.

Unrouted paths never reach ninja, and ninja answers a wrong method with a bare
``HttpResponseNotAllowed``; both would otherwise be HTML (a debug page, with DEBUG on).
The admin keeps its HTML 404 and 405 pages: people read those, not programs. A refused
Host is answered before anything else, on every path.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase
from django.http.request import split_domain_port
from django.urls import reverse

from ..errors import shown
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


class RefusedHostMiddleware:
    """Answer a Host that Django refuses with the JSON 400, before anything asks for it.

    The first ``request.get_host()`` raises DisallowedHost for a Host outside
    ALLOWED_HOSTS or one that is no host name. ``handler400`` answers that in
    production, but with DEBUG on Django answers its debug page and no handler is
    asked, so the Host is checked here, once, for both. Only HeadWithoutBodyMiddleware
    comes before this one, and it never asks for the Host.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        try:
            request.get_host()
        except DisallowedHost:
            refusal = error_response("bad_request", _refused_host_message(request))
            # CommonMiddleware, which gives the other answers their length, is skipped.
            refusal["Content-Length"] = str(len(refusal.content))
            return refusal
        return self.get_response(request)


def _refused_host_message(request: HttpRequest) -> str:
    host = request.META.get("HTTP_HOST", request.META.get("SERVER_NAME", ""))
    domain, _port = split_domain_port(host)
    if not domain:
        return f"the Host header {shown(host)} is not a host name with an optional port"
    return (
        f"this server does not answer to the Host {shown(host)}; "
        "DJANGO_ALLOWED_HOSTS lists the names it does"
    )
