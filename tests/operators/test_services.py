"""Sending a batch: leasing, adapter outcomes, retries with backoff, permanent failure, quiet hours."""

import json
import time
from datetime import datetime, timedelta

import pytest
from django.utils import timezone, translation

from campaigns import dispatch
from campaigns.models import Campaign, CampaignRun, Delivery, DispatchBatch
from operators import services
from operators.gateways.base import BatchResult, Outcome, get_adapter, register
from operators.models import Operator
from smsblast.audit import audit_history
from smsblast.models import AuditEvent, Role, Subscriber
from smsblast.services import subscriber_opt_out
from smsblast.templatetags.ui import delivery_reason_label
from tests.concurrency import race_behind_a_row, skip_unless_postgresql
from tests.conftest import make_user
from tests.operators.scripted import ScriptedAdapter, approved_campaign, operators_and_subscribers, sending_run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def dispatch_redis(settings, redis_client, redis_url, private_broker):
    settings.REDIS_URL = redis_url
    ScriptedAdapter.reset()


def _batch(count=3, *, schedule=None, priority="normal", segments=1, slug="tsel") -> DispatchBatch:
    campaign = approved_campaign(schedule=schedule, priority=priority)
    operators_and_subscribers(counts={slug: count}, batch_size=count)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign, segments=segments)
    dispatch.run_fan_out(run_id=run.pk)
    return DispatchBatch.objects.get(run=run, operator__slug=slug)


def _batch_answered_503_once(count: int) -> DispatchBatch:
    """Return a batch of `count` whose first send got a 503 (waiting to retry); the operator accepts the next."""
    batch = _batch(count)
    ScriptedAdapter.reset(
        BatchResult(outcome=Outcome.RETRY, error="Service Unavailable", status_code=503),
        BatchResult(outcome=Outcome.ACCEPTED, accepted=count),
    )
    assert services.batch_send(batch_id=batch.pk) == "retry"
    batch.refresh_from_db()
    return batch


def test_an_accepted_batch_carries_its_deliveries_and_rejected_numbers_are_marked():
    batch = _batch(3)
    first, second, third = Delivery.objects.filter(batch=batch).order_by("pk")
    ScriptedAdapter.reset(
        BatchResult(outcome=Outcome.ACCEPTED, accepted=2, rejected=[(str(second.pk), "invalid_number")])
    )
    assert services.batch_send(batch_id=batch.pk) == "accepted"
    batch.refresh_from_db()
    assert batch.status == "accepted" and batch.accepted_count == 2 and batch.attempts == 1
    (sent,) = ScriptedAdapter.sent
    assert sent.batch_id == str(batch.pk)
    assert [m.message_id for m in sent.recipients] == [str(first.pk), str(second.pk), str(third.pk)]
    assert sent.callback_url.endswith("/api/v1/operator/delivery-reports/")
    second.refresh_from_db()
    assert (second.status, second.reason) == ("rejected", "invalid_number")
    # Accepted deliveries are not rewritten: the batch carries "submitted".
    assert Delivery.objects.filter(batch=batch, status="queued").count() == 2


def test_an_operators_words_holding_nul_characters_are_kept_without_them():
    batch = _batch(2)
    first, second = Delivery.objects.filter(batch=batch).order_by("pk")
    ScriptedAdapter.reset(
        BatchResult(outcome=Outcome.ACCEPTED, accepted=1, rejected=[(str(first.pk), "bad\x00number")])
    )
    assert services.batch_send(batch_id=batch.pk) == "accepted"
    first.refresh_from_db()
    assert (first.status, first.reason) == ("rejected", "badnumber")

    refused = _batch(1, slug="isat")
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.FAILED, status_code=400, error="HTTP 400: no\x00pe"))
    services.batch_send(batch_id=refused.pk)
    refused.refresh_from_db()
    assert (refused.status, refused.last_error) == ("failed", "HTTP 400: nope")
    assert Delivery.objects.get(batch=refused).reason == "HTTP 400: nope"


def test_an_accepted_batch_is_audited_once_and_a_second_answer_changes_nothing():
    batch = _batch(2)
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.ACCEPTED, accepted=2))
    assert services.batch_send(batch_id=batch.pk) == "accepted"
    batch.refresh_from_db()
    assert batch.status == "accepted" and batch.accepted_count == 2 and batch.accepted_at is not None
    assert batch.lease_expires_at is None and batch.last_error == ""
    (event,) = audit_history(batch).filter(action="batch.accept")
    assert (event.action, event.from_state, event.to_state, event.actor_id) == (
        "batch.accept",
        "in_flight",
        "accepted",
        None,
    )
    assert event.details == {"accepted": 2, "rejected": 0, "attempts": 1}
    again = services.batch_record_result(batch_id=batch.pk, result=BatchResult(outcome=Outcome.ACCEPTED, accepted=2))
    assert again.status_label == "final"
    assert len(audit_history(batch).filter(action="batch.accept")) == 1


@pytest.mark.parametrize(("answered", "kept"), [(-1, 0), (2**40, 3)])
def test_an_accepted_count_no_batch_can_have_is_kept_within_the_batch(answered, kept):
    batch = _batch(3)
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.ACCEPTED, accepted=answered))
    assert services.batch_send(batch_id=batch.pk) == "accepted"
    batch.refresh_from_db()
    assert batch.status == "accepted" and batch.accepted_count == kept


def test_a_transient_error_waits_with_backoff_and_retries_with_the_same_batch_id():
    batch = _batch(2)
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.RETRY, error="Service Unavailable", status_code=503))
    before = timezone.now()
    assert services.batch_send(batch_id=batch.pk) == "retry"
    batch.refresh_from_db()
    assert batch.status == "retry_wait" and batch.attempts == 1
    assert "HTTP 503" in batch.last_error
    # First backoff: full jitter within one second.
    assert before <= batch.next_attempt_at <= timezone.now() + timedelta(seconds=1)
    assert services.batch_send(batch_id=batch.pk, now=batch.next_attempt_at) == "accepted"
    assert [sent.batch_id for sent in ScriptedAdapter.sent] == [str(batch.pk), str(batch.pk)]
    batch.refresh_from_db()
    assert batch.status == "accepted" and batch.attempts == 2


def test_retry_after_is_honoured():
    batch = _batch(2)
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.RETRY, retry_after=30, status_code=429, error="slow down"))
    now = timezone.now()
    assert services.batch_send(batch_id=batch.pk, now=now) == "retry"
    batch.refresh_from_db()
    assert batch.next_attempt_at >= now + timedelta(seconds=30)
    # A duplicate task arriving early does nothing.
    assert services.batch_send(batch_id=batch.pk, now=now + timedelta(seconds=5)) == "not_due"
    assert len(ScriptedAdapter.sent) == 1


def test_backoff_grows_exponentially_and_is_capped():
    ceilings = [max(services.backoff_seconds(attempt) for _ in range(200)) for attempt in (1, 3, 5, 12)]
    assert ceilings[0] <= 1 < ceilings[1] <= 4 < ceilings[2] <= 16
    assert ceilings[3] <= services.BACKOFF_CAP_SECONDS


def test_backoff_is_jittered_above_a_floor_so_the_budget_outlasts_a_short_outage():
    waits = [services.backoff_seconds(attempt) for attempt in (1, 3, 5) for _ in range(200)]
    assert len(set(waits)) > 500  # jittered, not a fixed ladder
    floors = [min(services.backoff_seconds(attempt) for _ in range(200)) for attempt in range(1, services.MAX_ATTEMPTS)]
    assert floors[0] >= 0.5 and floors[2] >= 2
    # Even the shortest waits before the last attempt outlast a 30-second outage.
    assert sum(floors) > 60


def test_an_operators_refusal_as_the_http_adapter_words_it_is_kept_with_its_status_once():
    batch = _batch(2)
    refusal = BatchResult(outcome=Outcome.FAILED, status_code=401, error="HTTP 401: Invalid API key.")
    ScriptedAdapter.reset(refusal)
    assert services.batch_send(batch_id=batch.pk) == "failed"
    batch.refresh_from_db()
    assert batch.last_error == "HTTP 401: Invalid API key."
    assert set(Delivery.objects.filter(batch=batch).values_list("reason", flat=True)) == {"HTTP 401: Invalid API key."}


