"""End to end across restarts of the whole stack, as a single server reboots: Redis (empty, no persistence), the
workers, the operator and the database connections go at once in the middle of a run.

A restarted operator (the simulator) remembers nothing: not the Idempotency-Keys it answered, not the delivery
reports it had yet to post. So these tests check what the system can promise about it: a batch recorded as accepted
is never sent again, every recipient of a batch not answered before the restart is sent after it, and the messages
whose reports went with the operator expire at the end of the run's validity window (here brought forward).
"""

import time

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from campaigns.models import CampaignRun, DispatchBatch
from smsblast.models import AuditEvent
from tests.concurrency import skip_unless_postgresql
from tests.integration.conftest import OPERATOR_SLUGS
from tests.integration.scenario import (
    all_final,
    batches_by_status,
    campaign_send_now,
    connections_terminate,
    deliveries_by_status,
    operators_create,
    run_finished,
    run_of,
    subscribers_create,
)
from tests.integration.test_failures import RestartableRedis, assert_everyone_reached_once

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def restartable_redis(tmp_path_factory):
    server = RestartableRedis(tmp_path_factory.mktemp("redis-restarts"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_url(restartable_redis):
    return restartable_redis.url


def fan_out_started(campaign) -> bool:
    run = run_of(campaign)
    return run is not None and run.fanout_cursor > 0


def batches_sent(stack, count: int):
    return lambda: sum(s["batches"] for s in stack.stats().values()) >= count


def kill_everything(stack, redis) -> None:
    for name in list(stack.workers):
        stack.kill_worker(name)
    stack.kill_simulator()
    redis.stop()
    wait_until_the_killed_sessions_are_done()


def wait_until_the_killed_sessions_are_done(timeout: float = 60) -> None:
    """Wait until no other session of the test database is at work (PostgreSQL).

    A killed worker's server session still finishes a COMMIT it had received: what the test then reads as
    accepted must include it. On SQLite a killed worker's writes were done, or not, when it died.
    """
    if connection.vendor != "postgresql":
        return
    deadline = time.monotonic() + timeout
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state <> 'idle'"
            )
            if cursor.fetchone()[0] == 0:
                return
        assert time.monotonic() < deadline, "a killed worker's database session is still at work"
        time.sleep(0.02)


def start_everything(stack, redis) -> None:
    redis.start()
    stack.restart_simulator()
    stack.start_workers("w1-restarted", "w2-restarted")


def recipients_accepted(campaign) -> int:
    """Recipients of the campaign's batches recorded as accepted."""
    accepted = DispatchBatch.objects.filter(run__campaign=campaign, status=DispatchBatch.Status.ACCEPTED)
    return accepted.aggregate(n=Sum("size"))["n"] or 0


def finish_after_reports_lost(stack, campaign) -> None:
    """Let every batch settle, then end the validity window: reports the killed operator never posted expire."""
    stack.drive(lambda: not set(batches_by_status(campaign)) - DispatchBatch.FINAL_STATUSES, timeout=90)
    CampaignRun.objects.filter(campaign=campaign).update(expires_at=timezone.now())
    stack.drive(lambda: all_final(campaign) and run_finished(campaign), timeout=60)


def wait_until_nothing_in_flight(campaign, timeout: float = 60) -> None:
    """Wait for a moment when no batch of the campaign is being sent: every answer the workers had is recorded."""
    deadline = time.monotonic() + timeout
    while DispatchBatch.Status.IN_FLIGHT in batches_by_status(campaign):
        assert time.monotonic() < deadline, batches_by_status(campaign)
        time.sleep(0.02)


def assert_batch_histories_consistent(campaign) -> None:
    """Each batch's audit events chain (each starts where the one before ended) and end in its status."""
    statuses = {
        str(pk): status
        for pk, status in DispatchBatch.objects.filter(run__campaign=campaign).values_list("pk", "status")
    }
    states = dict.fromkeys(statuses, DispatchBatch.Status.PENDING)
    events = AuditEvent.objects.filter(object_type="campaigns.dispatchbatch", object_id__in=list(statuses)).exclude(
        from_state="", to_state=""
    )
    for object_id, action, from_state, to_state in events.order_by("pk").values_list(
        "object_id", "action", "from_state", "to_state"
    ):
        assert from_state == states[object_id], (object_id, action, from_state, states[object_id])
        states[object_id] = to_state
    assert states == statuses


def assert_everyone_final_and_unanswered_sent_once(stack, campaign, *, recipients: int, answered: int) -> None:
    assert run_of(campaign).status in CampaignRun.FINAL_STATUSES
    assert sum(deliveries_by_status(campaign).values()) == recipients
    assert set(batches_by_status(campaign)) == {DispatchBatch.Status.ACCEPTED}
    stats = stack.stats()  # of the operator since its restart
    # Nothing recorded as accepted before the restart was sent again; everything else was sent once.
    assert sum(stats[slug]["messages"] for slug in OPERATOR_SLUGS) == recipients - answered
    assert all(stats[slug]["duplicates"] == 0 for slug in OPERATOR_SLUGS), stats
    assert_batch_histories_consistent(campaign)


def test_everything_killed_at_once_mid_send_reaches_everyone_and_sends_no_answered_batch_again(
    stack, restartable_redis
):
    operators = operators_create(stack, segments_per_second=2_000, batch_size=100, behaviour={"latency_ms": 100})
    subscribers_create(operators, 3_000)
    stack.start_workers("w1", "w2")
    campaign = campaign_send_now()
    stack.drive(batches_sent(stack, 6), timeout=60, every=0.1)

    kill_everything(stack, restartable_redis)
    answered = recipients_accepted(campaign)
    start_everything(stack, restartable_redis)
    finish_after_reports_lost(stack, campaign)

    assert_everyone_final_and_unanswered_sent_once(stack, campaign, recipients=3_000, answered=answered)


def test_everything_killed_at_once_mid_fan_out_writes_and_reaches_everyone(stack, restartable_redis):
    operators = operators_create(stack, segments_per_second=50_000, batch_size=200)
    subscribers_create(operators, 20_000)
    stack.start_workers("w1", "w2")
    campaign = campaign_send_now()
    stack.drive(lambda: fan_out_started(campaign), timeout=60, every=0.05)

    kill_everything(stack, restartable_redis)
    answered = recipients_accepted(campaign)
    start_everything(stack, restartable_redis)
    finish_after_reports_lost(stack, campaign)

    assert_everyone_final_and_unanswered_sent_once(stack, campaign, recipients=20_000, answered=answered)


def test_operator_restarted_mid_run_is_sent_every_unanswered_batch_and_no_answered_one(stack):
    operators = operators_create(stack, segments_per_second=2_000, batch_size=100, behaviour={"latency_ms": 100})
    subscribers_create(operators, 3_000)
    stack.start_workers("w1", "w2")
    campaign = campaign_send_now()
    stack.drive(batches_sent(stack, 6), timeout=60, every=0.1)

    stack.kill_simulator()
    # The workers keep trying meanwhile: their batches wait to be retried.
    time.sleep(1)
    # An answer the workers had before the kill is recorded before they let go of its batch.
    wait_until_nothing_in_flight(campaign)
    answered = recipients_accepted(campaign)
    stack.restart_simulator()
    finish_after_reports_lost(stack, campaign)

    assert_everyone_final_and_unanswered_sent_once(stack, campaign, recipients=3_000, answered=answered)


def test_database_connections_terminated_mid_fan_out_lose_nothing_and_write_nothing_twice(stack):
    skip_unless_postgresql()
    operators = operators_create(stack, segments_per_second=50_000, batch_size=200)
    subscribers_create(operators, 20_000)
    stack.start_workers("w1", "w2")
    campaign = campaign_send_now()
    stack.drive(lambda: fan_out_started(campaign), timeout=60, every=0.05)

    connections_terminate()
    stack.drive(lambda: all_final(campaign) and run_finished(campaign), timeout=90)

    assert_everyone_reached_once(stack, campaign, 20_000)
    assert_batch_histories_consistent(campaign)
