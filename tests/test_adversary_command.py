"""The built-in CommandProcessor's program must end with the pool process that ran it.

Whatever ends a pool process mid-call (the OOM killer, the keeper's fence in a
partition, the parent-death signal of an orphan) lets the task run again elsewhere at
once; the program it started is the processor's work, and must not run beside the retry.
"""

from __future__ import annotations

import os
import signal

import pytest

from tasks_app.interfaces import TaskStatus
from tasks_app.models import TaskRecord
from tasks_app.scheduler import Scheduler
from tests.harness import Cluster, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_program_of_a_killed_pool_process_never_runs_beside_the_retry(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    log = cluster.call_log.path
    # The program logs its own start and end in the call log's format, then echoes.
    script = (
        f"echo start program $$ $(date +%s.%N) >> {log}; sleep 8; "
        f"echo end program $$ $(date +%s.%N) >> {log}; cat"
    )
    cluster.configure(
        scheduler_num_workers=1,
        scheduler_processor="tasks_app.processors:CommandProcessor",
        scheduler_command=f"sh -c '{script}'",
    )
    cluster.start_worker(concurrency=1)
    uuid = scheduler.add_task(b"an input for the program").uuid
    wait_until(lambda: len(cluster.call_log.calls()) == 1, 30, message="the program")

    pool_process = int(TaskRecord.objects.get(uuid=uuid).lease_owner.split(":")[1])
    os.kill(pool_process, signal.SIGKILL)  # what the OOM killer does
    wait_until(
        lambda: scheduler.get_task(uuid).status.is_finished, 60, message="finished"
    )

    first, retry = cluster.call_log.calls()
    assert first.end is None or first.end <= retry.start, (
        f"the first program ran until {first.end - retry.start:.1f} s after the "
        "retry's began: two at once with SCHEDULER_NUM_WORKERS=1"
    )
    assert scheduler.get_task(uuid).status == TaskStatus.DONE
