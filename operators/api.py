"""The operator-facing API: delivery reports, and pull mode for operators that fetch their batches.

Every view authenticates the operator's own token (role `operator`, linked to one Operator) and only ever
sees or touches that operator's messages and batches.
"""

from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.models import DispatchBatch, Priority
from operators import services
from operators.models import Operator
from smsblast.api import Pagination
from smsblast.errors import ServiceConflict, ServiceForbidden, ServiceInvalid
from smsblast.parsers import JSONParser
from smsblast.roles import IsOperator


def caller_operator(request) -> Operator:
    """Return the Operator the request's token belongs to; raise ServiceForbidden if none."""
    operator = Operator.objects.filter(user=request.user).first()
    if operator is None:
        raise ServiceForbidden("This token is not linked to an operator.")
    return operator


def caller_operator_given_batches(request) -> Operator:
    """Return the caller's Operator if it may list and claim batches; raise ServiceForbidden if not.

    Only an active operator set up for pull is given batches this way; a push operator's go to its gateway.

    A deactivated operator is handed no new work. What it already has still counts: its acknowledgements of
    batches it claimed, its delivery and reach reports (they arrive late) and its subscribers' STOP messages.
    """
    operator = caller_operator(request)
    if not operator.active:
        raise ServiceForbidden(
            f"Operator {operator.slug} is deactivated: it is given no batches. Acknowledgements and reports "
            "for batches it already claimed are still accepted."
        )
    if operator.adapter != services.PULL_ADAPTER:
        # Its batches are pushed to it: a claim beside the push would hand the same batch over twice.
        raise ServiceForbidden(
            f"Operator {operator.slug} is set up for push: its batches are sent to its gateway, not listed or "
            "claimed here. An admin can set its adapter to pull."
        )
    return operator


_REPORT = inline_serializer(
    "DeliveryReport",
    {
        "message_id": serializers.CharField(),
        "status": serializers.ChoiceField(choices=list(services.REPORT_STATUSES)),
        "operator_ref": serializers.CharField(required=False),
        "error_code": serializers.CharField(required=False),
        "done_at": serializers.DateTimeField(required=False),
    },
)


# A message id of ours (or the operator's own) and why it was refused; a body of nested lists is JSON only.
class RejectedMessageSerializer(serializers.Serializer):
    message_id = serializers.CharField()
    reason = serializers.CharField()


class DeliveryReportsView(APIView):
    """Apply up to 10,000 delivery reports; statuses only move forward and a repeat changes nothing."""

    permission_classes = [IsOperator]
    parser_classes = [JSONParser]

    @extend_schema(
        request=inline_serializer(
            "DeliveryReports", {"reports": serializers.ListField(child=_REPORT, max_length=services.MAX_REPORTS)}
        ),
        responses={
            200: inline_serializer(
                "DeliveryReportsResult",
                {
                    "applied": serializers.IntegerField(),
                    "unchanged": serializers.IntegerField(),
                    "rejected": serializers.ListField(child=RejectedMessageSerializer()),
                },
            ),
            400: OpenApiResponse(description="Malformed body or more than 10,000 reports; nothing applied"),
            403: OpenApiResponse(description="Not an operator's token"),
        },
    )
    def post(self, request):
        operator = caller_operator(request)
        try:
            reports = services.delivery_reports_parse(request.data)
        except services.ReportsInvalid as exc:
            raise ServiceInvalid(str(exc), {exc.field: str(exc)}) from None
        outcome = services.delivery_reports_apply(operator=operator, reports=reports)
        return Response(outcome.as_dict())


def _outbound_json(outbound) -> dict:
    """Return a claimed batch in the shape of the push body (Operator Batch API v1)."""
    return {
        "batch_id": outbound.batch_id,
        "campaign": {"id": outbound.campaign_id, "title": outbound.campaign_title},
        "sender": outbound.sender,
        "text": outbound.text,
        "encoding": outbound.encoding,
        "segments": outbound.segments,
        "priority": outbound.priority,
        "expires_at": outbound.expires_at,
        "callback_url": outbound.callback_url,
        "recipients": [{"message_id": m.message_id, "msisdn": m.msisdn} for m in outbound.recipients],
    }


# A batch_id that is not a UUID matches no URL; any UUID reaches the view, and one that is unknown or another
# operator's answers as a batch not in a state for the call does, so a caller learns nothing of others' batches.
_NO_SUCH_ENDPOINT = OpenApiResponse(description="batch_id is not a UUID: there is no such endpoint")


