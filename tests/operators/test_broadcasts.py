"""Area-broadcast services: validation, estimate, start of the window, per-operator sends, cancel, reach, end."""

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from shapely.geometry import shape

from campaigns.models import Campaign, CampaignRun, RepeatPolicy
from campaigns.services import campaign_content_hash
from operators import broadcasts
from operators.areageom import point_count
from operators.gateways.base import AreaBroadcastResult, Outcome
from operators.models import AreaBroadcast, AreaBroadcastEvent, BroadcastSettings
from smsblast.models import AuditEvent, Notification, Role
from tests.concurrency import race_behind_a_row, skip_unless_postgresql
from tests.operators.area_scripted import (
    ScriptedAreaAdapter,
    blitar_areas,
    broadcast_campaign,
    every_regency,
    regency_boundary,
)
from tests.operators.factories import OperatorFactory
from tests.smsblast.factories import AreaFactory, UserFactory

State = AreaBroadcast.State
RETRY = AreaBroadcastResult(outcome=Outcome.RETRY, status_code=503, error="HTTP 503: maintenance")


@pytest.fixture
def operators(db):
    ScriptedAreaAdapter.reset()
    return [
        OperatorFactory(slug=slug, name=slug.title(), adapter="scripted_area", base_url=f"http://sim/{slug}")
        for slug in ("telkomsel", "indosat", "xl")
    ]


@pytest.fixture
def areas(db):
    blitar_areas()


def _start(campaign: Campaign) -> CampaignRun:
    return broadcasts.area_broadcast_run_start(campaign_id=campaign.pk, now=campaign.starts_at + timedelta(seconds=1))


def _by_slug(run: CampaignRun) -> dict[str, AreaBroadcast]:
    return {b.operator.slug: b for b in AreaBroadcast.objects.filter(run=run).select_related("operator")}


def _sent(campaign: Campaign) -> CampaignRun:
    """Start the campaign's window and send its broadcast to every operator."""
    run = _start(campaign)
    for row in _by_slug(run).values():
        broadcasts.area_broadcast_send(broadcast_id=row.pk)
    return run


def _targeted_run_writing_xl_then_indosat(operators) -> CampaignRun:
    """Return a targeted run of another campaign whose fan-out writes xl's batch, then indosat's."""
    from smsblast.models import Area
    from tests.operators.scripted import approved_campaign, sending_run
    from tests.smsblast.factories import SubscriberFactory

    district = Area.objects.get(code="35.05.01")
    by_slug = {operator.slug: operator for operator in operators}
    for slug in ("xl", "indosat"):  # the subscribers' order
        SubscriberFactory(area=district, operator=by_slug[slug])
    targeted = approved_campaign(skip_areas=True, area_codes=["35.05"])
    Campaign.objects.filter(pk=targeted.pk).update(status=Campaign.Status.SENDING)
    return sending_run(targeted)


# --- content hash and validation ------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("mode", "targeted"),
        ("area_codes", ["35.05.01"]),
        ("polygon", {"type": "Polygon", "coordinates": [[[112, -8], [112.1, -8], [112.1, -8.1], [112, -8]]]}),
        ("starts_at", timezone.now() + timedelta(hours=3)),
        ("ends_at", timezone.now() + timedelta(hours=4)),
        ("repeat_policy", RepeatPolicy.ONCE_PER_DAY),
        ("operator_slugs", ["xl"]),
        ("exercise", True),
    ],
)
def test_every_area_broadcast_field_is_in_the_content_hash(db, field, value):
    campaign = broadcast_campaign(approved=False)
    before = campaign_content_hash(campaign)
    setattr(campaign, field, value)
    assert campaign_content_hash(campaign) != before


def test_a_complete_broadcast_campaign_passes_validation(operators, areas):
    assert broadcasts.broadcast_errors(broadcast_campaign(approved=False)) == {}


@pytest.mark.parametrize(
    "fields, field, message",
    [
        ({"ends_in": timedelta(minutes=4)}, "ends_at", "at least 5 minutes"),
        ({"ends_in": timedelta(hours=25)}, "ends_at", "at most 24 hours"),
        ({"starts_in": timedelta(minutes=-1)}, "starts_at", "future"),
        ({"area_codes": []}, "area_codes", "area"),
        ({"operator_slugs": ["nope"]}, "operator_slugs", "nope"),
        ({"exercise": True}, "operator_slugs", "test endpoints"),
    ],
)
def test_broadcast_validation_names_what_is_wrong(operators, areas, fields, field, message):
    ends_in = fields.pop("ends_in", None)
    campaign = broadcast_campaign(approved=False, starts_in=fields.pop("starts_in", timedelta(minutes=10)), **fields)
    if ends_in is not None:
        campaign.ends_at = campaign.starts_at + ends_in
    errors = broadcasts.broadcast_errors(campaign)
    assert message in errors[field]


def test_an_exercise_goes_only_to_test_endpoints(operators, areas):
    OperatorFactory(slug="sim", adapter="scripted_area", base_url="http://sim/sim", is_test_endpoint=True)
    campaign = broadcast_campaign(exercise=True)
    assert broadcasts.broadcast_errors(campaign, now=timezone.now()) == {}
    run = _start(campaign)
    assert list(_by_slug(run)) == ["sim"]


def test_an_operator_that_cannot_receive_area_broadcasts_is_left_out_and_refused_when_named(operators, areas):
    # A pulling operator is never pushed to, and the development log adapter sends batches only: neither can take
    # an area broadcast, which would otherwise be retried for the whole window and end unacknowledged.
    OperatorFactory(slug="smartfren", name="Smartfren", adapter="pull", base_url="")
    OperatorFactory(slug="dev", name="Dev", adapter="log", base_url="")
    run = _start(broadcast_campaign())
    assert sorted(_by_slug(run)) == ["indosat", "telkomsel", "xl"]
    assert sorted(run.frozen["operators"]) == ["indosat", "telkomsel", "xl"]

    named = broadcast_campaign(approved=False, operator_slugs=["smartfren", "dev", "xl"])
    error = broadcasts.broadcast_errors(named)["operator_slugs"]
    assert "cannot receive area broadcasts" in error and "dev, smartfren" in error


# --- estimate ------------------------------------------------------------------------------


def test_estimate_is_census_population_times_the_admin_ownership_rate(operators, areas):
    settings_row = BroadcastSettings.load()
    settings_row.phone_ownership_rate = Decimal("0.5")
    settings_row.save()
    estimate = broadcasts.broadcast_estimate(broadcast_campaign(approved=False, area_codes=["35.05", "35.05.01"]))
    assert estimate["handsets"] == 1_261_699 // 2
    assert [row["code"] for row in estimate["by_area"]] == ["35.05"]  # the kecamatan is inside the regency
    assert "past the boundary" in estimate["note"]


def test_kecamatan_share_their_regency_population_equally(operators, areas):
    estimate = broadcasts.broadcast_estimate(broadcast_campaign(approved=False, area_codes=["35.05.01", "35.05.02"]))
    share = 1_261_699 // 3
    assert [row["population"] for row in estimate["by_area"]] == [share, share]
    assert estimate["handsets"] == 2 * int(share * Decimal("0.85"))


