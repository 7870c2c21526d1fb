"""Numeric settings are read strictly: a value that is not a number stops the process
with the variable's name, never a silently different number."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.harness import ROOT


def read_setting(name: str, value: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
        name: value,
    }
    return subprocess.run(
        [
            sys.executable,
            "-c",
            f"from django.conf import settings; print(repr(settings.{name}))",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value", "read"),
    [
        ("SCHEDULER_TASK_TIME_LIMIT", "1e4", "10000.0"),
        ("SCHEDULER_LEASE_SECONDS", " 20 ", "20.0"),
        ("SCHEDULER_NUM_WORKERS", "8", "8"),
    ],
)
def test_a_number_reads_as_python_reads_it(name: str, value: str, read: str) -> None:
    ran = read_setting(name, value)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == read


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        # django-environ's own reader made these 2.0, 10.0 and 6.0.
        ("SCHEDULER_TASK_TIME_LIMIT", "2h", "is not a number"),
        ("SCHEDULER_LEASE_SECONDS", "0x10", "is not a number"),
        ("SCHEDULER_RECONCILE_INTERVAL", "6O", "is not a number"),
        ("SCHEDULER_TASK_TIME_LIMIT", "nan", "must be finite"),
        ("SCHEDULER_LEASE_SECONDS", "inf", "must be finite"),
        ("SCHEDULER_NUM_WORKERS", "two", "is not a whole number"),
        ("SCHEDULER_QUEUE_SIZE", "1.5", "is not a whole number"),
        ("SCHEDULER_MAX_ATTEMPTS", "", "is not a whole number"),
    ],
)
def test_a_value_that_is_not_a_number_stops_the_process_naming_it(
    name: str, value: str, says: str
) -> None:
    ran = read_setting(name, value)
    assert ran.returncode != 0
    assert f"ImproperlyConfigured: {name}={value!r} {says}" in ran.stderr, ran.stderr
