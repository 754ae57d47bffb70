"""The shared segments-per-second limiter against a real Redis server."""

import threading

import pytest

from operators.ratelimit import WINDOW_SECONDS, RateLimiter


def _max_in_any_second(grants: list[tuple[float, int]]) -> int:
    """Return the most segments granted within any window of one second (grants as (time, cost))."""
    grants = sorted(grants)
    worst = 0
    for i, (start, _cost) in enumerate(grants):
        worst = max(worst, sum(cost for at, cost in grants[i:] if at < start + 1))
    return worst


def test_two_threads_never_exceed_the_limit_in_any_second(redis_client):
    limit = 50
    grants: list[tuple[float, int]] = []
    lock = threading.Lock()

    def send(costs):
        limiter = RateLimiter("telkomsel", limit=limit, client=redis_client)
        for cost in costs:
            granted_at = limiter.acquire(cost, timeout=10)
            assert granted_at is not None
            with lock:
                grants.append((granted_at, cost))

    # 2 × 60 segments at 50/s: about 2.4 seconds of sending, every grant timed by the Redis clock.
    threads = [threading.Thread(target=send, args=([3, 7, 10, 5, 5] * 2,)) for _ in range(2)]
    threads += [threading.Thread(target=send, args=([1] * 20,))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(cost for _, cost in grants) == 140
    assert len(grants) == 40
    assert _max_in_any_second(grants) <= limit
    # The limiter lets the full rate through, not a trickle.
    assert _max_in_any_second(grants) > limit // 2


def test_a_request_over_the_limit_waits_until_the_window_frees(redis_client):
    limiter = RateLimiter("xl", limit=10, client=redis_client)
    assert limiter.try_acquire(8)[0]
    granted, wait, _ = limiter.try_acquire(5)
    assert not granted
    assert 0 < wait <= WINDOW_SECONDS
    assert limiter.try_acquire(2)[0]


def test_a_batch_larger_than_one_second_goes_alone_and_blocks_in_proportion(redis_client):
    limiter = RateLimiter("smartfren", limit=10, client=redis_client)
    first = limiter.acquire(25, timeout=5)
    assert first is not None
    granted, wait, now = limiter.try_acquire(1)
    assert not granted
    # 25 segments at 10/s keep the operator busy for 2.5 seconds from the grant, however long this took to ask.
    assert 0 < wait <= 2.5
    assert now + wait == pytest.approx(first + 2.5, abs=0.001)


def test_a_batch_larger_than_one_second_waits_until_the_window_holds_no_other_grant(redis_client):
    limiter = RateLimiter("indosat", limit=10, client=redis_client)
    assert limiter.try_acquire(4)[0]
    # Granted now, 4 + 25 segments would go out in one second.
    granted, wait, _ = limiter.try_acquire(25)
    assert not granted
    assert 0 < wait <= WINDOW_SECONDS


def test_grants_a_full_window_apart_never_share_a_second_at_the_operator_despite_a_late_arrival(redis_client):
    limiter = RateLimiter("telkomsel", limit=10, client=redis_client)
    first = limiter.acquire(10, timeout=5)
    second = limiter.acquire(10, timeout=5)
    assert first is not None and second is not None
    # The first batch may reach the operator up to the margin late and still not share a second with the next.
    assert second - first >= WINDOW_SECONDS - 0.001
    assert WINDOW_SECONDS >= 1.05
    late_arrival = first + (WINDOW_SECONDS - 1) * 0.9
    assert _max_in_any_second([(late_arrival, 10), (second, 10)]) <= 10


def test_operators_have_separate_limits(redis_client):
    assert RateLimiter("a", limit=5, client=redis_client).try_acquire(5)[0]
    assert RateLimiter("b", limit=5, client=redis_client).try_acquire(5)[0]
    assert not RateLimiter("a", limit=5, client=redis_client).try_acquire(1)[0]


def test_no_limit_set_means_no_waiting(redis_client):
    limiter = RateLimiter("free", limit=0, client=redis_client)
    assert all(limiter.try_acquire(1000)[0] for _ in range(5))


def test_the_limit_holds_over_a_second_in_which_redis_lost_the_grants(redis_client):
    """A flush (or a restart without persistence) forgets the last second's grants: the next wait out a second."""
    limiter = RateLimiter("telkomsel", limit=10, client=redis_client)
    before = limiter.acquire(10, timeout=5)
    redis_client.flushdb()
    after = limiter.acquire(10, timeout=5)
    assert before is not None and after is not None
    assert _max_in_any_second([(before, 10), (after, 10)]) <= 10