def test_a_permanent_error_fails_the_batch_and_its_deliveries_with_the_reason():
    batch = _batch(3)
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.FAILED, status_code=400, error="sender not registered"))
    assert services.batch_send(batch_id=batch.pk) == "failed"
    batch.refresh_from_db()
    assert batch.status == "failed" and batch.last_error == "HTTP 400: sender not registered"
    reasons = set(Delivery.objects.filter(batch=batch).values_list("status", "reason"))
    assert reasons == {("failed", "HTTP 400: sender not registered")}


def test_a_failed_batch_leaves_the_messages_its_operator_already_reported_as_they_are():
    batch = _batch(3)
    first, second, _ = Delivery.objects.filter(batch=batch).order_by("pk")
    DispatchBatch.objects.filter(pk=batch.pk).update(status="in_flight", attempts=1)
    # The operator reported some of its messages before its answer to the batch came back as a refusal.
    Delivery.objects.filter(pk=first.pk).update(status="delivered")
    Delivery.objects.filter(pk=second.pk).update(status="submitted")
    result = BatchResult(outcome=Outcome.FAILED, status_code=400, error="sender not registered")
    assert services.batch_record_result(batch_id=batch.pk, result=result).status_label == "failed"
    statuses = list(Delivery.objects.filter(batch=batch).order_by("pk").values_list("status", flat=True))
    assert statuses == ["delivered", "submitted", "failed"]


def test_numbers_refused_in_an_accepted_batch_leave_a_message_already_reported_final_as_it_is():
    batch = _batch(2)
    first, second = Delivery.objects.filter(batch=batch).order_by("pk")
    DispatchBatch.objects.filter(pk=batch.pk).update(status="in_flight", attempts=1)
    Delivery.objects.filter(pk=first.pk).update(status="delivered")
    result = BatchResult(
        outcome=Outcome.ACCEPTED, accepted=0, rejected=[(str(first.pk), "invalid_number"), (str(second.pk), "barred")]
    )
    services.batch_record_result(batch_id=batch.pk, result=result)
    assert Delivery.objects.get(pk=first.pk).status == "delivered"
    second.refresh_from_db()
    assert (second.status, second.reason) == ("rejected", "barred")


def test_a_late_refusal_of_a_batch_whose_lapsed_lease_was_taken_back_leaves_it_to_its_next_attempt():
    batch = _batch(2)
    # Leased, lease lapsed, taken back by the reconciler: the first worker's refusal arrives after that.
    DispatchBatch.objects.filter(pk=batch.pk).update(status="pending", attempts=1)
    result = BatchResult(outcome=Outcome.FAILED, status_code=400, error="sender not registered")
    assert services.batch_record_result(batch_id=batch.pk, result=result).status_label == "not_leased"
    assert DispatchBatch.objects.get(pk=batch.pk).status == "pending"
    assert set(Delivery.objects.filter(batch=batch).values_list("status", flat=True)) == {"queued"}


def test_a_transient_error_on_a_batch_whose_run_was_cancelled_meanwhile_cancels_it_instead_of_retrying():
    batch = _batch(2)
    DispatchBatch.objects.filter(pk=batch.pk).update(status="in_flight", attempts=1)
    CampaignRun.objects.filter(pk=batch.run_id).update(status="cancelled")
    result = BatchResult(outcome=Outcome.RETRY, error="Service Unavailable", status_code=503)
    assert services.batch_record_result(batch_id=batch.pk, result=result).status_label == "cancelled"
    assert DispatchBatch.objects.get(pk=batch.pk).status == "cancelled"
    assert set(Delivery.objects.filter(batch=batch).values_list("status", flat=True)) == {"cancelled"}


def test_the_retry_budget_ends_in_failure():
    batch = _batch(1)
    DispatchBatch.objects.filter(pk=batch.pk).update(attempts=services.MAX_ATTEMPTS - 1)
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.RETRY, error="timeout"))
    assert services.batch_send(batch_id=batch.pk) == "failed"
    batch.refresh_from_db()
    assert batch.status == "failed" and batch.last_error.startswith(f"Gave up after {services.MAX_ATTEMPTS} attempts")
    assert Delivery.objects.get(batch=batch).status == "failed"


def _throttled(retry_after: float | None = 1) -> BatchResult:
    return BatchResult(outcome=Outcome.RETRY, retry_after=retry_after, status_code=429, error="HTTP 429: slow down")


def test_an_operator_throttling_past_the_retry_budget_slows_the_batch_down_without_failing_it():
    batch = _batch(2)
    throttles = services.MAX_ATTEMPTS + 4
    ScriptedAdapter.reset(*[_throttled()] * throttles, BatchResult(outcome=Outcome.ACCEPTED, accepted=2))
    for _ in range(throttles):
        assert services.batch_send(batch_id=batch.pk, now=batch.next_attempt_at) == "retry"
        batch.refresh_from_db()
        # Retry-After honoured (the answer is recorded, and the wait counted, when it arrives).
        assert batch.next_attempt_at - batch.updated_at >= timedelta(seconds=1)
    now = batch.next_attempt_at
    assert (batch.status, batch.attempts, batch.throttled) == ("retry_wait", throttles, throttles)
    assert Delivery.objects.filter(batch=batch, status="queued").count() == 2

    assert services.batch_send(batch_id=batch.pk, now=now) == "accepted"
    # One batch id throughout (invariant 3), and each answer is audited with the count of throttled ones.
    assert {sent.batch_id for sent in ScriptedAdapter.sent} == {str(batch.pk)}
    retries = audit_history(batch).filter(action="batch.retry")
    assert [event.details["throttled"] for event in retries] == list(range(1, throttles + 1))
    assert audit_history(batch).get(action="batch.accept").details["attempts"] == throttles + 1


def test_the_retry_budget_counts_only_the_attempts_not_answered_429():
    batch = _batch(1)
    DispatchBatch.objects.filter(pk=batch.pk).update(attempts=services.MAX_ATTEMPTS + 2, throttled=3)
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.RETRY, status_code=503, error="HTTP 503: down"))
    assert services.batch_send(batch_id=batch.pk) == "failed"
    batch.refresh_from_db()
    assert batch.status == "failed"
    assert batch.last_error == (
        f"Gave up after {services.MAX_ATTEMPTS} attempts (and 3 answered 429); last error: HTTP 503: down"
    )


def test_the_reason_of_a_batch_whose_retries_ran_out_shows_in_indonesian_with_the_operators_error():
    batch = _batch(1)
    DispatchBatch.objects.filter(pk=batch.pk).update(attempts=services.MAX_ATTEMPTS + 2, throttled=3)
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.RETRY, status_code=503, error="HTTP 503: down"))
    assert services.batch_send(batch_id=batch.pk) == "failed"
    with translation.override("id"):
        shown = delivery_reason_label(Delivery.objects.get(batch=batch).reason)
    assert shown == (
        f"Dihentikan setelah {services.MAX_ATTEMPTS} kali percobaan (dan 3 kali dijawab 429); "
        "galat terakhir: HTTP 503: down"
    )


def test_an_operator_that_never_stops_throttling_is_retried_only_until_the_runs_validity_window_passes():
    batch = _batch(2)
    run = CampaignRun.objects.get(pk=batch.run_id)
    now = timezone.now()
    CampaignRun.objects.filter(pk=run.pk).update(expires_at=now + timedelta(minutes=15))
    ScriptedAdapter.reset(*[_throttled(retry_after=None)] * 500)
    outcomes = []
    while len(outcomes) < 100 and (not outcomes or outcomes[-1] == "retry"):
        outcomes.append(services.batch_send(batch_id=batch.pk, now=now))
        # Each try comes when its wait, counted from the answer, is over.
        batch.refresh_from_db()
        now += batch.next_attempt_at - batch.updated_at
    # The waits grow to the cap, so a quarter of an hour holds a few dozen tries, and then none.
    assert outcomes[-1] == "expired" and services.MAX_ATTEMPTS < len(outcomes) < 40
    assert set(outcomes[:-1]) == {"retry"}

    dispatch.dispatch_reconcile(now=now)
    batch.refresh_from_db()
    assert batch.status == "failed" and batch.last_error.startswith("The validity window passed")
    assert set(Delivery.objects.filter(batch=batch).values_list("status", flat=True)) == {"failed"}
    assert services.batch_send(batch_id=batch.pk, now=now) == "final"


