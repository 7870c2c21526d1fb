"""The tables: one row per task, and the scheduler's shared switch and locks."""

from __future__ import annotations

from django.db import models

from .interfaces import TaskStatus


class Status(models.TextChoices):
    """The four statuses, the only place the ORM spells them."""

    QUEUED = TaskStatus.QUEUED.value, "queued"
    PROCESSING = TaskStatus.PROCESSING.value, "processing"
    DONE = TaskStatus.DONE.value, "done"
    ERROR = TaskStatus.ERROR.value, "error"


class TaskRecord(models.Model):
    """One request and its processing; the database is the source of truth for status."""

    uuid = models.UUIDField(primary_key=True)
    hash = models.CharField(
        max_length=64, unique=True, help_text="SHA-256 of the request"
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    request = models.BinaryField()
    request_size = models.PositiveBigIntegerField()
    result = models.BinaryField(null=True, blank=True)
    result_size = models.PositiveBigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(
        default=0, help_text="how many times processing started"
    )
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True, default="")
    # Who may renew the lease ("<boot id>:<pid>") and until when, on the database clock.
    lease_owner = models.CharField(max_length=80, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # When a message last went to the broker for this task: the reconciler's clue.
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "scheduler_task"
        verbose_name = "task"
        indexes = [
            # Counting a status, the oldest queued task, Find's newest-first pages.
            models.Index(fields=["status", "created_at"], name="task_status_created"),
            models.Index(fields=["-created_at", "-uuid"], name="task_newest_first"),
            models.Index(
                fields=["lease_expires_at"],
                name="task_processing_lease",
                condition=models.Q(status="processing"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.uuid} ({self.status})"


class TaskEvent(models.Model):
    """What happened to a task beyond the normal path: a lost worker, a time limit."""

    task = models.ForeignKey(
        TaskRecord, on_delete=models.CASCADE, related_name="events"
    )
    at = models.DateTimeField(auto_now_add=True)
    attempt = models.PositiveIntegerField()
    event = models.CharField(max_length=40)
    worker = models.CharField(max_length=255, blank=True, default="")
    detail = models.TextField(blank=True, default="")

    class Meta:
        db_table = "scheduler_task_event"
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.task_id} attempt {self.attempt}: {self.event}"


class SchedulerSwitch(models.Model):
    """The one row that says whether the scheduler accepts requests.

    Admissions lock this row, which makes the closed check, the duplicate check and the
    queue bound one serial decision across every replica.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    closed = models.BooleanField(default=False)
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "scheduler_switch"
        permissions = [("operate_scheduler", "Can close and reopen the scheduler")]

    def __str__(self) -> str:
        return "closed" if self.closed else "accepting"


class SlotLock(models.Model):
    """The one row that serialises taking a free slot and giving one up."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)

    class Meta:
        db_table = "scheduler_slot_lock"

    def __str__(self) -> str:
        return "slot lock"


class ApiToken(models.Model):
    """A bearer token of the HTTP and gRPC APIs; only the SHA-256 of it is kept.

    ``manage.py create_token`` and the admin make them and show the token once.
    """

    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(
        max_length=16, help_text="the first characters of the token, to recognise it"
    )
    digest = models.CharField(
        max_length=64, unique=True, help_text="SHA-256 of the token, lowercase hex"
    )
    scopes = models.CharField(
        max_length=64, help_text="comma-separated: submit, read, operate"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="from then on, calls with the token answer 401; empty: it never "
        "expires",
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "scheduler_api_token"
        verbose_name = "API token"

    def __str__(self) -> str:
        label = self.name or "unnamed"
        return f"{label} ({self.prefix}…)"


class RateCounter(models.Model):
    """One fixed window of the per-token request rate, when the broker is not Redis."""

    key = models.CharField(max_length=200, primary_key=True)
    count = models.PositiveBigIntegerField(default=0)
    # Seconds since the epoch, on the clock of the process that opened the window.
    expires_at = models.FloatField()

    class Meta:
        db_table = "scheduler_rate_counter"

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"