def test_a_drawn_polygon_is_estimated_from_the_regencies_it_overlaps(operators, areas):
    minx, miny, maxx, maxy = shape(regency_boundary("35.05")).bounds
    west_half = {
        "type": "Polygon",
        "coordinates": [[[minx - 1, miny - 1], [(minx + maxx) / 2, miny - 1], [(minx + maxx) / 2, maxy + 1],
                         [minx - 1, maxy + 1], [minx - 1, miny - 1]]],
    }  # fmt: skip
    estimate = broadcasts.broadcast_estimate(broadcast_campaign(approved=False, area_codes=[], polygon=west_half))
    assert 0.2 * 1_261_699 * 0.85 < estimate["handsets"] < 0.8 * 1_261_699 * 0.85


def test_a_polygon_drawn_beside_chosen_areas_adds_the_handsets_outside_them_to_the_estimate(operators, areas):
    # The broadcast goes to the chosen areas and the drawn polygon together; its estimate counts both, nobody twice.
    AreaFactory(code="35.04", name="Kabupaten Tulungagung", population=1_139_224, boundary=regency_boundary("35.04"))
    blitar = int(1_261_699 * Decimal("0.85"))
    tulungagung = int(1_139_224 * Decimal("0.85"))
    beside = broadcast_campaign(approved=False, area_codes=["35.05"], polygon=regency_boundary("35.04"))
    assert 0.99 * (blitar + tulungagung) < broadcasts.broadcast_estimate(beside)["handsets"] <= blitar + tulungagung
    within = broadcast_campaign(approved=False, area_codes=["35.05"], polygon=regency_boundary("35.05"))
    assert broadcasts.broadcast_estimate(within)["handsets"] == blitar


def _lasso(points: int, *, centre=(112.25, -8.2), radius: float = 0.08) -> dict:
    """Return a drawn loop of `points` points (closing point included) around a centre, wobbling as a hand draws."""
    ring = []
    for i in range(points - 1):
        turn = 2 * math.pi * i / (points - 1)
        reach = radius * (1 + 0.18 * math.sin(3 * turn) + 0.07 * math.sin(7 * turn))
        ring.append([centre[0] + reach * math.cos(turn), centre[1] + reach * math.sin(turn)])
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def test_a_drawn_polygon_estimated_again_and_again_reads_only_the_regencies_near_it_and_each_once(
    operators, areas, monkeypatch
):
    # A map client estimates again at every move of the area; each estimate read, and repaired, every regency
    # boundary again (all 514 of the published ones, about 2.5 s), whichever few the polygon meets.
    from collections import OrderedDict

    from operators import areageom
    from smsblast.models import Area

    every_regency()
    regencies = Area.objects.filter(level="kabupaten", boundary__isnull=False).count()
    campaign = broadcast_campaign(approved=False, area_codes=[], polygon=_lasso(20_000))
    read = []
    reading = areageom.geometry_from_geojson

    def counted(obj, **kwargs):
        read.append(json.dumps(obj, sort_keys=True))
        return reading(obj, **kwargs)

    monkeypatch.setattr(areageom, "geometry_from_geojson", counted)
    monkeypatch.setattr(areageom, "_drawn_areas", OrderedDict())

    estimates = [broadcasts.broadcast_estimate(campaign) for _ in range(10)]

    assert regencies > 10
    assert len(read) == len(set(read)), "an area was read again"
    assert len(read) < regencies / 2, f"{len(read)} areas read for a polygon over one regency of {regencies}"
    assert [row["code"] for row in estimates[-1]["by_area"]] == ["35.05"]
    assert estimates[-1] == estimates[0]


def test_a_drawn_area_crossing_itself_is_sent_as_the_approver_saw_it_after_previews(operators, areas):
    from campaigns.services import campaign_approve, campaign_submit
    from operators.areageom import geometry_from_geojson

    drawn = _lasso(20_000)
    ring = drawn["coordinates"][0]
    ring[10], ring[11] = ring[11], ring[10]  # a hand slipping: the outline crosses itself twice
    campaign = broadcast_campaign(approved=False, area_codes=[], polygon=drawn)
    previewed = broadcasts.broadcast_estimate(campaign)
    campaign_submit(campaign=campaign, actor=campaign.author)
    campaign_approve(
        campaign=campaign, approver=UserFactory(role=Role.APPROVER), content_hash=campaign_content_hash(campaign)
    )
    approval = campaign.approvals.get()

    run = _start(campaign)

    as_read = geometry_from_geojson(json.loads(json.dumps(drawn)))
    assert [shape(area).equals(as_read) for area in approval.area_shapes] == [True]
    assert run.frozen["estimated_handsets"] == previewed["handsets"]
    assert shape(run.frozen["area"]["geometry"]).contains(as_read)
    assert all(shape(row.area).contains(as_read) for row in _by_slug(run).values())


def test_an_estimate_counts_a_regency_boundary_loaded_after_an_earlier_estimate(operators, areas):
    polygon = _lasso(200, centre=(111.95, -8.1), radius=0.06)  # over the border of Blitar and Tulungagung
    campaign = broadcast_campaign(approved=False, area_codes=[], polygon=polygon)
    assert [row["code"] for row in broadcasts.broadcast_estimate(campaign)["by_area"]] == ["35.05"]

    AreaFactory(code="35.04", name="Kabupaten Tulungagung", population=1_139_224, boundary=regency_boundary("35.04"))

    assert [row["code"] for row in broadcasts.broadcast_estimate(campaign)["by_area"]] == ["35.04", "35.05"]


# --- start of the window -------------------------------------------------------------------


def test_start_freezes_the_run_and_writes_one_provider_message_per_operator(operators, areas):
    Operator = type(operators[0])
    Operator.objects.filter(slug="xl").update(vertex_limit=20)
    campaign = broadcast_campaign()
    run = _start(campaign)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENDING
    assert run.status == CampaignRun.Status.SENDING
    assert run.content_hash == campaign_content_hash(campaign)
    assert run.frozen["area"]["codes"] == ["35.05"]
    assert run.frozen["ends_at"] == campaign.ends_at.isoformat()
    rows = _by_slug(run)
    assert sorted(rows) == ["indosat", "telkomsel", "xl"]
    blitar = shape(regency_boundary("35.05"))
    assert point_count(rows["xl"].area) <= 20 < point_count(rows["telkomsel"].area) <= 250
    assert all(shape(row.area).contains(blitar) for row in rows.values())
    assert all(row.state == State.PENDING and row.events.count() == 1 for row in rows.values())
    # The same window never starts twice.
    assert _start(campaign) is None


def test_an_area_without_any_boundary_of_its_own_is_covered_by_its_regency(operators, areas):
    # Kecamatan 35.05.01 has no boundary loaded, Kota Blitar (35.72) has: the area sent must cover both.
    AreaFactory(code="35.72", name="Kota Blitar", boundary=regency_boundary("35.72"))
    run = _start(broadcast_campaign(area_codes=["35.05.01", "35.72"]))
    sent = shape(_by_slug(run)["telkomsel"].area)
    assert sent.contains(shape(regency_boundary("35.72")))
    assert sent.contains(shape(regency_boundary("35.05")))
    assert shape(run.frozen["area"]["geometry"]).contains(shape(regency_boundary("35.05")))


def test_nothing_starts_when_the_approval_no_longer_matches_the_content(operators, areas):
    campaign = broadcast_campaign()
    Campaign.objects.filter(pk=campaign.pk).update(text="Teks lain yang tidak disetujui.")
    assert _start(campaign) is None
    assert not CampaignRun.objects.filter(campaign=campaign).exists()
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT  # edited and approved again before anything goes out
    assert AuditEvent.objects.filter(action="campaign.dispatch_refused", object_id=str(campaign.pk)).count() == 1
    assert broadcasts.area_broadcasts_tick(now=campaign.starts_at + timedelta(seconds=3))["started"] == []


