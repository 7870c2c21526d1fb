"""The scheduler page of the admin, ``/admin/scheduler/``, and its close and reopen forms.

The page needs the permission to view tasks; closing and reopening need
``tasks_app.operate_scheduler``, and go through a confirmation page and a POST with its
CSRF token. Both call the Scheduler, as every other client does.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from . import dashboard
from .admin import OPERATE_PERMISSION, switch_scheduler
from .scheduler import get_scheduler

VIEW_PERMISSION = "tasks_app.view_taskrecord"
# The page reloads itself this often, so that an operator watching a drain sees it move.
REFRESH_SECONDS = 10

ACTIONS = {
    "close": (
        "Close the scheduler",
        "Every replica will refuse new requests, duplicates included. Tasks already "
        "queued or processing still run to the end.",
    ),
    "open": ("Reopen the scheduler", "Every replica will accept requests again."),
}


def scheduler_page(request: HttpRequest) -> TemplateResponse:
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied
    context = {
        **admin.site.each_context(request),
        "title": "Scheduler",
        "overview": dashboard.overview(),
        "can_operate": request.user.has_perm(OPERATE_PERMISSION),
        "refresh_seconds": REFRESH_SECONDS,
        "rate_lookback_minutes": int(dashboard.CREATED_LOOKBACK.total_seconds() // 60),
    }
    return TemplateResponse(request, "admin/tasks_app/scheduler/page.html", context)


def scheduler_switch(request: HttpRequest, action: str) -> HttpResponse:
    """GET: the confirmation page. POST: close or reopen, then back to the page."""
    if not request.user.has_perm(OPERATE_PERMISSION):
        raise PermissionDenied
    if request.method == "POST":
        switch_scheduler(request, close=action == "close")
        return HttpResponseRedirect(reverse("scheduler-page"))
    title, consequence = ACTIONS[action]
    context = {
        **admin.site.each_context(request),
        "title": f"{title}?",
        "action": action,
        "button": title,
        "consequence": consequence,
        "state": get_scheduler().state(),
    }
    return TemplateResponse(request, "admin/tasks_app/scheduler/confirm.html", context)


def urls() -> list[URLPattern]:
    """The routes, behind the admin's login, staff check and CSRF protection."""
    wrap = admin.site.admin_view
    return [
        path("admin/scheduler/", wrap(scheduler_page), name="scheduler-page"),
        path(
            "admin/scheduler/close/",
            wrap(scheduler_switch),
            {"action": "close"},
            name="scheduler-close",
        ),
        path(
            "admin/scheduler/open/",
            wrap(scheduler_switch),
            {"action": "open"},
            name="scheduler-open",
        ),
    ]
