"""Processors for the tests: they do what the request says, and log every real call.

The request is JSON: ``{"id": ..., "sleep": seconds, "fail": "message", "hang": true,
"kill": true}``. Every call appends ``start`` and ``end`` lines (hash, pid, time) to the
file named by TEST_CALL_LOG, outside any transaction, so "calls" means processor runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time


def _log(event: str, digest: str) -> None:
    path = os.environ.get("TEST_CALL_LOG")
    if not path:
        return
    line = f"{event} {digest} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class RecordingProcessor:
    def process(self, data: bytes) -> bytes:
        digest = hashlib.sha256(data).hexdigest()
        _log("start", digest)
        try:
            spec = json.loads(data)
        except ValueError:
            spec = {}
        if spec.get("kill"):
            os.kill(os.getpid(), signal.SIGKILL)
        if spec.get("hang"):
            while True:
                time.sleep(3600)
        if spec.get("sleep"):
            time.sleep(float(spec["sleep"]))
        if spec.get("fail"):
            _log("end", digest)
            raise RuntimeError(spec["fail"])
        _log("end", digest)
        return b"result:" + data
