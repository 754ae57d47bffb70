"""End to end: a campaign through real Celery workers, a real Redis and the operator simulator over HTTP.

Each test starts its own worker processes and simulator (see conftest.Stack) and plays celery beat while it
waits; assertions are about what the simulator received and what the database says, never about timing.
"""

import pytest

from campaigns.models import CampaignRun, Delivery, DispatchBatch
from tests.integration.conftest import OPERATOR_SLUGS
from tests.integration.scenario import (
    all_final,
    batches_by_status,
    campaign_send_now,
    deliveries_by_status,
    operators_create,
    run_finished,
    run_of,
    subscribers_create,
)

pytestmark = [pytest.mark.integration]

REPORTED = {Delivery.Status.DELIVERED, Delivery.Status.UNDELIVERED}
# 200 GSM-7 characters: two segments per message, so limits are counted in segments, not messages.
TWO_SEGMENT_TEXT = ("Vaksinasi gratis untuk warga Kab. Blitar di puskesmas terdekat, bawa KTP. " * 3)[:200]


def assert_everyone_reached_once(stack, campaign, recipients: int) -> None:
    """Every delivery is final with an operator report, and the simulator took each message exactly once."""
    run = run_of(campaign)
    assert run.status in CampaignRun.FINAL_STATUSES
    statuses = deliveries_by_status(campaign)
    assert sum(statuses.values()) == recipients
    assert set(statuses) <= REPORTED, statuses
    assert set(batches_by_status(campaign)) == {DispatchBatch.Status.ACCEPTED}
    stats = stack.stats()
    assert sum(stats[slug]["messages"] for slug in OPERATOR_SLUGS) == recipients
    for slug in OPERATOR_SLUGS:
        assert stats[slug]["duplicates"] == 0, slug
        assert stats[slug]["messages"] == Delivery.objects.filter(run=run, operator__slug=slug).count(), slug


def test_campaign_of_20000_recipients_over_four_operators_reaches_everyone_exactly_once(stack):
    operators = operators_create(stack, segments_per_second=50_000, batch_size=1000, behaviour={"delivered_ratio": 0.9})
    subscribers_create(operators, 20_000)
    stack.start_workers("w1", "w2")
    campaign = campaign_send_now()

    # Without the reconciler: the last delivery reports complete the run by themselves.
    stack.drive(lambda: all_final(campaign) and run_finished(campaign), timeout=90, reconcile=False)

    assert_everyone_reached_once(stack, campaign, 20_000)
    statuses = deliveries_by_status(campaign)
    assert statuses[Delivery.Status.DELIVERED] > statuses[Delivery.Status.UNDELIVERED] > 0
    assert run_of(campaign).status == CampaignRun.Status.COMPLETED


def test_worker_killed_mid_run_loses_nothing_and_sends_nothing_twice(stack):
    # Slow answers keep batches in flight, so the kill lands while the worker holds leases.
    operators = operators_create(stack, segments_per_second=50_000, batch_size=250, behaviour={"latency_ms": 300})
    subscribers_create(operators, 8_000)
    stack.start_workers("w1")
    campaign = campaign_send_now()

    stack.drive(lambda: sum(s["batches"] for s in stack.stats().values()) >= 4, timeout=60, every=0.1)
    stack.kill_worker("w1")
    in_flight_at_kill = batches_by_status(campaign).get(DispatchBatch.Status.IN_FLIGHT, 0)
    stack.start_workers("w1-restarted")
    stack.drive(lambda: all_final(campaign) and run_finished(campaign), timeout=120)

    assert_everyone_reached_once(stack, campaign, 8_000)
    # The kill interrupted real work: leases were held and had to expire before the reconciler re-drove them.
    assert in_flight_at_kill > 0
    assert DispatchBatch.objects.filter(run__campaign=campaign, attempts__gt=1).exists()


def test_operator_outage_of_30_seconds_delays_only_its_own_deliveries(stack):
    operators = operators_create(stack, segments_per_second=50_000, batch_size=250)
    subscribers_create(operators, 4_000)
    stack.start_workers("w1")
    # 503 with Retry-After: the operator says when to come back. (A refused connection carries no such hint:
    # the sender backs off with jitter, and its retry budget, not the outage, decides how long it waits.)
    stack.control("xl", outage_seconds=30, outage_mode="503")
    campaign = campaign_send_now()

    others = [slug for slug in OPERATOR_SLUGS if slug != "xl"]
    stack.drive(lambda: all_final(campaign) or _final_for(campaign, others), timeout=60)
    # The other operators are done while xl is still down: none of its messages got through yet.
    assert stack.stats()["xl"]["messages"] == 0
    assert stack.stats()["xl"]["outage_answers"] > 0
    assert not any(status in REPORTED for status in deliveries_by_status(campaign, operator__slug="xl")), (
        "xl delivered during its outage"
    )
    for slug in others:
        assert set(deliveries_by_status(campaign, operator__slug=slug)) <= REPORTED

    stack.drive(lambda: all_final(campaign) and run_finished(campaign), timeout=120)
    assert_everyone_reached_once(stack, campaign, 4_000)


def _final_for(campaign, slugs) -> bool:
    run = run_of(campaign)
    if run is None or not run.fanout_done:
        return False
    pending = Delivery.objects.filter(run=run, operator__slug__in=slugs).exclude(status__in=Delivery.FINAL_STATUSES)
    return not pending.exists()


def test_two_workers_never_exceed_an_operators_segment_rate_by_more_than_one_batch(stack):
    limit, batch_size = 400, 100
    operators = operators_create(stack, segments_per_second=limit, batch_size=batch_size)
    subscribers_create(operators, 6_000)
    stack.start_workers("w1", "w2")
    campaign = campaign_send_now(TWO_SEGMENT_TEXT)

    stack.drive(lambda: all_final(campaign) and run_finished(campaign), timeout=120)

    assert_everyone_reached_once(stack, campaign, 6_000)
    assert run_of(campaign).segments == 2
    stats = stack.stats()
    one_batch = batch_size * 2
    for slug in OPERATOR_SLUGS:
        seconds = stats[slug]["per_second"]
        assert sum(second["segments"] for second in seconds) == 1_500 * 2
        busiest = max(second["segments"] for second in seconds)
        assert busiest <= limit + one_batch, (slug, seconds)
