"""Pull mode as an operator integrating from the schema reads it: what each field means and each answer says."""

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from campaigns import dispatch
from campaigns.models import CampaignRun, Delivery, DispatchBatch
from operators import services
from operators.gateways.http_batch_v1 import batch_body
from tests.operators.scripted import ScriptedAdapter, fanned_out_world
from tests.schema_check import answer_mismatches

pytestmark = pytest.mark.django_db

LIST_PATH = "/api/v1/operator/batches/"
CLAIM_PATH = "/api/v1/operator/batches/{batch_id}/claim/"
ACK_PATH = "/api/v1/operator/batches/{batch_id}/ack/"


@pytest.fixture(autouse=True)
def dispatch_redis(settings, redis_client, redis_url, private_broker):
    settings.REDIS_URL = redis_url
    ScriptedAdapter.reset()


@pytest.fixture
def schema(officer, api_client_for):
    return api_client_for(officer).get("/api/v1/schema/", {"format": "json"}).json()


@pytest.fixture
def pulling(api_client_for):
    """tsel in pull mode with its one batch of 3 recipients, of a run whose text takes 2 segments."""
    world = fanned_out_world(api_client_for)
    CampaignRun.objects.filter(pk=world["run"].pk).update(segments=2)
    (batch,) = DispatchBatch.objects.filter(operator=world["operators"]["tsel"])
    DispatchBatch.objects.filter(pk=batch.pk).update(segments=batch.size * 2)
    operator = world["operators"]["tsel"]
    operator.adapter = services.PULL_ADAPTER
    operator.save()
    return world["clients"]["tsel"], batch


def _ready_row(client, batch) -> dict:
    (row,) = client.get(LIST_PATH, {"state": "ready"}).json()["results"]
    assert row["batch_id"] == str(batch.pk)
    return row


def test_segments_mean_per_message_in_the_list_the_claim_and_the_push_body_and_the_list_adds_the_total(pulling):
    client, batch = pulling
    row = _ready_row(client, batch)
    claimed = client.post(f"/api/v1/operator/batches/{batch.pk}/claim/").json()
    leased = DispatchBatch.objects.select_related("run", "operator").get(pk=batch.pk)
    pushed = batch_body(services.batch_outbound(leased))

    assert claimed["segments"] == 2
    assert row["segments"] == 2
    assert row["total_segments"] == 6 == row["size"] * row["segments"]
    assert b'"segments":2,' in pushed


def test_the_schema_documents_segments_per_message_and_the_lists_total(schema):
    page = schema["components"]["schemas"]["ReadyBatchPage"]
    row = schema["components"]["schemas"][page["properties"]["results"]["items"]["$ref"].rsplit("/", 1)[1]]
    claimed = schema["components"]["schemas"]["ClaimedBatch"]

    assert "per message" in row["properties"]["segments"]["description"]
    assert "per message" in claimed["properties"]["segments"]["description"]
    assert "total_segments" in row["required"]


def test_a_claim_says_when_its_lease_lapses_and_answers_as_documented(pulling, schema, settings):
    client, batch = pulling
    before = timezone.now()

    claimed = client.post(f"/api/v1/operator/batches/{batch.pk}/claim/")

    assert answer_mismatches(schema, CLAIM_PATH, "post", claimed) == []
    lapses = datetime.fromisoformat(claimed.json()["lease_expires_at"])
    assert before + timedelta(seconds=settings.DISPATCH_LEASE_SECONDS) <= lapses
    assert lapses <= timezone.now() + timedelta(seconds=settings.DISPATCH_LEASE_SECONDS)
    batch.refresh_from_db()
    assert lapses == batch.lease_expires_at


def test_an_ack_answers_the_count_it_recorded_and_a_repeat_answers_the_first_one(pulling, schema):
    client, batch = pulling
    claimed = client.post(f"/api/v1/operator/batches/{batch.pk}/claim/")
    mine = client.post(f"/api/v1/operator/batches/{batch.pk}/claim/")  # already claimed: the same claim again
    assert mine.json() == claimed.json()
    first_id = str(Delivery.objects.filter(batch_id=batch.pk).order_by("pk").first().pk)
    url = f"/api/v1/operator/batches/{batch.pk}/ack/"

    acked = client.post(url, {"rejected": [{"message_id": first_id, "reason": "barred"}]}, format="json")
    again = client.post(url, {"rejected": []}, format="json")

    assert acked.json() == {"batch_id": str(batch.pk), "status": "accepted", "accepted": 2}
    assert again.json() == {"batch_id": str(batch.pk), "status": "accepted", "accepted": 2}
    assert answer_mismatches(schema, ACK_PATH, "post", acked) == []


def test_an_ack_of_a_batch_failed_past_its_validity_after_its_claim_says_so_rather_than_to_claim_it(pulling):
    client, batch = pulling
    client.post(f"/api/v1/operator/batches/{batch.pk}/claim/")
    dispatch.dispatch_reconcile(now=timezone.now() + timedelta(hours=2))  # the run was valid for an hour
    assert DispatchBatch.objects.get(pk=batch.pk).status == "failed"

    acked = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {}, format="json")

    assert acked.status_code == 409
    assert "failed" in acked.json()["detail"] and "Claim the batch" not in acked.json()["detail"]
