"""GET /healthz: what a reverse proxy or orchestrator polls to know the web process can serve."""

import socket
import threading

import pytest
from django.db import connection
from django.test import Client

from campaigns.tasks import reconcile_dispatch
from smsblast.devtools import free_port
from smsblast.health import RECONCILED_KEY, RECONCILER_LATE_SECONDS
from tests.conftest import start_redis_server

pytestmark = pytest.mark.django_db


@pytest.fixture
def probe(settings, redis_url, redis_client):
    """A client with no session, as a prober is, against the session's real Redis."""
    settings.REDIS_URL = settings.CELERY_BROKER_URL = redis_url
    return Client()


def test_healthz_answers_ok_to_a_stranger_without_session_or_cookie(probe):
    response = probe.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "redis": "ok", "reconciler": "late"}
    assert response["Cache-Control"] == "no-store"
    assert not response.cookies
    assert probe.head("/healthz").status_code == 200


def test_healthz_answers_503_naming_a_broker_of_its_own_that_cannot_be_reached(probe, settings, redis_url):
    # REDIS_URL answers, but the tasks go to another Redis that is down: nothing would be queued.
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = probe.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "redis": "ok", "reconciler": "late", "broker": "down"}
    assert settings.CELERY_BROKER_URL not in response.content.decode()
    settings.CELERY_BROKER_URL = redis_url.replace("/0", "/1")  # the same server, another database: answers
    response = probe.get("/healthz")
    assert response.status_code == 200
    assert response.json()["broker"] == "ok"


def test_healthz_is_answered_to_a_prober_over_plain_http_with_a_host_of_its_own(probe, settings):
    # As in production: one public host name, HTTPS enforced by redirect; the orchestrator probes the address.
    settings.ALLOWED_HOSTS = ["sms.blitarkab.go.id"]
    settings.SECURE_SSL_REDIRECT = True

    assert probe.get("/healthz", HTTP_HOST="10.0.0.7:8000").status_code == 200
    assert probe.get("/login/", HTTP_HOST="10.0.0.7:8000").status_code == 400


def test_healthz_answers_503_naming_redis_once_it_stopped(probe, settings, tmp_path):
    port = free_port()
    server = start_redis_server(port, tmp_path)
    settings.REDIS_URL = settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"
    try:
        assert probe.get("/healthz").json()["redis"] == "ok"
    finally:
        server.terminate()
        server.wait(timeout=10)

    response = probe.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"database": "ok", "redis": "down", "reconciler": "unknown"}


def test_healthz_answers_503_naming_redis_at_an_address_nothing_listens_on(probe, settings):
    settings.REDIS_URL = settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"

    response = probe.get("/healthz")

    assert response.status_code == 503
    assert response.json()["redis"] == "down"
    assert str(settings.REDIS_URL) not in response.content.decode()


def test_healthz_shows_the_reconciler_ok_after_its_pass_and_late_once_the_mark_lapses(
    probe, redis_client, private_broker
):
    reconcile_dispatch()

    assert probe.get("/healthz").json()["reconciler"] == "ok"
    assert 0 < redis_client.ttl(RECONCILED_KEY) <= RECONCILER_LATE_SECONDS
    redis_client.delete(RECONCILED_KEY)  # as after RECONCILER_LATE_SECONDS without a pass
    response = probe.get("/healthz")
    # Beat or the control queue's workers being down is reported, but the web process itself still serves.
    assert (response.status_code, response.json()["reconciler"]) == (200, "late")


@pytest.mark.django_db(transaction=True)
def test_healthz_answers_503_naming_the_database_when_it_cannot_be_reached(probe):
    if connection.vendor != "postgresql":
        pytest.skip("the in-memory SQLite test database cannot be made unreachable")
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = free_port()
    try:
        response = probe.get("/healthz")
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port

    assert response.status_code == 503
    assert response.json() == {"database": "down", "redis": "ok", "reconciler": "late"}


@pytest.mark.django_db(transaction=True)
def test_healthz_answers_503_naming_the_database_when_it_accepts_connections_but_never_answers(probe):
    if connection.vendor != "postgresql":
        pytest.skip("the in-memory SQLite test database cannot be made unreachable")
    # A database server that is stuck: the kernel completes the handshake, nothing ever answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = silent.getsockname()[1]
    answers = []
    prober = threading.Thread(target=lambda: answers.append(probe.get("/healthz")), daemon=True)
    try:
        prober.start()
        prober.join(timeout=30)
        answered_while_silent = not prober.is_alive()
    finally:
        silent.close()  # a probe still waiting then fails instead of holding the suite
        prober.join(timeout=10)
        connection.close()
        connection.settings_dict["PORT"] = port

    assert answered_while_silent, "the probe waited on the silent database"
    assert answers[0].status_code == 503
    assert answers[0].json()["database"] == "down"


@pytest.mark.django_db(transaction=True)  # outside the test's transaction, so the client really connects again
@pytest.mark.parametrize(
    "method, path",
    [("get", "/api/v1/campaigns/"), ("post", "/api/v1/operator/delivery-reports/")],
)
def test_the_api_answers_503_with_a_retry_after_while_the_database_cannot_be_reached(
    api_client_for, officer, operator_user, method, path
):
    if connection.vendor != "postgresql":
        pytest.skip("the in-memory SQLite test database cannot be made unreachable")
    client = api_client_for(operator_user if "operator" in path else officer)
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = free_port()
    try:
        response = (
            getattr(client, method)(path, {"reports": []}, format="json") if method == "post" else client.get(path)
        )
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port

    # An operator's client retries a 503 after Retry-After, as the contract asks of any 5xx.
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "database" in response.json()["detail"]
