"""Settings shared by development and production.

Every setting of the scheduler is read here, once, from the environment variable of the
same name; the default follows it. ``development`` (the package itself) and
``production`` build on this module.
"""

from __future__ import annotations

import builtins
import math
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
DATA_DIR = Path(environ.Env().str("SCHEDULER_DATA_DIR", default=str(BASE_DIR / "data")))


def _strict_number(raw: str, var: str, kind: type[int] | type[float]) -> int | float:
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{var}={raw!r} is not {what}") from None
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{var}={raw!r} must be finite")
    return value


class _Environment(environ.Env):
    """django-environ, with numbers read strictly.

    Its own float reader keeps only the characters it recognises, so ``1e4`` read as
    14 (a time limit of 14 s instead of 10,000), ``2h`` as 2 and ``0x10`` as 10, and
    ``nan`` failed as a bare ValueError about an empty string. A number here is what
    Python's ``int()`` or ``float()`` reads, finite, or the process does not start.
    """

    def int(self, var: str, default: object = environ.Env.NOTSET) -> builtins.int:
        raw = self._raw(var, default)
        return default if raw is None else int(_strict_number(raw, var, int))  # type: ignore[return-value]

    def float(self, var: str, default: object = environ.Env.NOTSET) -> builtins.float:
        raw = self._raw(var, default)
        return default if raw is None else float(_strict_number(raw, var, float))  # type: ignore[return-value]

    def _raw(self, var: str, default: object) -> str | None:
        """The variable's text, or ``None`` when unset and ``default`` stands in."""
        raw = self.ENVIRON.get(var)
        if raw is None and isinstance(default, environ.NoValue):
            raise ImproperlyConfigured(f"set the environment variable {var}")
        return raw


