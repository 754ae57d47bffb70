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
from functools import cache

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

# A log-in waits on at most two throttle calls. With a Redis that takes connections and never answers,
# redis-py's defaults (5 s a call, retried) held every log-in for about 10 s; one second each, not retried,
# keeps it within about two while the throttle stands aside.
THROTTLE_TIMEOUT_SECONDS = 1


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=THROTTLE_TIMEOUT_SECONDS,
        socket_timeout=THROTTLE_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )


def redis_client() -> redis.Redis:
    """Return the throttle's Redis client of `settings.REDIS_URL`: short timeouts, no retries."""
    return _client(settings.REDIS_URL)


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


# What is counted: wrong passwords ("login"), or wrong second-factor codes ("two-factor"), each on its own, so that
# a right password never clears the count of wrong codes. "two-factor-anywhere" counts a user's wrong codes from
# every address together: only someone with the password reaches the code step, and spread over many addresses (a
# botnet, the addresses of one IPv6 network) the count of each would never stop the guessing.
SCOPES = ("login", "two-factor", "two-factor-anywhere")
# How many times LOGIN_FAILURES_ALLOWED a user's wrong codes from every address together may be.
ANYWHERE_FACTOR = 10


def _key(username: str, address: str, scope: str = "login") -> str:
    if scope not in SCOPES:
        raise ValueError(f"unknown log-in throttle scope {scope!r}")
    digest = hashlib.sha256(f"{username.strip().casefold()}\n{address}".encode()).hexdigest()[:32]
    return f"smsblast:{scope}-failures:{digest}"


# Take one attempt if fewer than ARGV[1] are counted, in one step, so guesses sent in parallel cannot all pass
# a check before any of them is counted. Answer 0 when taken, else the seconds the lock still holds.
_ATTEMPT_START = """
local count = redis.call('INCR', KEYS[1])
if count <= tonumber(ARGV[1]) then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 0
end
redis.call('DECR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl < 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return ttl
"""
# Give back an attempt that checked no wrong password.
_ATTEMPT_RELEASE = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  redis.call('DECR', KEYS[1])
end
return 0
"""


def _allowed(scope: str) -> int:
    return settings.LOGIN_FAILURES_ALLOWED * (ANYWHERE_FACTOR if scope == "two-factor-anywhere" else 1)


def login_attempt_start(*, username: str, address: str, scope: str = "login") -> int:
    """Count a log-in attempt before its password is checked; return 0, or the seconds to wait if none is left.

    The attempt counts as a failure until login_failures_clear (it succeeded) or login_attempt_release (it
    checked no password) says otherwise.
    """
    if settings.LOGIN_FAILURES_ALLOWED <= 0:
        return 0
    try:
        wait = redis_client().eval(
            _ATTEMPT_START,
            1,
            _key(username, address, scope),
            _allowed(scope),
            settings.LOGIN_LOCKOUT_SECONDS,
        )
    except redis.RedisError:
        logger.warning("Log-in throttle unavailable: Redis cannot be reached; log-in is not throttled.")
        return 0
    return max(int(wait), 0)


def login_attempt_release(*, username: str, address: str, scope: str = "login") -> None:
    """Give back an attempt taken by login_attempt_start that checked no password."""
    if settings.LOGIN_FAILURES_ALLOWED <= 0:
        return
    try:
        redis_client().eval(_ATTEMPT_RELEASE, 1, _key(username, address, scope))
    except redis.RedisError:
        logger.warning("Log-in throttle unavailable: an attempt was not given back.")


def login_failure_record(*, username: str, address: str, scope: str = "login") -> int:
    """Keep an attempt as a failure; the count lapses LOGIN_LOCKOUT_SECONDS after the last one. Return the count."""
    if settings.LOGIN_FAILURES_ALLOWED <= 0:
        return 0
    key = _key(username, address, scope)
    try:
        pipe = redis_client().pipeline()
        pipe.get(key)
        pipe.expire(key, settings.LOGIN_LOCKOUT_SECONDS)
        failures, _ = pipe.execute()
    except redis.RedisError:
        logger.warning("Log-in throttle unavailable: a failed log-in was not counted.")
        return 0
    failures = int(failures or 0)
    if failures == _allowed(scope):
        logger.warning(
            "Log-in locked for %s seconds after %s %s failures for username %r from %s.",
            settings.LOGIN_LOCKOUT_SECONDS,
            failures,
            scope,
            username,
            address,
        )
    return failures


def login_failures_clear(*, username: str, address: str, scope: str = "login") -> None:
    """Forget the failed log-ins of a username from an address, after it signed in."""
    if settings.LOGIN_FAILURES_ALLOWED <= 0:
        return
    try:
        redis_client().delete(_key(username, address, scope))
    except redis.RedisError:
        logger.warning("Log-in throttle unavailable: failed log-ins were not cleared.")
