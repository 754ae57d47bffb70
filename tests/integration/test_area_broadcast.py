"""End to end: an area broadcast through real Celery worker processes and a real Redis, the http_batch_v1
adapter and the operator simulator (its own process) over HTTP, reach reported back over HTTP to the live
server, one operator failing for a while, and a cancel.

The harness plays celery beat (conftest.Stack.drive): it runs the `operators.area_broadcasts_tick` task's body
on the test's clock, and the sends and cancels it enqueues are run by the workers.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.services import campaign_cancel
from operators import broadcasts
from operators.broadcast_selectors import broadcast_progress
from operators.models import AreaBroadcast
from smsblast.models import Role
from tests.integration.conftest import OPERATOR_SLUGS
from tests.integration.scenario import operators_create
from tests.operators.area_scripted import blitar_areas, broadcast_campaign
from tests.smsblast.factories import UserFactory

pytestmark = pytest.mark.integration

State = AreaBroadcast.State
FAILING = "indosat"
OTHERS = [slug for slug in OPERATOR_SLUGS if slug != FAILING]
# The failing operator's outage lasts until a test lifts it (outage_seconds=0), however slow the machine;
# meanwhile its 503s invite a retry every second.
OPEN_ENDED_OUTAGE = {"outage_seconds": 600, "outage_mode": "503", "outage_retry_after": 1}


@pytest.fixture
def broadcast_stack(stack):
    """Start the simulator for the four test operators, reaching 5,000 handsets a second, and two workers."""
    behaviour = {"broadcast_arrivals_per_second": 5000, "reach_report_interval_ms": 100}
    operators_create(stack, segments_per_second=1000, batch_size=100, behaviour=behaviour)
    blitar_areas()
    stack.start_workers("w1", "w2")
    return stack


def _rows(campaign: Campaign) -> dict[str, AreaBroadcast]:
    rows = AreaBroadcast.objects.filter(run__campaign=campaign).select_related("operator")
    return {row.operator.slug: row for row in rows}


def _others_are(campaign: Campaign, state: str) -> bool:
    rows = _rows(campaign)
    return len(rows) == len(OPERATOR_SLUGS) and all(rows[slug].state == state for slug in OTHERS)


def _others_acknowledged_while_failing_errored(campaign: Campaign) -> bool:
    return (
        _others_are(campaign, State.ACKNOWLEDGED)
        and AreaBroadcast.objects.filter(
            run__campaign=campaign, operator__slug=FAILING, events__state=State.ERROR
        ).exists()
    )


def _log(row: AreaBroadcast) -> list[str]:
    return list(row.events.order_by("at", "id").values_list("state", flat=True))


def _log_entries(row: AreaBroadcast) -> list[tuple[str, dict]]:
    return list(row.events.order_by("at", "id").values_list("state", "details"))


def _sim_reached(stack, row: AreaBroadcast) -> int:
    return stack.stats()[row.operator.slug]["broadcasts"][str(row.pk)]["reached"]


def test_every_operator_broadcasts_and_reports_reach_while_one_fails_and_recovers(broadcast_stack, api_client_for):
    stack = broadcast_stack
    stack.control(FAILING, **OPEN_ENDED_OUTAGE)
    campaign = broadcast_campaign(starts_in=timedelta(0))

    stack.drive(lambda: _others_acknowledged_while_failing_errored(campaign), timeout=45, every=0.2)
    rows = _rows(campaign)
    assert rows["indosat"].state in (State.ERROR, State.SENDING)  # failing, and not holding the others back
    assert "503" in rows["indosat"].last_error
    stack.control(FAILING, outage_seconds=0)

    def all_reaching() -> bool:
        rows = _rows(campaign)
        return len(rows) == len(OPERATOR_SLUGS) and all(
            r.state == State.ACKNOWLEDGED and r.reach_reports.count() >= 2 for r in rows.values()
        )

    stack.drive(all_reaching, timeout=45, every=0.2)
    rows = _rows(campaign)
    assert all(rows[slug].attempts == 1 for slug in OTHERS)
    assert rows["indosat"].attempts >= 2
    assert rows["indosat"].acknowledged_at > max(rows[slug].acknowledged_at for slug in OTHERS)
    assert _log(rows["indosat"])[:3] == ["pending", "sending", "error"]
    assert all(row.operator_ref.startswith(f"{slug}-") for slug, row in rows.items())
    stats = stack.stats()
    assert [stats[slug]["area_broadcasts"] for slug in OPERATOR_SLUGS] == [1] * 4  # each got it exactly once
    sent_area = stats["telkomsel"]["broadcasts"][str(rows["telkomsel"].pk)]
    assert sent_area["reached"] >= rows["telkomsel"].handsets_reached > 0

    officer = UserFactory(role=Role.OFFICER)
    progress = api_client_for(officer).get(f"/api/v1/campaigns/{campaign.pk}/broadcast/").json()
    (run,) = progress["runs"]
    totals = [point["handsets_reached"] for point in run["series"]]
    assert totals == sorted(totals) and totals[-1] == run["handsets_reached"] > 0
    assert {op["operator"]: op["state"] for op in run["operators"]} == dict.fromkeys(OPERATOR_SLUGS, "acknowledged")

    broadcasts.area_broadcasts_tick(now=campaign.ends_at + timedelta(seconds=1))
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.COMPLETED
    assert {row.state for row in _rows(campaign).values()} == {State.COMPLETED}


def test_a_cancel_issued_while_an_operator_is_down_stops_it_without_the_broadcast_ever_reaching_it(broadcast_stack):
    stack = broadcast_stack
    stack.control(FAILING, **OPEN_ENDED_OUTAGE)
    campaign = broadcast_campaign(starts_in=timedelta(0))
    stack.drive(lambda: _others_acknowledged_while_failing_errored(campaign), timeout=45, every=0.2)
    assert _rows(campaign)["indosat"].acknowledged_at is None

    campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah wilayah")
    stack.drive(lambda: _others_are(campaign, State.CANCELLED), timeout=45, every=0.2)
    stats = stack.stats()
    assert [stats[slug]["area_cancels"] for slug in OTHERS] == [1] * len(OTHERS)
    stack.drive(lambda: _rows(campaign)["indosat"].state == State.CANCEL_PENDING, timeout=45, every=0.2)

    stack.control(FAILING, outage_seconds=0)

    stack.drive(lambda: _rows(campaign)["indosat"].state == State.CANCELLED, timeout=45, every=0.2)
    indosat = _rows(campaign)["indosat"]
    assert indosat.acknowledged_at is None and indosat.cancel_attempts >= 1
    assert "acknowledged" not in _log(indosat) and _log(indosat)[-2:] == ["cancel_pending", "cancelled"]
    stats = stack.stats()["indosat"]
    # It was never pushed once the campaign was cancelled: the operator never held it, so nothing went out.
    assert stats["area_broadcasts"] == 0 and str(indosat.pk) not in stats["broadcasts"]


def test_area_broadcast_through_workers_reaches_each_operator_once_despite_an_outage_and_cancels_everywhere(
    broadcast_stack,
):
    stack = broadcast_stack
    stack.control(FAILING, **OPEN_ENDED_OUTAGE)
    campaign = broadcast_campaign(starts_in=timedelta(0), ends_at=timezone.now() + timedelta(minutes=10))

    stack.drive(lambda: _others_acknowledged_while_failing_errored(campaign), timeout=45, every=0.2)
    rows = _rows(campaign)
    assert rows["indosat"].state in (State.ERROR, State.SENDING)  # failing, and not holding the others back
    assert rows["indosat"].acknowledged_at is None
    assert stack.stats()["indosat"]["outage_answers"] >= 1
    stack.control(FAILING, outage_seconds=0)

    def all_reaching() -> bool:
        rows = _rows(campaign)
        return all(row.state == State.ACKNOWLEDGED and row.reach_reports.count() >= 3 for row in rows.values())

    stack.drive(all_reaching, timeout=45, every=0.2)
    rows = _rows(campaign)
    stats = stack.stats()
    for slug in OPERATOR_SLUGS:
        # Received exactly once: one broadcast taken, no repeated request for it.
        assert stats[slug]["area_broadcasts"] == 1, slug
        assert stats[slug]["replays"] == 0, slug
        assert rows[slug].operator_ref.startswith(f"{slug}-"), slug
    assert all(rows[slug].attempts == 1 for slug in OTHERS)
    indosat_log = _log_entries(rows["indosat"])
    states = [state for state, _ in indosat_log]
    assert states[:3] == [State.PENDING, State.SENDING, State.ERROR]
    assert states[-1] == State.ACKNOWLEDGED
    assert rows["indosat"].attempts == states.count(State.SENDING) >= 2
    assert all(details["status_code"] == 503 for state, details in indosat_log if state == State.ERROR)
    assert rows["indosat"].acknowledged_at > max(rows[slug].acknowledged_at for slug in OTHERS)

    (progress,) = broadcast_progress(campaign)
    for operator in progress["operators"]:
        reached = [point["handsets_reached"] for point in operator["series"]]
        assert reached == sorted(reached) and reached[-1] > reached[0], operator["operator"]
    totals = [point["handsets_reached"] for point in progress["series"]]
    assert totals == sorted(totals) and totals[-1] > 0

    campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah wilayah")

    def all_cancelled() -> bool:
        return all(row.state == State.CANCELLED for row in _rows(campaign).values())

    stack.drive(all_cancelled, timeout=45, every=0.2)
    stats = stack.stats()
    rows = _rows(campaign)
    for slug in OPERATOR_SLUGS:
        assert stats[slug]["area_cancels"] == 1, slug
        assert stats[slug]["broadcasts"][str(rows[slug].pk)]["cancelled"] is True, slug
        assert [state for state, _ in _log_entries(rows[slug])][-2:] == [State.CANCEL_PENDING, State.CANCELLED]
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.CANCELLED
    # The operators' final counts, reported after the cancel, are the figures kept.
    stack.drive(
        lambda: all(row.handsets_reached == _sim_reached(stack, row) for row in _rows(campaign).values()),
        timeout=30,
        every=0.2,
    )