def test_a_throttled_answer_spends_the_retry_budget_of_a_run_without_a_validity_window():
    batch = _batch(1)
    CampaignRun.objects.filter(pk=batch.run_id).update(expires_at=None)
    DispatchBatch.objects.filter(pk=batch.pk).update(attempts=services.MAX_ATTEMPTS - 1)
    ScriptedAdapter.reset(_throttled())
    assert services.batch_send(batch_id=batch.pk) == "failed"


def test_backoff_stays_within_its_cap_however_many_times_a_batch_was_throttled():
    assert services.BACKOFF_CAP_SECONDS / 2 <= services.backoff_seconds(5000) <= services.BACKOFF_CAP_SECONDS
    assert services.backoff_seconds(30000, retry_after=600) == 600


def test_an_adapter_that_raises_leaves_the_batch_to_retry_not_in_flight():
    class Exploding(ScriptedAdapter):
        name = "exploding"

        def send_batch(self, batch):
            raise RuntimeError("bug")

    register(Exploding)
    batch = _batch(1)
    batch.operator.adapter = "exploding"
    batch.operator.save()
    assert services.batch_send(batch_id=batch.pk) == "retry"
    assert DispatchBatch.objects.get(pk=batch.pk).status == "retry_wait"


def test_a_leased_batch_is_not_sent_twice():
    batch = _batch(1)
    assert services.batch_send(batch_id=batch.pk) == "accepted"
    assert services.batch_send(batch_id=batch.pk) == "final"
    DispatchBatch.objects.filter(pk=batch.pk).update(status="in_flight")
    assert services.batch_send(batch_id=batch.pk) == "not_leased"
    assert len(ScriptedAdapter.sent) == 1


def test_a_normal_run_waits_out_quiet_hours_and_an_urgent_one_does_not():
    now = timezone.now()
    local_hour = (now.astimezone(timezone.get_fixed_timezone(7 * 60))).hour
    quiet = {"start": f"{local_hour:02d}:00", "end": f"{(local_hour + 2) % 24:02d}:00"}
    batch = _batch(1, schedule={"kind": "now", "quiet_hours": quiet})
    assert services.batch_send(batch_id=batch.pk, now=now) == "quiet"
    batch.refresh_from_db()
    assert batch.status == "pending" and batch.next_attempt_at > now
    assert ScriptedAdapter.sent == []

    urgent = _batch(1, schedule={"kind": "now", "quiet_hours": quiet}, priority="urgent", slug="isat")
    assert services.batch_send(batch_id=urgent.pk, now=now) == "accepted"


def test_a_task_arriving_in_quiet_hours_does_not_bring_a_batch_forward_past_its_operators_retry_after():
    now = timezone.now()
    local_hour = (now.astimezone(timezone.get_fixed_timezone(7 * 60))).hour
    quiet = {"start": f"{local_hour:02d}:00", "end": f"{(local_hour + 1) % 24:02d}:00"}
    batch = _batch(1, schedule={"kind": "now", "quiet_hours": quiet})
    CampaignRun.objects.filter(pk=batch.run_id).update(expires_at=now + timedelta(days=1))
    # Answered 429 with a Retry-After of three hours, longer than what is left of the quiet hours.
    retry_at = now + timedelta(hours=3)
    DispatchBatch.objects.filter(pk=batch.pk).update(
        status="retry_wait", attempts=1, throttled=1, next_attempt_at=retry_at, last_error="HTTP 429: slow down"
    )
    # A task arriving meanwhile (the campaign resumed, a duplicate) finds the run quiet.
    assert services.batch_send(batch_id=batch.pk, now=now) == "quiet"
    batch.refresh_from_db()
    assert batch.next_attempt_at == retry_at
    quiet_until = dispatch.is_quiet_for(batch.run, now)
    assert services.batch_send(batch_id=batch.pk, now=quiet_until) == "not_due"
    assert ScriptedAdapter.sent == []


def test_the_batch_costs_its_segments_against_the_operator_limit(redis_client):
    batch = _batch(3, segments=2)
    assert batch.segments == 6
    batch.operator.segments_per_second = 10
    batch.operator.save()
    assert services.batch_send(batch_id=batch.pk) == "accepted"
    (entry,) = redis_client.zrange(f"smsblast:rate:{batch.operator.slug}:log", 0, -1)
    assert entry.decode().endswith(":6")


def test_a_batch_written_before_its_operators_limit_was_lowered_is_split_to_fit_it_before_it_is_sent():
    batch = _batch(6, segments=2)
    assert batch.segments == 12
    messages = list(Delivery.objects.filter(batch=batch).order_by("pk").values_list("pk", flat=True))
    # The admin lowers the limit mid-run: two 2-segment messages a second now.
    Operator.objects.filter(pk=batch.operator_id).update(segments_per_second=4)

    assert services.batch_send(batch_id=batch.pk) == "accepted"

    (sent,) = ScriptedAdapter.sent
    assert sent.batch_id == str(batch.pk)
    assert [int(m.message_id) for m in sent.recipients] == messages[:2]
    batches = DispatchBatch.objects.filter(run_id=batch.run_id).order_by("created_at", "pk")
    assert sorted((b.size, b.segments) for b in batches) == [(2, 4)] * 3
    assert {b.status for b in batches if b.pk != batch.pk} == {"pending"}
    # Every message is in exactly one batch, and the ones not sent yet are still queued.
    assert sorted(Delivery.objects.filter(run_id=batch.run_id).values_list("pk", flat=True)) == messages
    assert Delivery.objects.filter(run_id=batch.run_id, status="queued").count() == 6
    assert "batch.split" in [event.action for event in audit_history(batch)]


def test_a_batch_written_before_its_operators_batch_size_was_lowered_is_split_to_it_before_it_is_sent():
    batch = _batch(5)
    messages = list(Delivery.objects.filter(batch=batch).order_by("pk").values_list("pk", flat=True))
    # The operator now takes at most two recipients a request; the admin lowers the batch size mid-run.
    Operator.objects.filter(pk=batch.operator_id).update(batch_size=2)

    assert services.batch_send(batch_id=batch.pk) == "accepted"

    (sent,) = ScriptedAdapter.sent
    assert sent.batch_id == str(batch.pk)
    assert [int(m.message_id) for m in sent.recipients] == messages[:2]
    batches = DispatchBatch.objects.filter(run_id=batch.run_id)
    assert sorted(b.size for b in batches) == [1, 2, 2]
    assert sorted(Delivery.objects.filter(run_id=batch.run_id).values_list("pk", flat=True)) == messages
    for other in batches.exclude(pk=batch.pk):
        assert services.batch_send(batch_id=other.pk) == "accepted"
    assert sorted(int(m.message_id) for sent in ScriptedAdapter.sent for m in sent.recipients) == messages


def test_a_batch_tried_before_the_limit_was_lowered_is_not_split_since_the_operator_may_hold_it_whole():
    batch = _batch(6, segments=2)
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.RETRY, error="HTTP 503"))
    assert services.batch_send(batch_id=batch.pk) == "retry"
    Operator.objects.filter(pk=batch.operator_id).update(segments_per_second=4)

    retry_at = DispatchBatch.objects.get(pk=batch.pk).next_attempt_at
    assert services.batch_send(batch_id=batch.pk, now=retry_at) == "accepted"

    assert [len(sent.recipients) for sent in ScriptedAdapter.sent] == [6, 6]
    assert DispatchBatch.objects.filter(run_id=batch.run_id).count() == 1


