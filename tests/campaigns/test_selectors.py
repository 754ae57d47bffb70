"""Campaign reads: audience and cost estimates, lists per role."""

import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.selectors import campaign_audience, campaign_list, campaigns_visible
from campaigns.services import campaign_create, campaign_submit
from smsblast.models import Role
from smsblast.selectors import subscribers_in_area
from tests.campaigns.factories import CampaignFactory, CampaignRunFactory
from tests.operators.factories import OperatorFactory
from tests.smsblast.factories import AreaFactory, SubscriberFactory, UserFactory, area_tree
from tests.urlwalk import signed_in, url_patterns_under

pytestmark = pytest.mark.django_db


@pytest.fixture
def blitar():
    area_tree(kecamatan=2)
    AreaFactory(code="35.06", name="Kabupaten Kediri")
    telkomsel = OperatorFactory(slug="telkomsel", name="Telkomsel", tariff_per_segment=300)
    xl = OperatorFactory(slug="xl", name="XL Axiata", tariff_per_segment=200)
    SubscriberFactory.create_batch(4, area_id="35.05.01", operator=telkomsel)
    SubscriberFactory(area_id="35.05.01", operator=telkomsel, opted_out_at=timezone.now())
    SubscriberFactory.create_batch(2, area_id="35.05.02", operator=xl, language="jv")
    SubscriberFactory(area_id="35.05", operator=None)
    SubscriberFactory.create_batch(3, area_id="35.06", operator=xl)
    return telkomsel, xl


def test_subscribers_in_area_include_everything_below_and_nothing_beside(blitar):
    assert subscribers_in_area(["35.05"]).count() == 8
    assert subscribers_in_area(["35.05.01"]).count() == 5
    assert subscribers_in_area(["35.05.01"], opted_in_only=True).count() == 4
    assert subscribers_in_area(["35.05", "35.06"]).count() == 11
    assert subscribers_in_area(["35.05"], audience={"languages": ["jv"]}).count() == 2
    assert subscribers_in_area(["35.05"], audience={"operators": ["telkomsel"]}).count() == 5
    assert subscribers_in_area([]).count() == 0


def test_audience_counts_recipients_and_cost_per_operator_in_one_query(blitar, django_assert_num_queries):
    # 161 GSM-7 characters: two segments.
    campaign = CampaignFactory(area_codes=["35.05"], text="x" * 161)
    with django_assert_num_queries(1):
        audience = campaign_audience(campaign)
    assert audience["total"] == 6
    assert audience["opted_out"] == 1
    assert audience["skipped"] == {"opted_out": 1, "operator_inactive": 0, "no_operator": 1}
    assert audience["segments_per_message"] == 2
    rows = {row["slug"]: row for row in audience["by_operator"]}
    assert rows["telkomsel"] == {
        "slug": "telkomsel",
        "name": "Telkomsel",
        "recipients": 4,
        "opted_out": 1,
        "skipped": 0,
        "skipped_reason": "",
        "segments": 8,
        "cost": 4 * 2 * 300,
    }
    assert (rows["xl"]["recipients"], rows["xl"]["cost"]) == (2, 2 * 2 * 200)
    # Fan-out skips a number of no known operator: no recipient, no cost.
    assert (rows[""]["name"], rows[""]["recipients"], rows[""]["skipped"], rows[""]["cost"]) == (
        "Unknown operator",
        0,
        1,
        0,
    )
    assert audience["cost"] == 4 * 2 * 300 + 2 * 2 * 200
    assert audience["segments"] == 12


def test_audience_counts_an_inactive_operators_numbers_as_skipped(blitar):
    _, xl = blitar
    xl.active = False
    xl.save()

    audience = campaign_audience(CampaignFactory(area_codes=["35.05"], text="x" * 161))

    assert (audience["total"], audience["cost"]) == (4, 4 * 2 * 300)
    assert audience["skipped"] == {"opted_out": 1, "operator_inactive": 2, "no_operator": 1}
    rows = {row["slug"]: row for row in audience["by_operator"]}
    assert (rows["xl"]["recipients"], rows["xl"]["skipped"], rows["xl"]["skipped_reason"]) == (
        0,
        2,
        "operator_inactive",
    )


