"""What the approver is shown (audience, cost, text) against what a run then writes, sends and reports."""

import html
import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns import dispatch
from campaigns.dispatch_selectors import run_progress
from campaigns.models import Campaign, CampaignRun, Delivery, DispatchBatch
from campaigns.services import campaign_create, campaign_submit
from operators.gateways.http_batch_v1 import batch_body
from operators.models import Operator
from operators.ratelimit import RateLimiter
from operators.services import batch_send
from smsblast.models import Area, Role
from tests.conftest import client_for
from tests.operators.factories import OperatorFactory
from tests.operators.scripted import ScriptedAdapter
from tests.smsblast.factories import AreaFactory, SubscriberFactory, UserFactory, area_tree
from tests.smsblast.test_preview import box

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def dispatch_redis(settings, redis_client, redis_url, private_broker):
    settings.REDIS_URL = redis_url
    ScriptedAdapter.reset()


@pytest.fixture
def world():
    """Kab. Blitar with two kecamatan and three scripted operators, tsel, isat and xl."""
    area_tree("35.05", kecamatan=2)
    return {
        slug: OperatorFactory(slug=slug, name=slug.upper(), adapter="scripted", tariff_per_segment=tariff)
        for slug, tariff in (("tsel", 300), ("isat", 250), ("xl", 200))
    }


def subscribers(area_code: str, operator, count: int, **fields) -> list:
    area = Area.objects.get(code=area_code)
    return [SubscriberFactory(area=area, operator=operator, **fields) for _ in range(count)]


def reviewed(api_client_for, **fields) -> tuple[Campaign, dict]:
    """Create and submit a campaign; return it and the API detail its approver reviews before approving."""
    officer = UserFactory(role=Role.OFFICER)
    approver = UserFactory(role=Role.APPROVER)
    fields = {"title": "Covid-19", "text": "Tetap pakai masker.", "sender": "PEMKAB", "area_codes": ["35.05"]} | fields
    campaign = campaign_create(author=officer, schedule={"kind": "now"}, **fields)
    campaign_submit(campaign=campaign, actor=officer)
    client = api_client_for(approver)
    detail = client.get(f"/api/v1/campaigns/{campaign.pk}/").json()
    answer = client.post(
        f"/api/v1/campaigns/{campaign.pk}/approve/", {"content_hash": detail["content_hash"]}, format="json"
    )
    assert answer.status_code == 200, answer.content
    campaign.refresh_from_db()
    detail["approver"] = approver
    return campaign, detail


def run_once(campaign: Campaign, **fan_out) -> CampaignRun:
    """Arm the approved campaign, start its run, fan it out and send every batch; return the run."""
    dispatch.campaign_schedule_approved(campaign=campaign, user=campaign.author)
    campaign.refresh_from_db()
    run = dispatch.run_start(campaign_id=campaign.pk, now=campaign.next_run_at + timedelta(seconds=1))
    assert run is not None
    return fan_out_and_send(run, **fan_out)


def fan_out_and_send(run: CampaignRun, **fan_out) -> CampaignRun:
    dispatch.run_fan_out(run_id=run.pk, **fan_out)
    for batch_id in DispatchBatch.objects.filter(run=run).values_list("pk", flat=True):
        assert batch_send(batch_id=str(batch_id)) == "accepted"
    run.refresh_from_db()
    return run


def shown_per_operator(audience: dict) -> dict[str, tuple[int, int]]:
    """Return slug -> (recipients, cost) of the operators the estimate says are sent to."""
    return {row["slug"]: (row["recipients"], row["cost"]) for row in audience["by_operator"] if row["recipients"]}


def outcome_per_operator(run: CampaignRun) -> dict[str, tuple[int, int]]:
    """Return slug -> (deliveries written to be sent, cost the run reports) of the operators the run sent to."""
    written = {}
    for operator_id in Delivery.objects.filter(run=run).exclude(status="skipped").values_list("operator_id", flat=True):
        written[operator_id] = written.get(operator_id, 0) + 1
    reported = {entry["slug"]: entry["cost"] for entry in run_progress(run)["operators"]}
    slugs = dict(Operator.objects.values_list("pk", "slug"))
    return {slugs[pk]: (n, reported[slugs[pk]]) for pk, n in written.items()}


def assert_estimate_is_outcome(detail: dict, run: CampaignRun) -> None:
    outcome = outcome_per_operator(run)
    assert shown_per_operator(detail["audience"]) == outcome
    assert detail["audience"]["total"] == sum(n for n, _cost in outcome.values())
    assert detail["cost_estimate"] == detail["audience"]["cost"] == run_progress(run)["cost"]
    assert detail["audience"]["segments"] == run_progress(run)["segments_sent"]
    assert detail["analysis"]["segments"] == detail["audience"]["segments_per_message"] == run.segments