def test_a_batch_of_an_operator_deactivated_after_it_was_written_waits_unsent_and_goes_out_once_reactivated(
    django_capture_on_commit_callbacks,
):
    batch = _batch(2)
    Operator.objects.filter(pk=batch.operator_id).update(active=False)
    now = timezone.now()

    with django_capture_on_commit_callbacks() as callbacks:
        assert services.batch_send(batch_id=batch.pk, now=now) == "operator_inactive"

    assert ScriptedAdapter.sent == []
    batch.refresh_from_db()
    assert (batch.status, batch.attempts) == ("pending", 0)
    assert now < batch.next_attempt_at <= timezone.now() + timedelta(minutes=1)
    assert _hops(batch) == [("batch.lease", "pending", "in_flight"), ("batch.release", "in_flight", "pending")]
    assert audit_history(batch).get(action="batch.release").details["reason"] == "operator_inactive"
    # Tried again on the operator's queue once the wait is over, not left for the reconciler.
    (enqueue,) = callbacks
    assert enqueue.__wrapped__.func is services._enqueue_send
    assert enqueue.__wrapped__.args[:2] == (batch.pk, batch.operator.queue)
    # A duplicate task arriving meanwhile leaves it waiting.
    assert services.batch_send(batch_id=batch.pk, now=now) == "not_due"

    Operator.objects.filter(pk=batch.operator_id).update(active=True)
    assert services.batch_send(batch_id=batch.pk, now=batch.next_attempt_at) == "accepted"
    (sent,) = ScriptedAdapter.sent
    assert sent.batch_id == str(batch.pk) and len(sent.recipients) == 2
    assert DispatchBatch.objects.get(pk=batch.pk).attempts == 1


def test_a_batch_of_a_deactivated_operator_fails_once_its_runs_validity_window_passes():
    batch = _batch(2)
    Operator.objects.filter(pk=batch.operator_id).update(active=False)
    assert services.batch_send(batch_id=batch.pk) == "operator_inactive"

    past_window = CampaignRun.objects.get(pk=batch.run_id).expires_at + timedelta(seconds=1)
    assert services.batch_send(batch_id=batch.pk, now=past_window) == "expired"
    dispatch.dispatch_reconcile(now=past_window)

    batch.refresh_from_db()
    assert (batch.status, batch.attempts) == ("failed", 0)
    assert set(Delivery.objects.filter(batch=batch).values_list("status", "reason")) == {("failed", "validity_passed")}
    assert ScriptedAdapter.sent == []


def test_the_log_adapter_accepts_everything():
    batch = _batch(2)
    outbound = services.batch_outbound(DispatchBatch.objects.select_related("run", "operator").get(pk=batch.pk))
    result = get_adapter("log").send_batch(outbound)
    assert result.outcome == Outcome.ACCEPTED and result.accepted == 2


def test_a_cancelled_run_sends_nothing():
    batch = _batch(2)
    CampaignRun.objects.filter(pk=batch.run_id).update(status="cancelled")
    assert services.batch_send(batch_id=batch.pk) == "cancelled"
    assert ScriptedAdapter.sent == []


def test_a_send_task_for_a_batch_that_no_longer_exists_sends_nothing():
    import uuid

    assert services.batch_send(batch_id=uuid.uuid4()) == "not_found"
    assert ScriptedAdapter.sent == []


def test_a_batch_given_back_for_want_of_tokens_after_cancel_ends_cancelled():
    batch = _batch(2)
    # Leased, then handed back unsent (throttled) after the campaign was cancelled.
    CampaignRun.objects.filter(pk=batch.run_id).update(status="cancelled")
    assert services.batch_send(batch_id=batch.pk) == "cancelled"
    assert DispatchBatch.objects.get(pk=batch.pk).status == "cancelled"
    assert set(Delivery.objects.filter(batch=batch).values_list("status", flat=True)) == {"cancelled"}
    assert ScriptedAdapter.sent == []


def test_a_duplicate_task_after_cancel_leaves_a_batch_another_worker_is_sending_to_that_workers_answer():
    batch = _batch(2)
    held_until = timezone.now() + timedelta(minutes=1)
    DispatchBatch.objects.filter(pk=batch.pk).update(status="in_flight", attempts=1, lease_expires_at=held_until)
    CampaignRun.objects.filter(pk=batch.run_id).update(status="cancelled")
    assert services.batch_send(batch_id=batch.pk) == "cancelled"
    assert ScriptedAdapter.sent == []
    assert DispatchBatch.objects.get(pk=batch.pk).status == "in_flight"
    assert set(Delivery.objects.filter(batch=batch).values_list("status", flat=True)) == {"queued"}
    # The operator took it from the worker holding the lease: its messages were sent and reports decide them.
    accepted = BatchResult(outcome=Outcome.ACCEPTED, accepted=2)
    assert services.batch_record_result(batch_id=batch.pk, result=accepted).status_label == "accepted"


def test_an_unreachable_rate_limiter_gives_the_batch_back_logged_and_it_is_sent_once_redis_returns(
    settings, redis_url, caplog
):
    from smsblast.devtools import free_port

    batch = _batch(2)
    Operator.objects.filter(pk=batch.operator_id).update(segments_per_second=10)
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    assert services.batch_send(batch_id=batch.pk) == "limiter_unavailable"
    held = DispatchBatch.objects.get(pk=batch.pk)
    assert (held.status, held.attempts, held.lease_expires_at) == ("pending", 0, None)
    assert held.next_attempt_at is not None
    assert ScriptedAdapter.sent == []
    assert "unreachable" in caplog.text and str(batch.pk) in caplog.text

    settings.REDIS_URL = redis_url
    assert services.batch_send(batch_id=batch.pk, now=held.next_attempt_at) == "accepted"
    assert len(ScriptedAdapter.sent) == 1


def test_a_batch_that_gets_no_tokens_in_time_is_given_back_unsent_and_sent_on_a_later_try(monkeypatch):
    batch = _batch(2)
    Operator.objects.filter(pk=batch.operator_id).update(segments_per_second=10)
    # Other workers use the operator's whole allowance for as long as this one may wait.
    monkeypatch.setattr(services.RateLimiter, "acquire", lambda self, cost, *, timeout: None)
    assert services.batch_send(batch_id=batch.pk) == "throttled"
    held = DispatchBatch.objects.get(pk=batch.pk)
    assert (held.status, held.attempts, held.lease_expires_at) == ("pending", 0, None)
    assert ScriptedAdapter.sent == []
    assert audit_history(batch).get(action="batch.release").details["reason"] == "throttled"

    monkeypatch.undo()
    assert services.batch_send(batch_id=batch.pk) == "accepted"
    assert len(ScriptedAdapter.sent) == 1


def _meanwhile_while_waiting_for_tokens(monkeypatch, change) -> None:
    """Make the rate limiter take long enough for a check afterwards, and run `change` while it waits."""

    def slow_grant(self, cost, *, timeout):
        change()
        return time.time()

    monkeypatch.setattr(services, "PAUSE_CHECK_SECONDS", -1)
    monkeypatch.setattr(services.RateLimiter, "acquire", slow_grant)


def test_a_pause_while_the_batch_waits_for_tokens_sends_nothing_until_resumed(monkeypatch):
    batch = _batch(2)
    Operator.objects.filter(pk=batch.operator_id).update(segments_per_second=10)
    campaign = batch.run.campaign
    _meanwhile_while_waiting_for_tokens(
        monkeypatch, lambda: dispatch.campaign_pause(campaign=campaign, actor=campaign.author)
    )
    assert services.batch_send(batch_id=batch.pk) == "paused"
    held = DispatchBatch.objects.get(pk=batch.pk)
    assert (held.status, held.attempts, held.lease_expires_at) == ("pending", 0, None)
    assert ScriptedAdapter.sent == []

    monkeypatch.undo()
    dispatch.campaign_resume(campaign=campaign, actor=campaign.author)
    assert services.batch_send(batch_id=batch.pk) == "accepted"
    assert len(ScriptedAdapter.sent) == 1


def test_a_cancel_while_the_batch_waits_for_tokens_sends_nothing_and_cancels_its_messages(monkeypatch):
    from campaigns.services import campaign_cancel

    batch = _batch(2)
    Operator.objects.filter(pk=batch.operator_id).update(segments_per_second=10)
    campaign = batch.run.campaign
    _meanwhile_while_waiting_for_tokens(
        monkeypatch, lambda: campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah teks")
    )
    assert services.batch_send(batch_id=batch.pk) == "cancelled"
    assert DispatchBatch.objects.get(pk=batch.pk).status == "cancelled"
    assert set(Delivery.objects.filter(batch=batch).values_list("status", flat=True)) == {"cancelled"}
    assert ScriptedAdapter.sent == []


