"""The admin: tasks to look at, and the scheduler's operations as actions and buttons.

Nothing here writes a row: the actions and buttons call the Scheduler, like every other
client. Request and result bytes are never loaded or shown, only their sizes. The
scheduler page itself (``/admin/scheduler/``) is in ``dashboard_views``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.functional import cached_property
from django.views.decorators.http import require_POST

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


# The admin's index links to the scheduler page.
admin.site.index_template = "admin/tasks_app/index.html"


def describe_state(state: State) -> str:
    return (
        f"Scheduler {state.state}: {state.queued} queued, {state.processing} "
        f"processing, {state.num_workers} workers, queue of {state.queue_size}"
    )


def switch_scheduler(request: HttpRequest, *, close: bool) -> None:
    """Close or reopen through the Scheduler, and tell the operator what it says now."""
    scheduler = get_scheduler()
    try:
        state = scheduler.close() if close else scheduler.open()
    except SchedulerError as exc:
        messages.error(request, str(exc))
        return
    log.info(
        "scheduler %s in the admin by %s",
        "closed" if close else "reopened",
        request.user,
        extra={"event": "admin_close" if close else "admin_open"},
    )
    messages.success(request, describe_state(state))


class CappedCountPaginator(Paginator):
    """Counts at most ``MAX_COUNT`` rows: an exact count of a large table is a scan.

    Past the cap the list shows ``MAX_COUNT`` tasks and as many pages; a filter or a
    search narrows it to an exact count again.
    """

    MAX_COUNT = 10_000

    @cached_property
    def count(self) -> int:
        rows: QuerySet[TaskRecord] = self.object_list  # type: ignore[assignment]
        return rows.order_by()[: self.MAX_COUNT].count()


class TaskEventInline(_EventInline):
    """What happened to a task beyond the normal path, oldest first; read-only."""

    model = TaskEvent
    verbose_name = "attempt event"
    verbose_name_plural = "attempt history: lost workers and time limits"
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
    # The exact count of a large table costs a scan on every page: count up to a cap.
    show_full_result_count = False
    paginator = CappedCountPaginator
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

    # --- the task page's retry button -------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        retry = path(
            "<path:object_id>/retry/",
            self.admin_site.admin_view(require_POST(self.retry_view)),
            name="tasks_app_taskrecord_retry",
        )
        # Before the model's own routes, whose last one takes any path.
        return [retry, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            status = (
                self.get_queryset(request)
                .filter(pk=object_id)
                .values_list("status", flat=True)
                .first()
            )
        except ValidationError:  # not a UUID: Django's own view answers that
            status = None
        context = {
            "show_retry": status == Status.ERROR
            and self.has_operate_permission(request)
        }
        return super().change_view(
            request, object_id, form_url, {**context, **(extra_context or {})}
        )

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Queue the task in error again, through ``Scheduler.retry``."""
        if not self.has_operate_permission(request):
            raise PermissionDenied
        try:
            task = get_scheduler().retry(UUID(object_id))
        except SchedulerError as exc:  # not in error, closed, full, unknown
            self.message_user(request, f"Not retried: {exc}", messages.ERROR)
        else:
            log.info(
                "task %s: retry requested in the admin by %s",
                task.uuid,
                request.user,
                extra={"task_uuid": task.uuid, "event": "admin_retry"},
            )
            self.message_user(
                request, f"Task {task.uuid} is queued again.", messages.SUCCESS
            )
        return HttpResponseRedirect(
            reverse("admin:tasks_app_taskrecord_change", args=[object_id])
        )

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
        switch_scheduler(request, close=True)

    @admin.action(description="Reopen the scheduler", permissions=["operate"])
    def reopen_scheduler(
        self, request: HttpRequest, queryset: QuerySet[TaskRecord]
    ) -> None:
        switch_scheduler(request, close=False)

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