def test_audience_of_an_unsendable_text_costs_nothing(blitar):
    audience = campaign_audience(CampaignFactory(area_codes=["35.05"], text=""))
    assert (audience["total"], audience["cost"]) == (6, 0)


def test_staff_roles_see_every_campaign_and_operators_none(officer, officer2, approver, admin_user, operator_user):
    mine = CampaignFactory(author=officer)
    theirs = CampaignFactory(author=officer2)
    for user in (officer, approver, admin_user):
        assert set(campaign_list(user)) == {mine, theirs}
    assert list(campaign_list(operator_user)) == []
    assert list(campaign_list(officer, {"author": officer2.pk})) == [theirs]


def test_audience_recipients_and_skipped_reasons_match_what_fan_out_writes():
    from campaigns import dispatch
    from campaigns.models import Campaign, Delivery
    from smsblast.models import Area
    from smsblast.selectors import audience_preview
    from tests.operators.scripted import approved_campaign, operators_and_subscribers, sending_run

    campaign = approved_campaign()
    operators = operators_and_subscribers(counts={"tsel": 3, "isat": 2, "xl": 2}, batch_size=10)
    operators["xl"].active = False
    operators["xl"].save()
    district = Area.objects.get(code="35.05.01")
    SubscriberFactory(area=district, operator=None)
    SubscriberFactory(area=district, operator=operators["tsel"], opted_out_at=timezone.now())
    audience = campaign_audience(campaign)
    preview = audience_preview(campaign.area_codes, audience=campaign.audience)

    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    dispatch.run_fan_out(run_id=run.pk)
    deliveries = Delivery.objects.filter(run=run)
    written = {"opted_out": 0, "operator_inactive": 0, "no_operator": 0}
    for reason in deliveries.filter(status="skipped").values_list("reason", flat=True):
        written[reason] += 1

    assert audience["total"] == preview["recipients"] == deliveries.filter(status="queued").count() == 5
    assert (
        audience["skipped"]
        == preview["skipped"]
        == written
        == {
            "opted_out": 1,
            "operator_inactive": 2,
            "no_operator": 1,
        }
    )


# --- jurisdiction ------------------------------------------------------------------------------


@pytest.fixture
def blitar_and_blora():
    """Kab. Blitar (35.05, Jawa Timur) and Kab. Blora (33.16, Jawa Tengah), each with a kecamatan."""
    area_tree("35.05", kecamatan=1)
    AreaFactory(code="35.06", name="Kabupaten Kediri")
    AreaFactory(code="33", name="Jawa Tengah")
    AreaFactory(code="33.16", name="Kabupaten Blora")
    AreaFactory(code="33.16.01", name="Kecamatan Jepon")


def user_of(role: str, jurisdiction: str | None = None):
    return UserFactory(role=role, jurisdiction_id=jurisdiction)


def test_a_user_with_a_jurisdiction_sees_only_campaigns_wholly_within_it(blitar_and_blora, admin_user):
    def composed(*codes):
        return campaign_create(author=admin_user, title=" ".join(codes), area_codes=list(codes))

    blitar, jepon, blora = composed("35.05"), composed("35.05.01"), composed("33.16")
    both, kediri_and_blitar, jatim = composed("35.05", "33.16"), composed("35.05", "35.06"), composed("35")
    everything = {blitar, jepon, blora, both, kediri_and_blitar, jatim}

    assert set(campaigns_visible(user_of(Role.OFFICER, "35.05"))) == {blitar, jepon}
    assert set(campaign_list(user_of(Role.APPROVER, "33.16"))) == {blora}
    assert set(campaign_list(user_of(Role.OFFICER, "35.05.01"))) == {jepon}
    # A province's user sees its regencies' campaigns, and those spanning two of its regencies.
    assert set(campaign_list(user_of(Role.OFFICER, "35"))) == {blitar, jepon, kediri_and_blitar, jatim}
    # Without a jurisdiction, and for an admin whatever is set, the whole country.
    assert set(campaign_list(user_of(Role.APPROVER))) == everything
    assert set(campaign_list(user_of(Role.ADMIN, "33.16"))) == everything
    assert list(campaign_list(user_of(Role.OPERATOR, "35.05"))) == []


