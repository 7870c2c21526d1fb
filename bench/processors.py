"""The benchmark's processor: sleeps as long as the request says, then echoes it.

A request starts with ``<seconds>|`` (see ``bench.workloads.request``); zero seconds is
the no-op of the round-trip and burst figures.
"""

from __future__ import annotations

import time


class SleepEchoProcessor:
    def process(self, data: bytes) -> bytes:
        head, _, _ = data[:32].partition(b"|")
        try:
            seconds = float(head)
        except ValueError:
            seconds = 0.0
        if seconds > 0:
            time.sleep(seconds)
        return data
