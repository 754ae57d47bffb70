"""Fixtures of the tests of the smsblast app."""

import pytest


@pytest.fixture
def throttled(settings, redis_client, redis_url):
    """Log-in throttling on, against the tests' Redis server: 3 wrong tries, then 10 minutes' wait."""
    settings.REDIS_URL = redis_url
    settings.LOGIN_FAILURES_ALLOWED = 3
    settings.LOGIN_LOCKOUT_SECONDS = 600
    return redis_client
