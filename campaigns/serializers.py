"""REST representations of campaigns: input checked for shape here, rules enforced in services."""

import re
from datetime import datetime

from django.utils import timezone
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field, inline_serializer
from rest_framework import serializers

from campaigns.dispatch_selectors import campaign_progress
from campaigns.models import Approval, Campaign, CampaignRun, Mode, Priority, RepeatPolicy
from campaigns.scheduling import Zone
from campaigns.selectors import HISTORY_SHOWN, campaign_audience, campaign_history_latest, campaign_zone
from campaigns.services import (
    MAX_AREA_CODES,
    SENDER_MAX_LENGTH,
    campaign_allowed_actions,
    campaign_content_hash,
    sender_warning,
    text_warning,
)
from operators.api_broadcast import AwareDateTimeField, BroadcastRunSerializer, CampaignBroadcastSerializer
from smsblast import sms
from smsblast.api_views import TEXT_ANALYSIS, StrictCharField
from smsblast.models import AuditEvent


class CampaignWriteSerializer(serializers.Serializer):
    """Fields an author sends on create (POST) and edit (PATCH)."""

    title = StrictCharField(max_length=200)
    text = StrictCharField(max_length=5000, allow_blank=True, trim_whitespace=False, required=False)
    sender = StrictCharField(max_length=SENDER_MAX_LENGTH, allow_blank=True, required=False)
    mode = serializers.ChoiceField(choices=Mode.choices, required=False)
    area_codes = serializers.ListField(
        child=StrictCharField(max_length=13),
        max_length=MAX_AREA_CODES,
        required=False,
        help_text="Kemendagri codes; for a user with a jurisdiction, each at or below it (else 400).",
    )
    priority = serializers.ChoiceField(choices=Priority.choices, required=False)
    polygon = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="GeoJSON Polygon or MultiPolygon; for a user with a jurisdiction, inside its known boundary "
        "(else 400).",
    )
    audience_filter = serializers.DictField(
        source="audience",
        required=False,
        help_text='Audience filters, e.g. {"languages": ["id"]} or {"operators": ["telkomsel"]} (operator slugs; an '
        "unknown one is refused with 400); empty means everyone in the area.",
    )
    schedule = serializers.DictField(required=False)
    validity_minutes = serializers.IntegerField(min_value=1, max_value=7 * 24 * 60, required=False)
    # With their offset: a time without one would be read in the server's zone, not the area's.
    starts_at = AwareDateTimeField(required=False, allow_null=True)
    ends_at = AwareDateTimeField(required=False, allow_null=True)
    repeat_policy = serializers.ChoiceField(choices=RepeatPolicy.choices, required=False)
    operator_slugs = serializers.ListField(child=serializers.SlugField(), max_length=20, required=False)
    exercise = serializers.BooleanField(required=False)


class CampaignEditSerializer(CampaignWriteSerializer):
    """An edit (PATCH): the fields to change, and optionally the content hash the edit was made on."""

    content_hash = serializers.RegexField(
        r"^[0-9a-f]{64}$",
        required=False,
        write_only=True,
        help_text="The `content_hash` of the version this edit was made on: a campaign whose text, sender, area, "
        "audience or schedule changed since answers 409 and nothing is saved. Without it the edit applies to "
        "the current version.",
    )