env = _Environment()

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="development-only-not-secret")
DEBUG = False
ALLOWED_HOSTS: list[str] = env.list("DJANGO_ALLOWED_HOSTS", default=["*"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "tasks_app",
]

MIDDLEWARE = [
    # Outermost, so that it drops the body of every answer to a HEAD, redirects and
    # JSON errors included, after CommonMiddleware has given it its Content-Length.
    "tasks_app.api.head.HeadWithoutBodyMiddleware",
    # Before every middleware that asks for the Host (SecurityMiddleware's redirect,
    # CommonMiddleware): a refused one is a JSON 400, with DEBUG on too.
    "tasks_app.api.middleware.RefusedHostMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Django's own 404 and 405 answers in the API's JSON error shape. Innermost, so
    # that CommonMiddleware still sees a 404 and can append a slash.
    "tasks_app.api.middleware.JsonErrorMiddleware",
]

ROOT_URLCONF = "scheduler_project.urls"
WSGI_APPLICATION = "scheduler_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


# --- Database -------------------------------------------------------------------------
# DATABASE_URL, e.g. postgres://user@127.0.0.1:5432/db; default: SQLite in DATA_DIR.


def _database(lease_seconds: float) -> dict[str, object]:
    if "DATABASE_URL" not in env:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "db.sqlite3"),
            # Several processes (web, gRPC, worker) write one file: WAL lets readers go on
            # during a write, IMMEDIATE takes the write lock at BEGIN so that two writers
            # queue instead of failing at upgrade, and the timeout is how long they queue.
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    database = env.db_url("DATABASE_URL")
    if database["ENGINE"] == "django.db.backends.postgresql":
        database["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
        database["CONN_HEALTH_CHECKS"] = True
        database["OPTIONS"] = _postgres_session_limits(
            dict(database.get("OPTIONS", {})), lease_seconds
        )
    return database


def _postgres_session_limits(
    options: dict[str, object], lease_seconds: float
) -> dict[str, object]:
    """Limits that keep one lost or frozen client from holding up the others.

    The server ends a session that sits in an open transaction for a third of a lease
    (a process frozen or cut off between two statements): its locks (the slot lock,
    a task's row) would otherwise hold up every claim, and stall the renewals of the
    workers whose finishing tasks wait on them, until their fences kill their pools.
    TCP keepalives and a user timeout end a connection whose server stopped answering
    (a black-holed link) in about a minute instead of the kernel's fifteen. Options of
    the URL's own (``?options=-c ...``) come after ours, so they win.
    """
    idle_ms = max(1000, int(lease_seconds * 1000 / 3))
    ours = f"-c idle_in_transaction_session_timeout={idle_ms}"
    theirs = str(options.get("options", "")).strip()
    return {
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": 60_000,
        **options,
        "options": f"{ours} {theirs}".strip(),
    }


DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"


# --- The scheduler ----------------------------------------------------------------------

# SCHEDULER_PROCESSOR: "package.module:ClassName", built with no arguments.
SCHEDULER_PROCESSOR = env.str(
    "SCHEDULER_PROCESSOR", default="tasks_app.processors:ThumbnailProcessor"
)
# SCHEDULER_COMMAND: program and arguments of CommandProcessor, shell-split.
SCHEDULER_COMMAND = env.str("SCHEDULER_COMMAND", default="")
# SCHEDULER_NUM_WORKERS: the cap on concurrent process() calls across every replica.
SCHEDULER_NUM_WORKERS = env.int("SCHEDULER_NUM_WORKERS", default=2)
# SCHEDULER_QUEUE_SIZE: the most tasks that may be queued at once.
SCHEDULER_QUEUE_SIZE = env.int("SCHEDULER_QUEUE_SIZE", default=1000)
# SCHEDULER_MAX_REQUEST_BYTES: the largest request accepted over HTTP and gRPC.
SCHEDULER_MAX_REQUEST_BYTES = env.int(
    "SCHEDULER_MAX_REQUEST_BYTES", default=64 * 1024 * 1024
)
# SCHEDULER_TASK_TIME_LIMIT: seconds one process() call may run before its task is error.
SCHEDULER_TASK_TIME_LIMIT = env.float("SCHEDULER_TASK_TIME_LIMIT", default=3600.0)
# SCHEDULER_LEASE_SECONDS: a dead worker's slot and task come back within this plus 2 s.
SCHEDULER_LEASE_SECONDS = env.float("SCHEDULER_LEASE_SECONDS", default=15.0)
# SCHEDULER_MAX_ATTEMPTS: a task whose worker died this many times ends in error.
SCHEDULER_MAX_ATTEMPTS = env.int("SCHEDULER_MAX_ATTEMPTS", default=3)
# SCHEDULER_ACCEPTING: false holds this replica closed, whatever the shared state says.
SCHEDULER_ACCEPTING = env.bool("SCHEDULER_ACCEPTING", default=True)
# SCHEDULER_GRPC_PORT: the port of `manage.py rungrpc`.
SCHEDULER_GRPC_PORT = env.int("SCHEDULER_GRPC_PORT", default=50051)
# SCHEDULER_RETENTION_DAYS: finished tasks older than this are deleted; 0 keeps them.
SCHEDULER_RETENTION_DAYS = env.int("SCHEDULER_RETENTION_DAYS", default=0)
# SCHEDULER_RECONCILE_INTERVAL: seconds between two passes of each worker's reconciler.
SCHEDULER_RECONCILE_INTERVAL = env.float("SCHEDULER_RECONCILE_INTERVAL", default=1.0)
# SCHEDULER_MAX_RESULT_BYTES: a larger result is not stored and its task is error.
SCHEDULER_MAX_RESULT_BYTES = env.int(
    "SCHEDULER_MAX_RESULT_BYTES", default=256 * 1024 * 1024
)
# SCHEDULER_RATE_LIMIT: requests per token, counted across every process, such as
# "100/s" or "6000/m" ("a;b" for several); "off" for none. Only tokens are limited, so
# with authentication off nothing is.
SCHEDULER_RATE_LIMIT = env.str("SCHEDULER_RATE_LIMIT", default="100/s")
# SCHEDULER_GRPC_TLS_CERT and SCHEDULER_GRPC_TLS_KEY: PEM files; with both, gRPC
# serves TLS only. Neither: plaintext, for a mesh or an ingress that terminates TLS.
SCHEDULER_GRPC_TLS_CERT = env.str("SCHEDULER_GRPC_TLS_CERT", default="")
SCHEDULER_GRPC_TLS_KEY = env.str("SCHEDULER_GRPC_TLS_KEY", default="")

# CommandProcessor's sandbox, for each call of the command:
# SCHEDULER_COMMAND_ENV_ALLOW: the only environment variables it sees, comma-separated.
SCHEDULER_COMMAND_ENV_ALLOW: list[str] = env.list(
    "SCHEDULER_COMMAND_ENV_ALLOW", default=["PATH", "LANG"]
)
# SCHEDULER_COMMAND_CPU_SECONDS: CPU time (RLIMIT_CPU); 0 for no limit but the time limit.
SCHEDULER_COMMAND_CPU_SECONDS = env.int("SCHEDULER_COMMAND_CPU_SECONDS", default=0)
# SCHEDULER_COMMAND_MEMORY_BYTES: address space (RLIMIT_AS); 0 for no limit.
SCHEDULER_COMMAND_MEMORY_BYTES = env.int("SCHEDULER_COMMAND_MEMORY_BYTES", default=0)

# The database's session limits follow the lease (see _postgres_session_limits).
DATABASES = {"default": _database(SCHEDULER_LEASE_SECONDS)}

# Django must not refuse a body that the scheduler would accept: the API checks the size
# itself and answers 413, so Django's own limit sits just above ours.
DATA_UPLOAD_MAX_MEMORY_SIZE = SCHEDULER_MAX_REQUEST_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE


# --- Celery -----------------------------------------------------------------------------
# CELERY_BROKER_URL, e.g. redis://127.0.0.1:6379/0; default: kombu's filesystem transport,
# which needs no server and has the fanout that Flower and `celery inspect` use.

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _BROKER_DIR = DATA_DIR / "broker"
    for _folder in ("queue", "processed", "control"):
        (_BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "store_processed": False,
        "control_folder": str(_BROKER_DIR / "control"),
    }
else:
    # CELERY_BROKER_TRANSPORT_OPTIONS: JSON merged over these. A redelivery after the
    # visibility timeout is harmless (a task under a live lease, or finished, runs
    # nothing), so the timeout only bounds how long a message sits unacknowledged.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": 3600,
        # A Redis that stops answering (frozen, a black-holed network) must not hold a
        # submission, a readiness probe or a lease keeper's publish forever: the
        # reconciler publishes again whatever could not be published in time. Longer
        # than a consumer's blocking read (1 s), so that idle workers never time out.
        "socket_timeout": 3,
        "socket_connect_timeout": 3,
        **env.json("CELERY_BROKER_TRANSPORT_OPTIONS", default={}),
    }
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Late acknowledgement with a prefetch of one: a worker holds no more messages than it
# has processes, and a message is only gone from the broker once its run ended. A dead
# pool child's message is acknowledged anyway (no reject-on-lost, which loops a poison
# request forever); the lease expiry brings such a task back, not the broker.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CONCURRENCY = SCHEDULER_NUM_WORKERS
CELERY_WORKER_SEND_TASK_EVENTS = True
# Task events are published after the task has started, not before it reaches a pool
# process (tasks_app/worker_events.py).
CELERY_WORKER_CONSUMER = "tasks_app.worker_events:Consumer"
# No task-sent event: it is a second Redis publish on every admission, for Flower's
# "pending" state only; the worker's own events (received, started, succeeded) remain.
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A publish that fails leaves its task queued in the database, where the reconciler finds
# it: so fail fast rather than hold an HTTP request for the default retry budget.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# Celery closes Django's connections around every task unless this is set: one new
# PostgreSQL connection per task otherwise.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)