def test_the_tick_starts_due_windows_and_lists_their_sends(operators, areas):
    campaign = broadcast_campaign(starts_in=timedelta(seconds=-30))
    due = broadcasts.area_broadcasts_tick()
    run = CampaignRun.objects.get(campaign=campaign)
    assert due["started"] == [run.pk]
    assert sorted(due["sends"]) == sorted(str(b.pk) for b in AreaBroadcast.objects.filter(run=run))


def test_a_window_that_cannot_start_holds_back_neither_the_other_windows_nor_the_ends_due(
    operators, areas, monkeypatch, caplog
):
    first, second = (broadcast_campaign(starts_in=timedelta(seconds=-30)) for _ in range(2))
    ended = broadcast_campaign(starts_in=timedelta(hours=-2))
    ended_run = _start(ended)
    real_start = broadcasts.area_broadcast_run_start
    tried = []

    def start_failing_first(*, campaign_id, now):
        tried.append(campaign_id)
        if len(tried) == 1:  # a fault in the first campaign's data or in ours, half-way through its start
            real_start(campaign_id=campaign_id, now=now)
            raise ValueError("an unreadable frozen area")
        return real_start(campaign_id=campaign_id, now=now)

    monkeypatch.setattr(broadcasts, "area_broadcast_run_start", start_failing_first)

    due = broadcasts.area_broadcasts_tick()

    failed, other = (first, second) if tried[0] == first.pk else (second, first)
    assert not CampaignRun.objects.filter(campaign=failed).exists()  # its half-done start rolled back
    (run,) = CampaignRun.objects.filter(campaign=other)
    assert due["started"] == [run.pk]
    assert sorted(due["sends"]) == sorted(str(b.pk) for b in AreaBroadcast.objects.filter(run=run))
    ended_run.refresh_from_db()
    assert ended_run.status in CampaignRun.FINAL_STATUSES  # the window due to end ended all the same
    assert f"could not start the window of campaign {failed.pk}" in caplog.text

    monkeypatch.setattr(broadcasts, "area_broadcast_run_start", real_start)
    assert broadcasts.area_broadcasts_tick()["started"] == [CampaignRun.objects.get(campaign=failed).pk]


# --- sends ---------------------------------------------------------------------------------


def test_one_failing_operator_neither_blocks_nor_hides_the_others(operators, areas):
    ScriptedAreaAdapter.reset(indosat=[RETRY, RETRY])
    run = _start(broadcast_campaign())
    rows = _by_slug(run)
    for row in rows.values():
        broadcasts.area_broadcast_send(broadcast_id=row.pk)
    rows = _by_slug(run)
    assert rows["telkomsel"].state == rows["xl"].state == State.ACKNOWLEDGED
    assert rows["indosat"].state == State.ERROR
    assert rows["indosat"].last_error == "HTTP 503: maintenance"
    # Not due again before its backoff has passed.
    assert broadcasts.area_broadcast_send(broadcast_id=rows["indosat"].pk) is None
    later = rows["indosat"].next_attempt_at + timedelta(seconds=1)
    broadcasts.area_broadcast_send(broadcast_id=rows["indosat"].pk, now=later)
    assert AreaBroadcast.objects.get(pk=rows["indosat"].pk).state == State.ERROR
    later = AreaBroadcast.objects.get(pk=rows["indosat"].pk).next_attempt_at + timedelta(seconds=1)
    recovered = broadcasts.area_broadcast_send(broadcast_id=rows["indosat"].pk, now=later)
    assert recovered.state == State.ACKNOWLEDGED
    assert recovered.attempts == 3
    log = list(AreaBroadcastEvent.objects.filter(broadcast=recovered).values_list("state", flat=True))
    assert log == ["pending", "sending", "error", "sending", "error", "sending", "acknowledged"]


def test_the_frozen_text_area_and_window_are_what_the_adapter_sends(operators, areas):
    campaign = broadcast_campaign()
    run = _start(campaign)
    row = _by_slug(run)["telkomsel"]
    broadcasts.area_broadcast_send(broadcast_id=row.pk)
    kind, sent = ScriptedAreaAdapter.sent[-1]
    assert kind == "send"
    assert sent.broadcast_id == str(row.pk)
    assert (sent.text, sent.sender, sent.area_codes) == (campaign.text, campaign.sender, ["35.05"])
    assert sent.geometry == row.area
    assert sent.starts_at == campaign.starts_at.isoformat() and sent.ends_at == campaign.ends_at.isoformat()
    assert sent.callback_url.endswith("/api/v1/operator/area-broadcast-reports/")


def test_a_refusal_ends_at_once_and_a_failing_operator_is_retried_until_the_window_ends(operators, areas):
    refused = AreaBroadcastResult(outcome=Outcome.FAILED, status_code=422, error="HTTP 422: polygon too large")
    attempts = broadcasts.MAX_SEND_ATTEMPTS + 6
    ScriptedAreaAdapter.reset(xl=[refused], indosat=[RETRY] * attempts)
    campaign = broadcast_campaign()
    run = _start(campaign)
    rows = _by_slug(run)
    assert broadcasts.area_broadcast_send(broadcast_id=rows["xl"].pk).state == State.RETRIES_EXHAUSTED

    moment = timezone.now()
    for _ in range(attempts - 1):  # every 3 minutes of the hour-long window: still worth trying
        moment += timedelta(minutes=3)
        broadcasts.area_broadcast_send(broadcast_id=rows["indosat"].pk, now=moment)
    indosat = AreaBroadcast.objects.get(pk=rows["indosat"].pk)
    assert indosat.state == State.ERROR
    assert indosat.attempts == attempts - 1 > broadcasts.MAX_SEND_ATTEMPTS
    assert indosat.next_attempt_at < campaign.ends_at

    # The last failure comes so close to the end that the next try would fall after it.
    broadcasts.area_broadcast_send(broadcast_id=rows["indosat"].pk, now=campaign.ends_at - timedelta(seconds=1))
    indosat.refresh_from_db()
    assert indosat.state == State.RETRIES_EXHAUSTED
    assert indosat.last_error.startswith("Not acknowledged before the window ends")
    assert AuditEvent.objects.filter(action="area_broadcast.failed").count() == 2


def test_a_failing_operator_whose_backoff_would_pass_the_end_is_tried_once_more_before_the_window_ends(
    operators, areas
):
    ScriptedAreaAdapter.reset(indosat=[RETRY] * 10)
    campaign = broadcast_campaign()
    row = _by_slug(_start(campaign))["indosat"]
    moment = timezone.now()
    for _ in range(9):  # the backoff grows to its cap of two minutes
        moment += timedelta(minutes=3)
        broadcasts.area_broadcast_send(broadcast_id=row.pk, now=moment)

    # Its next backoff (one to two minutes) would pass the end, yet 50 seconds of the window are left: time enough
    # for one more try, should the operator recover.
    failed = broadcasts.area_broadcast_send(broadcast_id=row.pk, now=campaign.ends_at - timedelta(seconds=50))
    assert failed.state == State.ERROR
    assert failed.next_attempt_at < campaign.ends_at
    acknowledged = broadcasts.area_broadcast_send(broadcast_id=row.pk, now=failed.next_attempt_at)
    assert acknowledged.state == State.ACKNOWLEDGED