def test_an_operator_deactivated_while_the_batch_waits_for_tokens_is_sent_nothing_until_it_is_back(monkeypatch):
    batch = _batch(2)
    operator = Operator.objects.get(pk=batch.operator_id)
    Operator.objects.filter(pk=operator.pk).update(segments_per_second=10)
    _meanwhile_while_waiting_for_tokens(
        monkeypatch, lambda: Operator.objects.filter(pk=operator.pk).update(active=False)
    )
    assert services.batch_send(batch_id=batch.pk) == "operator_inactive"
    held = DispatchBatch.objects.get(pk=batch.pk)
    assert (held.status, held.attempts) == ("pending", 0)
    assert held.next_attempt_at is not None
    assert ScriptedAdapter.sent == []

    monkeypatch.undo()
    Operator.objects.filter(pk=operator.pk).update(active=True)
    assert services.batch_send(batch_id=batch.pk, now=held.next_attempt_at) == "accepted"
    assert len(ScriptedAdapter.sent) == 1


def test_an_operator_switched_to_pull_while_the_batch_waits_for_tokens_is_not_pushed_and_can_claim_it(monkeypatch):
    batch = _batch(2)
    operator = Operator.objects.get(pk=batch.operator_id)
    Operator.objects.filter(pk=operator.pk).update(segments_per_second=10)
    _meanwhile_while_waiting_for_tokens(
        monkeypatch, lambda: Operator.objects.filter(pk=operator.pk).update(adapter=services.PULL_ADAPTER)
    )
    assert services.batch_send(batch_id=batch.pk) == "pull"
    assert ScriptedAdapter.sent == []
    held = DispatchBatch.objects.get(pk=batch.pk)
    assert (held.status, held.attempts, held.lease_expires_at) == ("pending", 0, None)
    operator.refresh_from_db()
    assert list(services.batches_ready_for(operator=operator)) == [held]


def test_a_batch_that_waited_for_tokens_goes_with_the_endpoint_and_credentials_set_meanwhile(monkeypatch):
    batch = _batch(2)
    operator = Operator.objects.get(pk=batch.operator_id)
    operator.segments_per_second = 10
    operator.base_url = "https://old.operator.example"
    operator.api_key = "old-key-0001"
    operator.signing_secret = "old-secret-0001"
    operator.save()

    def replaced():
        operator.base_url = "https://new.operator.example"
        operator.api_key = "new-key-0002"
        operator.signing_secret = "new-secret-0002"
        operator.save()

    _meanwhile_while_waiting_for_tokens(monkeypatch, replaced)
    assert services.batch_send(batch_id=batch.pk) == "accepted"
    (sent,) = ScriptedAdapter.sent
    assert (sent.base_url, sent.api_key, sent.signing_secret) == (
        "https://new.operator.example",
        "new-key-0002",
        "new-secret-0002",
    )


@pytest.mark.django_db(transaction=True)
def test_two_report_requests_naming_the_same_messages_in_opposite_orders_both_apply_without_a_deadlock():
    skip_unless_postgresql()
    batch = _batch(20)
    assert services.batch_send(batch_id=batch.pk) == "accepted"
    operator = Operator.objects.get(pk=batch.operator_id)
    deliveries = list(Delivery.objects.filter(batch=batch).order_by("pk"))
    ids = [str(delivery.pk) for delivery in deliveries]

    def report(order, status):
        return lambda: services.delivery_reports_apply(
            operator=operator, reports=[(message_id, status, "", "", None) for message_id in order]
        )

    # Both wait behind the first message; the second request meanwhile takes every other one.
    errors = race_behind_a_row(deliveries[0], report(ids, "DELIVERED"), report(ids[::-1], "UNDELIVERED"))
    assert errors == []
    assert set(Delivery.objects.filter(batch=batch).values_list("status", flat=True)) <= {"delivered", "undelivered"}


@pytest.mark.django_db(transaction=True)
def test_a_report_arriving_as_the_campaign_is_cancelled_is_applied_without_a_deadlock():
    from campaigns.services import campaign_cancel

    skip_unless_postgresql()
    batch = _batch(4)  # not yet recorded as accepted: an early report of the operator can still arrive
    # Posted once, its answer lost: it waits to be tried again, and the operator may hold its messages.
    DispatchBatch.objects.filter(pk=batch.pk).update(status="retry_wait", attempts=1)
    operator = Operator.objects.get(pk=batch.operator_id)
    run = CampaignRun.objects.get(pk=batch.run_id)
    first, *others = Delivery.objects.filter(batch=batch).order_by("pk")
    campaign = run.campaign
    CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=timezone.now() - timedelta(minutes=5))
    before = CampaignRun.objects.get(pk=run.pk).last_progress_at

    # The cancel waits for the run; the report, arriving next, must not take the run after its message.
    errors = race_behind_a_row(
        run,
        lambda: campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah teks"),
        lambda: services.delivery_reports_apply(
            operator=operator, reports=[(str(first.pk), "DELIVERED", "", "", None)]
        ),
        second_may_pass=True,
    )
    assert errors == []
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.CANCELLED
    assert Delivery.objects.get(pk=first.pk).status == "delivered"
    assert set(Delivery.objects.filter(pk__in=[d.pk for d in others]).values_list("status", flat=True)) == {"cancelled"}
    assert CampaignRun.objects.get(pk=run.pk).last_progress_at > before


@pytest.mark.django_db(transaction=True)
def test_a_report_on_two_runs_arriving_as_the_campaign_is_cancelled_is_applied_without_a_deadlock():
    from campaigns.services import campaign_cancel

    skip_unless_postgresql()
    # A daily campaign whose run of yesterday is still within its validity as today's starts.
    campaign = approved_campaign()
    operator = operators_and_subscribers(counts={"tsel": 2}, batch_size=2)["tsel"]
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    now = timezone.now()
    runs = [sending_run(campaign, scheduled_for=now - timedelta(days=1)), sending_run(campaign, scheduled_for=now)]
    for run in runs:
        dispatch.run_fan_out(run_id=run.pk)
        assert services.batch_send(batch_id=DispatchBatch.objects.get(run=run).pk) == "accepted"
    for run in runs:
        CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=now - timedelta(minutes=5))
    yesterday, today = (Delivery.objects.filter(run=run).order_by("pk").first() for run in runs)

    # Today's run is held (its fan-out writing a chunk); the cancel waits for it, then the report marks both runs.
    errors = race_behind_a_row(
        runs[1],
        lambda: campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah teks"),
        lambda: services.delivery_reports_apply(
            operator=operator,
            reports=[(str(yesterday.pk), "DELIVERED", "", "", None), (str(today.pk), "DELIVERED", "", "", None)],
        ),
    )
    assert errors == []
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.CANCELLED
    assert set(Delivery.objects.filter(pk__in=[yesterday.pk, today.pk]).values_list("status", flat=True)) == {
        "delivered"
    }


def test_a_report_on_a_message_cancelled_after_its_send_went_unanswered_says_what_became_of_it():
    from campaigns.dispatch_selectors import run_progress

    batch = _batch(3)  # its send timed out: the operator may hold it
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.RETRY, error="Read timed out", status_code=None))
    assert services.batch_send(batch_id=batch.pk) == "retry"
    never_sent = _batch(2, slug="xl")  # of another run, cancelled before any send
    for run_id in (batch.run_id, never_sent.run_id):
        CampaignRun.objects.filter(pk=run_id).update(status="cancelled")
    assert services.batch_send(batch_id=batch.pk) == "cancelled"
    assert services.batch_send(batch_id=never_sent.pk) == "cancelled"
    first, second, third = Delivery.objects.filter(batch=batch).order_by("pk")
    assert {first.status, second.status, third.status} == {"cancelled"}

    operator = Operator.objects.get(pk=batch.operator_id)
    reports = [
        (str(first.pk), "DELIVERED", "op-1", "", None),
        (str(second.pk), "UNDELIVERED", "op-2", "27", None),
    ]
    outcome = services.delivery_reports_apply(operator=operator, reports=reports)
    assert (outcome.applied, outcome.unchanged, outcome.rejected) == (2, 0, [])
    first.refresh_from_db()
    second.refresh_from_db()
    third.refresh_from_db()
    assert (first.status, first.reason, first.operator_ref) == ("delivered", "", "op-1")
    assert (second.status, second.error_code) == ("undelivered", "27")
    assert (third.status, third.reason) == ("cancelled", "campaign_cancelled")  # no report: still cancelled
    progress = run_progress(CampaignRun.objects.get(pk=batch.run_id))
    assert progress["counts"]["delivered"] == 1 and progress["counts"]["cancelled"] == 1
    assert progress["segments_sent"] == 2  # the two it reported on reached its network
    # Final once reported: a repeat, or a later different report, changes nothing.
    again = services.delivery_reports_apply(operator=operator, reports=[(str(first.pk), "UNDELIVERED", "", "", None)])
    assert (again.applied, again.unchanged) == (0, 1)

    # A message of a batch never sent is still refused: the operator cannot have it.
    xl = Operator.objects.get(pk=never_sent.operator_id)
    unsent = Delivery.objects.filter(batch=never_sent).first()
    refused = services.delivery_reports_apply(operator=xl, reports=[(str(unsent.pk), "DELIVERED", "", "", None)])
    assert refused.rejected == [{"message_id": str(unsent.pk), "reason": "not_sent"}]
    assert Delivery.objects.get(pk=unsent.pk).status == "cancelled"


