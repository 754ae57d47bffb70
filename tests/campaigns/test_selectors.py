"""Campaign reads: audience and cost estimates, lists per role."""

import pytest
from django.utils import timezone

from campaigns.selectors import campaign_audience, campaign_list
from smsblast.selectors import subscribers_in_area
from tests.campaigns.factories import CampaignFactory
from tests.operators.factories import OperatorFactory
from tests.smsblast.factories import AreaFactory, SubscriberFactory, area_tree

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