def test_a_deactivated_operator_is_sent_nothing_until_it_is_reactivated_within_the_window(operators, areas):
    run = _start(broadcast_campaign())
    xl = _by_slug(run)["xl"]
    type(operators[0]).objects.filter(slug="xl").update(active=False)
    assert broadcasts.area_broadcast_send(broadcast_id=xl.pk) is None
    assert ScriptedAreaAdapter.sent == []
    xl.refresh_from_db()
    assert xl.state == State.PENDING and xl.attempts == 0
    assert xl.last_error == broadcasts.OPERATOR_INACTIVE
    assert str(xl.pk) not in broadcasts.area_broadcasts_tick()["sends"]  # held, not tried every tick

    type(operators[0]).objects.filter(slug="xl").update(active=True)
    assert broadcasts.area_broadcast_send(broadcast_id=xl.pk, now=xl.next_attempt_at).state == State.ACKNOWLEDGED


def test_a_send_that_comes_due_only_after_the_window_ended_sends_nothing_and_says_why(operators, areas):
    campaign = broadcast_campaign()
    run = _start(campaign)
    row = _by_slug(run)["telkomsel"]
    late = campaign.ends_at + timedelta(seconds=1)
    assert broadcasts.area_broadcast_send(broadcast_id=row.pk, now=late) is None
    assert ScriptedAreaAdapter.sent == []
    row.refresh_from_db()
    assert row.state == AreaBroadcast.State.RETRIES_EXHAUSTED
    assert row.last_error == "The window ended before the operator acknowledged."
    assert row.events.filter(state=AreaBroadcast.State.RETRIES_EXHAUSTED).exists()


@pytest.mark.parametrize("status", [Campaign.Status.APPROVED, Campaign.Status.SCHEDULED])
def test_an_approved_broadcast_whose_window_ended_before_it_started_is_cancelled_saying_so_and_its_author_told(
    operators, areas, status
):
    # Approved in the window's last seconds, or no scheduler tick during the window: it must not wait forever.
    author = UserFactory(role=Role.OFFICER, email="ofc@blitarkab.go.id")
    campaign = broadcast_campaign(author=author, status=status)
    broadcasts.area_broadcasts_tick(now=campaign.starts_at - timedelta(seconds=1))
    campaign.refresh_from_db()
    assert campaign.status == status  # before its window: waiting, as it should

    due = broadcasts.area_broadcasts_tick(now=campaign.ends_at)

    assert due["started"] == [] and ScriptedAreaAdapter.sent == []
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.CANCELLED and not campaign.runs.exists()
    event = AuditEvent.objects.get(action="campaign.window_missed", object_id=str(campaign.pk))
    assert (event.actor, event.from_state, event.to_state) == (None, status, Campaign.Status.CANCELLED)
    assert event.details["reason"] == "The broadcast window ended before it could start; nothing was sent."
    (notice,) = Notification.objects.filter(kind="campaign.window_missed")
    assert notice.user == author and notice.subject.startswith("Tidak disiarkan: ")
    assert "tidak ada yang dikirim" in notice.body and f"/campaigns/{campaign.pk}/" in notice.body
    # Ticks after it change nothing more.
    broadcasts.area_broadcasts_tick(now=campaign.ends_at + timedelta(minutes=1))
    assert AuditEvent.objects.filter(action="campaign.window_missed").count() == 1
    assert Notification.objects.filter(kind="campaign.window_missed").count() == 1


def test_a_broadcast_whose_window_passed_unstarted_in_draft_or_sending_is_left_to_its_own_flow(operators, areas):
    draft = broadcast_campaign(approved=False)
    sending = broadcast_campaign()
    _start(sending)
    broadcasts.area_broadcasts_tick(now=max(draft.ends_at, sending.ends_at) + timedelta(seconds=1))
    draft.refresh_from_db()
    sending.refresh_from_db()
    assert draft.status == Campaign.Status.DRAFT
    assert sending.status != Campaign.Status.CANCELLED
    assert not AuditEvent.objects.filter(action="campaign.window_missed").exists()


# --- cancel --------------------------------------------------------------------------------


def test_a_cancel_reaches_every_operator_that_may_hold_the_broadcast_and_nothing_is_pushed_again(operators, areas):
    ScriptedAreaAdapter.reset(indosat=[RETRY])
    run = _start(broadcast_campaign())
    rows = _by_slug(run)
    broadcasts.area_broadcast_send(broadcast_id=rows["telkomsel"].pk)
    broadcasts.area_broadcast_send(broadcast_id=rows["indosat"].pk)  # fails: it may or may not hold it
    broadcasts.area_broadcast_run_cancel(run=run)
    rows = _by_slug(run)
    assert rows["xl"].state == State.CANCELLED  # never sent: nothing to cancel
    assert rows["telkomsel"].state == State.CANCEL_PENDING
    assert rows["indosat"].state == State.CANCEL_PENDING and rows["indosat"].acknowledged_at is None

    # Its retry time comes and goes: the cancelled broadcast is not pushed again.
    later = timezone.now() + timedelta(minutes=10)
    assert broadcasts.area_broadcast_send(broadcast_id=rows["indosat"].pk, now=later) is None
    assert str(rows["indosat"].pk) not in broadcasts.area_broadcasts_tick(now=later)["sends"]

    # An operator that never took it answers 404 to the cancel, which ends it cancelled.
    ScriptedAreaAdapter.script["indosat"] = [
        AreaBroadcastResult(outcome=Outcome.FAILED, status_code=404, error="HTTP 404: Unknown area broadcast.")
    ]
    assert broadcasts.area_broadcast_cancel_send(broadcast_id=rows["indosat"].pk).state == State.CANCELLED
    assert broadcasts.area_broadcast_cancel_send(broadcast_id=rows["telkomsel"].pk).state == State.CANCELLED
    sent = [(kind, b.base_url.rsplit("/", 1)[-1]) for kind, b in ScriptedAreaAdapter.sent]
    assert sent.count(("send", "indosat")) == 1 and ("cancel", "indosat") in sent
    assert ("send", "xl") not in sent and ("cancel", "xl") not in sent
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.CANCELLED


def test_a_cancel_during_a_send_follows_its_answer_whatever_it_is(operators, areas):
    run = _start(broadcast_campaign())
    rows = _by_slug(run)
    # Two sends in flight when the campaign is cancelled: their answers arrive after the cancel.
    claimed = {slug: broadcasts._claim_send(rows[slug].pk, timezone.now()) for slug in ("telkomsel", "indosat")}
    broadcasts.area_broadcast_run_cancel(run=run)
    assert {_by_slug(run)[slug].state for slug in claimed} == {State.SENDING}

    accepted = broadcasts._record_send(
        claimed["telkomsel"], AreaBroadcastResult(outcome=Outcome.ACCEPTED, status_code=202), now=None
    )
    failed = broadcasts._record_send(claimed["indosat"], RETRY, now=None)
    assert accepted.state == failed.state == State.CANCEL_PENDING  # each may hold it: each is told to stop
    later = timezone.now() + timedelta(minutes=10)
    assert broadcasts.area_broadcast_send(broadcast_id=failed.pk, now=later) is None
    assert broadcasts.area_broadcast_cancel_send(broadcast_id=failed.pk).state == State.CANCELLED
    assert [kind for kind, _ in ScriptedAreaAdapter.sent] == ["cancel"]


def test_a_cancelled_send_whose_lease_ran_out_is_cancelled_not_pushed_again(operators, areas):
    run = _start(broadcast_campaign())
    row = _by_slug(run)["xl"]
    broadcasts._claim_send(row.pk, timezone.now())  # its worker dies before the answer
    broadcasts.area_broadcast_run_cancel(run=run)
    lapsed = timezone.now() + broadcasts.LEASE + timedelta(seconds=1)
    assert broadcasts.area_broadcast_send(broadcast_id=row.pk, now=lapsed) is None
    row.refresh_from_db()
    assert row.state == State.CANCEL_PENDING and row.attempts == 1
    assert broadcasts.area_broadcast_cancel_send(broadcast_id=row.pk, now=lapsed).state == State.CANCELLED
    assert [kind for kind, _ in ScriptedAreaAdapter.sent] == ["cancel"]