class ApprovalSerializer(serializers.ModelSerializer):
    approver = serializers.CharField(source="approver.username")

    class Meta:
        model = Approval
        fields = ["id", "decision", "approver", "content_hash", "reason", "created_at", "voided_at"]


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", default=None)
    # "from" is a Python keyword, so the names are mapped in to_representation.
    from_state = serializers.CharField()
    to_state = serializers.CharField()

    class Meta:
        model = AuditEvent
        fields = ["actor", "action", "from_state", "to_state", "at", "details"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["from"] = data.pop("from_state")
        data["to"] = data.pop("to_state")
        return data


def progress_in_zone(progress: dict | None, zone: Zone) -> dict | None:
    """Return a run's progress (a targeted run's, dispatch_selectors.run_progress, or an area broadcast's reach) with
    every time in it in `zone`, the campaign's, as report.csv and the pages give them: a run scheduled for 13:00 WIT
    reads 13:00+09:00, not 04:00Z. Times kept as ISO text (a broadcast's frozen window) are converted too."""
    if progress is None:
        return None
    return _in_zone(progress, zone.tzinfo)


_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def _in_zone(value, tzinfo):
    if isinstance(value, datetime):
        return value.astimezone(tzinfo)
    if isinstance(value, dict):
        return {key: _in_zone(item, tzinfo) for key, item in value.items()}
    if isinstance(value, list):
        return [_in_zone(item, tzinfo) for item in value]
    if isinstance(value, str) and _ISO_TIME.fullmatch(value):
        return datetime.fromisoformat(value).astimezone(tzinfo)
    return value


class LocalNextRunField(serializers.DateTimeField):
    """The next run with the UTC offset of the campaign's zone (WIB, WITA or WIT), as its schedule is entered."""

    def __init__(self, **kwargs):
        super().__init__(source="*", read_only=True, allow_null=True, **kwargs)

    def to_representation(self, campaign):
        if campaign.next_run_at is None:
            return None
        with timezone.override(campaign_zone(campaign).tzinfo):
            return super().to_representation(campaign.next_run_at)


class _ProgressFiguresSerializer(serializers.Serializer):
    recipients = serializers.IntegerField()
    delivered = serializers.IntegerField()
    failed = serializers.IntegerField()
    pending = serializers.IntegerField(help_text="Not yet in a final status.")
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Deliveries by status.")
    batches = serializers.DictField(child=serializers.IntegerField(), help_text="Batches by status.")
    segments_sent = serializers.IntegerField(
        help_text=(
            "Segments of the messages operators accepted: those of accepted batches less the ones refused in the "
            "answer, and any other message an operator reported on. Skipped, cancelled and failed messages were "
            "never sent and count nothing; rejected, undelivered and expired ones the operator took still count."
        )
    )
    cost = serializers.IntegerField(
        help_text="Rupiah so far: segments sent × each operator's tariff per segment when the run started."
    )


class OperatorProgressSerializer(_ProgressFiguresSerializer):
    slug = serializers.CharField()
    name = serializers.CharField()


class RunProgressSerializer(_ProgressFiguresSerializer):
    """A run's progress as `campaigns.dispatch_selectors.run_progress` gives it (for the OpenAPI schema)."""

    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=CampaignRun.Status.choices)
    scheduled_for = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    fanout_done = serializers.BooleanField()
    segments_per_message = serializers.IntegerField()
    final = serializers.IntegerField()
    percent_final = serializers.FloatField()
    done = serializers.BooleanField()
    operators = OperatorProgressSerializer(many=True)
    recipients_removed_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When the retention policy removed the run's recipients (their numbers and states; deliveries/ "
        "and report.csv list them no more); its figures here remain. Null while they are kept.",
    )


# A targeted run's deliveries, or an area broadcast's handsets reached and per-operator state: it has no deliveries.
CAMPAIGN_RUN_PROGRESS = PolymorphicProxySerializer(
    component_name="CampaignRunProgress",
    serializers=[RunProgressSerializer, BroadcastRunSerializer],
    resource_type_field_name=None,
    many=True,
)


class CampaignListSerializer(serializers.ModelSerializer):
    """A campaign as a list row: no per-row audience or history queries."""

    author = serializers.CharField(source="author.username", read_only=True)
    next_run_at = LocalNextRunField()
    area_codes = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Campaign
        fields = [
            "id",
            "title",
            "status",
            "mode",
            "sender",
            "priority",
            "area_codes",
            "author",
            "next_run_at",
            "created_at",
            "updated_at",
        ]


class SkippedByReasonSerializer(serializers.Serializer):
    """Numbers in the area a run would leave out, by the reason its fan-out records."""

    opted_out = serializers.IntegerField()
    operator_inactive = serializers.IntegerField()
    no_operator = serializers.IntegerField()


SKIPPED_REASONS = ["", "operator_inactive", "no_operator"]


class AudienceOperatorSerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    recipients = serializers.IntegerField()
    opted_out = serializers.IntegerField()
    skipped = serializers.IntegerField(help_text="Numbers not opted out that a run would skip, for skipped_reason.")
    skipped_reason = serializers.ChoiceField(choices=SKIPPED_REASONS, help_text="Empty when the operator sends.")
    segments = serializers.IntegerField()
    cost = serializers.IntegerField()


