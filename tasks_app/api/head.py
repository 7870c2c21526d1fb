"""HEAD answered as its GET would be: the same status and headers, and no body.

Views answer a HEAD as a GET (``require_safe``, and ``get_and_head`` for the API's
routes); the middleware here then drops the body and keeps its Content-Length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from ninja import NinjaAPI

View = TypeVar("View", bound=Callable[..., Any])


def get_and_head(api: NinjaAPI, path: str, **options: Any) -> Callable[[View], View]:
    """``api.get(path, **options)``, with HEAD served by the same view and auth.

    HEAD is an operation of its own, kept out of the schema: given as a second method
    of the GET operation, ninja lists it as a ``head`` operation with the GET's
    operationId, which OpenAPI requires to be unique, and schema-driven clients would
    expect a JSON body from it.
    """

    def register(view: View) -> View:
        api.api_operation(["HEAD"], path, include_in_schema=False, **options)(view)
        return api.get(path, **options)(view)

    return register


class HeadWithoutBodyMiddleware:
    """Drop the body of every answer to a HEAD, keeping the length its GET would send.

    Servers differ here, so the application does it: gunicorn long sent whatever the
    application gave (its maintainers hold the application responsible,
    benoitc/gunicorn#2598), and since benoitc/gunicorn#3616 drops it but logs a
    warning on every such answer; Django's runserver drops it quietly.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        # A streamed answer (no view here streams) has no length to give without
        # reading all of it: it is left to the server.
        if request.method != "HEAD" or not isinstance(response, HttpResponse):
            return response
        if not response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        response.content = b""
        return response