def test_an_unacknowledged_cancel_left_at_the_end_of_the_window_is_not_counted_as_completed(operators, areas):
    ScriptedAreaAdapter.reset(indosat=[RETRY, RETRY])
    campaign = broadcast_campaign()
    run = _start(campaign)
    rows = _by_slug(run)
    broadcasts.area_broadcast_send(broadcast_id=rows["indosat"].pk)
    broadcasts.area_broadcast_run_cancel(run=run)
    broadcasts.area_broadcast_cancel_send(broadcast_id=rows["indosat"].pk)  # the operator is still down
    broadcasts.area_broadcasts_tick(now=campaign.ends_at + timedelta(seconds=1))
    row = AreaBroadcast.objects.get(pk=rows["indosat"].pk)
    assert row.state == State.RETRIES_EXHAUSTED
    assert row.last_error == broadcasts.WINDOW_ENDED_UNACKNOWLEDGED


def test_a_failing_cancel_is_retried_until_the_operator_confirms(operators, areas):
    run = _start(broadcast_campaign())
    row = _by_slug(run)["xl"]
    broadcasts.area_broadcast_send(broadcast_id=row.pk)
    ScriptedAreaAdapter.reset(xl=[RETRY, RETRY])
    broadcasts.area_broadcast_run_cancel(run=run)
    moment = timezone.now()
    for _ in range(3):
        moment += timedelta(minutes=5)
        broadcasts.area_broadcast_cancel_send(broadcast_id=row.pk, now=moment)
    row.refresh_from_db()
    assert row.state == State.CANCELLED
    assert row.cancel_attempts == 3


def test_a_campaign_cancelled_through_its_service_reaches_the_operators_on_the_next_tick(operators, areas):
    from campaigns.services import campaign_cancel

    campaign = broadcast_campaign()
    _sent(campaign)
    campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah wilayah")
    due = broadcasts.area_broadcasts_tick()
    assert sorted(due["cancels"]) == sorted(str(pk) for pk in AreaBroadcast.objects.values_list("pk", flat=True))


def test_a_broadcast_cancelled_by_a_user_names_that_user_on_its_run_and_provider_messages_events(operators, areas):
    from campaigns.services import campaign_cancel

    campaign = broadcast_campaign()
    run = _sent(campaign)
    campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah wilayah")

    events = AuditEvent.objects.filter(action__in=["run.cancel", "area_broadcast.cancel_request"])
    assert sorted(events.values_list("object_type", "action", "actor")) == [
        ("campaigns.campaignrun", "run.cancel", campaign.author_id),
        *[("operators.areabroadcast", "area_broadcast.cancel_request", campaign.author_id)] * 3,
    ]
    assert events.get(action="run.cancel").object_id == str(run.pk)


# --- reach and end of the window -----------------------------------------------------------


def test_reach_reports_are_monotonic_idempotent_and_scoped_to_the_operator(operators, areas, api_client_for):
    run = _start(broadcast_campaign())
    rows = _by_slug(run)
    user = UserFactory(role=Role.OPERATOR)
    operators[0].user = user  # telkomsel
    operators[0].save()
    client = api_client_for(user)
    url = "/api/v1/operator/area-broadcast-reports/"
    telkomsel = str(rows["telkomsel"].pk)
    at = timezone.now()
    first = {"broadcast_id": telkomsel, "handsets_reached": 500, "at": at.isoformat()}
    assert client.post(url, first, format="json").status_code == 200
    assert client.post(url, first, format="json").status_code == 200  # a repeat is harmless
    late_smaller = {"broadcast_id": telkomsel, "handsets_reached": 300, "at": (at - timedelta(seconds=5)).isoformat()}
    later = {"broadcast_id": telkomsel, "handsets_reached": 900, "at": (at + timedelta(seconds=5)).isoformat()}
    answer = client.post(url, {"reports": [late_smaller, later]}, format="json")
    assert answer.status_code == 200
    assert answer.json()["broadcasts"] == [{"broadcast_id": telkomsel, "handsets_reached": 900, "state": "pending"}]
    assert rows["telkomsel"].reach_reports.count() == 3

    foreign = {"broadcast_id": str(rows["xl"].pk), "handsets_reached": 1, "at": at.isoformat()}
    assert client.post(url, foreign, format="json").status_code == 404
    assert client.post(url, {"broadcast_id": telkomsel, "handsets_reached": -1}, format="json").status_code == 400
    too_many = {"broadcast_id": telkomsel, "handsets_reached": 2**31, "at": at.isoformat()}
    assert client.post(url, too_many, format="json").status_code == 400
    officer = UserFactory(role=Role.OFFICER)
    assert api_client_for(officer).post(url, first, format="json").status_code == 403

    progress = api_client_for(officer).get(f"/api/v1/campaigns/{run.campaign_id}/broadcast/").json()
    assert progress["estimate"]["handsets"] == int(1_261_699 * Decimal("0.85"))
    (run_progress,) = progress["runs"]
    assert run_progress["handsets_reached"] == 900
    # In the order the operator counted: the late report of 300 belongs before the 500.
    assert [point["handsets_reached"] for point in run_progress["series"]] == [300, 500, 900]


def test_an_operator_account_not_linked_to_an_operator_is_refused_reach_reports(operators, areas, api_client_for):
    run = _start(broadcast_campaign())
    telkomsel = str(_by_slug(run)["telkomsel"].pk)
    unlinked = api_client_for(UserFactory(role=Role.OPERATOR))
    report = {"broadcast_id": telkomsel, "handsets_reached": 500, "at": timezone.now().isoformat()}
    response = unlinked.post("/api/v1/operator/area-broadcast-reports/", report, format="json")
    assert response.status_code == 403
    assert "not linked to an operator" in response.json()["detail"]
    assert not _by_slug(run)["telkomsel"].reach_reports.exists()


def test_a_deactivated_operator_still_reports_the_reach_of_a_broadcast_it_was_sent(operators, areas, api_client_for):
    run = _start(broadcast_campaign())
    telkomsel = _by_slug(run)["telkomsel"]
    operators[0].user = UserFactory(role=Role.OPERATOR)
    operators[0].active = False
    operators[0].save()
    report = {"broadcast_id": str(telkomsel.pk), "handsets_reached": 40, "at": timezone.now().isoformat()}

    answer = api_client_for(operators[0].user).post("/api/v1/operator/area-broadcast-reports/", report, format="json")

    assert answer.status_code == 200
    telkomsel.refresh_from_db()
    assert telkomsel.handsets_reached == 40


def test_a_reach_report_timed_after_its_arrival_is_kept_at_its_arrival(operators, areas):
    run = _start(broadcast_campaign())
    telkomsel = _by_slug(run)["telkomsel"]
    before = timezone.now()

    recorded = broadcasts.area_broadcast_report(
        operator=operators[0],
        broadcast_id=telkomsel.pk,
        handsets_reached=500,
        at=timezone.now() + timedelta(days=365 * 100),
    )

    assert before <= recorded.reached_at <= timezone.now()
    assert before <= telkomsel.reach_reports.get().at <= timezone.now()


