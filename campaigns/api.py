"""Campaign REST API for officers and approvers: drafts, submission, approval, cancellation."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from campaigns.api_dispatch import CampaignDispatchActionsMixin
from campaigns.models import Campaign, Mode
from campaigns.selectors import campaign_list
from campaigns.serializers import (
    ApproveSerializer,
    CampaignDetailSerializer,
    CampaignEditSerializer,
    CampaignListSerializer,
    CampaignWriteSerializer,
    CancelSerializer,
    RejectSerializer,
)
from campaigns.services import (
    campaign_approve,
    campaign_cancel,
    campaign_copy,
    campaign_create,
    campaign_reject,
    campaign_submit,
    campaign_update,
)
from smsblast.api_views import validated
from smsblast.errors import ServiceInvalid
from smsblast.models import Role
from smsblast.roles import HasRole, IsApprover, IsOfficer, IsStaffRole

# Who may call each action; services then check the user's relation to the campaign
# (author or admin for edits, never the author for approval). Actions not listed here
# (those of CampaignDispatchActionsMixin) use their own permission_classes.
ACTION_PERMISSIONS = {
    "list": [IsStaffRole],
    "retrieve": [IsStaffRole],
    "create": [IsOfficer],
    "copy": [IsOfficer],
    "partial_update": [IsOfficer],
    "submit": [IsOfficer],
    "approve": [IsApprover],
    "reject": [IsApprover],
    "cancel": [HasRole.of(Role.OFFICER, Role.APPROVER, Role.ADMIN)],
}
# The campaign list page searches the same words, cut to this length.
MAX_SEARCH_CHARS = 100


def _is_id(value: str) -> bool:
    """Return whether a query parameter is a database id: ASCII digits that fit a 64-bit integer."""
    return value.isascii() and value.isdigit() and len(value) <= 18


class CampaignViewSet(
    CampaignDispatchActionsMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Compose, review and decide on campaigns. Errors answer 400, 403, 404 or 409 with a `detail` message.

    An officer or approver with a jurisdiction sees, and acts on, only the campaigns whose whole target lies
    within it; any other campaign answers 404, as one that does not exist.
    """

    permission_classes = [IsStaffRole]
    # No PUT (partial edits only) and no DELETE (cancel keeps the record and its history).
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_permissions(self):
        if self.action in ACTION_PERMISSIONS:
            return [permission() for permission in ACTION_PERMISSIONS[self.action]]
        return super().get_permissions()

    def get_queryset(self):
        filters = {}
        if self.action == "list":
            params = self.request.query_params
            filters = {name: params.get(name) for name in ("status", "mode", "q", "author") if params.get(name)}
            if filters.get("status") and filters["status"] not in Campaign.Status.values:
                raise ServiceInvalid(f"Unknown status {filters['status']!r}; use one of {', '.join(Campaign.Status)}.")
            if filters.get("mode") and filters["mode"] not in Mode.values:
                raise ServiceInvalid(f"Unknown mode {filters['mode']!r}; use one of {', '.join(Mode)}.")
            if filters.get("author") and not _is_id(filters["author"]):
                raise ServiceInvalid("author must be a user id.")
            # Each word is one more condition: thousands would exceed what SQLite can parse (a 500).
            if len(filters.get("q") or "") > MAX_SEARCH_CHARS:
                raise ServiceInvalid(f"q must be at most {MAX_SEARCH_CHARS} characters.")
        return campaign_list(self.request.user, filters)

    def get_serializer_class(self):
        if self.action == "list":
            return CampaignListSerializer
        if self.action == "create":
            return CampaignWriteSerializer
        if self.action == "partial_update":
            return CampaignEditSerializer
        return CampaignDetailSerializer

    def detail_response(self, campaign: Campaign, status_code: int = status.HTTP_200_OK) -> Response:
        campaign = Campaign.objects.select_related("author").get(pk=campaign.pk)
        return Response(CampaignDetailSerializer(campaign, context=self.get_serializer_context()).data, status_code)

    @extend_schema(
        parameters=[
            OpenApiParameter("status", enum=Campaign.Status.values),
            OpenApiParameter("mode", enum=Mode.values),
            OpenApiParameter("q", description="Words in the title, text or sender (at most 100 characters)."),
            OpenApiParameter("author", int, description="Author's user id."),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=CampaignWriteSerializer, responses={201: CampaignDetailSerializer})
    def create(self, request):
        data = validated(CampaignWriteSerializer(data=request.data))
        campaign = campaign_create(author=request.user, **data)
        return self.detail_response(campaign, status.HTTP_201_CREATED)

    @extend_schema(
        request=None,
        responses={201: CampaignDetailSerializer},
        description="A new draft with the campaign's content, any state; a schedule whose one-off time or end date "
        "has passed, or a broadcast window already started, is left out.",
    )
    @action(detail=True, methods=["post"])
    def copy(self, request, pk=None):
        campaign, _passed = campaign_copy(source=self.get_object(), author=request.user)
        return self.detail_response(campaign, status.HTTP_201_CREATED)

    @extend_schema(request=CampaignEditSerializer, responses={200: CampaignDetailSerializer})
    def partial_update(self, request, pk=None):
        campaign = self.get_object()
        data = dict(validated(CampaignEditSerializer(data=request.data, partial=True)))
        expected_hash = data.pop("content_hash", None)
        campaign_update(campaign=campaign, actor=request.user, data=data, expected_hash=expected_hash)
        return self.detail_response(campaign)

    @extend_schema(
        request=None,
        responses={
            200: CampaignDetailSerializer,
            400: OpenApiResponse(
                description="The campaign is not complete (text, sender, area, window...); `errors` names each field"
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def submit(self, request, pk=None):
        campaign = campaign_submit(campaign=self.get_object(), actor=request.user)
        return self.detail_response(campaign)

    @extend_schema(
        request=ApproveSerializer,
        responses={
            200: CampaignDetailSerializer,
            400: OpenApiResponse(
                description="No `content_hash`, or the text or title holds direction overrides or control characters "
                "(`errors` names them): reject the campaign so that its author removes them"
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        campaign = self.get_object()
        data = validated(ApproveSerializer(data=request.data))
        campaign = campaign_approve(campaign=campaign, approver=request.user, content_hash=data["content_hash"])
        return self.detail_response(campaign)

    @extend_schema(request=RejectSerializer, responses={200: CampaignDetailSerializer})
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        campaign = self.get_object()
        data = validated(RejectSerializer(data=request.data))
        campaign = campaign_reject(campaign=campaign, approver=request.user, reason=data["reason"])
        return self.detail_response(campaign)

    @extend_schema(request=CancelSerializer, responses={200: CampaignDetailSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        campaign = self.get_object()
        data = validated(CancelSerializer(data=request.data))
        campaign = campaign_cancel(campaign=campaign, actor=request.user, reason=data.get("reason", ""))
        return self.detail_response(campaign)
