from django.apps import AppConfig


class TasksAppConfig(AppConfig):
    name = "tasks_app"
    verbose_name = "Scheduler"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks and the worker's start and shutdown handlers,
        # the check of SCHEDULER_RATE_LIMIT, and the admin page of API tokens.
        from . import checks, ratelimit, tokens_admin, worker_lifecycle  # noqa: F401