_CAMPAIGN = inline_serializer("BatchCampaign", {"id": serializers.IntegerField(), "title": serializers.CharField()})
# `segments` is per message wherever a batch is described (push body, list, claim), as DESIGN.md's push body has it.
_SEGMENTS_HELP = "SMS parts each message of the batch takes (per message, as in the push body)."
_READY_BATCH = inline_serializer(
    "ReadyBatch",
    {
        "batch_id": serializers.UUIDField(),
        "campaign": _CAMPAIGN,
        "size": serializers.IntegerField(
            help_text="Recipients written to the batch; the claim hands over fewer if some opted out since."
        ),
        "segments": serializers.IntegerField(help_text=_SEGMENTS_HELP),
        "total_segments": serializers.IntegerField(help_text="Segments of the whole batch: size × segments."),
        "attempts": serializers.IntegerField(help_text="Times the batch was claimed or pushed before."),
        "created_at": serializers.DateTimeField(),
    },
)
_CLAIMED_BATCH = inline_serializer(
    "ClaimedBatch",
    {
        "batch_id": serializers.UUIDField(),
        "campaign": _CAMPAIGN,
        "sender": serializers.CharField(),
        "text": serializers.CharField(),
        "encoding": serializers.ChoiceField(choices=["GSM7", "UCS2"]),
        "segments": serializers.IntegerField(help_text=_SEGMENTS_HELP),
        "priority": serializers.ChoiceField(choices=Priority.choices),
        "expires_at": serializers.DateTimeField(),
        "callback_url": serializers.URLField(),
        "recipients": serializers.ListField(
            child=inline_serializer(
                "ClaimedRecipient", {"message_id": serializers.CharField(), "msisdn": serializers.CharField()}
            )
        ),
        "lease_expires_at": serializers.DateTimeField(
            help_text="Until when the claim holds; claiming the batch again meanwhile answers the same batch and "
            "time (the lease is not renewed). Unacknowledged then, the batch is listed again with the same "
            "batch_id (an ack arriving later still counts), so send a batch_id once however often it is claimed."
        ),
    },
)


class OperatorBatchListView(APIView):
    """List the caller's batches ready to claim (pull mode), oldest first.

    `segments` is per message, as in a claimed batch and the push body; `total_segments` is the whole batch's
    (which `segments` held here before). Claiming takes a batch out of the list, so a client claiming as it
    pages reads the first page again rather than following `next`, whose offset would skip ready batches.
    """

    permission_classes = [IsOperator]

    @extend_schema(
        # A list, though the view is not a ViewSet: named so, a generated client calls it list_…, not retrieve_….
        operation_id="v1_operator_batches_list",
        parameters=[
            OpenApiParameter(
                "state", enum=["ready"], required=False, default="ready", description="Only ready batches are listed."
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": Pagination.max_limit, "default": 100},
                required=False,
                description="Batches a page: 100 unless given, at most 10,000.",
            ),
            OpenApiParameter(
                "offset",
                {"type": "integer", "minimum": 0, "default": 0},
                required=False,
                description=(
                    "Batches to skip. A claimed batch leaves the list: a client that claims as it reads asks for "
                    "the first page again instead of following `next`."
                ),
            ),
        ],
        responses={
            200: inline_serializer(
                "ReadyBatchPage",
                {
                    "count": serializers.IntegerField(),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": serializers.ListField(child=_READY_BATCH),
                },
            ),
            400: OpenApiResponse(
                description="state is not 'ready', or limit (at least 1) or offset (at least 0) is not a whole number "
                "in range"
            ),
            403: OpenApiResponse(
                description="Not an operator's token, the operator is deactivated, or it is set up for push"
            ),
        },
    )
    def get(self, request):
        operator = caller_operator_given_batches(request)
        state = request.query_params.get("state", "ready")
        if state != "ready":
            raise ServiceInvalid("state must be 'ready'.", {"state": "not ready"})
        # Left to the paginator, a limit or offset that names no page would quietly answer the first 100 batches.
        for name, least in (("limit", 1), ("offset", 0)):
            value = request.query_params.get(name)
            if value is not None and not (value.isascii() and value.isdigit() and int(value) >= least):
                message = f"{name} must be a whole number of at least {least}."
                raise ServiceInvalid(message, {name: message})
        paginator = Pagination()
        page = paginator.paginate_queryset(services.batches_ready_for(operator=operator), request, view=self)
        rows = [
            {
                "batch_id": str(batch.pk),
                "campaign": {"id": batch.run.campaign_id, "title": batch.run.campaign.title},
                "size": batch.size,
                "segments": batch.run.segments,
                "total_segments": batch.segments,
                "attempts": batch.attempts,
                "created_at": batch.created_at,
            }
            for batch in page
        ]
        return paginator.get_paginated_response(rows)


