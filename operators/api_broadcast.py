"""Area-broadcast API: operators report reach; officers and approvers see the estimate and reach over time."""

from django.db import transaction
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.selectors import campaigns_visible
from operators.broadcast_selectors import broadcast_progress
from operators.broadcasts import broadcast_estimate
from operators.models import AreaBroadcast
from smsblast.errors import ServiceInvalid
from smsblast.parsers import JSONParser
from smsblast.roles import IsOperator, IsStaffRole

MAX_REPORTS_PER_REQUEST = 1000


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time with its offset: one without it would be taken as the server's local time."""

    default_error_messages = {"naive": "Give the time with its offset (ISO 8601), e.g. 2021-07-07T13:00:00+07:00."}

    def enforce_timezone(self, value):
        if timezone.is_naive(value):
            self.fail("naive")
        return super().enforce_timezone(value)


class ReachReportSerializer(serializers.Serializer):
    broadcast_id = serializers.UUIDField()
    # The column is a PostgreSQL integer; far more than the handsets of any country.
    handsets_reached = serializers.IntegerField(min_value=0, max_value=2_147_483_647)
    at = AwareDateTimeField()


class ReachReportsSerializer(serializers.Serializer):
    reports = ReachReportSerializer(many=True, allow_empty=False, max_length=MAX_REPORTS_PER_REQUEST)


# ReachReportsSerializer as the schema shows it: the schema generator leaves the bounds of a nested serializer's
# `many=True` out, and an operator should read that a request holds 1 to 1,000 reports.
@extend_schema_serializer(component_name="ReachReports")
class ReachReportsDocumentedSerializer(serializers.Serializer):
    """Several reach reports in one request, at most 1,000."""

    reports = serializers.ListField(child=ReachReportSerializer(), min_length=1, max_length=MAX_REPORTS_PER_REQUEST)


class AreaBroadcastReportsView(APIView):
    """`POST /api/v1/operator/area-broadcast-reports/`: cumulative reach of the operator's own broadcasts.

    The body is one report `{"broadcast_id", "handsets_reached", "at"}` or `{"reports": [...]}`. Reports are
    idempotent and monotonic: a repeat or a smaller late count never lowers the recorded reach.
    """

    permission_classes = [IsOperator]
    parser_classes = [JSONParser]

    @extend_schema(
        request=PolymorphicProxySerializer(
            component_name="ReachReportRequest",
            serializers=[ReachReportSerializer, ReachReportsDocumentedSerializer],
            resource_type_field_name=None,
        ),
        responses={
            200: inline_serializer(
                "ReachReportsResult",
                {
                    "accepted": serializers.IntegerField(),
                    "broadcasts": inline_serializer(
                        "ReachRecorded",
                        {
                            "broadcast_id": serializers.UUIDField(),
                            "handsets_reached": serializers.IntegerField(),
                            "state": serializers.CharField(),
                        },
                        many=True,
                    ),
                },
            ),
            400: OpenApiResponse(description="Malformed report or more than 1,000 reports; nothing recorded"),
            404: OpenApiResponse(description="A broadcast_id that is not one of this operator's broadcasts"),
        },
    )
    def post(self, request):
        from operators.broadcasts import area_broadcast_report

        operator = getattr(request.user, "operator", None)
        if operator is None:
            raise PermissionDenied("This API user is not linked to an operator.")
        many = isinstance(request.data, dict) and "reports" in request.data
        serializer = (ReachReportsSerializer if many else ReachReportSerializer)(data=request.data)
        if not serializer.is_valid():
            raise ServiceInvalid("Invalid reach report.", serializer.errors)
        reports = serializer.validated_data["reports"] if many else [serializer.validated_data]
        ids = {report["broadcast_id"] for report in reports}
        own = set(AreaBroadcast.objects.filter(pk__in=ids, operator=operator).values_list("id", flat=True))
        unknown = ids - own
        if unknown:
            raise NotFound(f"No area broadcast of this operator with id {', '.join(sorted(map(str, unknown)))}.")
        # In broadcast order, whatever the request's order: two requests then take their rows in one order.
        # Each broadcast's highest count first, so its row is updated once: a second UPDATE of it in this
        # transaction would re-check its run foreign key, waiting on a window's end that holds the run.
        reports = sorted(
            reports, key=lambda report: (str(report["broadcast_id"]), -report["handsets_reached"], report["at"])
        )
        with transaction.atomic():
            recorded = [
                area_broadcast_report(
                    operator=operator,
                    broadcast_id=report["broadcast_id"],
                    handsets_reached=report["handsets_reached"],
                    at=report["at"],
                )
                for report in reports
            ]
        return Response(
            {
                "accepted": len(reports),
                "broadcasts": [
                    {"broadcast_id": str(b.pk), "handsets_reached": b.handsets_reached, "state": b.state}
                    for b in {b.pk: b for b in recorded}.values()
                ],
            }
        )


class AreaEstimateSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    level = serializers.CharField()
    population = serializers.IntegerField(allow_null=True)
    population_source = serializers.CharField()
    handsets = serializers.IntegerField(allow_null=True)


class BroadcastEstimateSerializer(serializers.Serializer):
    handsets = serializers.IntegerField(allow_null=True, help_text="Null when no population figures are loaded.")
    ownership_rate = serializers.FloatField()
    note = serializers.CharField()
    by_area = AreaEstimateSerializer(many=True)


class ReachPointSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    handsets_reached = serializers.IntegerField()


class BroadcastLogEntrySerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=AreaBroadcast.State.choices)
    at = serializers.DateTimeField()
    details = serializers.JSONField()


class OperatorBroadcastSerializer(serializers.Serializer):
    operator = serializers.CharField(help_text="The operator's slug.")
    name = serializers.CharField()
    broadcast_id = serializers.UUIDField()
    state = serializers.ChoiceField(choices=AreaBroadcast.State.choices)
    attempts = serializers.IntegerField()
    operator_ref = serializers.CharField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    cancel_requested_at = serializers.DateTimeField(allow_null=True)
    handsets_reached = serializers.IntegerField()
    last_error = serializers.CharField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    series = ReachPointSerializer(many=True)
    log = BroadcastLogEntrySerializer(many=True)


class BroadcastRunSerializer(serializers.Serializer):
    run_id = serializers.IntegerField()
    status = serializers.CharField()
    starts_at = serializers.DateTimeField(allow_null=True)
    ends_at = serializers.DateTimeField(allow_null=True)
    area = serializers.JSONField(allow_null=True)
    handsets_reached = serializers.IntegerField()
    series = ReachPointSerializer(many=True)
    operators = OperatorBroadcastSerializer(many=True)


class CampaignBroadcastSerializer(serializers.Serializer):
    """What `GET /api/v1/campaigns/{id}/broadcast/` answers (for the OpenAPI schema)."""

    estimate = BroadcastEstimateSerializer()
    runs = BroadcastRunSerializer(many=True, help_text="Latest first.")


class CampaignBroadcastView(APIView):
    """`GET /api/v1/campaigns/{id}/broadcast/`: estimated handsets and, once running, reach over time."""

    permission_classes = [IsStaffRole]

    @extend_schema(responses={200: CampaignBroadcastSerializer})
    def get(self, request, pk: int):
        campaign = get_object_or_404(campaigns_visible(request.user), pk=pk)
        return Response({"estimate": broadcast_estimate(campaign), "runs": broadcast_progress(campaign)})
