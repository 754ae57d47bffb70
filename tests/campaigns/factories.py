"""Factories for campaigns, approvals, runs, batches and deliveries."""

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from campaigns.models import Approval, Campaign, CampaignRun, Delivery, DispatchBatch, Mode, Priority
from smsblast.models import Role, area_common_ancestor
from tests.operators.factories import OperatorFactory
from tests.smsblast.factories import UserFactory


class CampaignFactory(DjangoModelFactory):
    """A draft targeted campaign for Kab. Blitar (35.05) by a new officer.

    The area code is not created here; use `tests.smsblast.factories.area_tree()` when a
    service must find it (submit checks that the areas exist).
    """

    class Meta:
        model = Campaign

    title = factory.Sequence(lambda n: f"Covid-19 update {n}")
    text = "Tetap pakai masker, jaga jarak dan cuci tangan. Info: covid19.go.id"
    sender = "PEMKAB"
    mode = Mode.TARGETED
    area_codes = factory.LazyFunction(lambda: ["35.05"])
    # As the services store it for a target of area codes alone.
    area_scope = factory.LazyAttribute(lambda o: area_common_ancestor(o.area_codes or []))
    priority = Priority.NORMAL
    author = factory.SubFactory(UserFactory, role=Role.OFFICER)
    status = Campaign.Status.DRAFT


class ApprovalFactory(DjangoModelFactory):
    """An approval of the campaign's current content by a new approver."""

    class Meta:
        model = Approval

    campaign = factory.SubFactory(CampaignFactory, status=Campaign.Status.APPROVED)
    approver = factory.SubFactory(UserFactory, role=Role.APPROVER)
    decision = Approval.Decision.APPROVED
    content_hash = factory.LazyAttribute(lambda o: _content_hash(o.campaign))
    snapshot = factory.LazyFunction(dict)


def _content_hash(campaign: Campaign) -> str:
    from campaigns.services import campaign_content_hash

    return campaign_content_hash(campaign)


class CampaignRunFactory(DjangoModelFactory):
    """A pending run of an approved campaign, frozen with the campaign's text and hash."""

    class Meta:
        model = CampaignRun

    campaign = factory.SubFactory(CampaignFactory, status=Campaign.Status.SENDING)
    scheduled_for = factory.LazyFunction(timezone.now)
    content_hash = factory.LazyAttribute(lambda o: _content_hash(o.campaign))
    text = factory.LazyAttribute(lambda o: o.campaign.text)
    sender = factory.LazyAttribute(lambda o: o.campaign.sender)
    segments = 1
    encoding = "GSM7"


class DispatchBatchFactory(DjangoModelFactory):
    class Meta:
        model = DispatchBatch

    run = factory.SubFactory(CampaignRunFactory)
    operator = factory.SubFactory(OperatorFactory)
    size = 0


class DeliveryFactory(DjangoModelFactory):
    class Meta:
        model = Delivery

    run = factory.SubFactory(CampaignRunFactory)
    batch = None
    operator = None
    msisdn = factory.Sequence(lambda n: f"+62813{n:08d}")
