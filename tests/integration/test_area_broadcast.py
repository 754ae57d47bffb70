"""End to end: an area broadcast through the http_batch_v1 adapter to the real operator simulator over HTTP,
reach reported back over HTTP to the live server, one operator failing for a while, and a cancel.

The beat task `operators.area_broadcasts_tick` is called by the test (on the test's clock). In the first tests
the sends and cancels it enqueues run eagerly in this process against an in-process simulator (quick checks
of the flow); the last one proves the pipeline: real Celery worker processes, Redis and the simulator as
its own process (conftest.Stack).
"""

import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.services import campaign_cancel
from operators import broadcast_tasks, broadcasts
from operators.broadcast_selectors import broadcast_progress
from operators.models import AreaBroadcast, Operator
from operators.simulator import OperatorBehaviour, OperatorConfig, SimulatorServer
from smsblast.authentication import api_token_create
from smsblast.models import Role
from tests.integration.conftest import OPERATOR_SLUGS
from tests.integration.scenario import operators_create
from tests.operators.area_scripted import blitar_areas, broadcast_campaign
from tests.smsblast.factories import UserFactory

pytestmark = pytest.mark.integration

State = AreaBroadcast.State
SLUGS = ("telkomsel", "indosat", "xl")


@pytest.fixture
def simulator(transactional_db, live_server, settings):
    """Start the simulator for three operators whose rows point at it; reach comes back to the live server."""
    from config.celery import app

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    settings.PUBLIC_BASE_URL = live_server.url
    settings.AREA_BROADCAST_RETRY_BASE_SECONDS = 0.2
    configs = {}
    for slug in SLUGS:
        user = UserFactory(username=f"op-{slug}", role=Role.OPERATOR)
        configs[slug] = OperatorConfig(
            api_key=f"key-{slug}",
            signing_secret=f"secret-{slug}",
            report_token=api_token_create(user=user),
            behaviour=OperatorBehaviour(broadcast_arrivals_per_second=5000, reach_report_interval_ms=100),
        )
        configs[slug].user = user
    server = SimulatorServer(configs, port=0).start()
    for slug, config in configs.items():
        Operator.objects.create(
            slug=slug,
            name=slug.title(),
            base_url=f"{server.url}/{slug}",
            api_key=config.api_key,
            signing_secret=config.signing_secret,
            user=config.user,
        )
    blitar_areas()
    yield server
    server.stop()
    app.conf.task_always_eager = eager


def _control(server: SimulatorServer, slug: str, **changes) -> None:
    requests.post(f"{server.url}/{slug}/control", json=changes, timeout=5).raise_for_status()


def _rows(campaign: Campaign) -> dict[str, AreaBroadcast]:
    rows = AreaBroadcast.objects.filter(run__campaign=campaign).select_related("operator")
    return {row.operator.slug: row for row in rows}