def test_a_reach_report_timed_after_its_arrival_and_repeated_is_stored_once(operators, areas):
    # An operator whose clock runs ahead repeats a report whose answer it lost: the repeat adds nothing.
    run = _start(broadcast_campaign())
    telkomsel = _by_slug(run)["telkomsel"]
    ahead = timezone.now() + timedelta(minutes=2)
    for reached in (500, 500, 500, 700):
        broadcasts.area_broadcast_report(
            operator=operators[0], broadcast_id=telkomsel.pk, handsets_reached=reached, at=ahead
        )

    assert list(telkomsel.reach_reports.values_list("handsets_reached", flat=True)) == [500, 700]


def test_a_reach_report_timed_before_its_broadcast_was_handed_over_is_kept_at_the_handover(operators, areas):
    run = _start(broadcast_campaign())
    telkomsel = _by_slug(run)["telkomsel"]

    recorded = broadcasts.area_broadcast_report(
        operator=operators[0],
        broadcast_id=telkomsel.pk,
        handsets_reached=500,
        at=datetime(1970, 1, 1, tzinfo=UTC),
    )

    assert recorded.reached_at == telkomsel.created_at
    assert telkomsel.reach_reports.get().at == telkomsel.created_at


def test_the_end_of_the_window_completes_the_run_with_failures_when_an_operator_never_acknowledged(operators, areas):
    ScriptedAreaAdapter.reset(indosat=[RETRY])
    campaign = broadcast_campaign()
    run = _sent(campaign)
    broadcasts.area_broadcasts_tick(now=campaign.ends_at + timedelta(seconds=1))
    rows = _by_slug(run)
    assert rows["telkomsel"].state == rows["xl"].state == State.COMPLETED
    assert rows["indosat"].state == State.RETRIES_EXHAUSTED
    assert "window ended" in rows["indosat"].last_error
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.COMPLETED_WITH_FAILURES
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.COMPLETED_WITH_FAILURES


def test_the_end_of_the_window_completes_the_campaign_when_every_operator_acknowledged(operators, areas):
    campaign = broadcast_campaign()
    _sent(campaign)
    broadcasts.area_broadcasts_tick(now=campaign.ends_at)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.COMPLETED
    assert AuditEvent.objects.filter(action="campaign.complete", object_id=str(campaign.pk)).exists()


def test_every_state_change_of_a_provider_message_writes_an_audit_event(operators, areas):
    ScriptedAreaAdapter.reset(indosat=[RETRY])
    campaign = broadcast_campaign()
    run = _sent(campaign)  # telkomsel and xl acknowledged, indosat failed once
    broadcasts.area_broadcast_run_cancel(run=run)  # telkomsel is then cancelled; xl's cancel is never confirmed
    broadcasts.area_broadcast_cancel_send(broadcast_id=_by_slug(run)["telkomsel"].pk)
    broadcasts.area_broadcasts_tick(now=campaign.ends_at + timedelta(seconds=1))
    rows = _by_slug(run)
    assert {slug: row.state for slug, row in rows.items()} == {
        "telkomsel": State.CANCELLED,
        "indosat": State.RETRIES_EXHAUSTED,
        "xl": State.COMPLETED,
    }
    for row in rows.values():
        log = list(AreaBroadcastEvent.objects.filter(broadcast=row).values_list("state", flat=True))
        audited = AuditEvent.objects.filter(object_type="operators.areabroadcast", object_id=str(row.pk))
        assert [(event.from_state, event.to_state) for event in audited.order_by("id")] == list(
            zip(["", *log[:-1]], log, strict=True)
        )
        assert all(event.action.startswith("area_broadcast.") for event in audited)


def test_an_area_broadcast_whose_window_has_ended_cannot_be_approved(operators, areas):
    from campaigns.services import campaign_approve
    from smsblast.errors import ServiceConflict

    pending = Campaign.Status.PENDING_APPROVAL
    campaign = broadcast_campaign(approved=False, starts_in=timedelta(hours=-2), status=pending)
    approver = UserFactory(role=Role.APPROVER)
    with pytest.raises(ServiceConflict, match="window ended"):
        campaign_approve(campaign=campaign, approver=approver, content_hash=campaign_content_hash(campaign))
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PENDING_APPROVAL
    assert not campaign.approvals.exists()


def test_submitting_an_area_broadcast_checks_its_window_and_operators(operators, areas):
    from campaigns.services import campaign_submit
    from smsblast.errors import ServiceInvalid

    campaign = broadcast_campaign(approved=False)
    campaign.ends_at = campaign.starts_at + timedelta(minutes=4)
    campaign.save()
    with pytest.raises(ServiceInvalid, match="at least 5 minutes"):
        campaign_submit(campaign=campaign, actor=campaign.author)
    campaign.ends_at = campaign.starts_at + timedelta(hours=2)
    campaign.save()
    assert campaign_submit(campaign=campaign, actor=campaign.author).status == Campaign.Status.PENDING_APPROVAL


def test_submitting_an_area_broadcast_without_a_window_is_refused_naming_the_window(operators, areas):
    from campaigns.services import campaign_submit
    from smsblast.errors import ServiceInvalid

    campaign = broadcast_campaign(approved=False, starts_at=None, ends_at=None)
    with pytest.raises(ServiceInvalid) as refused:
        campaign_submit(campaign=campaign, actor=campaign.author)
    assert "window" in refused.value.errors["starts_at"]
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


def test_submitting_an_area_broadcast_whose_window_ends_before_it_starts_is_refused_saying_so(operators, areas):
    from campaigns.services import campaign_submit
    from smsblast.errors import ServiceInvalid

    campaign = broadcast_campaign(approved=False)
    campaign.ends_at = campaign.starts_at - timedelta(minutes=30)
    campaign.save()
    with pytest.raises(ServiceInvalid) as refused:
        campaign_submit(campaign=campaign, actor=campaign.author)
    assert refused.value.errors["ends_at"] == "The broadcast window must end after it starts."
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


def test_a_run_that_found_no_operator_to_send_to_is_listed_with_the_broadcast_progress(
    operators, areas, api_client_for
):
    type(operators[0]).objects.update(active=False)
    campaign = broadcast_campaign()
    run = _start(campaign)
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.COMPLETED_WITH_FAILURES
    client = api_client_for(campaign.author)
    for url in (f"/api/v1/campaigns/{campaign.pk}/broadcast/", f"/api/v1/campaigns/{campaign.pk}/"):
        body = client.get(url).json()
        runs = body["runs"] if "estimate" in body else body["broadcast"]["runs"]
        assert [(r["run_id"], r["status"], r["operators"]) for r in runs] == [(run.pk, "completed_with_failures", [])]


def test_the_campaign_detail_shows_the_estimate_to_composer_and_approver(operators, areas, api_client_for):
    campaign = broadcast_campaign(approved=False)
    for role in (Role.OFFICER, Role.APPROVER):
        detail = api_client_for(UserFactory(role=role)).get(f"/api/v1/campaigns/{campaign.pk}/").json()
        assert detail["broadcast"]["estimate"]["handsets"] == int(1_261_699 * Decimal("0.85"))
        assert "past the boundary" in detail["broadcast"]["estimate"]["note"]
        assert detail["broadcast"]["runs"] == []


