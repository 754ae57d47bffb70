"""A real gateway adapter that answers from a script, and a builder for a run ready to send.

`ScriptedAdapter` is registered under the name "scripted": each send records the batch it was given and
answers with the next BatchResult queued in `ScriptedAdapter.answers` (accepting everything when empty).
"""

from datetime import timedelta

from django.utils import timezone

from campaigns import dispatch
from campaigns.models import Campaign, CampaignRun, Delivery, DispatchBatch
from campaigns.services import campaign_content_hash
from operators import services
from operators.gateways.base import BatchResult, GatewayAdapter, OutboundBatch, Outcome, register
from smsblast.models import Area, Role
from tests.campaigns.factories import ApprovalFactory, CampaignFactory
from tests.conftest import make_user
from tests.operators.factories import OperatorFactory
from tests.smsblast.factories import SubscriberFactory, UserFactory, area_tree


@register
class ScriptedAdapter(GatewayAdapter):
    name = "scripted"
    answers: list[BatchResult] = []
    sent: list[OutboundBatch] = []

    @classmethod
    def reset(cls, *answers: BatchResult) -> None:
        cls.answers = list(answers)
        cls.sent = []

    def send_batch(self, batch: OutboundBatch) -> BatchResult:
        type(self).sent.append(batch)
        if type(self).answers:
            return type(self).answers.pop(0)
        return BatchResult(outcome=Outcome.ACCEPTED, accepted=len(batch.recipients), status_code=202)


def approved_campaign(*, schedule: dict | None = None, **fields) -> Campaign:
    """Return a campaign for Kab. Blitar (areas created) approved with its current content."""
    if not fields.pop("skip_areas", False):
        area_tree("35.05", kecamatan=2)
    author = UserFactory(role=Role.OFFICER)
    campaign = CampaignFactory(
        status=Campaign.Status.APPROVED,
        author=author,
        schedule={"kind": "now"} if schedule is None else schedule,
        **fields,
    )
    ApprovalFactory(campaign=campaign)
    return campaign


def operators_and_subscribers(*, counts: dict[str, int], batch_size: int = 3, segments_per_second: int = 0):
    """Create one operator per slug with `counts[slug]` subscribers in 35.05.01; return {slug: operator}."""
    district = Area.objects.get(code="35.05.01")
    operators = {}
    for slug, count in counts.items():
        operators[slug] = OperatorFactory(
            slug=slug, adapter="scripted", batch_size=batch_size, segments_per_second=segments_per_second
        )
        for _ in range(count):
            SubscriberFactory(area=district, operator=operators[slug])
    return operators


def sending_run(campaign: Campaign, **fields) -> CampaignRun:
    """Create a run in fan-out for `campaign` (already sending), frozen like run_start freezes it."""
    now = timezone.now()
    return CampaignRun.objects.create(
        campaign=campaign,
        scheduled_for=fields.pop("scheduled_for", now),
        status=fields.pop("status", CampaignRun.Status.FANNING_OUT),
        content_hash=campaign_content_hash(campaign),
        text=campaign.text,
        sender=campaign.sender,
        segments=fields.pop("segments", 1),
        frozen={
            "title": campaign.title,
            "area_codes": campaign.area_codes,
            "audience": {},
            "priority": campaign.priority,
            "quiet_hours": (campaign.schedule or {}).get("quiet_hours"),
        },
        started_at=now,
        expires_at=fields.pop("expires_at", now + timedelta(hours=1)),
        last_progress_at=now,
        **fields,
    )


def fanned_out_world(api_client_for) -> dict:
    """Fan a sending run out to two operators (3 recipients each), each operator with its own API user and client.

    Returns the run, the operators and clients by slug, and each operator's message ids (as strings, in order).
    """
    campaign = approved_campaign()
    operators = operators_and_subscribers(counts={"tsel": 3, "isat": 3}, batch_size=10)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    dispatch.run_fan_out(run_id=run.pk)
    clients = {}
    for slug, operator in operators.items():
        operator.user = make_user(f"{slug}-api", Role.OPERATOR)
        operator.save()
        clients[slug] = api_client_for(operator.user)
    ids = {
        slug: [str(pk) for pk in Delivery.objects.filter(operator=op).order_by("pk").values_list("pk", flat=True)]
        for slug, op in operators.items()
    }
    return {"run": run, "operators": operators, "clients": clients, "ids": ids}


def finished_run() -> CampaignRun:
    """Send a run to three operators (2 segments a message) and let it end with failures.

    tsel: 5 recipients, one refused in the batch's answer (rejected), two delivered a minute apart, one undelivered
    with an error code, one never reported (expired); isat: 3, one delivered, one reported submitted and then never
    again (expired), one rejected by report, and an opted-out number (skipped); xl: 2, its batch refused for good
    (failed). Skipped too: a number no operator serves and one of an inactive operator. Recipients in two kecamatan.
    """
    campaign = approved_campaign()
    operators = operators_and_subscribers(counts={"tsel": 4, "isat": 3, "xl": 2}, batch_size=10)
    operators["isat"].tariff_per_segment = 200
    operators["isat"].save()
    second = Area.objects.get(code="35.05.02")
    SubscriberFactory(area=second, operator=operators["tsel"])
    SubscriberFactory(area=second, operator=operators["isat"], opted_out_at=campaign.created_at)
    SubscriberFactory(area=second, operator=None)
    SubscriberFactory(area=second, operator=OperatorFactory(slug="sf", adapter="scripted", active=False))
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign, segments=2)
    dispatch.run_fan_out(run_id=run.pk)
    batches = {batch.operator.slug: batch for batch in DispatchBatch.objects.filter(run=run).select_related("operator")}
    ids = {
        slug: [str(pk) for pk in batch.deliveries.exclude(status="skipped").order_by("pk").values_list("pk", flat=True)]
        for slug, batch in batches.items()
    }
    ScriptedAdapter.reset(
        BatchResult(outcome=Outcome.ACCEPTED, accepted=4, rejected=[(ids["tsel"][0], "invalid")]),
        BatchResult(outcome=Outcome.ACCEPTED, accepted=3),
        BatchResult(outcome=Outcome.FAILED, status_code=401, error="bad key"),
    )
    for slug in ("tsel", "isat", "xl"):
        services.batch_send(batch_id=batches[slug].pk, now=run.started_at)
    at = run.started_at
    reports = {
        "tsel": [
            (ids["tsel"][1], "DELIVERED", "T-1", "", at + timedelta(seconds=5)),
            (ids["tsel"][2], "DELIVERED", "T-2", "", at + timedelta(seconds=70)),
            (ids["tsel"][3], "UNDELIVERED", "T-3", "absent_subscriber", at + timedelta(seconds=9)),
        ],
        "isat": [
            (ids["isat"][0], "DELIVERED", "I-1", "", at + timedelta(seconds=12)),
            (ids["isat"][1], "SUBMITTED", "I-2", "", None),
            (ids["isat"][2], "REJECTED", "I-3", "barred", at + timedelta(seconds=3)),
        ],
    }
    for slug, rows in reports.items():
        outcome = services.delivery_reports_apply(operator=operators[slug], reports=rows, now=at + timedelta(minutes=5))
        assert outcome.applied == 3
    dispatch.dispatch_reconcile(now=run.expires_at + timedelta(minutes=1))
    run.refresh_from_db()
    assert run.status == CampaignRun.Status.COMPLETED_WITH_FAILURES
    return run