def test_the_estimate_per_operator_is_what_the_run_sends_and_costs_across_what_leaves_numbers_out(
    world, api_client_for
):
    tsel, isat, xl = world["tsel"], world["isat"], world["xl"]
    subscribers("35.05.01", tsel, 3)
    subscribers("35.05.02", isat, 2)
    subscribers("35.05.01", xl, 2)
    subscribers("35.05.01", tsel, 2, opted_out_at=timezone.now())
    subscribers("35.05.02", None, 1)
    subscribers("35.05", isat, 1)  # homed on the regency itself
    Operator.objects.filter(pk=xl.pk).update(active=False)
    campaign, detail = reviewed(api_client_for, area_codes=["35.05", "35.05.01"])  # nested: nobody twice
    page = client_for(detail["approver"]).get(f"/campaigns/{campaign.pk}/review/").content.decode()

    run = run_once(campaign)

    assert_estimate_is_outcome(detail, run)
    assert re.search(r"data-audience-total>([^<]*)<", page).group(1) == "6"
    assert shown_per_operator(detail["audience"]) == {"tsel": (3, 900), "isat": (3, 750)}


@pytest.mark.parametrize(
    "audience",
    [{"languages": ["jv"]}, {"operators": ["isat"]}, {"languages": ["id", "jv"], "operators": ["tsel", "xl"]}],
    ids=["languages", "operators", "both"],
)
def test_the_estimate_under_audience_filters_is_what_the_run_sends(world, api_client_for, audience):
    tsel, isat, xl = world["tsel"], world["isat"], world["xl"]
    subscribers("35.05.01", tsel, 2, language="jv")
    subscribers("35.05.01", tsel, 1, language="id")
    subscribers("35.05.02", isat, 2, language="jv")
    subscribers("35.05.02", xl, 1, language="su")
    subscribers("35.05.02", xl, 1, language="id")
    campaign, detail = reviewed(api_client_for, audience=audience)

    assert_estimate_is_outcome(detail, run_once(campaign))


def test_a_language_filter_keeps_its_language_however_either_side_is_capitalised(world, api_client_for):
    tsel, isat = world["tsel"], world["isat"]
    subscribers("35.05.01", tsel, 2, language="jawa")
    subscribers("35.05.01", tsel, 1, language="JAWA")
    subscribers("35.05.02", isat, 1, language="id")
    subscribers("35.05.02", isat, 1, language="ID")
    subscribers("35.05.02", isat, 2, language="en")
    campaign, detail = reviewed(api_client_for, audience={"languages": ["Jawa", "id"]})
    page = client_for(detail["approver"]).get(f"/campaigns/{campaign.pk}/review/").content.decode()

    run = run_once(campaign)

    assert_estimate_is_outcome(detail, run)
    assert shown_per_operator(detail["audience"]) == {"tsel": (3, 900), "isat": (2, 500)}
    assert re.search(r"data-audience-total>([^<]*)<", page).group(1) == "5"


def test_the_estimate_of_a_polygon_and_areas_is_what_the_run_sends_and_counts_nobody_twice(world, api_client_for):
    tsel, isat = world["tsel"], world["isat"]
    AreaFactory(code="35.06", name="Kabupaten Kediri")
    # Inside the drawn box by their coordinates, some of them homed in the chosen kecamatan too.
    subscribers("35.05.01", tsel, 2, latitude=-8.15, longitude=112.2)
    subscribers("35.06", isat, 2, latitude=-8.15, longitude=112.25)
    subscribers("35.06", isat, 3, latitude=-7.5, longitude=111.0)  # outside both
    subscribers("35.05.02", isat, 1)
    polygon = box(112.1, -8.2, 112.3, -8.1)
    campaign, detail = reviewed(api_client_for, area_codes=["35.05.01"], polygon=polygon)

    run = run_once(campaign)

    assert_estimate_is_outcome(detail, run)
    assert detail["audience"]["total"] == 4


def test_the_estimate_of_a_polygon_is_what_the_run_sends_when_fan_out_reads_it_in_small_chunks(world, api_client_for):
    tsel, isat = world["tsel"], world["isat"]
    AreaFactory(code="35.06", name="Kabupaten Kediri")
    for index in range(12):
        inside = index % 3 != 0
        subscribers("35.06", tsel if index % 2 else isat, 1, latitude=-8.15 if inside else -7.0, longitude=112.2)
    campaign, detail = reviewed(api_client_for, area_codes=[], polygon=box(112.1, -8.2, 112.3, -8.1))

    run = run_once(campaign, chunk_size=2)

    assert_estimate_is_outcome(detail, run)
    assert detail["audience"]["total"] == 8