# --- Logging ----------------------------------------------------------------------------
# LOG_FORMAT: text or json.

LOG_FORMAT = env.str("LOG_FORMAT", default="text")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
            },
        },
    },
    "filters": {
        "answers_given_on_purpose": {
            "()": "tasks_app.api.request_log.AnswersGivenOnPurpose"
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "tasks_app": {"level": LOG_LEVEL},
        "scheduler_project": {"level": LOG_LEVEL},
        # Refusals are answers, not errors: gunicorn's access log has each of them.
        "django.request": {"filters": ["answers_given_on_purpose"]},
    },
}

# SCHEDULER_WORKER_HEARTBEAT_FILE: a file each worker's lease keeper touches every tick,
# for a liveness probe that costs no broker round trip; empty for none.
SCHEDULER_WORKER_HEARTBEAT_FILE = env.str("SCHEDULER_WORKER_HEARTBEAT_FILE", default="")
# SCHEDULER_METRICS_PORT: the port on which a worker's main process serves the counters
# of its pool processes (Prometheus text); 0 serves none. PROMETHEUS_MULTIPROC_DIR,
# read by prometheus-client itself, must be set too for those of the pool processes.
SCHEDULER_METRICS_PORT = env.int("SCHEDULER_METRICS_PORT", default=0)