def _drive(until: Callable[[], bool], *, timeout: float = 15.0) -> None:
    """Play celery beat: run the tick (which enqueues due sends and cancels) until `until()` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            pytest.fail("The area broadcast did not get there in time.")
        broadcast_tasks.area_broadcasts_tick()
        time.sleep(0.1)


def _others_are(campaign: Campaign, state: str) -> bool:
    rows = _rows(campaign)
    return len(rows) == len(SLUGS) and all(row.state == state for slug, row in rows.items() if slug != "indosat")


def _log(row: AreaBroadcast) -> list[str]:
    return list(row.events.order_by("at", "id").values_list("state", flat=True))


def test_every_operator_broadcasts_and_reports_reach_while_one_fails_and_recovers(simulator, api_client_for):
    campaign = broadcast_campaign(starts_in=timedelta(0))
    _control(simulator, "indosat", outage_seconds=1.5)

    _drive(lambda: _others_are(campaign, State.ACKNOWLEDGED))
    rows = _rows(campaign)
    assert rows["indosat"].state == State.ERROR  # failing, and not holding the others back
    assert "503" in rows["indosat"].last_error

    def all_reaching() -> bool:
        rows = _rows(campaign)
        return len(rows) == len(SLUGS) and all(
            r.state == State.ACKNOWLEDGED and r.reach_reports.count() >= 2 for r in rows.values()
        )

    _drive(all_reaching)
    rows = _rows(campaign)
    assert rows["telkomsel"].attempts == rows["xl"].attempts == 1
    assert rows["indosat"].attempts >= 2
    assert rows["indosat"].acknowledged_at > max(rows["telkomsel"].acknowledged_at, rows["xl"].acknowledged_at)
    assert _log(rows["indosat"])[:3] == ["pending", "sending", "error"]
    assert all(row.operator_ref.startswith(f"{slug}-") for slug, row in rows.items())
    stats = requests.get(f"{simulator.url}/stats", timeout=5).json()
    assert [stats[slug]["area_broadcasts"] for slug in SLUGS] == [1, 1, 1]  # each operator got it exactly once
    sent_area = stats["telkomsel"]["broadcasts"][str(rows["telkomsel"].pk)]
    assert sent_area["reached"] >= rows["telkomsel"].handsets_reached > 0

    officer = UserFactory(role=Role.OFFICER)
    progress = api_client_for(officer).get(f"/api/v1/campaigns/{campaign.pk}/broadcast/").json()
    (run,) = progress["runs"]
    totals = [point["handsets_reached"] for point in run["series"]]
    assert totals == sorted(totals) and totals[-1] == run["handsets_reached"] > 0
    assert {op["operator"]: op["state"] for op in run["operators"]} == dict.fromkeys(SLUGS, "acknowledged")

    broadcasts.area_broadcasts_tick(now=campaign.ends_at + timedelta(seconds=1))
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.COMPLETED
    assert {row.state for row in _rows(campaign).values()} == {State.COMPLETED}


def test_a_cancel_issued_before_an_operator_acknowledged_is_delivered_after_the_acknowledgement(simulator):
    campaign = broadcast_campaign(starts_in=timedelta(0))
    _control(simulator, "indosat", outage_seconds=1.5)
    _drive(lambda: _others_are(campaign, State.ACKNOWLEDGED))
    assert _rows(campaign)["indosat"].state == State.ERROR

    campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah wilayah")
    cancelled_at = timezone.now()
    _drive(lambda: _others_are(campaign, State.CANCELLED))
    rows = _rows(campaign)
    assert rows["indosat"].state == State.ERROR and rows["indosat"].cancel_requested_at is not None
    stats = requests.get(f"{simulator.url}/stats", timeout=5).json()
    assert stats["indosat"]["area_cancels"] == 0  # nothing to cancel there yet
    assert stats["telkomsel"]["area_cancels"] == stats["xl"]["area_cancels"] == 1

    _drive(lambda: _rows(campaign)["indosat"].state == State.CANCELLED)
    indosat = _rows(campaign)["indosat"]
    assert _log(indosat)[-2:] == ["cancel_pending", "cancelled"]  # acknowledged, then cancelled
    assert indosat.acknowledged_at > cancelled_at
    stats = requests.get(f"{simulator.url}/stats", timeout=5).json()["indosat"]
    assert stats["area_broadcasts"] == 1 and stats["area_cancels"] == 1
    assert stats["broadcasts"][str(indosat.pk)]["cancelled"] is True
    # The operator's final count (after the cancel) is the figure we keep.
    _drive(lambda: _rows(campaign)["indosat"].handsets_reached == _sim_reached(simulator, indosat))


def _sim_reached(server: SimulatorServer, row: AreaBroadcast) -> int:
    stats = requests.get(f"{server.url}/stats", timeout=5).json()
    return stats[row.operator.slug]["broadcasts"][str(row.pk)]["reached"]


# --- through real worker processes ---------------------------------------------------------------------------


def _log_entries(row: AreaBroadcast) -> list[tuple[str, dict]]:
    return list(row.events.order_by("at", "id").values_list("state", "details"))


def test_area_broadcast_through_workers_reaches_each_operator_once_despite_an_outage_and_cancels_everywhere(
    stack,
):
    behaviour = {"broadcast_arrivals_per_second": 5000, "reach_report_interval_ms": 100}
    operators_create(stack, segments_per_second=1000, batch_size=100, behaviour=behaviour)
    blitar_areas()
    stack.start_workers("w1", "w2")
    stack.control("indosat", outage_seconds=3, outage_mode="503")
    campaign = broadcast_campaign(starts_in=timedelta(0), ends_at=timezone.now() + timedelta(minutes=10))
    others = [slug for slug in OPERATOR_SLUGS if slug != "indosat"]

    def others_acknowledged_while_indosat_failed() -> bool:
        rows = _rows(campaign)
        return (
            len(rows) == len(OPERATOR_SLUGS)
            and all(rows[slug].state == State.ACKNOWLEDGED for slug in others)
            and rows["indosat"].events.filter(state=State.ERROR).exists()
        )

    stack.drive(others_acknowledged_while_indosat_failed, timeout=15, every=0.2)
    rows = _rows(campaign)
    assert rows["indosat"].state in (State.ERROR, State.SENDING)  # failing, and not holding the others back
    assert rows["indosat"].acknowledged_at is None
    assert stack.stats()["indosat"]["outage_answers"] >= 1

    def all_reaching() -> bool:
        rows = _rows(campaign)
        return all(row.state == State.ACKNOWLEDGED and row.reach_reports.count() >= 3 for row in rows.values())

    stack.drive(all_reaching, timeout=15, every=0.2)
    rows = _rows(campaign)
    stats = stack.stats()
    for slug in OPERATOR_SLUGS:
        # Received exactly once: one broadcast taken, no repeated request for it.
        assert stats[slug]["area_broadcasts"] == 1, slug
        assert stats[slug]["replays"] == 0, slug
        assert rows[slug].operator_ref.startswith(f"{slug}-"), slug
    assert all(rows[slug].attempts == 1 for slug in others)
    indosat_log = _log_entries(rows["indosat"])
    states = [state for state, _ in indosat_log]
    assert states[:3] == [State.PENDING, State.SENDING, State.ERROR]
    assert states[-1] == State.ACKNOWLEDGED
    assert rows["indosat"].attempts == states.count(State.SENDING) >= 2
    assert all(details["status_code"] == 503 for state, details in indosat_log if state == State.ERROR)
    assert rows["indosat"].acknowledged_at > max(rows[slug].acknowledged_at for slug in others)

    (progress,) = broadcast_progress(campaign)
    for operator in progress["operators"]:
        reached = [point["handsets_reached"] for point in operator["series"]]
        assert reached == sorted(reached) and reached[-1] > reached[0], operator["operator"]
    totals = [point["handsets_reached"] for point in progress["series"]]
    assert totals == sorted(totals) and totals[-1] > 0

    campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah wilayah")

    def all_cancelled() -> bool:
        return all(row.state == State.CANCELLED for row in _rows(campaign).values())

    stack.drive(all_cancelled, timeout=15, every=0.2)
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
        lambda: all(
            row.handsets_reached == stack.stats()[slug]["broadcasts"][str(row.pk)]["reached"]
            for slug, row in _rows(campaign).items()
        ),
        timeout=10,
        every=0.2,
    )
