"""The admin: tasks to look at, and the scheduler's operations as actions.

Nothing here writes a row: the actions call the Scheduler, like every other client.
Request and result bytes are never loaded or shown, only their sizes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse

from .errors import Refused, SchedulerError, WrongStatus
from .interfaces import UUID, State
from .models import Status, TaskEvent, TaskRecord
from .scheduler import get_scheduler

log = logging.getLogger(__name__)

OPERATE_PERMISSION = "tasks_app.operate_scheduler"
_BYTES_FIELDS = ("request", "result")

# The admin classes are generic for the type checker only; at run time they are not
# subscriptable (django-stubs-ext's monkeypatch would make them so, for this alone).
if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[TaskRecord]
    _EventInline = admin.TabularInline[TaskEvent, TaskRecord]
else:
    _ModelAdmin = admin.ModelAdmin
    _EventInline = admin.TabularInline


def describe_state(state: State) -> str:
    return (
        f"Scheduler {state.state}: {state.queued} queued, {state.processing} "
        f"processing, {state.num_workers} workers, queue of {state.queue_size}"
    )


class TaskEventInline(_EventInline):
    """What happened to a task beyond the normal path, oldest first; read-only."""

    model = TaskEvent
    fields = ("at", "attempt", "event", "worker", "detail")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TaskRecord)
class TaskRecordAdmin(_ModelAdmin):
    list_display = (
        "uuid",
        "status",
        "short_hash",
        "request_size",
        "result_size",
        "created_at",
        "started_at",
        "finished_at",
        "duration",
        "attempts",
        "worker",
    )
    list_filter = ("status", ("created_at", admin.DateFieldListFilter))
    search_fields = ("uuid", "^hash")
    search_help_text = "A UUID or part of one, or the start of a hash."
    ordering = ("-created_at", "-uuid")
    # The exact count of a large table costs a scan on every page; the filtered one is
    # enough to page with.
    show_full_result_count = False
    fieldsets = (
        (None, {"fields": ("uuid", "status", "hash", "attempts", "worker")}),
        ("Sizes in bytes", {"fields": ("request_size", "result_size")}),
        ("Times", {"fields": ("created_at", "started_at", "finished_at", "duration")}),
        ("Error", {"fields": ("error",)}),
        (
            "Lease",
            {
                "fields": ("lease_owner", "lease_expires_at", "dispatched_at"),
                "classes": ("collapse",),
            },
        ),
    )
    readonly_fields = (
        "uuid",
        "status",
        "hash",
        "attempts",
        "worker",
        "request_size",
        "result_size",
        "created_at",
        "started_at",
        "finished_at",
        "duration",
        "error",
        "lease_owner",
        "lease_expires_at",
        "dispatched_at",
    )
    inlines = (TaskEventInline,)
    actions = ("retry_errored", "close_scheduler", "reopen_scheduler")
    # Actions about the scheduler as a whole, which need no task ticked.
    scheduler_actions = frozenset({"close_scheduler", "reopen_scheduler"})

    # --- what is loaded and shown -------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskRecord]:
        return super().get_queryset(request).defer(*_BYTES_FIELDS)

    @admin.display(description="hash")
    def short_hash(self, task: TaskRecord) -> str:
        return task.hash[:12]

    @admin.display(description="duration")
    def duration(self, task: TaskRecord) -> str | None:
        if task.started_at is None or task.finished_at is None:
            return None
        return f"{(task.finished_at - task.started_at).total_seconds():.3f} s"

    # --- permissions: tasks change through the scheduler only ---------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(OPERATE_PERMISSION)

    # --- actions ------------------------------------------------------------------------

    @admin.action(
        description="Retry the selected tasks in error", permissions=["operate"]
    )
    def retry_errored(
        self, request: HttpRequest, queryset: QuerySet[TaskRecord]
    ) -> None:
        scheduler = get_scheduler()
        errored = list(
            queryset.filter(status=Status.ERROR).values_list("uuid", flat=True)
        )
        skipped = queryset.count() - len(errored)
        retried = 0
        for uuid in errored:
            try:
                scheduler.retry(UUID(str(uuid)))
            except WrongStatus:
                skipped += 1  # retried by someone else since the page was drawn
                continue
            except Refused as exc:
                self.message_user(
                    request, f"Retried {retried}, then refused: {exc}", messages.ERROR
                )
                return
            retried += 1
            log.info(
                "task %s: retry requested in the admin by %s",
                uuid,
                request.user,
                extra={"task_uuid": str(uuid), "event": "admin_retry"},
            )
        self.message_user(
            request,
            f"Queued {retried} tasks again; {skipped} were not in error.",
            messages.SUCCESS if retried else messages.WARNING,
        )

    @admin.action(description="Close the scheduler", permissions=["operate"])
    def close_scheduler(
        self, request: HttpRequest, queryset: QuerySet[TaskRecord]
    ) -> None:
        self._switch(request, close=True)

    @admin.action(description="Reopen the scheduler", permissions=["operate"])
    def reopen_scheduler(
        self, request: HttpRequest, queryset: QuerySet[TaskRecord]
    ) -> None:
        self._switch(request, close=False)

    def _switch(self, request: HttpRequest, *, close: bool) -> None:
        scheduler = get_scheduler()
        try:
            state = scheduler.close() if close else scheduler.open()
        except SchedulerError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        log.info(
            "scheduler %s in the admin by %s",
            "closed" if close else "reopened",
            request.user,
            extra={"event": "admin_close" if close else "admin_open"},
        )
        self.message_user(request, describe_state(state), messages.SUCCESS)

    # --- the list page --------------------------------------------------------------------

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse | TemplateResponse:
        action = request.POST.get("action", "") if request.method == "POST" else ""
        if action in self.scheduler_actions and not request.POST.getlist(
            helpers.ACTION_CHECKBOX_NAME
        ):
            # Django runs no action with nothing ticked, but closing the scheduler has
            # nothing to do with the ticked tasks. An action the user may not run is
            # absent from get_actions, and falls through to Django's refusal.
            chosen = self.get_actions(request).get(action)
            if chosen is not None:
                function = chosen[0]
                function(self, request, self.get_queryset(request).none())
                return HttpResponseRedirect(request.get_full_path())
        context = {"subtitle": describe_state(get_scheduler().state())}
        return super().changelist_view(request, {**context, **(extra_context or {})})