def test_the_estimate_of_a_polygon_reaching_homes_by_their_boundary_is_what_the_run_sends(world, api_client_for):
    tsel, isat = world["tsel"], world["isat"]
    Area.objects.filter(code="35.05.02").update(boundary=box(112.25, -8.3, 112.5, -8.0))
    Area.objects.filter(code="35.05.01").update(boundary=box(111.8, -8.3, 112.0, -8.0))
    for index in range(9):
        subscribers("35.05.02" if index % 3 else "35.05.01", tsel if index % 2 else isat, 1)
    campaign, detail = reviewed(api_client_for, area_codes=[], polygon=box(112.1, -8.2, 112.3, -8.1))

    run = run_once(campaign, chunk_size=2)

    assert_estimate_is_outcome(detail, run)
    assert detail["audience"]["total"] == 6


def test_the_estimate_follows_numbers_whose_prefix_moved_to_another_operator(world, api_client_for):
    from smsblast.services import subscribers_reroute

    tsel, isat = world["tsel"], world["isat"]
    Operator.objects.filter(pk=tsel.pk).update(prefixes=["62812"])
    Operator.objects.filter(pk=isat.pk).update(prefixes=["62856"])
    subscribers("35.05.01", tsel, 3)  # +62812… numbers
    # The prefix moves to isat, as the admin's operator form does it.
    Operator.objects.filter(pk=tsel.pk).update(prefixes=[])
    Operator.objects.filter(pk=isat.pk).update(prefixes=["62856", "62812"])
    subscribers_reroute(prefixes={"62812"})
    campaign, detail = reviewed(api_client_for)

    assert_estimate_is_outcome(detail, run_once(campaign))
    assert shown_per_operator(detail["audience"]) == {"isat": (3, 750)}


@pytest.mark.parametrize(
    "text",
    [
        "Tetap pakai masker. " * 9,  # 180 GSM-7 characters: 2 segments
        "Jaga jarak \u201c2 meter\u201d ya",  # curly quotes: UCS-2
        "Vaksin gratis \U0001f489 " * 6,  # emoji: surrogate pairs
        "Info: [covid19.go.id] {cek} ~ ^ | \\ \u20ac " * 5,  # GSM-7 extension characters, two septets each
        "Spasi di akhir   ",
        'Cek <covid19.go.id> & "info"\nBaris kedua',
    ],
    ids=["multi-segment", "curly-quotes", "emoji", "gsm7-extension", "trailing-spaces", "markup-and-newline"],
)
def test_the_text_the_approver_reviews_is_what_every_operator_receives_and_is_charged_per_segment(
    world, api_client_for, text
):
    subscribers("35.05.01", world["tsel"], 2)
    subscribers("35.05.02", world["isat"], 3)
    campaign, detail = reviewed(api_client_for, text=text, sender="DINKES-BLT")
    page = client_for(detail["approver"]).get(f"/campaigns/{campaign.pk}/review/").content.decode()
    bubbles = re.findall(r'<div class="bubble">(?:<span class="part-tag">[^<]*</span>)?(.*?)</div>', page, re.S)
    # A blank at either end is marked beside itself (its marker is no part of the text).
    bubbles = [re.sub(r'<mark class="hidden-char".*?</mark>', "", bubble, flags=re.S) for bubble in bubbles]

    run = run_once(campaign)

    assert detail["text"] == text and detail["sender"] == "DINKES-BLT"
    assert html.unescape("".join(bubbles)) == text
    assert len(bubbles) == detail["analysis"]["segments"]
    assert {batch.text for batch in ScriptedAdapter.sent} == {text}
    # The body an operator's gateway receives carries those exact characters, in UTF-8.
    assert {json.loads(batch_body(batch).decode())["text"] for batch in ScriptedAdapter.sent} == {text}
    assert {batch.sender for batch in ScriptedAdapter.sent} == {"DINKES-BLT"}
    assert {(batch.encoding, batch.segments) for batch in ScriptedAdapter.sent} == {
        (detail["analysis"]["encoding"], detail["analysis"]["segments"])
    }
    assert_estimate_is_outcome(detail, run)


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        # 306 septets, which two parts of 153 would hold, but the euro sign's escape pair may not straddle the first
        # boundary: it opens the second part, whose last septet spills into a third.
        ("a" * 152 + "\u20ac" + "a" * 152, "GSM7", 3),
        # 134 UTF-16 units, two parts of 67, but the emoji's surrogate pair opens the second part: three.
        ("\u00e7" * 66 + "\U0001f489" + "\u00e7" * 66, "UCS2", 3),
    ],
    ids=["escape-pair-on-the-boundary", "surrogate-pair-on-the-boundary"],
)
def test_a_pair_moved_past_a_part_boundary_is_counted_in_the_estimate_the_run_and_the_rate_limit(
    world, api_client_for, monkeypatch, text, encoding, segments
):
    subscribers("35.05.01", world["tsel"], 2)
    subscribers("35.05.02", world["isat"], 3)
    tokens = []
    real_acquire = RateLimiter.acquire

    def acquire(limiter, cost, *, timeout):
        tokens.append(cost)
        return real_acquire(limiter, cost, timeout=timeout)

    monkeypatch.setattr(RateLimiter, "acquire", acquire)
    campaign, detail = reviewed(api_client_for, text=text)

    run = run_once(campaign)

    assert (detail["analysis"]["encoding"], detail["analysis"]["segments"]) == (encoding, segments)
    assert detail["audience"]["segments"] == segments * 5
    assert detail["cost_estimate"] == segments * (2 * 300 + 3 * 250)
    assert {(batch.encoding, batch.segments) for batch in ScriptedAdapter.sent} == {(encoding, segments)}
    assert sorted(tokens) == sorted(segments * len(batch.recipients) for batch in ScriptedAdapter.sent)
    assert sum(tokens) == segments * 5
    assert_estimate_is_outcome(detail, run)


