"""``manage.py submit PATH... [--out DIR] [--wait SECONDS]``: files in, results out.

Each file (folders are walked recursively) becomes a request to this process's
Scheduler, as ``POST /api/tasks`` would make it. The command then follows the tasks
until they finish and writes each result under DIR, with the input's name. Exit 0 when
every task is done, 1 when some ended in error or did not finish within ``--wait``, 2
when a request was refused or the command was used wrongly.
"""

from __future__ import annotations

import sys
import time
from argparse import ArgumentParser
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ...admission import Admission
from ...errors import BadRequest, QueueFull, RequestTooLarge, SchedulerClosed
from ...find import MAX_IN_VALUES
from ...interfaces import UUID, FindOperator, Task, TaskStatus
from ...scheduler import Scheduler, get_scheduler
from ..arguments import seconds

EXIT_SOME_FAILED = 1
EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130
POLL_SECONDS = 0.5
QUEUE_FULL_RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Input:
    """A file to submit, and the name its result gets under ``--out``."""

    path: Path
    name: Path


@dataclass
class Submission:
    """What the scheduler answered for each input."""

    inputs_by_task: dict[UUID, list[Input]] = field(default_factory=dict)
    deduplicated: list[tuple[Input, Admission]] = field(default_factory=list)
    refused: list[tuple[Input, str]] = field(default_factory=list)
    created: int = 0

    def admitted(self, item: Input, admission: Admission) -> None:
        self.inputs_by_task.setdefault(admission.uuid, []).append(item)
        if admission.created:
            self.created += 1
        else:
            self.deduplicated.append((item, admission))


class Deadline:
    """The end of ``--wait``, or none."""

    def __init__(self, seconds: float | None) -> None:
        self.at = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float:
        return float("inf") if self.at is None else self.at - time.monotonic()

    def passed(self) -> bool:
        return self.remaining() <= 0


def collect_inputs(paths: Iterable[Path], *, unique_names: bool) -> list[Input]:
    """Every file under ``paths``, in a stable order; a folder's files keep their
    path relative to it."""
    inputs: list[Input] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_file():
            found = [Input(path, Path(path.name))]
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            found = [Input(p, p.relative_to(path)) for p in files]
        elif path.exists():
            raise CommandError(
                f"{path}: not a regular file or a folder (a device, a pipe, a socket)",
                returncode=2,
            )
        else:
            raise CommandError(f"{path}: no such file or folder", returncode=2)
        for item in found:
            # A file named twice (alone and in its folder) is submitted once.
            if item.path.resolve() not in seen:
                seen.add(item.path.resolve())
                inputs.append(item)
    if not inputs:
        raise CommandError("no files to submit under the paths given", returncode=2)
    if unique_names:
        _refuse_name_clashes(inputs)
    return inputs


def _refuse_name_clashes(inputs: list[Input]) -> None:
    by_name: dict[Path, Input] = {}
    for item in inputs:
        other = by_name.setdefault(item.name, item)
        if other is not item:
            raise CommandError(
                f"{other.path} and {item.path} would both write {item.name} under "
                "--out; submit them in two runs",
                returncode=2,
            )


