"""Django's request log, without the answers the API gives on purpose.

Django logs every answer of 400 or more on ``django.request``: 4xx at WARNING, 5xx at
ERROR. Most of ours are refusals the API means to give: a 503 for each submission while
the scheduler is closed, a 429, an unknown task's 404, a readiness 503 while a pod
stops. Logged at ERROR, a rollout or a closed scheduler under retrying clients fills
the log with errors nobody must act on. gunicorn's access log already lists each answer
with its status, and the scheduler logs once what caused them (closing, the queue
bound). What stays is what someone must look at: a 500, and any other 5xx.
"""

from __future__ import annotations

import logging

# The 5xx the API answers on purpose: a closed scheduler, a replica not ready.
REFUSAL_STATUSES = frozenset({503})


class AnswersGivenOnPurpose(logging.Filter):
    """Drops ``django.request``'s lines about 4xx answers and the 503 refusals."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if not isinstance(status, int):
            return True
        return status >= 500 and status not in REFUSAL_STATUSES