class CampaignAudienceSerializer(serializers.Serializer):
    """Who a run would reach now and what it would cost (`campaigns.selectors.campaign_audience`)."""

    total = serializers.IntegerField(help_text="Recipients: subscribers in the area and audience not opted out.")
    opted_out = serializers.IntegerField()
    skipped = SkippedByReasonSerializer()
    by_operator = AudienceOperatorSerializer(many=True)
    segments = serializers.IntegerField()
    segments_per_message = serializers.IntegerField()
    cost = serializers.IntegerField()


class ApprovalShownSerializer(ApprovalSerializer):
    valid = serializers.BooleanField(help_text="Approved, not voided, and of the current content hash.")

    class Meta(ApprovalSerializer.Meta):
        fields = [*ApprovalSerializer.Meta.fields, "valid"]


HISTORY_ENTRY = inline_serializer(
    "HistoryEntry",
    {
        "actor": serializers.CharField(allow_null=True),
        "action": serializers.CharField(),
        "from": serializers.CharField(),
        "to": serializers.CharField(),
        "at": serializers.DateTimeField(),
        "details": serializers.JSONField(),
    },
    many=True,
    help_text=(f"The campaign's latest {HISTORY_SHOWN} audit events, oldest first; `history_total` counts them all."),
)
CAMPAIGN_ANALYSIS = PolymorphicProxySerializer(
    component_name="CampaignTextAnalysis",
    serializers=[TEXT_ANALYSIS, inline_serializer("TextProblem", {"error": serializers.CharField()})],
    resource_type_field_name=None,
)