class OperatorBatchClaimView(APIView):
    """Lease one ready batch to the caller and return its content; ack it once sent.

    Claiming again a batch the caller's claim still holds answers the same content and lease, so a claim whose
    answer was lost can be retried.
    """

    permission_classes = [IsOperator]

    @extend_schema(
        request=None,
        responses={
            200: _CLAIMED_BATCH,
            403: OpenApiResponse(
                description="Not an operator's token, the operator is deactivated, or it is set up for push"
            ),
            404: _NO_SUCH_ENDPOINT,
            409: OpenApiResponse(
                description="The batch is unknown, another operator's, or not ready to be claimed (claimed and "
                "lapsed, acknowledged, failed, its campaign paused or cancelled, in its quiet hours)"
            ),
        },
    )
    def post(self, request, batch_id):
        operator = caller_operator_given_batches(request)
        try:
            # The lease is read under the claim's lock: an ack committed in between would answer a lease of null.
            with transaction.atomic():
                outbound = services.batch_claim(operator=operator, batch_id=batch_id)
                lease_expires_at = DispatchBatch.objects.values_list("lease_expires_at", flat=True).get(pk=batch_id)
        except LookupError as exc:
            raise ServiceConflict(str(exc)) from None
        return Response({**_outbound_json(outbound), "lease_expires_at": lease_expires_at})


class OperatorBatchAckView(APIView):
    """Acknowledge a claimed batch: `{"accepted": N, "rejected": [{"message_id", "reason"}]}`."""

    permission_classes = [IsOperator]
    parser_classes = [JSONParser]

    @extend_schema(
        request=inline_serializer(
            "BatchAck",
            {
                "accepted": serializers.IntegerField(min_value=0, required=False),
                "rejected": serializers.ListField(child=RejectedMessageSerializer(), required=False),
            },
        ),
        responses={
            200: inline_serializer(
                "BatchAckResult",
                {
                    "batch_id": serializers.UUIDField(),
                    "status": serializers.CharField(),
                    "accepted": serializers.IntegerField(
                        help_text="Messages recorded as accepted. The first ack is the batch's answer: a repeat "
                        "answers the same and changes nothing, as a push answer repeated under its Idempotency-Key."
                    ),
                },
            ),
            400: OpenApiResponse(description="Malformed acknowledgement, or accepting more than was handed over"),
            404: _NO_SUCH_ENDPOINT,
            409: OpenApiResponse(
                description="The batch is unknown, another operator's, never claimed, failed or cancelled"
            ),
        },
    )
    def post(self, request, batch_id):
        operator = caller_operator(request)
        body = request.data
        if not isinstance(body, dict):
            # Taken as an empty acknowledgement, a bare list of refusals would accept the whole batch.
            raise ServiceInvalid('Send {"accepted": N, "rejected": [{"message_id", "reason"}]}.')
        accepted = body.get("accepted")
        rejected = body.get("rejected") or []
        if accepted is not None and (not isinstance(accepted, int) or isinstance(accepted, bool) or accepted < 0):
            raise ServiceInvalid("accepted must be a non-negative whole number.", {"accepted": "not a count"})
        if not isinstance(rejected, list) or not all(isinstance(item, dict) for item in rejected):
            raise ServiceInvalid('rejected must be a list of {"message_id", "reason"}.', {"rejected": "not a list"})
        # Text or numbers only: a list or an object would be kept as Python writes it ("{'code': 1}").
        fields = ("message_id", "reason")
        if any(isinstance(item.get(name), list | dict | bool) for item in rejected for name in fields):
            raise ServiceInvalid(
                "Each message_id and reason in rejected must be a string.", {"rejected": "not a string"}
            )
        try:
            outcome = services.batch_ack(operator=operator, batch_id=batch_id, accepted=accepted, rejected=rejected)
        except LookupError as exc:
            raise ServiceConflict(str(exc)) from None
        accepted = DispatchBatch.objects.values_list("accepted_count", flat=True).get(pk=batch_id)
        return Response(
            {"batch_id": str(batch_id), "status": outcome.status, "accepted": accepted}, status=status.HTTP_200_OK
        )
