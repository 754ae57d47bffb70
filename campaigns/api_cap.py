"""CAP 1.2 over the API: export an approved campaign, import an alert (or its Cancel) from any issuer."""

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.cap import cap_document
from campaigns.cap_import import MAX_DOCUMENT_BYTES, cap_import, cap_too_large_message
from campaigns.models import Campaign, Priority
from campaigns.selectors import campaigns_visible
from smsblast.api import FileContentNegotiation
from smsblast.errors import ServiceInvalid
from smsblast.middleware import declared_body_length
from smsblast.roles import IsOfficer, IsStaffRole

CAP_CONTENT_TYPE = "application/cap+xml; charset=utf-8"
# Room for a multipart form's boundaries and headers around a document of MAX_DOCUMENT_BYTES.
MULTIPART_ALLOWANCE = 64 * 1024


class CampaignCapView(APIView):
    """`GET /api/v1/campaigns/{id}/cap.xml`: the campaign as a CAP 1.2 alert (a Cancel once cancelled)."""

    permission_classes = [IsStaffRole]
    content_negotiation_class = FileContentNegotiation

    @extend_schema(
        responses={
            (200, "application/cap+xml"): OpenApiResponse(OpenApiTypes.STR, description="CAP 1.2 alert"),
            409: OpenApiResponse(
                description="The campaign has no valid approval, or changed after it was approved: nothing to export"
            ),
        }
    )
    def get(self, request, pk: int):
        campaign = get_object_or_404(campaigns_visible(request.user), pk=pk)
        response = HttpResponse(cap_document(campaign), content_type=CAP_CONTENT_TYPE)
        response["Content-Disposition"] = f'inline; filename="campaign-{campaign.pk}.cap.xml"'
        return response


class CapImportResultSerializer(serializers.Serializer):
    """What an import answers (for the OpenAPI schema)."""

    action = serializers.ChoiceField(choices=["created", "cancelled", "rejected"])
    campaign_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Campaign.Status.choices)
    title = serializers.CharField()
    text = serializers.CharField()
    area_codes = serializers.ListField(child=serializers.CharField())
    priority = serializers.ChoiceField(choices=Priority.choices)
    exercise = serializers.BooleanField()
    starts_at = serializers.DateTimeField(allow_null=True)
    ends_at = serializers.DateTimeField(allow_null=True)
    cut = serializers.ListField(child=serializers.DictField(), help_text="Text left out to fit the segment limit.")
    notes = serializers.ListField(child=serializers.CharField())


class CapImportView(APIView):
    """`POST /api/v1/cap/`: import a CAP 1.1/1.2 document sent as the raw body or as a multipart `file`.

    An Alert creates a draft area broadcast (201); a Cancel cancels, or sends back, the campaign imported from
    the alert it references (200). Anything unusable is refused with 400 and a reason, creating nothing; an alert
    already imported (same sender and identifier) gets 409.
    """

    permission_classes = [IsOfficer]

    @extend_schema(
        request={
            "application/cap+xml": bytes,
            "multipart/form-data": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary", "description": "The CAP document."}},
                "required": ["file"],
            },
        },
        responses={
            201: CapImportResultSerializer,
            200: CapImportResultSerializer,
            409: OpenApiResponse(description="This alert was imported before"),
            413: OpenApiResponse(description="The document is larger than 1 MiB"),
        },
    )
    def post(self, request):
        content_type = request.content_type or ""
        if declared_body_length(request) > MAX_DOCUMENT_BYTES + MULTIPART_ALLOWANCE:
            # Refused before the body is read: a multipart upload would be spooled to disk first.
            return Response({"detail": cap_too_large_message()}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        if content_type.startswith("multipart/"):
            upload = request.FILES.get("file")
            if upload is None:
                raise ServiceInvalid(_("Send the CAP document as a file named 'file'."), {"file": _("Required.")})
            if upload.size > MAX_DOCUMENT_BYTES:
                raise ServiceInvalid(cap_too_large_message())
            raw = upload.read()
        else:
            raw = request.body
        result = cap_import(raw=raw, actor=request.user)
        campaign = result.campaign
        return Response(
            {
                "action": result.action,
                "campaign_id": campaign.pk,
                "status": campaign.status,
                "title": campaign.title,
                "text": campaign.text,
                "area_codes": campaign.area_codes,
                "priority": campaign.priority,
                "exercise": campaign.exercise,
                "starts_at": campaign.starts_at,
                "ends_at": campaign.ends_at,
                "cut": result.cut,
                "notes": result.notes,
            },
            status=status.HTTP_201_CREATED if result.action == "created" else status.HTTP_200_OK,
        )
