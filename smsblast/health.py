"""The health check a reverse proxy or an orchestrator polls: `GET /healthz`.

It answers 200 when the web process reaches its database and Redis, 503 naming what it cannot reach:
`{"database": "ok", "redis": "down", "reconciler": "unknown"}`, and `broker` too when CELERY_BROKER_URL is a Redis
other than REDIS_URL. Cheap (`SELECT 1` and one command per Redis) and
nothing in it a stranger could use: no version, host name or error text.

`reconciler` says whether the dispatch reconciler ran in the last `RECONCILER_LATE_SECONDS`: beat sends it every
15 s to the `control` queue, so "late" means beat, or every process consuming `control`, is down. It does not
change the status code: restarting or unrouting the web server would not bring them back.
"""

import logging
from functools import cache

import redis
from django.conf import settings
from django.db import Error as DatabaseError
from django.db import connection
from django.http import JsonResponse

logger = logging.getLogger(__name__)

HEALTH_PATHS = ("/healthz", "/healthz/")
RECONCILED_KEY = "smsblast:health:reconciled"
# Four of the reconciler's 15-second passes (CELERY_BEAT_SCHEDULE): one late pass on busy workers is not an outage.
RECONCILER_LATE_SECONDS = 60
# Workers taking the default or an operator's queue mark themselves every WORKER_MARK_SECONDS (config/celery.py).
WORKER_KEY = "smsblast:health:dispatch_worker"
WORKER_MARK_SECONDS = 10
WORKER_LATE_SECONDS = 60
# A probe must answer within the prober's own timeout even when Redis hangs rather than refuses.
REDIS_TIMEOUT_SECONDS = 1.0


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS)


def health_mark_reconciled() -> None:
    """Note that the reconciler has just run; the mark lapses after RECONCILER_LATE_SECONDS."""
    try:
        _client(settings.REDIS_URL).set(RECONCILED_KEY, "1", ex=RECONCILER_LATE_SECONDS)
    except redis.RedisError as exc:
        logger.debug("Could not note the reconciler's pass: %s", exc)


def health_mark_dispatch_worker() -> None:
    """Note that a worker taking the sending queues is running; the mark lapses after WORKER_LATE_SECONDS."""
    try:
        _client(settings.REDIS_URL).set(WORKER_KEY, "1", ex=WORKER_LATE_SECONDS)
    except redis.RedisError as exc:
        logger.debug("Could not note a running worker: %s", exc)


def health_dispatch_workers() -> str:
    """Return "ok" when a worker taking the sending queues marked itself lately, "late" if none did, else "unknown"."""
    try:
        return "ok" if _client(settings.REDIS_URL).exists(WORKER_KEY) else "late"
    except redis.RedisError:
        return "unknown"


def health_status() -> dict[str, str]:
    """Return "ok" or "down" for the database, Redis and a broker of its own, and "ok", "late" or "unknown" for the
    reconciler."""
    status = {"database": "ok", "redis": "ok", "reconciler": "unknown"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        logger.warning("Health check: the database cannot be reached: %s", exc)
        status["database"] = "down"
    try:
        # The mark's remaining time, read from Redis's own clock: no skew between the web and worker machines.
        remaining = _client(settings.REDIS_URL).ttl(RECONCILED_KEY)
    except redis.RedisError as exc:
        logger.warning("Health check: Redis cannot be reached: %s", exc)
        status["redis"] = "down"
    else:
        status["reconciler"] = "ok" if remaining > 0 else "late"
    broker = settings.CELERY_BROKER_URL
    if broker != settings.REDIS_URL and broker.startswith(("redis://", "rediss://", "unix://")):
        # A broker of its own: with it down nothing is queued, though REDIS_URL answers.
        try:
            _client(broker).ping()
            status["broker"] = "ok"
        except redis.RedisError as exc:
            logger.warning("Health check: the Celery broker cannot be reached: %s", exc)
            status["broker"] = "down"
    return status


class HealthCheckMiddleware:
    """Answer `GET /healthz` before any other middleware: no session, log-in, CSRF, host check or HTTPS redirect.

    A proxy or orchestrator probes the app server directly, over plain HTTP and with a Host of its own (an
    address), which SecurityMiddleware would redirect to HTTPS and ALLOWED_HOSTS refuse.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info not in HEALTH_PATHS or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        status = health_status()
        down = "down" in (status["database"], status["redis"], status.get("broker"))
        response = JsonResponse(status, status=503 if down else 200)
        response["Cache-Control"] = "no-store"
        return response
