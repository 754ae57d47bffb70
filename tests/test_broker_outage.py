"""Requests that enqueue work while Redis, the broker, takes connections but never answers (a host gone silent).

The change is committed before its task is sent, and what was never enqueued is picked up again later: the request
must answer within seconds rather than hold a web thread for as long as the broker stays silent.
"""

import time

import pytest
import requests

from smsblast.authentication import api_token_create
from smsblast.models import SubscriberImport
from tests.conftest import celery_broker, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def silent_broker(settings, silent_redis_url):
    """Point Celery and Redis at an address whose connections are taken and never answered."""
    settings.REDIS_URL = silent_redis_url
    with celery_broker(settings, silent_redis_url):
        yield silent_redis_url


def test_a_subscriber_upload_is_answered_within_seconds_and_kept_pending_while_the_broker_never_answers(
    live_server, silent_broker, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path / "media"
    officer = make_user("officer-upload", "officer")
    headers = {"Authorization": f"Bearer {api_token_create(user=officer)}"}
    started = time.monotonic()
    response = requests.post(
        f"{live_server.url}/api/v1/subscribers/imports/",
        files={"file": ("list.csv", b"msisdn\n081234567890\n", "text/csv")},
        headers=headers,
        timeout=60,
    )

    assert response.status_code == 202, response.text
    assert time.monotonic() - started < 15
    assert SubscriberImport.objects.get(pk=response.json()["id"]).state == SubscriberImport.State.PENDING
