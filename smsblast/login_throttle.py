"""Failed log-ins counted per username and client address in Redis, so password guessing stops after a few tries.

Keyed by the pair, not the username alone: a stranger guessing an approver's password must not be able to lock
the approver out during an emergency. The count lives in Redis so every web process sees it. When Redis cannot
be reached, log-in stays open (logged): officers must be able to sign in while a warning goes out.

Behind reverse proxies (production: gunicorn listens on the loopback only) every request comes from the
proxy's address, so the client is read from X-Forwarded-For: TRUSTED_PROXY_COUNT entries from its right,
the one the nearest trusted proxy appended. Entries further left are whatever the client sent.
"""

import hashlib
import logging

import redis
from django.conf import settings

from operators.ratelimit import redis_client

logger = logging.getLogger(__name__)


def client_address(request) -> str:
    """Return the address a request came from, as the outermost trusted proxy (or else the web server) saw it."""
    if request is None:
        return "unknown"
    hops = settings.TRUSTED_PROXY_COUNT
    if hops > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.META.get("REMOTE_ADDR") or "unknown"


def _key(username: str, address: str) -> str:
    digest = hashlib.sha256(f"{username.strip().casefold()}\n{address}".encode()).hexdigest()[:32]
    return f"smsblast:login-failures:{digest}"


def login_wait_seconds(*, username: str, address: str) -> int:
    """Return how many seconds this username must wait before trying from this address again (0: it may try)."""
    if settings.LOGIN_FAILURES_ALLOWED <= 0:
        return 0
    key = _key(username, address)
    try:
        pipe = redis_client().pipeline()
        pipe.get(key)
        pipe.ttl(key)
        failures, ttl = pipe.execute()
    except redis.RedisError:
        logger.warning("Log-in throttle unavailable: Redis cannot be reached; log-in is not throttled.")
        return 0
    if int(failures or 0) < settings.LOGIN_FAILURES_ALLOWED:
        return 0
    return max(int(ttl), 1)


def login_failure_record(*, username: str, address: str) -> int:
    """Count a failed log-in; the count lapses LOGIN_LOCKOUT_SECONDS after the last failure. Return the count."""
    if settings.LOGIN_FAILURES_ALLOWED <= 0:
        return 0
    key = _key(username, address)
    try:
        pipe = redis_client().pipeline()
        pipe.incr(key)
        pipe.expire(key, settings.LOGIN_LOCKOUT_SECONDS)
        failures, _ = pipe.execute()
    except redis.RedisError:
        logger.warning("Log-in throttle unavailable: a failed log-in was not counted.")
        return 0
    if failures == settings.LOGIN_FAILURES_ALLOWED:
        logger.warning(
            "Log-in locked for %s seconds after %s failures for username %r from %s.",
            settings.LOGIN_LOCKOUT_SECONDS,
            failures,
            username,
            address,
        )
    return int(failures)


def login_failures_clear(*, username: str, address: str) -> None:
    """Forget the failed log-ins of a username from an address, after it signed in."""
    if settings.LOGIN_FAILURES_ALLOWED <= 0:
        return
    try:
        redis_client().delete(_key(username, address))
    except redis.RedisError:
        logger.warning("Log-in throttle unavailable: failed log-ins were not cleared.")