def chunks(items: list[UUID], size: int) -> Iterator[list[UUID]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Command(BaseCommand):
    help = (
        "Submit files (folders recursively) as requests, wait for their tasks, and "
        "write each result under --out. Exit 0 all done, 1 some in error or "
        "unfinished, 2 refused or bad usage."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
        parser.add_argument(
            "--out",
            type=Path,
            metavar="DIR",
            help="write each done result here, named after its input",
        )
        parser.add_argument(
            "--wait",
            type=seconds,
            metavar="SECONDS",
            help="give up waiting after this long (default: until all finish; "
            "0: submit only)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        out: Path | None = options["out"]
        wait: float | None = options["wait"]
        self.verbosity = int(options["verbosity"])
        if out is not None and out.exists() and not out.is_dir():
            raise CommandError(f"--out {out} is not a folder", returncode=2)
        inputs = collect_inputs(options["paths"], unique_names=out is not None)

        scheduler = get_scheduler()
        deadline = Deadline(wait)
        try:
            submission = self.submit(scheduler, inputs, deadline)
            self.report_submission(inputs, submission)
            finished = self.follow(scheduler, submission, out, deadline)
        except KeyboardInterrupt:
            raise CommandError(
                "interrupted: the tasks go on without this command; run it again "
                "to collect their results",
                returncode=EXIT_INTERRUPTED,
            ) from None

        self.conclude(submission, finished, out)

    # --- submitting -----------------------------------------------------------------

    def submit(
        self, scheduler: Scheduler, inputs: list[Input], deadline: Deadline
    ) -> Submission:
        submission = Submission()
        for index, item in enumerate(inputs):
            try:
                request = item.path.read_bytes()
            except OSError as exc:
                submission.refused.append((item, f"cannot read it: {exc.strerror}"))
                continue
            try:
                admission = self.admit(scheduler, request, deadline)
            except SchedulerClosed as exc:
                # Closed refuses every request alike: the rest need not be tried.
                submission.refused.extend((rest, str(exc)) for rest in inputs[index:])
                break
            except (BadRequest, RequestTooLarge, QueueFull) as exc:
                submission.refused.append((item, str(exc)))
                continue
            submission.admitted(item, admission)
        return submission

    def admit(
        self, scheduler: Scheduler, request: bytes, deadline: Deadline
    ) -> Admission:
        """Submit one request; while the queue is full, wait for room if time is left."""
        told = False
        while True:
            try:
                return scheduler.add_task(request)
            except QueueFull:
                if deadline.remaining() <= QUEUE_FULL_RETRY_SECONDS:
                    raise
                if not told:
                    self.stderr.write("the queue is full: waiting for room")
                    told = True
                time.sleep(QUEUE_FULL_RETRY_SECONDS)

    def report_submission(self, inputs: list[Input], submission: Submission) -> None:
        self.stdout.write(
            f"{len(inputs)} files: {submission.created} new tasks, "
            f"{len(submission.deduplicated)} deduplicated, "
            f"{len(submission.refused)} refused"
        )
        if self.verbosity >= 1:
            for item, admission in submission.deduplicated:
                self.stdout.write(
                    f"deduplicated: {item.path} is task {admission.uuid} "
                    f"({admission.status})"
                )
        for item, reason in submission.refused:
            self.stderr.write(f"refused: {item.path}: {reason}")

    # --- following the tasks --------------------------------------------------------

    def follow(
        self,
        scheduler: Scheduler,
        submission: Submission,
        out: Path | None,
        deadline: Deadline,
    ) -> dict[UUID, Task]:
        """Wait for the tasks to finish, writing each result as soon as it is done."""
        pending = set(submission.inputs_by_task)
        finished: dict[UUID, Task] = {}
        with tqdm(
            total=len(pending), unit="task", desc="tasks", file=sys.stderr, disable=None
        ) as bar:
            while pending:
                for task in self.finished_among(scheduler, sorted(pending)):
                    pending.discard(task.uuid)
                    finished[task.uuid] = task
                    if out is not None and task.status == TaskStatus.DONE:
                        self.write_result(scheduler, task.uuid, submission, out)
                    bar.update(1)
                if not pending or deadline.passed():
                    break
                time.sleep(min(POLL_SECONDS, deadline.remaining()))
        return finished

    def finished_among(self, scheduler: Scheduler, uuids: list[UUID]) -> list[Task]:
        finished: list[Task] = []
        for batch in chunks(uuids, MAX_IN_VALUES):
            page = scheduler.find_tasks(
                [
                    FindOperator("uuid", "in", ",".join(batch)),
                    FindOperator("status", "in", "done,error"),
                ],
                limit=len(batch),
            )
            finished.extend(page.items)
        return finished

    def write_result(
        self, scheduler: Scheduler, uuid: UUID, submission: Submission, out: Path
    ) -> None:
        _, result = scheduler.storage.get_result(uuid)
        for item in submission.inputs_by_task[uuid]:
            target = out / item.name
            target.parent.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed, so that an interrupted run leaves no half file.
            partial = target.with_name(f"{target.name}.partial")
            partial.write_bytes(result or b"")
            partial.replace(target)

    # --- the outcome ----------------------------------------------------------------

    def conclude(
        self, submission: Submission, finished: dict[UUID, Task], out: Path | None
    ) -> None:
        failed = [task for task in finished.values() if task.status == TaskStatus.ERROR]
        unfinished = [
            uuid for uuid in submission.inputs_by_task if uuid not in finished
        ]
        for task in failed:
            for item in submission.inputs_by_task[task.uuid]:
                self.stderr.write(
                    f"error: {item.path} (task {task.uuid}): {task.error}"
                )
        for uuid in unfinished:
            for item in submission.inputs_by_task[uuid]:
                self.stderr.write(f"unfinished: {item.path} (task {uuid})")

        done = len(finished) - len(failed)
        summary = (
            f"{done} done, {len(failed)} in error, {len(unfinished)} unfinished, "
            f"{len(submission.refused)} refused"
        )
        if out is not None and done:
            summary += f"; results in {out}"
        if submission.refused:
            raise CommandError(summary, returncode=EXIT_REFUSED)
        if failed or unfinished:
            raise CommandError(summary, returncode=EXIT_SOME_FAILED)
        self.stdout.write(summary)