def test_a_cancel_never_confirmed_is_closed_when_the_window_ends(operators, areas):
    campaign = broadcast_campaign()
    run = _sent(campaign)
    ScriptedAreaAdapter.reset(xl=[RETRY] * 3)
    broadcasts.area_broadcast_run_cancel(run=run)
    for slug in ("telkomsel", "indosat"):
        broadcasts.area_broadcast_cancel_send(broadcast_id=_by_slug(run)[slug].pk)
    broadcasts.area_broadcast_cancel_send(broadcast_id=_by_slug(run)["xl"].pk)
    assert _by_slug(run)["xl"].state == State.CANCEL_PENDING
    broadcasts.area_broadcasts_tick(now=campaign.ends_at + timedelta(seconds=1))
    rows = _by_slug(run)
    assert rows["telkomsel"].state == rows["indosat"].state == State.CANCELLED
    assert rows["xl"].state == State.COMPLETED
    assert "before the cancel was confirmed" in rows["xl"].last_error
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.CANCELLED


def test_a_cancel_passed_on_after_the_window_ended_records_no_move_it_did_not_make(operators, areas):
    campaign = broadcast_campaign()
    run = _sent(campaign)
    read_while_sending = CampaignRun.objects.get(pk=run.pk)
    broadcasts.area_broadcast_run_finish(run_id=run.pk, now=campaign.ends_at + timedelta(seconds=1))

    broadcasts.area_broadcast_run_cancel(run=read_while_sending)

    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.COMPLETED
    events = AuditEvent.objects.filter(object_type="campaigns.campaignrun", object_id=str(run.pk))
    assert [(e.action, e.from_state, e.to_state) for e in events] == [
        ("run.start", "", "sending"),
        ("run.complete", "sending", "completed"),
    ]


@pytest.mark.django_db(transaction=True)
def test_cancel_as_the_window_ends_gives_one_clear_outcome_without_a_deadlock(operators, areas):
    from campaigns.services import campaign_cancel
    from smsblast.errors import ServiceConflict

    skip_unless_postgresql()
    campaign = broadcast_campaign()
    run = _sent(campaign)
    errors = race_behind_a_row(
        run,
        lambda: broadcasts.area_broadcast_run_finish(run_id=run.pk, now=campaign.ends_at),
        lambda: campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah wilayah"),
    )
    assert [type(error) for error in errors] == [ServiceConflict]  # the window ended first: a clear 409
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.COMPLETED
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.COMPLETED


@pytest.mark.django_db(transaction=True)
def test_a_reach_report_as_the_window_ends_is_kept_without_a_deadlock(operators, areas):
    skip_unless_postgresql()
    campaign = broadcast_campaign()
    run = _sent(campaign)
    xl = _by_slug(run)["xl"]
    long_ago = timezone.now() - timedelta(minutes=20)
    CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=long_ago)
    # The window's end waits for the run; the report, arriving next, must not take the run before its broadcast.
    errors = race_behind_a_row(
        run,
        lambda: broadcasts.area_broadcast_run_finish(run_id=run.pk, now=campaign.ends_at),
        lambda: broadcasts.area_broadcast_report(
            operator=xl.operator, broadcast_id=xl.pk, handsets_reached=700, at=timezone.now()
        ),
        second_may_pass=True,
    )
    assert errors == []
    run.refresh_from_db()
    assert run.status == CampaignRun.Status.COMPLETED
    assert AreaBroadcast.objects.get(pk=xl.pk).handsets_reached == 700
    assert run.last_progress_at > long_ago  # the report still counts as progress


@pytest.mark.django_db(transaction=True)
def test_a_cancel_claimed_as_the_window_ends_is_confirmed_without_a_deadlock(operators, areas):
    skip_unless_postgresql()
    campaign = broadcast_campaign()
    run = _sent(campaign)
    broadcasts.area_broadcast_run_cancel(run=run)
    xl = _by_slug(run)["xl"]
    assert xl.state == State.CANCEL_PENDING
    # The window's end waits for the run; the cancel, claimed next, must not take the run after its broadcast.
    errors = race_behind_a_row(
        run,
        lambda: broadcasts.area_broadcast_run_finish(run_id=run.pk, now=campaign.ends_at),
        lambda: broadcasts.area_broadcast_cancel_send(broadcast_id=xl.pk),
        second_may_pass=True,
    )
    assert errors == []
    rows = _by_slug(run)
    assert rows["xl"].state == State.CANCELLED  # the operator confirmed before the window closed the rest
    assert rows["xl"].cancel_attempts == 1
    assert rows["telkomsel"].state == rows["indosat"].state == State.COMPLETED
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_a_send_claimed_as_the_window_ends_is_recorded_without_a_deadlock(operators, areas):
    skip_unless_postgresql()
    campaign = broadcast_campaign()
    run = _start(campaign)
    for slug in ("telkomsel", "indosat"):
        broadcasts.area_broadcast_send(broadcast_id=_by_slug(run)[slug].pk)
    xl = _by_slug(run)["xl"]  # its send task comes late
    # The window's end waits for the run; the send, claimed next, must not take the run after its broadcast.
    errors = race_behind_a_row(
        run,
        lambda: broadcasts.area_broadcast_run_finish(run_id=run.pk, now=campaign.ends_at),
        lambda: broadcasts.area_broadcast_send(broadcast_id=xl.pk),
        second_may_pass=True,
    )
    assert errors == []
    assert set(AreaBroadcast.objects.filter(run=run).values_list("state", flat=True)) == {State.COMPLETED}
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.COMPLETED


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("meanwhile", ["window_ends", "campaign_cancelled"])
def test_a_targeted_fan_out_racing_a_broadcast_run_completes_without_a_deadlock(operators, areas, meanwhile):
    from campaigns import dispatch
    from campaigns.models import DispatchBatch
    from campaigns.services import campaign_cancel

    skip_unless_postgresql()
    campaign = broadcast_campaign()
    run = _sent(campaign)
    targeted_run = _targeted_run_writing_xl_then_indosat(operators)
    first = {
        "window_ends": lambda: broadcasts.area_broadcast_run_finish(run_id=run.pk, now=campaign.ends_at),
        "campaign_cancelled": lambda: campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah wilayah"),
    }[meanwhile]

    # A reach report holds telkomsel's broadcast; the window's end or the cancel waits for it, the fan-out
    # starts meanwhile.
    errors = race_behind_a_row(
        _by_slug(run)["telkomsel"], first, lambda: dispatch.run_fan_out(run_id=targeted_run.pk), second_may_pass=True
    )
    assert errors == []
    assert DispatchBatch.objects.filter(run=targeted_run).count() == 2
    if meanwhile == "window_ends":
        assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.COMPLETED
    else:
        assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.CANCELLED
        assert set(AreaBroadcast.objects.filter(run=run).values_list("state", flat=True)) == {State.CANCEL_PENDING}


@pytest.mark.django_db(transaction=True)
def test_a_series_of_reach_reports_as_the_window_ends_is_kept_without_a_deadlock(operators, areas, api_client_for):
    skip_unless_postgresql()
    campaign = broadcast_campaign()
    run = _sent(campaign)
    xl = _by_slug(run)["xl"]
    user = UserFactory(role=Role.OPERATOR)
    type(xl.operator).objects.filter(pk=xl.operator_id).update(user=user)
    client = api_client_for(user)
    at = timezone.now() - timedelta(minutes=10)
    type(xl).objects.filter(pk=xl.pk).update(created_at=at - timedelta(minutes=5))  # handed over before the series
    series = [
        {"broadcast_id": str(xl.pk), "handsets_reached": reached, "at": (at + timedelta(minutes=minutes)).isoformat()}
        for minutes, reached in ((0, 300), (5, 700))
    ]
    answers = []

    # The window's end waits for the run; the reports, arriving next, must not take the run after the broadcast.
    errors = race_behind_a_row(
        run,
        lambda: broadcasts.area_broadcast_run_finish(run_id=run.pk, now=campaign.ends_at),
        lambda: answers.append(
            client.post("/api/v1/operator/area-broadcast-reports/", {"reports": series}, format="json")
        ),
        second_may_pass=True,
    )
    assert errors == []
    assert [answer.status_code for answer in answers] == [200]
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.COMPLETED
    xl.refresh_from_db()
    assert (xl.handsets_reached, xl.reached_at, xl.reach_reports.count()) == (700, at + timedelta(minutes=5), 2)


