"""One benchmark in this process: ``python -m bench.run_system NAME OUT.json [--mode M]``.

Each benchmark runs in a process of its own because each builds its client (Django
settings, a Celery app, a Procrastinate app) from the environment of its own services.
Its figures are checked for completeness (``bench.checks``) before they are written: a
benchmark with a missing figure, a failed task or a short count has failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import checks, workloads
from bench.services import Services, services
from bench.sizes import MODES, Sizes

CAP = 4
LOGS = Path(__file__).resolve().parent / "results" / "logs"


def _ours(env: Services, tmp: Path) -> Any:
    from bench.systems.ours import Ours

    return Ours(env, CAP, tmp)


def _celery_redis(env: Services, tmp: Path) -> Any:
    from bench.systems.celery_redis import CeleryRedis

    return CeleryRedis(env, CAP, tmp)


def _dcr_stock(env: Services, tmp: Path) -> Any:
    from bench.systems.celery_dcr import CeleryDjangoResults

    return CeleryDjangoResults(env, CAP, tmp, reuse_max=None)


def _dcr_reused(env: Services, tmp: Path) -> Any:
    from bench.systems.celery_dcr import CeleryDjangoResults

    return CeleryDjangoResults(env, CAP, tmp, reuse_max=1000)


def _procrastinate(env: Services, tmp: Path) -> Any:
    from bench.systems.procrastinate_queue import Procrastinate

    return Procrastinate(env, CAP, tmp)


def _dramatiq(env: Services, tmp: Path) -> Any:
    from bench.systems.dramatiq_redis import Dramatiq

    return Dramatiq(env, CAP, tmp)


SYSTEMS: dict[str, Callable[[Services, Path], Any]] = {
    "ours": _ours,
    "celery_redis": _celery_redis,
    "celery_dcr_stock": _dcr_stock,
    "celery_dcr_reused": _dcr_reused,
    "procrastinate": _procrastinate,
    "dramatiq": _dramatiq,
}


def workdir(name: str) -> Path:
    """Where a benchmark's processes log: kept after the run, replaced by the next."""
    path = LOGS / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def run_standard(name: str, sizes: Sizes) -> dict[str, Any]:
    """The standard figures of one system, on services of its own."""
    with services(name) as env:
        system = SYSTEMS[name](env, workdir(name))
        try:
            figures: dict[str, Any] = workloads.standard_figures(system, sizes)
            extra = getattr(system, "extra_figures", None)
            if extra is not None:
                try:
                    figures.update(extra(sizes))
                except Exception as exc:  # an extra never costs the standard figures
                    traceback.print_exc()
                    figures["extra_error"] = f"{type(exc).__name__}: {exc}"
            return figures
        finally:
            system.close()


def run_scenario(name: str, sizes: Sizes) -> dict[str, Any]:
    """Our platform's own scenarios (recovery, memory, ...), each on fresh services."""
    from bench import interleaved, ours_scenarios

    if name == interleaved.NAME:
        return interleaved.measure(list(SYSTEMS), sizes)

    scenario = ours_scenarios.SCENARIOS[name]
    with services(name) as env:
        return scenario(env, workdir(name), CAP, sizes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    parser.add_argument("out", type=Path)
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    args = parser.parse_args()
    sizes = MODES[args.mode]
    standard = args.name in SYSTEMS

    started = time.monotonic()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    try:
        run = run_standard if standard else run_scenario
        figures = run(args.name, sizes)
        outcome: dict[str, Any] = {"ok": True, "figures": figures}
    except Exception as exc:
        traceback.print_exc()
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    else:
        # The figures are kept either way, so that the table shows what was measured.
        found = checks.problems(args.name, figures, sizes, standard)
        if found:
            outcome.update(ok=False, error="incomplete: " + "; ".join(found))
            print(f"{args.name}: {outcome['error']}", file=sys.stderr)
    outcome["seconds"] = round(time.monotonic() - started, 1)
    outcome["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    outcome["load_average"] = {
        "start": load_at_start,
        "end": [round(x, 2) for x in os.getloadavg()],
    }
    args.out.write_text(json.dumps(outcome, indent=2))
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
