"""System checks for settings that would otherwise fail at the first task."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register
from django.core.exceptions import ImproperlyConfigured

from .config import scheduler_config


@register()
def check_scheduler_settings(**_: Any) -> list[CheckMessage]:
    try:
        config = scheduler_config()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="tasks_app.E001")]
    errors: list[CheckMessage] = []
    if (
        config.processor == "tasks_app.processors:CommandProcessor"
        and not config.command
    ):
        errors.append(
            Error(
                "SCHEDULER_PROCESSOR is CommandProcessor but SCHEDULER_COMMAND is empty",
                hint="set SCHEDULER_COMMAND to the program to run, e.g. 'gzip -c'",
                id="tasks_app.E002",
            )
        )
    if ":" not in config.processor:
        errors.append(
            Error(
                f"SCHEDULER_PROCESSOR={config.processor!r} is not package.module:ClassName",
                id="tasks_app.E003",
            )
        )
    return errors
