"""A processor that returns its request: the no-op of benchmarks and smoke tests."""

from __future__ import annotations


class EchoProcessor:
    def process(self, data: bytes) -> bytes:
        return data
