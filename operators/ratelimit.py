"""Operator rate limits in SMS segments per second, shared by every worker through Redis (invariant 5).

A sliding-window log, not a classic token bucket: a bucket that holds one second of tokens lets up to two
seconds' worth through in a single one-second window (a full bucket plus the refill), and the contract is
that the limit holds over *any* window of a second. Each grant is stored in a sorted set scored by the
Redis server clock (so workers on different machines agree); a request of `cost` segments is granted only
when the grants of the last window (WINDOW_SECONDS, below) plus `cost` fit in the limit, atomically inside one
Lua script.

A batch that costs more than one second's allowance can never fit (fan-out sizes batches to fit, and the send
task splits one written before the limit was lowered, so this is a single long message or a batch already
tried whole). It is granted when the window is empty, and then the whole limiter is blocked for
`cost / limit` seconds, so the average rate still holds and such a batch waits in proportion to its size;
only the one second in which it is sent exceeds the limit, by that single batch.

The window counted is WINDOW_SECONDS, a little longer than a second: a grant reaches the operator a moment after
it is made, and that moment varies (a worker descheduled on a busy machine, a slow connection). Counting exactly one
second, a batch granted just before a second's end and delayed past it would arrive in the same second of the
operator's clock as the next second's grants: two seconds' worth in one. With the margin, a delay of up to its
margin never does that; the price is that a rate-limited operator gets at most 1 / WINDOW_SECONDS (about 91%) of
its limit on average.

Redis may lose the log (a flush, a restart without persistence, an eviction): the grants of the second before
would then be forgotten and the same second granted again. The key `STATE_KEY` has no expiry and goes with
them; when a request finds it missing, every operator waits one window before anything is granted, so no
window of a second holds grants from both sides of the loss. A Redis used for the first time costs that wait once.
"""

import time
import uuid
from functools import cache

import redis
from django.conf import settings

# The span over which grants may add up to the limit: a second plus a margin for the time a granted batch takes to
# reach the operator (see above).
WINDOW_SECONDS = 1.1
# Holds the moment (Redis clock) until which every operator waits after the limiter's state was lost.
STATE_KEY = "smsblast:rate:held_until"

_ACQUIRE = """
local log_key = KEYS[1]
local blocked_key = KEYS[2]
local state_key = KEYS[3]
local cost = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local member = ARGV[3]
local window = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local held = redis.call('GET', state_key)
if not held then
  -- The grants of the last window may be gone with this key: grant nothing for one window.
  held = now + window
  redis.call('SET', state_key, tostring(held))
end
held = tonumber(held)
if held > now then
  return {0, tostring(held - now), tostring(now)}
end
local blocked = tonumber(redis.call('GET', blocked_key) or '0')
if blocked > now then
  return {0, tostring(blocked - now), tostring(now)}
end
redis.call('ZREMRANGEBYSCORE', log_key, '-inf', now - window)
local entries = redis.call('ZRANGE', log_key, 0, -1, 'WITHSCORES')
local used = 0
for i = 1, #entries, 2 do
  used = used + tonumber(string.match(entries[i], ':(%d+)$'))
end
if cost > limit then
  if used > 0 then
    return {0, tostring(tonumber(entries[#entries]) + window - now), tostring(now)}
  end
  redis.call('SET', blocked_key, tostring(now + cost / limit), 'PX', math.ceil(cost * 1000 / limit) + 1000)
elseif used + cost > limit then
  -- Wait until enough of the oldest grants leave the window.
  local freed = 0
  for i = 1, #entries, 2 do
    freed = freed + tonumber(string.match(entries[i], ':(%d+)$'))
    if used - freed + cost <= limit then
      return {0, tostring(tonumber(entries[i + 1]) + window - now), tostring(now)}
    end
  end
  return {0, tostring(window), tostring(now)}
end
redis.call('ZADD', log_key, now, member .. ':' .. cost)
redis.call('PEXPIRE', log_key, math.ceil(window * 1000) + 1000)
return {1, '0', tostring(now)}
"""


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def redis_client() -> redis.Redis:
    """Return the shared Redis client of `settings.REDIS_URL` (a pool per URL, safe across forks)."""
    return _client(settings.REDIS_URL)


class RateLimiter:
    """The segments-per-second limit of one operator, shared through Redis."""

    def __init__(self, slug: str, *, limit: int, client: redis.Redis | None = None):
        self.slug = slug
        self.limit = limit
        self.client = client or redis_client()
        self._script = self.client.register_script(_ACQUIRE)

    @property
    def keys(self) -> list[str]:
        return [f"smsblast:rate:{self.slug}:log", f"smsblast:rate:{self.slug}:blocked", STATE_KEY]

    def try_acquire(self, cost: int) -> tuple[bool, float, float]:
        """Try to take `cost` segments now; return (granted, seconds to wait, Redis server time)."""
        if self.limit <= 0 or cost <= 0:
            # A limit of 0 means the operator set none.
            return True, 0.0, time.time()
        granted, wait, now = self._script(
            keys=self.keys, args=[int(cost), int(self.limit), uuid.uuid4().hex, WINDOW_SECONDS]
        )
        return bool(granted), float(wait), float(now)

    def acquire(self, cost: int, *, timeout: float) -> float | None:
        """Block until `cost` segments are granted; return the grant's server time, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            granted, wait, now = self.try_acquire(cost)
            if granted:
                return now
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            # Never sleep to the exact edge: another worker may take the freed room first anyway.
            time.sleep(min(max(wait, 0.001), remaining))
