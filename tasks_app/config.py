"""The scheduler's settings, read once from Django settings into one typed value.

Each setting comes from the environment variable of the same name (see
``scheduler_project/settings/base.py``, where each is documented with its default).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    processor: str
    command: str
    num_workers: int
    queue_size: int
    max_request_bytes: int
    task_time_limit_seconds: float
    lease_seconds: float
    max_attempts: int
    accepting: bool
    grpc_port: int
    retention_days: int
    reconcile_interval_seconds: float

    def __post_init__(self) -> None:
        for name in ("num_workers", "queue_size", "max_request_bytes", "max_attempts"):
            if getattr(self, name) < 1:
                raise ImproperlyConfigured(
                    f"SCHEDULER_{name.upper()} must be at least 1, not {getattr(self, name)}"
                )
        for name in ("task_time_limit_seconds", "lease_seconds"):
            if getattr(self, name) <= 0:
                raise ImproperlyConfigured(f"{name} must be positive")
        if self.lease_seconds < 4 * self.reconcile_interval_seconds:
            raise ImproperlyConfigured(
                f"SCHEDULER_LEASE_SECONDS={self.lease_seconds:g} must be at least four "
                f"lease keeper ticks (SCHEDULER_RECONCILE_INTERVAL="
                f"{self.reconcile_interval_seconds:g}): leases are renewed every quarter"
            )
        if self.retention_days < 0:
            raise ImproperlyConfigured("SCHEDULER_RETENTION_DAYS must be 0 or more")


def scheduler_config() -> SchedulerConfig:
    """The configuration in force now (tests may override Django settings)."""
    return SchedulerConfig(
        processor=settings.SCHEDULER_PROCESSOR,
        command=settings.SCHEDULER_COMMAND,
        num_workers=settings.SCHEDULER_NUM_WORKERS,
        queue_size=settings.SCHEDULER_QUEUE_SIZE,
        max_request_bytes=settings.SCHEDULER_MAX_REQUEST_BYTES,
        task_time_limit_seconds=settings.SCHEDULER_TASK_TIME_LIMIT,
        lease_seconds=settings.SCHEDULER_LEASE_SECONDS,
        max_attempts=settings.SCHEDULER_MAX_ATTEMPTS,
        accepting=settings.SCHEDULER_ACCEPTING,
        grpc_port=settings.SCHEDULER_GRPC_PORT,
        retention_days=settings.SCHEDULER_RETENTION_DAYS,
        reconcile_interval_seconds=settings.SCHEDULER_RECONCILE_INTERVAL,
    )