def test_a_recurring_campaigns_later_run_sends_to_whom_its_estimate_then_shows(world, api_client_for):
    tsel, isat = world["tsel"], world["isat"]
    subscribers("35.05.01", tsel, 2)
    leaving = subscribers("35.05.02", isat, 2)
    officer = UserFactory(role=Role.OFFICER)
    schedule = {"kind": "daily", "time": "13:00"}
    campaign = campaign_create(
        author=officer, title="Harian", text="Update harian.", sender="PEMKAB", area_codes=["35.05"], schedule=schedule
    )
    campaign_submit(campaign=campaign, actor=officer)
    approver = UserFactory(role=Role.APPROVER)
    client = api_client_for(approver)
    content_hash = client.get(f"/api/v1/campaigns/{campaign.pk}/").json()["content_hash"]
    assert client.post(f"/api/v1/campaigns/{campaign.pk}/approve/", {"content_hash": content_hash}).status_code == 200
    campaign.refresh_from_db()
    dispatch.campaign_schedule_approved(campaign=campaign, user=officer)
    campaign.refresh_from_db()
    first = dispatch.run_start(campaign_id=campaign.pk, now=campaign.next_run_at + timedelta(seconds=1))
    fan_out_and_send(first)

    # Between the runs one opts out and one joins.
    type(leaving[0]).objects.filter(pk=leaving[0].pk).update(opted_out_at=timezone.now())
    subscribers("35.05.01", isat, 1)
    campaign.refresh_from_db()
    later = client.get(f"/api/v1/campaigns/{campaign.pk}/").json()
    second = dispatch.run_start(campaign_id=campaign.pk, now=campaign.next_run_at + timedelta(seconds=1))
    fan_out_and_send(second)

    assert_estimate_is_outcome(later, second)
    assert shown_per_operator(later["audience"]) == {"tsel": (2, 600), "isat": (2, 500)}


def test_a_tariff_changed_after_approval_is_the_one_the_run_reports_for_every_message(world, api_client_for):
    tsel, isat = world["tsel"], world["isat"]
    subscribers("35.05.01", tsel, 2)
    subscribers("35.05.02", isat, 3)
    campaign, _detail = reviewed(api_client_for, text="Tetap pakai masker. " * 9)
    Operator.objects.filter(pk=tsel.pk).update(tariff_per_segment=400)

    run = run_once(campaign)
    Operator.objects.filter(pk=tsel.pk).update(tariff_per_segment=999)  # after the start: not this run's

    progress = run_progress(run)
    per_operator = {entry["slug"]: (entry["segments_sent"], entry["cost"]) for entry in progress["operators"]}
    assert per_operator == {"tsel": (4, 4 * 400), "isat": (6, 6 * 250)}
    assert run.frozen["tariffs"][str(tsel.pk)] == 400
    assert progress["cost"] == 4 * 400 + 6 * 250
