"""The two client processes of the large-request figure, each reporting its peak RSS.

``python -m bench.big_request submit SIZE`` submits SIZE random bytes through the
Scheduler; ``read UUID SHA256`` reads the result back through the storage and checks it;
``read-binary UUID SHA256`` reads it with a binary-format cursor instead (a proposal:
the storage reads bytea in text format, as hex, today).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time

import psutil


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _read_binary(uuid: str) -> tuple[str, bytes | None]:
    from django.db import connection

    connection.ensure_connection()
    with connection.connection.cursor(binary=True) as cursor:
        cursor.execute(
            "SELECT status, result FROM scheduler_task WHERE uuid = %s::uuid", [uuid]
        )
        status, result = cursor.fetchone()
    return status, result


def main() -> int:
    import django

    django.setup()
    from tasks_app.scheduler import get_scheduler

    command, *args = sys.argv[1:]
    rss_before = psutil.Process().memory_info().rss
    if command == "submit":
        request = os.urandom(int(args[0]))
        started = time.monotonic()
        uuid = get_scheduler().add_task(request)
        answer = {
            "uuid": str(uuid),
            "sha256": hashlib.sha256(request).hexdigest(),
            "seconds": round(time.monotonic() - started, 3),
        }
    else:
        uuid, digest = args
        if command == "read-binary":
            status, result = _read_binary(uuid)
        else:
            status, result = get_scheduler().storage.get_result(uuid)
        answer = {
            "status": str(status),
            "matches": result is not None
            and hashlib.sha256(result).hexdigest() == digest,
        }
    answer.update(rss_before=rss_before, peak_rss=_peak_rss())
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
