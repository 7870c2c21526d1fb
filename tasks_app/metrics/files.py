"""The folder of prometheus-client's multiprocess mode, and what reads and cleans it.

prometheus-client picks its storage once, when it is first imported: with
PROMETHEUS_MULTIPROC_DIR in the environment, every process writes its values to
``<kind>_<pid>.db`` files there. So the variable must be set before the process starts
(``make run``, ``gunicorn.conf.py`` and the manifests set it), never from code that runs
after an import. The files of an exited process stay and keep counting in the sum, so a
recycled gunicorn worker or a replaced pool process loses nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import psutil
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

ENVIRONMENT_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def directory() -> Path | None:
    """The multiprocess folder of this process, or ``None`` for in-process counters."""
    path = os.environ.get(ENVIRONMENT_VARIABLE, "")
    return Path(path) if path else None


def ensure_directory() -> None:
    """Create the folder if it is missing: prometheus-client would fail to open its files."""
    folder = directory()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)


def file_pid(path: Path) -> int | None:
    """The pid in ``counter_123.db`` or ``gauge_livesum_123.db``."""
    _, _, pid = path.stem.rpartition("_")
    return int(pid) if pid.isdigit() else None


def remove_files_of_dead_processes(folder: Path) -> int:
    """Delete the files of processes no longer running; a new server starts from zero.

    Only for a process that starts a tree of its own (a worker's main process before it
    forks): its own files and those of live processes stay, so that nothing is deleted
    under a process that has it open.
    """
    folder.mkdir(parents=True, exist_ok=True)
    removed = 0
    for path in folder.glob("*.db"):
        pid = file_pid(path)
        if pid == os.getpid() or (pid is not None and psutil.pid_exists(pid)):
            continue
        path.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info(
            "metrics: removed %d files of exited processes from %s",
            removed,
            folder,
            extra={"event": "metrics_files_removed"},
        )
    return removed


class _InProcess(Collector):
    """The default registry's metrics: this process's own, when there is no folder."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def process_registry() -> CollectorRegistry:
    """A registry of every process's counters: the folder's sum, or this process's."""
    registry = CollectorRegistry(auto_describe=False)
    folder = directory()
    if folder is None:
        registry.register(_InProcess())
    else:
        folder.mkdir(parents=True, exist_ok=True)
        MultiProcessCollector(registry, path=str(folder))
    return registry