def test_applied_reports_move_their_runs_progress_mark_once_committed(django_capture_on_commit_callbacks):
    batch = _batch(2)
    assert services.batch_send(batch_id=batch.pk) == "accepted"
    operator = Operator.objects.get(pk=batch.operator_id)
    old = timezone.now() - timedelta(minutes=20)
    CampaignRun.objects.filter(pk=batch.run_id).update(last_progress_at=old)
    message = Delivery.objects.filter(batch=batch).first()
    with django_capture_on_commit_callbacks(execute=True):
        services.delivery_reports_apply(operator=operator, reports=[(str(message.pk), "DELIVERED", "", "", None)])
    assert CampaignRun.objects.get(pk=batch.run_id).last_progress_at > old
    # A repeated report changes nothing, so it is no progress either.
    CampaignRun.objects.filter(pk=batch.run_id).update(last_progress_at=old)
    with django_capture_on_commit_callbacks(execute=True):
        services.delivery_reports_apply(operator=operator, reports=[(str(message.pk), "DELIVERED", "", "", None)])
    assert CampaignRun.objects.get(pk=batch.run_id).last_progress_at == old


def test_applied_reports_are_audited_once_as_the_operator_and_a_repeat_writes_nothing():
    batch = _batch(2)
    assert services.batch_send(batch_id=batch.pk) == "accepted"
    operator = Operator.objects.get(pk=batch.operator_id)
    operator.user = make_user("tsel-api", Role.OPERATOR)
    operator.save()
    first, second = Delivery.objects.filter(batch=batch).order_by("pk")
    reports = services.delivery_reports_parse(
        {
            "reports": [
                {"message_id": str(first.pk), "status": "DELIVERED"},
                {"message_id": second.pk, "status": "SUBMITTED"},
            ]
        }
    )
    services.delivery_reports_apply(operator=operator, reports=reports)
    services.delivery_reports_apply(operator=operator, reports=reports)
    (event,) = AuditEvent.objects.filter(action="delivery.report")
    assert event.actor_id == operator.user_id
    assert event.details == {"applied": 2, "unchanged": 0, "runs": [batch.run_id]}


def test_a_pulling_operator_is_offered_only_the_batches_it_may_claim_now():
    batch = _batch(2)
    operator = Operator.objects.get(pk=batch.operator_id)
    assert list(services.batches_ready_for(operator=operator)) == [batch]
    # Answered "later" (an outage, a Retry-After): not ready before that time.
    later = timezone.now() + timedelta(minutes=1)
    DispatchBatch.objects.filter(pk=batch.pk).update(status="retry_wait", attempts=1, next_attempt_at=later)
    assert list(services.batches_ready_for(operator=operator)) == []
    DispatchBatch.objects.filter(pk=batch.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert list(services.batches_ready_for(operator=operator)) == [batch]
    for status in ("paused", "cancelled"):
        CampaignRun.objects.filter(pk=batch.run_id).update(status=status)
        assert list(services.batches_ready_for(operator=operator)) == []


@pytest.mark.django_db(transaction=True)
def test_an_answer_arriving_after_the_lease_lapsed_as_the_campaign_is_cancelled_is_kept_without_a_deadlock():
    from campaigns.services import campaign_cancel

    skip_unless_postgresql()
    batch = _batch(3)  # pending again: its worker's lease lapsed while the operator was taking it
    run = CampaignRun.objects.get(pk=batch.run_id)
    CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=timezone.now() - timedelta(minutes=5))
    campaign = run.campaign

    errors = race_behind_a_row(
        run,
        lambda: campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah teks"),
        lambda: services.batch_record_result(
            batch_id=batch.pk, result=BatchResult(outcome=Outcome.ACCEPTED, accepted=3)
        ),
        second_may_pass=True,
    )
    assert errors == []
    # The operator took the batch before the cancel reached it: its messages were sent, and stay so.
    assert DispatchBatch.objects.get(pk=batch.pk).status == "accepted"
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.CANCELLED


@pytest.mark.parametrize("progress_due", [False, True])
def test_an_answer_arriving_after_the_lease_lapsed_is_audited_from_the_state_the_batch_was_in(progress_due):
    batch = _batch(3)
    DispatchBatch.objects.filter(pk=batch.pk).update(
        status="in_flight", attempts=1, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    leased = DispatchBatch.objects.select_related("run", "operator").get(pk=batch.pk)
    # Moved or not recently, the run's progress time decides between the one-statement accept and the other path.
    leased.run.last_progress_at = None if progress_due else timezone.now()
    assert dispatch.dispatch_reconcile()["leases"] == 1  # the lease lapsed: pending again
    outcome = services.batch_record_result(
        batch_id=batch.pk, result=BatchResult(outcome=Outcome.ACCEPTED, accepted=3), leased=leased
    )
    assert outcome.status == "accepted"
    events = [(event.action, event.from_state, event.to_state) for event in audit_history(batch)]
    assert events[-2:] == [("batch.lease_expired", "in_flight", "pending"), ("batch.accept", "pending", "accepted")]


@pytest.mark.django_db(transaction=True)
def test_an_answer_arriving_as_the_reconciler_takes_back_the_lapsed_lease_is_audited_from_pending():
    import threading

    from django.db import connections, transaction

    from smsblast.audit import audit_record
    from tests.concurrency import wait_until_blocked_on_a_lock

    skip_unless_postgresql()
    batch = _batch(3)
    DispatchBatch.objects.filter(pk=batch.pk).update(
        status="in_flight", attempts=1, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    leased = DispatchBatch.objects.select_related("run", "operator").get(pk=batch.pk)
    leased.run.last_progress_at = timezone.now()  # the one-statement accept
    holding, release, outcomes = threading.Event(), threading.Event(), []

    def reconcile_held_open():
        # What the reconciler does for a lapsed lease, its transaction still open as the answer arrives.
        try:
            with transaction.atomic():
                DispatchBatch.objects.filter(pk=batch.pk).update(status="pending", lease_expires_at=None)
                audit_record(
                    actor=None, action="batch.lease_expired", obj=batch, from_state="in_flight", to_state="pending"
                )
                holding.set()
                release.wait(30)
        finally:
            connections.close_all()

    def answer():
        try:
            result = BatchResult(outcome=Outcome.ACCEPTED, accepted=3)
            outcomes.append(services.batch_record_result(batch_id=batch.pk, result=result, leased=leased))
        finally:
            connections.close_all()

    reconciler, answering = threading.Thread(target=reconcile_held_open), threading.Thread(target=answer)
    reconciler.start()
    holding.wait(30)
    answering.start()
    wait_until_blocked_on_a_lock(1)
    release.set()
    reconciler.join(30)
    answering.join(30)

    assert [outcome.status for outcome in outcomes] == ["accepted"]
    events = [(event.action, event.from_state, event.to_state) for event in audit_history(batch)]
    assert events[-2:] == [("batch.lease_expired", "in_flight", "pending"), ("batch.accept", "pending", "accepted")]


# --- opting out during a run --------------------------------------------------------------------------


def test_a_number_opting_out_before_its_batch_is_sent_is_left_out_of_it_and_skipped():
    batch = _batch(3)
    first, second, third = Delivery.objects.filter(batch=batch).order_by("pk")
    subscriber, changed = subscriber_opt_out(msisdn=second.msisdn, actor=None, source="sms")
    assert changed
    second.refresh_from_db()
    assert (second.status, second.reason) == ("skipped", "opted_out")
    assert audit_history(subscriber).get(action="subscriber.opt_out").details["withdrawn_from_runs"] == [batch.run_id]

    assert services.batch_send(batch_id=batch.pk) == "accepted"
    (sent,) = ScriptedAdapter.sent
    assert [m.msisdn for m in sent.recipients] == [first.msisdn, third.msisdn]
    second.refresh_from_db()
    assert second.status == "skipped"


def test_an_answer_accepting_more_than_was_sent_counts_only_the_messages_sent():
    batch = _batch(3)
    subscriber_opt_out(msisdn=Delivery.objects.filter(batch=batch).order_by("pk")[1].msisdn, actor=None, source="sms")
    # The operator counts the batch as written, not the two messages it was sent.
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.ACCEPTED, accepted=3, status_code=202))

    assert services.batch_send(batch_id=batch.pk) == "accepted"

    batch.refresh_from_db()
    assert batch.accepted_count == 2