class CampaignDetailSerializer(serializers.ModelSerializer):
    """A campaign with everything an approver reviews: analysis, audience, cost, hash, approval, history."""

    author = serializers.CharField(source="author.username", read_only=True)
    next_run_at = LocalNextRunField()
    area_codes = serializers.ListField(child=serializers.CharField(), read_only=True)
    operator_slugs = serializers.ListField(child=serializers.CharField(), read_only=True)
    audience_filter = serializers.JSONField(source="audience", read_only=True)
    content_hash = serializers.SerializerMethodField()
    analysis = serializers.SerializerMethodField()
    audience = serializers.SerializerMethodField()
    cost_estimate = serializers.SerializerMethodField()
    approval = serializers.SerializerMethodField()
    allowed_actions = serializers.SerializerMethodField()
    history = serializers.SerializerMethodField()
    history_total = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    broadcast = serializers.SerializerMethodField()
    warnings = serializers.SerializerMethodField()

    class Meta:
        model = Campaign
        fields = [
            "id",
            "title",
            "text",
            "sender",
            "mode",
            "area_codes",
            "priority",
            "polygon",
            "audience_filter",
            "schedule",
            "next_run_at",
            "validity_minutes",
            "starts_at",
            "ends_at",
            "repeat_policy",
            "operator_slugs",
            "exercise",
            # Hashed and published in the CAP alert, so the approver sees them too.
            "instruction",
            "cap_category",
            "cap_event",
            "cap_urgency",
            "cap_severity",
            "cap_certainty",
            "status",
            "author",
            "created_at",
            "updated_at",
            "content_hash",
            "analysis",
            "audience",
            "cost_estimate",
            "approval",
            "allowed_actions",
            "history",
            # After `history`, which reads the count with the events.
            "history_total",
            "progress",
            "broadcast",
            "warnings",
        ]
        read_only_fields = fields

    @extend_schema_field(
        serializers.DictField(
            child=serializers.CharField(),
            help_text=(
                "What is accepted but worth a second look, by field; empty when nothing is. `sender`: the sender ID "
                "is longer than the 11 characters GSM handsets show, so it may appear cut short and the operator "
                "may shorten it. `text`: the text holds characters that are not seen as they are sent (zero-width, "
                "direction and control characters, look-alikes of letters and digits, blanks at either end), each "
                "named with its code point and position, or links to a domain in letters outside ASCII, named with "
                "the ASCII form it opens as."
            ),
        )
    )
    def get_warnings(self, campaign: Campaign) -> dict[str, str]:
        warnings = {"sender": sender_warning(campaign.sender), "text": text_warning(campaign.text)}
        return {field: warning for field, warning in warnings.items() if warning}

    @extend_schema_field(CampaignBroadcastSerializer(allow_null=True))
    def get_broadcast(self, campaign: Campaign) -> dict | None:
        """Return an area broadcast's estimated handsets and reach over time per operator; None when targeted."""
        if campaign.mode != Mode.AREA_BROADCAST:
            return None
        from operators.broadcast_selectors import broadcast_progress
        from operators.broadcasts import broadcast_estimate

        zone = campaign_zone(campaign)
        runs = [progress_in_zone(progress, zone) for progress in broadcast_progress(campaign)]
        return {"estimate": broadcast_estimate(campaign), "runs": runs}

    @extend_schema_field(
        RunProgressSerializer(
            allow_null=True,
            help_text=(
                "The latest run's delivery progress; null before the first run, and always for an area broadcast, "
                "which has no deliveries: its handsets reached and each operator's state are under broadcast."
            ),
        )
    )
    def get_progress(self, campaign: Campaign) -> dict | None:
        """Return the latest run's progress (see campaigns.dispatch_selectors.run_progress), or None."""
        if campaign.mode == Mode.AREA_BROADCAST:
            return None
        return progress_in_zone(campaign_progress(campaign), campaign_zone(campaign))

    def get_content_hash(self, campaign: Campaign) -> str:
        return campaign_content_hash(campaign)

    @extend_schema_field(CAMPAIGN_ANALYSIS)
    def get_analysis(self, campaign: Campaign) -> dict:
        try:
            return sms.analyze(campaign.text).as_dict()
        except sms.TextError as exc:
            return {"error": str(exc)}

    def _audience(self, campaign: Campaign) -> dict:
        cache = self.context.setdefault("_audience", {})
        if campaign.pk not in cache:
            cache[campaign.pk] = campaign_audience(campaign)
        return cache[campaign.pk]

    @extend_schema_field(
        CampaignAudienceSerializer(
            allow_null=True,
            help_text=(
                "Null for an area broadcast: the operators' cells send it to every handset in the area, not as SMS "
                "to registered subscribers, so it has no subscriber audience or SMS cost; its operators and "
                "estimated handsets reached are under operator_slugs, exercise and broadcast."
            ),
        )
    )
    def get_audience(self, campaign: Campaign) -> dict | None:
        if campaign.mode == Mode.AREA_BROADCAST:
            return None
        return self._audience(campaign)

    @extend_schema_field(
        serializers.IntegerField(
            allow_null=True,
            help_text=(
                "Rupiah a run would cost now: audience.cost. Null for an area broadcast, which sends no SMS to "
                "subscribers (see audience)."
            ),
        )
    )
    def get_cost_estimate(self, campaign: Campaign) -> int | None:
        if campaign.mode == Mode.AREA_BROADCAST:
            return None
        return self._audience(campaign)["cost"]

    @extend_schema_field(ApprovalShownSerializer(allow_null=True))
    def get_approval(self, campaign: Campaign) -> dict | None:
        # The latest decision, voided or not, so a reviewer sees why a campaign is back in draft.
        approval = campaign.approvals.select_related("approver").order_by("-id").first()
        if approval is None:
            return None
        data = ApprovalSerializer(approval).data
        data["valid"] = (
            approval.decision == Approval.Decision.APPROVED
            and approval.voided_at is None
            and approval.content_hash == campaign_content_hash(campaign)
        )
        return data

    def get_allowed_actions(self, campaign: Campaign) -> list[str]:
        request = self.context.get("request")
        if request is None:
            return []
        return campaign_allowed_actions(campaign=campaign, user=request.user)

    @extend_schema_field(HISTORY_ENTRY)
    def get_history(self, campaign: Campaign) -> list[dict]:
        history, self._history_total = campaign_history_latest(campaign)
        return AuditEventSerializer(history, many=True).data

    @extend_schema_field(
        serializers.IntegerField(help_text="How many audit events the campaign has, those in `history` included.")
    )
    def get_history_total(self, campaign: Campaign) -> int:
        return self._history_total


class ApproveSerializer(serializers.Serializer):
    content_hash = serializers.RegexField(r"^[0-9a-f]{64}$", help_text="The content_hash of the version reviewed.")


class RejectSerializer(serializers.Serializer):
    reason = StrictCharField(max_length=2000)


class CancelSerializer(serializers.Serializer):
    reason = StrictCharField(max_length=2000, required=False, allow_blank=True)
