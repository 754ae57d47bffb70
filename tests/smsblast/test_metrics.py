"""GET /metrics: what a monitoring system scrapes, in the Prometheus text format, behind a bearer token."""

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun, DispatchBatch
from config.celery import app
from smsblast.models import Notification
from tests.campaigns.factories import CampaignFactory, CampaignRunFactory, DispatchBatchFactory
from tests.operators.factories import OperatorFactory
from tests.smsblast.factories import UserFactory

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-for-tests"
SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")


@pytest.fixture
def scraper(settings, redis_url, redis_client, private_broker):
    settings.REDIS_URL = redis_url
    settings.METRICS_TOKEN = TOKEN
    return Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


def scrape(client) -> dict[tuple[str, frozenset], float]:
    """Return the samples of a scrape keyed by metric name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in response.content.decode().splitlines():
        if line.startswith("#"):
            continue
        name, labels, value = SAMPLE.match(line).groups()
        pairs = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


def test_metrics_count_campaigns_runs_unsent_batches_and_unsent_emails(scraper):
    telkomsel, xl = OperatorFactory(slug="telkomsel"), OperatorFactory(slug="xl")
    CampaignFactory(status=Campaign.Status.DRAFT)
    run = CampaignRunFactory(status=CampaignRun.Status.SENDING)  # its campaign is sending
    DispatchBatchFactory.create_batch(2, run=run, operator=telkomsel, status=DispatchBatch.Status.PENDING)
    DispatchBatchFactory(run=run, operator=xl, status=DispatchBatch.Status.RETRY_WAIT)
    DispatchBatchFactory(run=run, operator=xl, status=DispatchBatch.Status.ACCEPTED)
    old = DispatchBatchFactory(run=run, operator=xl, status=DispatchBatch.Status.IN_FLIGHT)
    DispatchBatch.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    Notification.objects.create(user=UserFactory(), kind="campaign.submitted", subject="s", body="b")

    samples = scrape(scraper)

    assert samples[key("smsblast_up", part="database")] == 1
    assert samples[key("smsblast_up", part="redis")] == 1
    assert samples[key("smsblast_campaigns", status="draft")] == 1
    assert samples[key("smsblast_campaigns", status="sending")] == 1
    assert samples[key("smsblast_campaigns", status="cancelled")] == 0
    assert samples[key("smsblast_runs_unfinished", status="sending")] == 1
    assert samples[key("smsblast_batches_unsent", operator="telkomsel", status="pending")] == 2
    assert samples[key("smsblast_batches_unsent", operator="xl", status="retry_wait")] == 1
    assert samples[key("smsblast_batches_unsent", operator="xl", status="in_flight")] == 1
    assert key("smsblast_batches_unsent", operator="xl", status="accepted") not in samples
    assert 595 <= samples[key("smsblast_batch_oldest_unsent_seconds")] <= 3600
    assert samples[key("smsblast_notifications_unsent", status="ready")] == 1


def test_metrics_count_the_tasks_waiting_in_each_queue(scraper):
    OperatorFactory(slug="telkomsel")
    with app.connection_for_write() as broker:
        queue = broker.SimpleQueue("dispatch.telkomsel")
        queue.put({"batch": 1})
        queue.put({"batch": 2})
        queue.close()

    samples = scrape(scraper)

    assert samples[key("smsblast_queue_tasks", queue="dispatch.telkomsel")] == 2
    assert samples[key("smsblast_queue_tasks", queue="control")] == 0
    assert samples[key("smsblast_queue_tasks", queue="mail")] == 0
    assert key("smsblast_queue_tasks", queue="default") in samples


def test_metrics_without_the_token_answer_401_and_say_what_to_send(scraper):
    assert Client().get("/metrics").status_code == 401
    wrong = Client(HTTP_AUTHORIZATION="Bearer not-it").get("/metrics")
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    assert "METRICS_TOKEN" in wrong.content.decode()


def test_metrics_are_off_without_a_token_setting(settings):
    settings.METRICS_TOKEN = ""
    assert Client(HTTP_AUTHORIZATION="Bearer ").get("/metrics").status_code == 404


def test_metrics_are_answered_to_a_scraper_by_address_over_plain_http(scraper, settings):
    settings.ALLOWED_HOSTS = ["sms.blitarkab.go.id"]
    settings.SECURE_SSL_REDIRECT = True
    assert scraper.get("/metrics", HTTP_HOST="10.0.0.7:8000").status_code == 200


def test_metrics_say_redis_is_down_and_still_count_the_database(scraper, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    CampaignFactory(status=Campaign.Status.DRAFT)

    samples = scrape(scraper)

    assert samples[key("smsblast_up", part="redis")] == 0
    assert samples[key("smsblast_campaigns", status="draft")] == 1
    assert not [name for name, _labels in samples if name == "smsblast_queue_tasks"]


def test_a_scrape_finds_unsent_batches_and_emails_by_the_statuses_it_counts(scraper):
    # Named statuses, not the final ones excluded: the status indexes then find the few unsent among a year's rows,
    # where an exclusion reads the whole table on every scrape.
    DispatchBatchFactory(operator=OperatorFactory(slug="telkomsel"), status=DispatchBatch.Status.PENDING)
    with CaptureQueriesContext(connection) as queries:
        samples = scrape(scraper)
    tables = re.compile(r'FROM "(campaigns_dispatchbatch|smsblast_notification)"')
    reads = [query["sql"] for query in queries if tables.search(query["sql"])]
    assert len(reads) == 3
    assert not [sql for sql in reads if "NOT" in sql]
    assert samples[key("smsblast_batches_unsent", operator="telkomsel", status="pending")] == 1


def test_a_count_past_a_million_and_a_wait_of_weeks_are_written_exactly_not_rounded():
    from smsblast.metrics import metrics_text

    text = metrics_text(
        {
            "smsblast_queue_tasks": [({"queue": "mail"}, 1234567.0)],
            "smsblast_batch_oldest_unsent_seconds": [({}, 1234567.891)],
        }
    )

    assert 'smsblast_queue_tasks{queue="mail"} 1234567\n' in text
    assert "smsblast_batch_oldest_unsent_seconds 1234567.891\n" in text


def test_metrics_say_whether_a_worker_that_fans_out_and_sends_is_running(scraper):
    from smsblast.health import health_mark_dispatch_worker

    assert scrape(scraper)[key("smsblast_up", part="workers")] == 0  # none marked itself: runs would not move
    health_mark_dispatch_worker()  # as a running worker does every few seconds
    assert scrape(scraper)[key("smsblast_up", part="workers")] == 1


def test_the_oldest_unsent_batch_counts_only_batches_that_could_be_sent_now(scraper):
    telkomsel = OperatorFactory(slug="telkomsel")
    now = timezone.now()
    hour_ago = now - timedelta(hours=1)
    paused = CampaignRunFactory(status=CampaignRun.Status.PAUSED)
    quiet = CampaignRunFactory(status=CampaignRun.Status.SENDING)
    local = timezone.localtime(now, ZoneInfo("Asia/Jakarta"))
    quiet_hours = {"start": f"{(local.hour - 1) % 24:02d}:00", "end": f"{(local.hour + 2) % 24:02d}:00"}
    CampaignRun.objects.filter(pk=quiet.pk).update(
        frozen={**quiet.frozen, "quiet_hours": quiet_hours, "quiet_zones": ["Asia/Jakarta"]}
    )
    sending = CampaignRunFactory(status=CampaignRun.Status.SENDING)
    held = [
        DispatchBatchFactory(run=paused, operator=telkomsel),  # paused by an officer
        DispatchBatchFactory(run=quiet, operator=telkomsel),  # in its quiet hours
        # waiting out a retry's backoff or an operator's Retry-After
        DispatchBatchFactory(
            run=sending,
            operator=telkomsel,
            status=DispatchBatch.Status.RETRY_WAIT,
            next_attempt_at=now + timedelta(minutes=5),
        ),
    ]
    DispatchBatch.objects.filter(pk__in=[b.pk for b in held]).update(created_at=hour_ago)
    assert scrape(scraper)[key("smsblast_batch_oldest_unsent_seconds")] == 0

    # A retry that fell due two minutes ago and nobody sent: it has waited two minutes, not the hour since written.
    late = DispatchBatchFactory(
        run=sending,
        operator=telkomsel,
        status=DispatchBatch.Status.RETRY_WAIT,
        next_attempt_at=now - timedelta(minutes=2),
    )
    DispatchBatch.objects.filter(pk=late.pk).update(created_at=hour_ago)
    assert 115 <= scrape(scraper)[key("smsblast_batch_oldest_unsent_seconds")] <= 600
    assert scrape(scraper)[key("smsblast_batches_unsent", operator="telkomsel", status="pending")] == 2