def test_an_answer_accepting_a_message_it_also_refused_counts_only_those_not_refused():
    batch = _batch(3)
    refused = Delivery.objects.filter(batch=batch).order_by("pk").first()
    # The operator's count contradicts its own refusals: 3 accepted, one of the 3 refused (twice).
    rejected = [(str(refused.pk), "barred"), (str(refused.pk), "barred")]
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.ACCEPTED, accepted=3, rejected=rejected, status_code=202))

    assert services.batch_send(batch_id=batch.pk) == "accepted"

    batch.refresh_from_db()
    assert batch.accepted_count == 2
    refused.refresh_from_db()
    assert refused.status == "rejected"


def test_a_number_opting_out_after_its_batch_was_first_sent_stays_in_the_retried_batch():
    batch = _batch_answered_503_once(2)
    first, second = Delivery.objects.filter(batch=batch).order_by("pk")
    subscriber_opt_out(msisdn=second.msisdn, actor=None, source="sms")
    second.refresh_from_db()
    assert second.status == "queued"

    batch.refresh_from_db()
    assert services.batch_send(batch_id=batch.pk, now=batch.next_attempt_at) == "accepted"
    first_body, retried_body = ScriptedAdapter.sent
    # The same idempotency key carries the same recipients (invariant 3).
    assert [m.msisdn for m in retried_body.recipients] == [m.msisdn for m in first_body.recipients]
    assert [m.msisdn for m in retried_body.recipients] == [first.msisdn, second.msisdn]


def test_a_number_opting_out_while_its_batch_is_in_flight_is_not_withdrawn():
    batch = _batch(2)
    DispatchBatch.objects.filter(pk=batch.pk).update(status="in_flight", attempts=1)
    (first, *_) = Delivery.objects.filter(batch=batch).order_by("pk")
    subscriber_opt_out(msisdn=first.msisdn, actor=None, source="sms")
    first.refresh_from_db()
    assert first.status == "queued"


def test_a_batch_whose_every_number_opted_out_is_done_without_a_request():
    batch = _batch(2)
    for delivery in Delivery.objects.filter(batch=batch):
        subscriber_opt_out(msisdn=delivery.msisdn, actor=None, source="sms")
    # Closed by the last opt-out itself, so no worker and no pulling operator is handed an empty batch.
    batch.refresh_from_db()
    assert (batch.status, batch.accepted_count) == ("accepted", 0)
    assert services.batch_send(batch_id=batch.pk) == "final"
    assert ScriptedAdapter.sent == []
    assert set(Delivery.objects.filter(batch=batch).values_list("status", flat=True)) == {"skipped"}
    accepted = audit_history(batch).get(action="batch.accept")
    assert (accepted.from_state, accepted.to_state, accepted.details["accepted"]) == ("pending", "accepted", 0)


def test_a_run_whose_last_waiting_batch_empties_by_opt_outs_completes():
    batch = _batch(1)
    (delivery,) = Delivery.objects.filter(batch=batch)
    subscriber_opt_out(msisdn=delivery.msisdn, actor=None, source="sms")
    dispatch.run_check_complete(run_id=batch.run_id)
    assert CampaignRun.objects.get(pk=batch.run_id).status == CampaignRun.Status.COMPLETED


@pytest.mark.django_db(transaction=True)
def test_a_number_opting_out_while_its_fan_out_chunk_is_being_written_is_not_sent():
    skip_unless_postgresql()
    campaign = approved_campaign()
    operators = operators_and_subscribers(counts={"tsel": 3}, batch_size=10)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    number = Subscriber.objects.order_by("pk").first().msisdn

    # The operator row held: the chunk reads the three numbers, then waits to insert its batch (its foreign
    # key), uncommitted, while the number opts out. The opt-out must wait for the chunk and withdraw the number.
    errors = race_behind_a_row(
        operators["tsel"],
        lambda: dispatch.run_fan_out(run_id=run.pk),
        lambda: subscriber_opt_out(msisdn=number, actor=None, source="sms"),
        second_may_pass=True,
    )
    assert errors == []
    delivery = Delivery.objects.get(run=run, msisdn=number)
    assert (delivery.status, delivery.reason) == ("skipped", "opted_out")
    batch = DispatchBatch.objects.get(run=run)
    assert services.batch_send(batch_id=batch.pk) == "accepted"
    (sent,) = ScriptedAdapter.sent
    assert number not in [m.msisdn for m in sent.recipients] and len(sent.recipients) == 2


def _sent_numbers() -> list[str]:
    return [m.msisdn for sent in ScriptedAdapter.sent for m in sent.recipients]


def _send_pending_batches(run_id) -> None:
    for pk in DispatchBatch.objects.filter(run_id=run_id, status="pending").values_list("pk", flat=True):
        assert services.batch_send(batch_id=pk) == "accepted"


def test_a_number_opting_out_while_its_batch_is_leased_is_not_moved_to_a_split_off_batch_and_sent():
    batch = _batch(6, segments=2)
    messages = list(Delivery.objects.filter(batch=batch).order_by("pk"))
    Operator.objects.filter(pk=batch.operator_id).update(segments_per_second=4)
    now = timezone.now()
    leased = services._batch_lease_checked(batch.pk, now=now, lease_seconds=60)
    # Between the lease and the split: the opt-out finds the batch in flight and leaves the number to it.
    number = messages[3].msisdn
    subscriber_opt_out(msisdn=number, actor=None, source="sms")
    assert Delivery.objects.get(pk=messages[3].pk).status == "queued"

    services._batch_fit_to_limit(leased, limit=4, batch_size=leased.operator.batch_size, now=now)

    moved = Delivery.objects.get(pk=messages[3].pk)
    assert (moved.status, moved.reason) == ("skipped", "opted_out")
    assert moved.batch_id != batch.pk
    assert audit_history(batch).get(action="batch.split").details["opted_out"] == 1
    _send_pending_batches(batch.run_id)
    assert number not in _sent_numbers()
    assert sorted(_sent_numbers()) == sorted(d.msisdn for d in messages[2:] if d.msisdn != number)


@pytest.mark.django_db(transaction=True)
def test_a_number_opting_out_while_its_batch_is_being_split_is_not_sent():
    skip_unless_postgresql()
    batch = _batch(6, segments=2)
    messages = list(Delivery.objects.filter(batch=batch).order_by("pk"))
    Operator.objects.filter(pk=batch.operator_id).update(segments_per_second=4)
    number = messages[3]

    # The number's delivery held: the send leases the batch, then its split waits to move the number to a
    # new batch, uncommitted, while the number opts out. The opt-out must wait for the split (the run's lock)
    # and withdraw the number from the new batch, which nobody has sent yet.
    errors = race_behind_a_row(
        number,
        lambda: services.batch_send(batch_id=batch.pk),
        lambda: subscriber_opt_out(msisdn=number.msisdn, actor=None, source="sms"),
        second_may_pass=True,
    )
    assert errors == []
    number.refresh_from_db()
    assert (number.status, number.reason) == ("skipped", "opted_out")
    assert DispatchBatch.objects.get(pk=batch.pk).status == "accepted"
    _send_pending_batches(batch.run_id)
    assert number.msisdn not in _sent_numbers()
    assert len(_sent_numbers()) == 5