def test_a_campaign_without_a_target_yet_belongs_to_its_authors_jurisdiction(blitar_and_blora):
    author = user_of(Role.OFFICER, "35.05")
    draft = campaign_create(author=author, title="Belum ada wilayah")
    assert draft.area_scope == "35.05"
    assert list(campaigns_visible(author)) == [draft]
    assert list(campaigns_visible(user_of(Role.OFFICER, "35"))) == [draft]
    assert list(campaigns_visible(user_of(Role.OFFICER, "33.16"))) == []


def campaign_urls() -> list[tuple[str, set[str]]]:
    """Return (URL name, its parameters) of every page and API path that names one campaign."""
    return [(name, params) for name, params in url_patterns_under("campaigns/") if "pk" in params]


WEB_ACTIONS = ("submit", "cancel", "schedule", "pause", "resume")


def campaign_paths(campaign_pk: int, run_pk: int) -> list[str]:
    paths = []
    for name, params in campaign_urls():
        kwargs = {"pk": campaign_pk, **({"run_pk": run_pk} if "run_pk" in params else {})}
        for action in WEB_ACTIONS if "action" in params else [None]:
            paths.append(reverse(name, kwargs={**kwargs, **({"action": action} if action else {})}))
    return paths


def answers(user, path: str) -> dict[str, int]:
    client = signed_in(user, path)
    body = {"content_hash": "0" * 64, "reason": "Bukan wilayah kami.", "title": "Diubah", "confirm": "on"}
    return {
        "GET": client.get(path).status_code,
        "POST": client.post(path, body, format="json").status_code,
        "PATCH": client.patch(path, body, format="json").status_code,
    }


def test_every_campaign_url_answers_404_to_an_officer_or_approver_of_another_jurisdiction(blitar_and_blora):
    """Pages and API alike: the campaign of Kab. Blitar does not exist for Kab. Blora's officer and approver.

    Each path answers them exactly as for a campaign that does not exist (404; 403 or 405 only where their
    role may never call it), while Blitar's own users reach it, and nothing about it changes.
    """
    blitar_officer = user_of(Role.OFFICER, "35.05")
    campaign = campaign_submit(
        campaign=campaign_create(
            author=blitar_officer, title="Covid-19 Blitar", text="Pakai masker.", sender="PEMKAB", area_codes=["35.05"]
        ),
        actor=blitar_officer,
    )
    run = CampaignRunFactory(campaign=campaign)
    missing = Campaign.objects.order_by("-pk").first().pk + 1000
    paths = campaign_paths(campaign.pk, run.pk)
    names = {name for name, _ in campaign_urls()}
    # The walk reaches the pages and every API path of a campaign, so a new one cannot slip past it.
    assert {"campaigns:detail", "campaigns:review", "campaigns:run_progress", "campaign-detail"} <= names
    assert {"campaign-approve", "campaign-deliveries", "campaign-report-csv", "campaign-cap"} <= names
    assert {"campaign-audience", "campaign-broadcast", "campaign-runs"} <= names

    for outsider in (user_of(Role.OFFICER, "33.16"), user_of(Role.APPROVER, "33.16")):
        not_found = 0
        for path in paths:
            got = answers(outsider, path)
            absent = answers(outsider, path.replace(f"/{campaign.pk}/", f"/{missing}/", 1))
            assert got == absent, (outsider.role, path)
            assert set(got.values()) <= {403, 404, 405}, (outsider.role, path, got)
            not_found += list(got.values()).count(404)
        assert not_found > len(paths)
        assert campaign not in campaign_list(outsider)

    campaign.refresh_from_db()
    assert (campaign.status, campaign.title) == (Campaign.Status.PENDING_APPROVAL, "Covid-19 Blitar")
    insider_approver = user_of(Role.APPROVER, "35")
    for user in (blitar_officer, insider_approver):
        for path in paths:
            if "/review/" in path and user is blitar_officer:
                continue  # the review page is the approver's
            assert signed_in(user, path).get(path).status_code != 404, (user.role, path)
