"""How big each benchmark is in the full run, the quick run and the smoke run.

The full run's sizes are the ones docs/benchmarks.md reports. ``BENCH_QUICK=1`` keeps
the same shape, shorter; ``BENCH_SMOKE=1`` runs every benchmark at a size that only
proves it still works: CI runs it, and it checks counts (``bench.checks``), never times.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Sizes:
    mode: str
    # The standard figures of every system (bench.workloads).
    warm_up_tasks: int
    util_50ms_tasks: int
    util_1s_tasks: int
    round_trip_seconds: float  # paced at workloads.ROUND_TRIP_RATE, through HTTP too
    # The round trip of every system again, in turns (bench.interleaved).
    interleaved_rounds: int
    interleaved_round_seconds: float
    interleaved_lead_in_seconds: float  # each round's opening, measured apart
    burst_tasks: int
    burst_one_client_tasks: int
    http_warm_up_tasks: int
    # Our own scenarios (bench.ours_scenarios, bench.profile, bench.grpc_http_rates).
    recovery_trials: int
    recovery_lease_seconds: float
    memory_tasks: int  # the first tenth is the warm-up
    big_request_bytes: int
    admission_seconds_per_phase: float
    profile_tasks: int
    # A benchmark still running after this long has hung: it is stopped and reported.
    timeout_seconds: float


FULL = Sizes(
    mode="full",
    interleaved_rounds=10,
    interleaved_round_seconds=2,
    interleaved_lead_in_seconds=0.2,
    warm_up_tasks=40,
    util_50ms_tasks=400,
    util_1s_tasks=100,
    round_trip_seconds=10,
    burst_tasks=2000,
    burst_one_client_tasks=2000,
    http_warm_up_tasks=20,
    recovery_trials=2,
    recovery_lease_seconds=15,
    memory_tasks=10_000,
    big_request_bytes=64 * MiB,
    admission_seconds_per_phase=10,
    # Enough for py-spy's 100 samples a second to see a drain of about 2,000 a second.
    profile_tasks=10_000,
    timeout_seconds=1800,
)

QUICK = Sizes(
    mode="quick",
    interleaved_rounds=4,
    interleaved_round_seconds=1,
    interleaved_lead_in_seconds=0.2,
    warm_up_tasks=40,
    util_50ms_tasks=100,
    util_1s_tasks=12,
    round_trip_seconds=3,
    burst_tasks=500,
    burst_one_client_tasks=200,
    http_warm_up_tasks=20,
    recovery_trials=1,
    recovery_lease_seconds=15,
    memory_tasks=2_000,
    big_request_bytes=64 * MiB,
    admission_seconds_per_phase=2,
    profile_tasks=2000,
    timeout_seconds=1800,
)

# Every code path of the full run, a few tasks each. The lease is the shortest the
# configuration accepts with the bench's reconcile interval of 1 s (four ticks), so
# that recovery waits seconds, not the deployment's 15.
SMOKE = Sizes(
    mode="smoke",
    interleaved_rounds=1,
    interleaved_round_seconds=0.5,
    interleaved_lead_in_seconds=0.1,
    warm_up_tasks=10,
    util_50ms_tasks=20,
    util_1s_tasks=8,
    round_trip_seconds=1,
    burst_tasks=40,
    burst_one_client_tasks=20,
    http_warm_up_tasks=10,
    recovery_trials=1,
    recovery_lease_seconds=4,
    memory_tasks=300,
    big_request_bytes=1 * MiB,
    admission_seconds_per_phase=1,
    profile_tasks=50,
    timeout_seconds=300,
)

MODES = {sizes.mode: sizes for sizes in (FULL, QUICK, SMOKE)}


class ModeError(ValueError):
    """BENCH_QUICK and BENCH_SMOKE were both set: set one of them, or neither."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def from_environment() -> Sizes:
    """``BENCH_SMOKE=1``: SMOKE; ``BENCH_QUICK=1``: QUICK; neither: FULL."""
    smoke, quick = _flag("BENCH_SMOKE"), _flag("BENCH_QUICK")
    if smoke and quick:
        raise ModeError("set BENCH_SMOKE=1 or BENCH_QUICK=1, not both")
    if smoke:
        return SMOKE
    return QUICK if quick else FULL