def test_an_opt_out_leaves_finished_runs_alone():
    batch = _batch(2)
    CampaignRun.objects.filter(pk=batch.run_id).update(status=CampaignRun.Status.COMPLETED)
    (first, *_) = Delivery.objects.filter(batch=batch).order_by("pk")
    subscriber, _ = subscriber_opt_out(msisdn=first.msisdn, actor=None, source="officer")
    first.refresh_from_db()
    assert first.status == "queued"
    assert "withdrawn_from_runs" not in audit_history(subscriber).get(action="subscriber.opt_out").details


# --- every hop of a batch is audited (invariant 6) ----------------------------------------------------


def _hops(batch) -> list[tuple[str, str, str]]:
    return [(e.action, e.from_state, e.to_state) for e in audit_history(batch).order_by("id")]


def test_each_lease_of_a_batch_is_audited_with_the_state_it_left():
    # On PostgreSQL the lease and its event are one statement; elsewhere the checked path writes it.
    batch = _batch_answered_503_once(2)
    assert services.batch_send(batch_id=batch.pk, now=batch.next_attempt_at) == "accepted"
    assert _hops(batch) == [
        ("batch.lease", "pending", "in_flight"),
        ("batch.retry", "in_flight", "retry_wait"),
        ("batch.lease", "retry_wait", "in_flight"),
        ("batch.accept", "in_flight", "accepted"),
    ]
    assert [e.details["attempt"] for e in audit_history(batch).filter(action="batch.lease").order_by("id")] == [1, 2]


def test_a_lease_given_back_unsent_is_audited_with_why(settings, redis_url):
    from smsblast.devtools import free_port

    batch = _batch(2)
    Operator.objects.filter(pk=batch.operator_id).update(segments_per_second=10)
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    assert services.batch_send(batch_id=batch.pk) == "limiter_unavailable"
    assert _hops(batch) == [("batch.lease", "pending", "in_flight"), ("batch.release", "in_flight", "pending")]
    released = audit_history(batch).get(action="batch.release")
    assert released.details["reason"] == "limiter_unavailable" and "until" in released.details


def test_a_lease_that_loses_the_race_writes_no_event():
    batch = _batch(2)
    DispatchBatch.objects.filter(pk=batch.pk).update(status="in_flight")
    assert services.batch_send(batch_id=batch.pk) == "not_leased"
    assert _hops(batch) == []


def test_a_number_opting_out_while_two_runs_of_a_campaign_are_under_way_is_withdrawn_from_both():
    batch = _batch(2)
    run = CampaignRun.objects.get(pk=batch.run_id)
    later = sending_run(run.campaign, scheduled_for=run.scheduled_for + timedelta(days=1))
    dispatch.run_fan_out(run_id=later.pk)
    number = Delivery.objects.filter(batch=batch).order_by("pk").first().msisdn
    subscriber, _ = subscriber_opt_out(msisdn=number, actor=None, source="sms")
    assert set(Delivery.objects.filter(msisdn=number).values_list("run_id", "status", "reason")) == {
        (run.pk, "skipped", "opted_out"),
        (later.pk, "skipped", "opted_out"),
    }
    event = audit_history(subscriber).get(action="subscriber.opt_out")
    assert event.details["withdrawn_from_runs"] == sorted([run.pk, later.pk])


def _tasks_waiting_in(redis_client, queue: str) -> list[dict]:
    """Return the headers of the send_batch tasks the broker holds for `queue`."""
    return [json.loads(message)["headers"] for message in redis_client.lrange(queue, 0, -1)]


def test_a_retry_after_longer_than_the_countdown_bound_is_left_to_the_reconciler_and_never_sent_early(
    settings, redis_client, django_capture_on_commit_callbacks
):
    # The bound keeps every countdown task far from the broker's redelivery of unacknowledged ones.
    assert services.SEND_COUNTDOWN_MAX_SECONDS * 4 <= settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    batch = _batch(2)
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.RETRY, retry_after=1800, status_code=429, error="quota"))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.batch_send(batch_id=batch.pk) == "retry"
    batch.refresh_from_db()
    # The wait is recorded as the operator asked, and no task waits half an hour in the broker for it.
    assert batch.next_attempt_at - batch.updated_at >= timedelta(minutes=30)
    assert _tasks_waiting_in(redis_client, batch.operator.queue) == []

    due = batch.next_attempt_at
    with django_capture_on_commit_callbacks(execute=True):
        assert dispatch.dispatch_reconcile(now=due - timedelta(minutes=1))["requeued"] == 0
    assert services.batch_send(batch_id=batch.pk, now=due - timedelta(minutes=1)) == "not_due"
    with django_capture_on_commit_callbacks(execute=True):
        assert dispatch.dispatch_reconcile(now=due)["requeued"] == 1
    (task,) = _tasks_waiting_in(redis_client, batch.operator.queue)
    assert task["task"] == "operators.tasks.send_batch" and task["eta"] is None
    assert services.batch_send(batch_id=batch.pk, now=due) == "accepted"
    assert len(ScriptedAdapter.sent) == 2


def test_a_retry_within_the_countdown_bound_is_enqueued_with_its_wait(redis_client, django_capture_on_commit_callbacks):
    batch = _batch(2)
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.RETRY, retry_after=60, status_code=429, error="slow down"))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.batch_send(batch_id=batch.pk) == "retry"
    batch.refresh_from_db()
    (task,) = _tasks_waiting_in(redis_client, batch.operator.queue)
    eta = datetime.fromisoformat(task["eta"])
    assert batch.next_attempt_at - timedelta(seconds=1) <= eta <= batch.next_attempt_at + timedelta(seconds=1)


def test_the_reconciler_leaves_a_retry_to_its_countdown_task_for_a_while_after_it_is_due(
    settings, redis_client, django_capture_on_commit_callbacks
):
    batch = _batch(2)
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.RETRY, retry_after=90, status_code=429, error="slow down"))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.batch_send(batch_id=batch.pk) == "retry"
    # A worker took the countdown task from the queue and holds it until it is due, or until a process is free.
    assert len(_tasks_waiting_in(redis_client, batch.operator.queue)) == 1
    redis_client.delete(batch.operator.queue)
    batch.refresh_from_db()
    due = batch.next_attempt_at
    with django_capture_on_commit_callbacks(execute=True):
        assert dispatch.dispatch_reconcile(now=due + timedelta(seconds=5))["requeued"] == 0
    assert _tasks_waiting_in(redis_client, batch.operator.queue) == []
    # Still waiting long after it was due: that task was lost.
    later = due + timedelta(seconds=settings.DISPATCH_REDRIVE_AFTER_SECONDS + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert dispatch.dispatch_reconcile(now=later)["requeued"] == 1
    assert services.batch_send(batch_id=batch.pk, now=later) == "accepted"


def test_an_api_key_a_header_cannot_carry_is_kept_out_of_the_batch_error_its_audit_and_the_delivery_reasons():
    """The adapter's exception holds the whole Authorization header: the operator's key must not reach what officers
    read (failure reasons, report) nor the append-only audit trail."""
    batch = _batch(1)
    # Pasted from a document with a zero-width space: http.client cannot encode it in a header.
    Operator.objects.filter(pk=batch.operator_id).update(
        adapter="http_batch_v1", base_url="http://127.0.0.1:9", api_key="sk-live-TOPSECRETKEY\u200b"
    )
    assert services.batch_send(batch_id=batch.pk) == "retry"
    DispatchBatch.objects.filter(pk=batch.pk).update(
        status="pending", next_attempt_at=None, attempts=services.MAX_ATTEMPTS - 1
    )
    assert services.batch_send(batch_id=batch.pk) == "failed"

    batch.refresh_from_db()
    assert batch.last_error.startswith("Gave up after") and "adapter error" in batch.last_error
    reasons = list(Delivery.objects.filter(batch=batch).values_list("reason", flat=True))
    events = [json.dumps(event.details) for event in audit_history(batch)]
    assert {event for event in events if "error" in event}
    for text in [batch.last_error, *reasons, *events]:
        assert "TOPSECRETKEY" not in text