def test_reach_totals_agree_with_the_ends_of_the_series_while_reports_arrive(operators, areas):
    from operators.broadcast_selectors import broadcast_run_progress

    run = _start(broadcast_campaign())
    rows = _by_slug(run)
    at = timezone.now()
    for n, (_slug, row) in enumerate(sorted(rows.items())):
        broadcasts.area_broadcast_report(
            operator=row.operator, broadcast_id=row.pk, handsets_reached=100 * (n + 1), at=at
        )
    # A report lands between the progress's reads: its broadcast already shows the new count.
    AreaBroadcast.objects.filter(pk=rows["xl"].pk).update(handsets_reached=5_000)

    progress = broadcast_run_progress(run)

    per_operator = {op["operator"]: op["handsets_reached"] for op in progress["operators"]}
    assert progress["handsets_reached"] == progress["series"][-1]["handsets_reached"] == sum(per_operator.values())
    for op in progress["operators"]:
        assert op["handsets_reached"] == (op["series"][-1]["handsets_reached"] if op["series"] else 0)


def test_the_reach_the_pages_poll_matches_the_progress_without_reading_each_report(operators, areas):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from operators.broadcast_selectors import broadcast_run_progress, broadcast_run_reach
    from operators.models import AreaBroadcastReach

    run = _start(broadcast_campaign())
    rows = _by_slug(run)
    at = timezone.now()
    slug, row = sorted(rows.items())[0]
    for minutes, reached in ((0, 100), (1, 300), (2, 250)):  # cumulative; a late smaller one never lowers it
        AreaBroadcastReach.objects.create(broadcast=row, handsets_reached=reached, at=at + timedelta(minutes=minutes))

    with CaptureQueriesContext(connection) as captured:
        reach = broadcast_run_reach(run)
    progress = broadcast_run_progress(run)

    assert reach["handsets_reached"] == progress["handsets_reached"] == 300
    assert {op["operator"]: op["handsets_reached"] for op in reach["operators"]} == {
        op["operator"]: op["handsets_reached"] for op in progress["operators"]
    }
    assert {op["operator"]: op["state"] for op in reach["operators"]}[slug] == row.state
    # The reports of a window of days number hundreds of thousands: the highest of each is read, not each one.
    (read,) = [query["sql"] for query in captured if '"operators_areabroadcastreach"' in query["sql"]]
    assert "MAX(" in read.upper() and "GROUP BY" in read.upper()


def test_a_long_reach_series_is_thinned_keeping_its_shape_its_highest_count_and_its_latest_report(
    operators, areas, monkeypatch
):
    from operators import broadcast_selectors
    from operators.models import AreaBroadcastReach

    run = _start(broadcast_campaign())
    rows = _by_slug(run)
    at = timezone.now()
    (slug, busy), (other_slug, quiet) = sorted(rows.items())[:2]
    reached = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 95]  # the last is a late smaller report
    for minute, count in enumerate(reached):
        AreaBroadcastReach.objects.create(broadcast=busy, handsets_reached=count, at=at + timedelta(minutes=minute))
    AreaBroadcastReach.objects.create(broadcast=quiet, handsets_reached=5, at=at)
    exact = broadcast_selectors.broadcast_run_progress(run)

    monkeypatch.setattr(broadcast_selectors, "REACH_SERIES_POINTS", 4)
    thinned = broadcast_selectors.broadcast_run_progress(run)

    by_slug = {op["operator"]: op for op in thinned["operators"]}
    series = by_slug[slug]["series"]
    assert len(series) <= 5 < len(reached)
    assert [point["handsets_reached"] for point in series] == sorted(point["handsets_reached"] for point in series)
    assert series[0] == {"at": at, "handsets_reached": 10}
    assert series[-1] == {"at": at + timedelta(minutes=10), "handsets_reached": 100}
    assert by_slug[other_slug]["series"] == [{"at": at, "handsets_reached": 5}]
    assert thinned["handsets_reached"] == exact["handsets_reached"] == 105
    assert thinned["series"][-1]["handsets_reached"] == 105
    assert {op["operator"]: op["handsets_reached"] for op in thinned["operators"]} == {
        op["operator"]: op["handsets_reached"] for op in exact["operators"]
    }


def test_the_author_is_told_the_handsets_each_operator_reached_when_the_window_ends(operators, areas):
    ScriptedAreaAdapter.reset(indosat=[RETRY])
    author = UserFactory(username="ofc", email="ofc@blitarkab.go.id")
    campaign = broadcast_campaign(author=author, title="Siaga banjir")
    run = _sent(campaign)
    AreaBroadcast.objects.filter(run=run, operator__slug="telkomsel").update(handsets_reached=12345)

    broadcasts.area_broadcasts_tick(now=campaign.ends_at + timedelta(seconds=1))

    (ended,) = Notification.objects.filter(kind="run.ended")
    assert (ended.user, ended.object_id) == (author, str(run.pk))
    assert ended.subject == "Siaran berakhir dengan kegagalan: Siaga banjir"
    assert [line for line in ended.body.splitlines() if line.startswith("- ")] == [
        "- Indosat: tidak diterima operator",
        "- Telkomsel: 12.345",
        "- Xl: 0",
    ]


def test_a_live_area_broadcast_stored_with_a_daily_schedule_still_cannot_be_edited(operators, areas):
    from campaigns.services import ServiceConflict, campaign_allowed_actions, campaign_update

    # Approved before area broadcasts were held to "now": its window is with the operators, not waiting for reports.
    campaign = broadcast_campaign(schedule={"kind": "daily", "time": "13:00"})
    _sent(campaign)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENDING

    assert "update" not in campaign_allowed_actions(campaign=campaign, user=campaign.author)
    with pytest.raises(ServiceConflict):
        campaign_update(campaign=campaign, actor=campaign.author, data={"text": "Teks baru."})
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.SENDING


def test_a_boundary_edited_after_approval_does_not_move_the_area_sent(operators, areas):
    from campaigns.services import campaign_approve, campaign_submit
    from smsblast.models import Area

    campaign = broadcast_campaign(approved=False)
    campaign_submit(campaign=campaign, actor=campaign.author)
    approver = UserFactory(role=Role.APPROVER)
    campaign_approve(campaign=campaign, approver=approver, content_hash=campaign_content_hash(campaign))
    approved_bounds = shape(regency_boundary("35.05")).bounds
    # An admin (or load_areas) then moves the regency's boundary a degree east, after the approver saw the map.
    from shapely.affinity import translate
    from shapely.geometry import mapping

    moved = json.loads(json.dumps(mapping(translate(shape(regency_boundary("35.05")), xoff=1))))
    Area.objects.filter(code="35.05").update(boundary=moved)

    run = _start(campaign)

    frozen = shape(run.frozen["area"]["geometry"])
    assert frozen.contains(shape(regency_boundary("35.05")).representative_point())
    assert abs(frozen.bounds[0] - approved_bounds[0]) < 0.05, "the area sent is the one approved"
    for row in _by_slug(run).values():
        assert abs(shape(row.area).bounds[0] - approved_bounds[0]) < 0.05
