"""The round trip of every system in interleaved rounds, so that each meets the same noise.

The standard figures measure one system after another, minutes apart, and on this
machine the latency of the same code drifts by a millisecond or more from one minute to
the next (the neighbours of a VM, the CPU's clock): a round-trip ratio taken that way
compares moments as much as systems. Here every system is built at once, each in a
process of its own on services of its own (as ``bench.run_system`` builds one), and
they take turns: ``interleaved_rounds`` rounds of ``interleaved_round_seconds`` each,
in an order that rotates every round, while the others sit idle. Each system's p50 and
p99 are over the latencies of all its rounds.

A system waits about ten seconds between two of its rounds, and on this machine the
first tasks after such a pause cost two to four times the median. With 100 tasks a
round, those first tasks alone would be the p99, where a paced stream of 10 s (the
figure the targets name) has one such task in 500. So each round opens with
``interleaved_lead_in_seconds`` of the same pace that the p50 and p99 leave out, and
the first task of each round is reported apart (``first_after_idle_*``): what a
request costs that finds the system idle.

``python -m bench.interleaved NAME MODE`` is one system's process: it answers the
coordinator's commands, one JSON line each way, on its stdin and on the stdout it had
at start; anything else that writes to its stdout (a library, a child process) goes to
its stderr instead.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
from typing import IO, Any

from bench import workloads
from bench.sizes import MODES, Sizes

NAME = "interleaved_round_trip"
READY_SECONDS = 600  # building a system: services, workers, a warm-up


class SystemFailed(RuntimeError):
    """A system's process exited or went silent; its stderr says why."""


def measure(systems: list[str], sizes: Sizes) -> dict[str, Any]:
    """Each system's round trip over the interleaved rounds."""
    from tests.harness import ROOT

    children = {
        name: subprocess.Popen(
            [sys.executable, "-m", "bench.interleaved", name, sizes.mode],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in systems
    }
    try:
        for name, child in children.items():
            _reply(name, child, READY_SECONDS)
        runs: dict[str, list[workloads.PacedRun]] = {name: [] for name in systems}
        seconds = sizes.interleaved_round_seconds
        for number in range(sizes.interleaved_rounds):
            first = number % len(systems)
            for name in systems[first:] + systems[:first]:
                child = children[name]
                assert child.stdin is not None
                child.stdin.write(json.dumps({"round_seconds": seconds}) + "\n")
                child.stdin.flush()
                runs[name].append(workloads.PacedRun(**_reply(name, child, 300)))
        return {name: _summary(runs[name], sizes) for name in systems}
    finally:
        for child in children.values():
            _stop(child)


def _summary(runs: list[workloads.PacedRun], sizes: Sizes) -> dict[str, Any]:
    summary: dict[str, Any] = workloads.latency_summary(
        [latency for run in runs for latency in run.latencies]
    )
    firsts = [run.lead_in[0] * 1000 for run in runs if run.lead_in]
    if firsts:
        summary["first_after_idle_p50_ms"] = round(statistics.median(firsts), 3)
        summary["first_after_idle_max_ms"] = round(max(firsts), 3)
    summary["failed"] = sum(run.failed for run in runs)
    summary["late_submits"] = sum(run.late_submits for run in runs)
    summary["rounds"] = len(runs)
    summary["round_seconds"] = sizes.interleaved_round_seconds
    summary["lead_in_seconds"] = sizes.interleaved_lead_in_seconds
    summary["rate_per_second"] = workloads.ROUND_TRIP_RATE
    return summary


def _reply(name: str, child: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    line = child.stdout.readline() if ready else ""
    if not line:
        raise SystemFailed(
            f"{name}: its process "
            + (
                "exited"
                if child.poll() is not None
                else f"was silent for {timeout:g} s"
            )
            + " (its stderr is above)"
        )
    return dict(json.loads(line))


def _stop(child: subprocess.Popen[str]) -> None:
    try:
        if child.stdin is not None and child.poll() is None:
            child.stdin.close()  # end of commands: the system closes and exits
        child.wait(60)
    except (OSError, subprocess.TimeoutExpired):
        child.kill()
        child.wait()


def _serve(name: str, sizes: Sizes, answers: IO[str]) -> None:
    from bench.run_system import SYSTEMS, workdir
    from bench.services import services

    with services(f"{name}_interleaved") as env:
        system = SYSTEMS[name](env, workdir(f"interleaved_{name}"))
        try:
            workloads.warm_up(system, sizes.warm_up_tasks)
            _answer(answers, {"ready": name})
            for line in sys.stdin:
                seconds = float(json.loads(line)["round_seconds"])
                run = workloads.paced(
                    system,
                    workloads.ROUND_TRIP_RATE,
                    seconds,
                    lead_in_seconds=sizes.interleaved_lead_in_seconds,
                )
                _answer(answers, vars(run))
        finally:
            system.close()


def _answer(answers: IO[str], message: dict[str, Any]) -> None:
    answers.write(json.dumps(message) + "\n")
    answers.flush()


def main() -> int:
    name, mode = sys.argv[1], sys.argv[2]
    # The protocol keeps the stdout this process started with; everything else that
    # writes to stdout, here or in a child, writes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _serve(name, MODES[mode], answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
