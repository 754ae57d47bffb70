"""REST endpoints for the audience: areas, subscribers, imports, opt-out and the audience preview."""

import contextlib
from datetime import UTC

from django.http import FileResponse, Http404, StreamingHttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.scheduling import zone_for_area_code
from campaigns.serializers import AudienceOperatorSerializer, SkippedByReasonSerializer
from campaigns.services import _audience_problem as audience_problem
from smsblast import optout, selectors, services
from smsblast.api import CSV_SEPARATOR_PARAMETER, FileContentNegotiation, Pagination, csv_separator
from smsblast.api_views import validated
from smsblast.errors import ServiceConflict, ServiceForbidden, ServiceInvalid
from smsblast.models import Area, AreaLevel, Subscriber, SubscriberImport
from smsblast.phones import normalize
from smsblast.roles import IsOfficer, IsOperator, IsStaffRole

AREA_SEARCH_LIMIT = 20
AREA_SEARCH_MAX = 100
# As the compose page's area search cuts it.
AREA_SEARCH_MAX_CHARS = 100
MSISDN_MAX_DIGITS = 15


# ---------------------------------------------------------------------------------------------------------------
# Areas
# ---------------------------------------------------------------------------------------------------------------


def area_as_dict(area: Area, subscriber_count: int) -> dict:
    zone = zone_for_area_code(area.code)
    # A listed area is read without its boundary (tens of kilobytes), knowing only whether it has one.
    has_boundary = getattr(area, "has_boundary", None)
    if has_boundary is None:
        has_boundary = area.boundary is not None
    return {
        "code": area.code,
        "name": area.name,
        "level": area.level,
        "parent": area.parent_id,
        "subscriber_count": subscriber_count,
        "has_boundary": bool(has_boundary),
        "zone": zone.label,
        "time_zone": zone.name,
    }


# The answers' shapes, for the OpenAPI schema: the views build them as dicts.
class AreaSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    level = serializers.ChoiceField(choices=AreaLevel.choices)
    parent = serializers.CharField(allow_null=True)
    subscriber_count = serializers.IntegerField(help_text="Reachable subscribers in the area and below.")
    has_boundary = serializers.BooleanField()
    zone = serializers.ChoiceField(choices=["WIB", "WITA", "WIT"])
    time_zone = serializers.CharField(help_text="IANA name, e.g. Asia/Jakarta.")


class AreaListSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    results = AreaSerializer(many=True)


class AreaAncestorSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    level = serializers.ChoiceField(choices=AreaLevel.choices)


class AreaDetailSerializer(AreaSerializer):
    population = serializers.IntegerField(allow_null=True)
    boundary = serializers.JSONField(allow_null=True, help_text="GeoJSON geometry; null when unknown.")
    ancestors = AreaAncestorSerializer(many=True)
    children = serializers.IntegerField(help_text="How many areas lie directly below.")


class AreaListView(APIView):
    """List the children of an area (`?parent=35.05`; the provinces without it) or search names (`?q=blit`).

    With both, the search keeps the areas below the parent, since desa names repeat across the country. A search
    is case- and accent-insensitive and lists kabupaten/kota first, then provinces, kecamatan and desa, at most
    `limit` (20, up to 100); one starting with a digit finds codes starting with it (`?q=35.05`).
    `subscriber_count` counts subscribers living in the area or below who have not opted out.
    """

    permission_classes = [IsStaffRole]

    @extend_schema(
        operation_id="areas_list",
        parameters=[
            OpenApiParameter(
                "parent", str, description="Code whose children to list, e.g. 35.05; with q, the area to search below"
            ),
            OpenApiParameter("q", str, description="Part of a name, e.g. blit, or the start of a code, e.g. 35.05"),
            OpenApiParameter("limit", int, description="Most search results (default 20, at most 100)"),
        ],
        responses={200: AreaListSerializer, 404: OpenApiResponse(description="No area has the code given as parent")},
    )
    def get(self, request):
        query = request.query_params.get("q", "").strip()
        parent = request.query_params.get("parent", "").strip()
        if len(query) > AREA_SEARCH_MAX_CHARS:
            # Longer than any area's name; SQLite refuses a LIKE pattern of tens of thousands (a 500).
            raise ServiceInvalid(f"q must be at most {AREA_SEARCH_MAX_CHARS} characters.", {"q": "too long"})
        if parent and not Area.objects.filter(code=parent).exists():
            raise Http404(f"There is no area {parent}.")
        if query:
            try:
                limit = min(max(int(request.query_params.get("limit", AREA_SEARCH_LIMIT)), 1), AREA_SEARCH_MAX)
            except ValueError:
                raise ServiceInvalid("limit must be a whole number.", {"limit": "not a number"}) from None
            areas = selectors.area_search(query, limit=limit, within=parent or None)
        else:
            areas = selectors.area_children(parent or None)
        counts = selectors.area_subscriber_counts(area.code for area in areas)
        results = [area_as_dict(area, counts.get(area.code, 0)) for area in areas]
        return Response({"count": len(results), "results": results})


class AreaDetailView(APIView):
    """Return one area with its GeoJSON boundary (null when unknown), population and ancestors."""

    permission_classes = [IsStaffRole]

    @extend_schema(responses={200: AreaDetailSerializer, 404: OpenApiResponse(description="Unknown")})
    def get(self, request, code: str):
        area = selectors.area_get(code)
        if area is None:
            raise Http404(f"There is no area {code}.")
        counts = selectors.area_subscriber_counts([area.code])
        body = area_as_dict(area, counts.get(area.code, 0))
        body["population"] = area.population
        body["boundary"] = area.boundary
        body["ancestors"] = [
            {"code": ancestor.code, "name": ancestor.name, "level": ancestor.level}
            for ancestor in selectors.area_ancestors(area)
        ]
        body["children"] = Area.objects.filter(parent_id=area.code).count()
        return Response(body)


# ---------------------------------------------------------------------------------------------------------------
# Subscribers and opt-out
# ---------------------------------------------------------------------------------------------------------------


class SubscriberSerializer(serializers.ModelSerializer):
    area = serializers.CharField(source="area_id", allow_null=True)
    area_name = serializers.CharField(source="area.name", default=None, allow_null=True)
    operator = serializers.CharField(source="operator.slug", default=None, allow_null=True)
    opted_out = serializers.SerializerMethodField()

    class Meta:
        model = Subscriber
        fields = [
            "msisdn",
            "name",
            "area",
            "area_name",
            "operator",
            "language",
            "opted_out",
            "opted_out_at",
            "latitude",
            "longitude",
            "created_at",
            "updated_at",
        ]

    def get_opted_out(self, subscriber: Subscriber) -> bool:
        return subscriber.opted_out_at is not None


class SubscriberListView(APIView):
    """Find subscribers by number: `?q=0812 345` matches every number containing +62812345.

    An officer limited to a jurisdiction finds only the subscribers homed within it.
    """

    permission_classes = [IsOfficer]
    # Tells the schema the answer is a page of subscribers, as get() answers, not a bare list.
    pagination_class = Pagination

    @extend_schema(
        parameters=[OpenApiParameter("q", str, description="A number or part of one, in any usual form")],
        responses={200: SubscriberSerializer(many=True)},
    )
    def get(self, request):
        queryset = selectors.subscribers_visible(request.user).select_related("area", "operator").order_by("msisdn")
        query = request.query_params.get("q", "").strip()
        if query:
            forms = selectors.number_search_digits(query)
            if min(map(len, forms)) < 3:
                raise ServiceInvalid("Type at least three digits of the number.", {"q": "too short"})
            # No number has more (E.164); SQLite refuses a LIKE pattern of tens of thousands of them (a 500).
            if max(map(len, forms)) > MSISDN_MAX_DIGITS:
                raise ServiceInvalid(f"A number has at most {MSISDN_MAX_DIGITS} digits.", {"q": "too long"})
            queryset = queryset.filter(selectors.number_search_q(forms))
        paginator = Pagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(SubscriberSerializer(page, many=True).data)


class SubscriberChangeSerializer(SubscriberSerializer):
    changed = serializers.BooleanField(help_text="False when the number already was so.")

    class Meta(SubscriberSerializer.Meta):
        fields = [*SubscriberSerializer.Meta.fields, "changed"]


class SubscriberOptOutView(APIView):
    """Opt a number out by hand (officer or admin); an unknown number is recorded as opted out.

    An officer limited to a jurisdiction opts out only subscribers homed within it: any other number answers 404.
    """

    permission_classes = [IsOfficer]
    opt_in = False

    @extend_schema(
        request=None,
        responses={
            200: SubscriberChangeSerializer,
            400: OpenApiResponse(description="Not an Indonesian mobile number"),
            404: OpenApiResponse(description="Unknown"),
        },
    )
    def post(self, request, msisdn: str):
        if self.opt_in:
            subscriber, changed = services.subscriber_opt_in(msisdn=msisdn, actor=request.user, source="manual")
        else:
            subscriber, changed = services.subscriber_opt_out(msisdn=msisdn, actor=request.user, source="manual")
        if subscriber is None:
            raise Http404(f"There is no subscriber {msisdn}.")
        subscriber = Subscriber.objects.select_related("area", "operator").get(pk=subscriber.pk)
        return Response({**SubscriberSerializer(subscriber).data, "changed": changed})


class SubscriberOptInView(SubscriberOptOutView):
    """Let an opted-out number receive campaigns again (officer or admin)."""

    opt_in = True


# Read as text and parsed by the view: a DateTimeField would take a time without its offset as local time.
@extend_schema_field(OpenApiTypes.DATETIME)
class AwareTimeField(serializers.CharField):
    """An ISO 8601 time with its offset."""


class InboundMessageSerializer(serializers.Serializer):
    msisdn = serializers.CharField(max_length=40)
    text = serializers.CharField(max_length=1600, allow_blank=True, trim_whitespace=False)
    received_at = AwareTimeField(max_length=40, required=False, allow_blank=True)


class OperatorInboundView(APIView):
    """Receive a mobile-originated message from an operator; STOP, BERHENTI, UNREG opt out, START, REG opt in.

    Any other text changes nothing and is answered 200 with `action: "ignored"`, so the operator does
    not retry it. STOP from a number we do not know records it as an opted-out subscriber, so a later
    import cannot make it reachable. An operator speaks only for its own numbers: a message from a number
    that belongs to another operator (its subscriber's operator, else by prefix) is refused with 403.
    """

    permission_classes = [IsOperator]

    @extend_schema(
        request=InboundMessageSerializer,
        responses={
            200: inline_serializer(
                "InboundResult",
                {
                    "msisdn": serializers.CharField(),
                    "action": serializers.ChoiceField(choices=["opted_out", "opted_in", "ignored"]),
                    "changed": serializers.BooleanField(help_text="Whether the number's opt-out changed."),
                    "detail": serializers.CharField(),
                },
            ),
            400: OpenApiResponse(description="Invalid number or received_at"),
            403: OpenApiResponse(description="Not an operator's token, or a number of another operator"),
        },
    )
    def post(self, request):
        data = validated(InboundMessageSerializer(data=request.data))
        received_at = None
        if data.get("received_at"):
            try:
                # Well-formed but impossible (month 13) or unstorable (past year 9999 in UTC) counts as no time.
                received_at = parse_datetime(data["received_at"])
                received_at = received_at.astimezone(UTC) if received_at and received_at.tzinfo else None
            except (ValueError, OverflowError):
                received_at = None
            if received_at is None:
                raise ServiceInvalid(
                    "received_at must be an ISO 8601 time with its offset.", {"received_at": "not a time"}
                )
            # A time after the message reached us is the operator's clock: as its arrival, it cannot hold a
            # later START or STOP back (each is ignored when received before the number's latest other one).
            received_at = min(received_at, timezone.now())
        number = normalize(data["msisdn"])
        if not number.ok:
            raise ServiceInvalid(
                f"{data['msisdn']!r} is not an Indonesian mobile number ({number.reason}).", {"msisdn": "invalid"}
            )
        operator = getattr(request.user, "operator", None)
        if operator is None:
            raise ServiceForbidden("This token is not linked to an operator.")
        owner_id = selectors.msisdn_operator_id(number.e164)
        if owner_id is not None and owner_id != operator.pk:
            raise ServiceForbidden(
                f"{number.e164} belongs to another operator; forward messages from your own subscribers only."
            )
        intent = optout.intent_of(data["text"])
        details = {"text": data["text"][:160], "operator": operator.slug}
        if intent is None:
            return Response(
                {
                    "msisdn": number.e164,
                    "action": "ignored",
                    "changed": False,
                    "detail": "Not an opt-out or opt-in keyword.",
                }
            )
        if intent == optout.Intent.OPT_OUT:
            subscriber, changed = services.subscriber_opt_out(
                msisdn=number.e164, actor=request.user, source="sms", at=received_at, details=details
            )
            action, detail = "opted_out", "The number will receive no more campaigns."
            if not changed and subscriber is not None and subscriber.opted_out_at is None:
                action, detail = "ignored", "Received before the number's latest opt-in, which stands."
        else:
            subscriber, changed = services.subscriber_opt_in(
                msisdn=number.e164, actor=request.user, source="sms", at=received_at, details=details
            )
            action, detail = "opted_in", "The number receives campaigns again."
            if subscriber is None:
                action, detail = "ignored", "Unknown number: there is nothing to opt back in."
            elif not changed and subscriber.opted_out_at is not None:
                action, detail = "ignored", "Received before the number's latest opt-out, which stands."
        if action != "ignored" and not changed:
            detail = "Already so; nothing changed."
        return Response({"msisdn": number.e164, "action": action, "changed": changed, "detail": detail})


# ---------------------------------------------------------------------------------------------------------------
# Imports
# ---------------------------------------------------------------------------------------------------------------


class SubscriberImportSerializer(serializers.Serializer):
    """An import job as `import_as_dict` gives it (for the OpenAPI schema)."""

    id = serializers.IntegerField()
    state = serializers.ChoiceField(
        choices=SubscriberImport.State.choices,
        help_text="`pending` (waiting for a worker), `running`, `completed`, `failed` (stopped by an error, see "
        "`error`) or `stopped` (by an officer); a failed or stopped import resumes after the rows it saved.",
    )
    file = serializers.CharField(help_text="The uploaded file's name.")
    uploaded_by = serializers.CharField(allow_null=True)
    progress = serializers.FloatField(help_text="Percent of the file read.")
    rows_read = serializers.IntegerField()
    total_rows = serializers.IntegerField(allow_null=True, help_text="Known once completed.")
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    rejected_by_reason = serializers.DictField(child=serializers.IntegerField())
    error = serializers.CharField(help_text="Why the import failed and what to do; empty unless it did.")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    url = serializers.URLField()
    rejected_csv = serializers.URLField()


class RejectedRowSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    reason = serializers.CharField(help_text='Why the row was refused, or "duplicate" for a number repeated.')
    raw = serializers.CharField()
    first_line = serializers.IntegerField(
        required=False, help_text='Only of a "duplicate": the line the number was first imported from.'
    )


class SubscriberImportDetailSerializer(SubscriberImportSerializer):
    rejected_rows = RejectedRowSerializer(
        many=True,
        help_text="The first 1,000 rejected rows and repeated numbers, by line; `rejected` plus `duplicates` is how "
        "many there are, every one of them in `rejected_csv`.",
    )


def import_as_dict(job: SubscriberImport, request, *, with_rejections: bool) -> dict:
    progress = round(100 * job.bytes_read / job.file_size, 1) if job.file_size else 0.0
    if job.state == SubscriberImport.State.COMPLETED:
        progress = 100.0
    body = {
        "id": job.pk,
        "state": job.state,
        "file": job.original_name,
        "uploaded_by": job.uploaded_by.username if job.uploaded_by else None,
        "progress": progress,
        "rows_read": job.rows_read,
        "total_rows": job.total_rows,
        "created": job.created,
        "updated": job.updated,
        "duplicates": job.duplicates,
        "rejected": job.rejected,
        "rejected_by_reason": job.rejected_by_reason,
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "url": request.build_absolute_uri(f"/api/v1/subscribers/imports/{job.pk}/"),
        "rejected_csv": request.build_absolute_uri(f"/api/v1/subscribers/imports/{job.pk}/rejected.csv"),
    }
    if with_rejections:
        body["rejected_rows"] = [
            {"line": row.line, "reason": row.reason, "raw": row.raw}
            | ({} if row.first_line is None else {"first_line": row.first_line})
            for row in job.rejections.all()[: services.KEPT_REJECTIONS]
        ]
    return body


class SubscriberImportListView(APIView):
    """Upload a CSV of subscribers (multipart field `file`) to import in the background, or list imports.

    The file is checked at once: not a CSV text, no number column or no rows answers 400 and keeps
    nothing. Otherwise 202 with the job; follow its `url` for progress. An officer limited to a jurisdiction
    lists only the imports uploaded within it, and the rows of its uploads must home their subscribers
    within it: others are rejected by line (`outside_jurisdiction`, `homed_outside_jurisdiction`,
    `missing_area`).
    """

    permission_classes = [IsOfficer]
    parser_classes = [MultiPartParser, FormParser]
    # Tells the schema the list is a page, as get() answers.
    pagination_class = Pagination

    @extend_schema(operation_id="subscriber_imports_list", responses={200: SubscriberImportSerializer(many=True)})
    def get(self, request):
        paginator = Pagination()
        page = paginator.paginate_queryset(
            selectors.subscriber_imports_visible(request.user).select_related("uploaded_by").order_by("-created_at"),
            request,
            view=self,
        )
        return paginator.get_paginated_response([import_as_dict(job, request, with_rejections=False) for job in page])

    @extend_schema(
        request={
            "multipart/form-data": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        responses={202: SubscriberImportSerializer, 400: OpenApiResponse(description="Refused file")},
    )
    def post(self, request):
        uploaded = request.FILES.get("file")
        if uploaded is None:
            raise ServiceInvalid("Upload the CSV file in the multipart field `file`.", {"file": "missing"})
        job = services.subscriber_import_create(uploaded_file=uploaded, user=request.user)
        return Response(import_as_dict(job, request, with_rejections=False), status=status.HTTP_202_ACCEPTED)


class SubscriberImportDetailView(APIView):
    """Return an import's state, progress, counts and its first 1,000 rejected or repeated rows (line, reason, raw).

    A number repeated in the file is listed with reason `duplicate` and `first_line`, the line it was imported from.
    """

    permission_classes = [IsOfficer]

    @extend_schema(responses={200: SubscriberImportDetailSerializer, 404: OpenApiResponse()})
    def get(self, request, pk: int):
        job = selectors.subscriber_imports_visible(request.user).select_related("uploaded_by").filter(pk=pk).first()
        if job is None:
            raise Http404(f"There is no import #{pk}.")
        return Response(import_as_dict(job, request, with_rejections=True))


class SubscriberImportResumeView(APIView):
    """Resume an import after its last committed chunk: 202 with the job.

    409 unless it failed, was stopped or, pending or running, has shown no sign of life for
    SUBSCRIBER_IMPORT_STALE_SECONDS (its task was lost or its worker killed).
    """

    permission_classes = [IsOfficer]

    @extend_schema(
        request=None,
        responses={202: SubscriberImportSerializer, 404: OpenApiResponse(), 409: OpenApiResponse()},
    )
    def post(self, request, pk: int):
        job = selectors.subscriber_imports_visible(request.user).filter(pk=pk).first()
        if job is None:
            raise Http404(f"There is no import #{pk}.")
        job = services.subscriber_import_resume(subscriber_import=job, actor=request.user)
        return Response(import_as_dict(job, request, with_rejections=False), status=status.HTTP_202_ACCEPTED)


class SubscriberImportStopView(APIView):
    """Stop a pending or running import: 200 with the job, stopped; its worker writes nothing more.

    The rows saved before stay, and resuming goes on after them. 409 when it is neither pending nor running.
    """

    permission_classes = [IsOfficer]

    @extend_schema(
        request=None,
        responses={200: SubscriberImportSerializer, 404: OpenApiResponse(), 409: OpenApiResponse()},
    )
    def post(self, request, pk: int):
        job = selectors.subscriber_imports_visible(request.user).filter(pk=pk).first()
        if job is None:
            raise Http404(f"There is no import #{pk}.")
        job = services.subscriber_import_stop(subscriber_import=job, actor=request.user)
        return Response(import_as_dict(job, request, with_rejections=False))


class SubscriberImportRejectedView(APIView):
    """Download every rejected row of an import as CSV: line, reason, raw; a repeated number's reason names its line.

    A number already imported from an earlier line of the file is listed as "duplicate of line 4".
    """

    permission_classes = [IsOfficer]
    content_negotiation_class = FileContentNegotiation

    @extend_schema(
        parameters=[CSV_SEPARATOR_PARAMETER],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="UTF-8 with a byte-order mark, separated by commas (by semicolons with `sep=semicolon`): "
                'line,reason,raw (a repeated number: "duplicate of line N")',
            )
        },
    )
    def get(self, request, pk: int):
        job = selectors.subscriber_imports_visible(request.user).filter(pk=pk).first()
        if job is None:
            raise Http404(f"There is no import #{pk}.")
        separator = csv_separator(request)
        # A run names its own file the job's at its first commit and removes the one before, so a file just
        # replaced is looked for once more under the job's new name.
        handle = None
        for _attempt in range(2):
            if not job.rejected_path:
                raise Http404(f"Import #{pk} has not saved any rows yet; nothing is rejected yet.")
            with contextlib.suppress(FileNotFoundError):
                handle = open(job.rejected_path, "rb")  # noqa: SIM115 - FileResponse streams and closes it
                break
            job.refresh_from_db(fields=["rejected_path"])
        if handle is None:
            raise Http404(f"The rejected rows of import #{pk} are no longer kept.")
        filename = f"import-{pk}-rejected.csv"
        if separator != ",":  # the file is kept separated by commas
            response = StreamingHttpResponse(
                selectors.subscriber_import_rejected_lines(handle, separator=separator),
                content_type="text/csv; charset=utf-8",
            )
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
            return response
        return FileResponse(
            handle,
            as_attachment=True,
            filename=filename,
            content_type="text/csv; charset=utf-8",
        )


# ---------------------------------------------------------------------------------------------------------------
# Audience preview
# ---------------------------------------------------------------------------------------------------------------


class AudiencePreviewSerializer(serializers.Serializer):
    # As many as a campaign may target.
    area_codes = serializers.ListField(
        child=serializers.CharField(max_length=13), max_length=500, required=False, default=list
    )
    polygon = serializers.JSONField(required=False, allow_null=True, default=None)
    audience = serializers.JSONField(required=False, default=dict)
    segments = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=10,
        default=None,
        allow_null=True,
        help_text="Segments per message when no text is given (1 when left out). With a text, its own count is "
        "used, and a different one is refused.",
    )
    text = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=5000,
        help_text="The message: its segments are counted as the send will count them.",
    )


class OperatorShareSerializer(AudienceOperatorSerializer):
    slug = serializers.CharField(allow_null=True, help_text="Null for numbers of no known operator.")
    tariff_per_segment = serializers.IntegerField()


class KecamatanShareSerializer(serializers.Serializer):
    code = serializers.CharField(allow_null=True)
    name = serializers.CharField()
    recipients = serializers.IntegerField()
    opted_out = serializers.IntegerField()
    skipped = serializers.IntegerField(help_text="Numbers not opted out that a run would skip.")


class AudiencePreviewResultSerializer(serializers.Serializer):
    recipients = serializers.IntegerField()
    opted_out = serializers.IntegerField()
    skipped = SkippedByReasonSerializer()
    segments_per_message = serializers.IntegerField()
    segments = serializers.IntegerField()
    cost = serializers.IntegerField()
    by_operator = OperatorShareSerializer(many=True)
    by_kecamatan = KecamatanShareSerializer(many=True)


class AudiencePreviewView(APIView):
    """Count who a targeted send to these areas (or this drawn polygon) would reach, and what it would cost.

    Body: `{"area_codes": ["35.05"], "polygon": GeoJSON or null, "audience": {"languages": ["id"]},
    "segments": 1}` (or `"text"`, whose segments are counted: a `segments` given with a text must be that count,
    or the request is refused). The answer gives recipients and opted-out counts per operator and per kecamatan,
    segments × recipients and the cost per operator tariff.
    """

    permission_classes = [IsStaffRole]

    @extend_schema(request=AudiencePreviewSerializer, responses={200: AudiencePreviewResultSerializer})
    def post(self, request):
        from smsblast import sms

        data = validated(AudiencePreviewSerializer(data=request.data))
        if not data["area_codes"] and not data["polygon"]:
            raise ServiceInvalid("Give area_codes, a polygon or both.", {"area_codes": "empty"})
        unknown = set(data["area_codes"]) - set(
            Area.objects.filter(code__in=data["area_codes"]).values_list("code", flat=True)
        )
        if unknown:
            raise ServiceInvalid(f"Unknown area codes: {', '.join(sorted(unknown))}.", {"area_codes": "unknown"})
        if not isinstance(data["audience"], dict):
            raise ServiceInvalid("audience must be an object.", {"audience": "not an object"})
        problem = audience_problem(data["audience"])
        if problem:
            raise ServiceInvalid(problem, {"audience": problem})
        # A text's segments are counted here, never taken from the client; without a text, `segments` says how
        # many a message will have (1 when left out).
        segments = data["segments"]
        if data.get("text"):
            try:
                counted = sms.analyze(data["text"]).segments
            except sms.TextError as exc:
                raise ServiceInvalid(str(exc), {"text": str(exc)}) from None
            if segments is not None and segments != counted:
                needs = f"{counted} segment" if counted == 1 else f"{counted} segments"
                message = f"The text needs {needs}, not {segments}: leave segments out and the text's are counted."
                raise ServiceInvalid(message, {"segments": message})
            segments = counted
        elif segments is None:
            segments = 1
        preview = selectors.audience_preview(
            data["area_codes"], polygon=data["polygon"], audience=data["audience"], segments=segments
        )
        return Response(preview)


class CampaignAudienceView(APIView):
    """Return the detailed audience preview of a targeted campaign as it stands: its areas, polygon, filters and text.

    The same figures as `POST /api/v1/audience/preview/`, per operator and per kecamatan. An area broadcast has
    none (409): the operators' cells send it to every handset in the area, not as SMS to subscribers.
    """

    permission_classes = [IsStaffRole]

    @extend_schema(
        request=None,
        responses={
            200: AudiencePreviewResultSerializer,
            404: OpenApiResponse(),
            409: OpenApiResponse(
                description=(
                    "The campaign is an area broadcast: it has no subscriber audience or SMS cost; "
                    "`GET /api/v1/campaigns/{id}/broadcast/` gives its estimated handsets reached."
                )
            ),
        },
    )
    def get(self, request, pk: int):
        from campaigns.models import Mode
        from campaigns.selectors import campaign_segments, campaigns_visible

        campaign = campaigns_visible(request.user).filter(pk=pk).first()
        if campaign is None:
            raise Http404(f"There is no campaign #{pk}.")
        if campaign.mode == Mode.AREA_BROADCAST:
            raise ServiceConflict(
                f"Campaign #{pk} is an area broadcast: the operators' cells send it to every handset in the area, "
                "not as SMS to subscribers, so it has no subscriber audience or SMS cost. "
                f"GET /api/v1/campaigns/{pk}/broadcast/ gives its estimated handsets reached."
            )
        preview = selectors.audience_preview(
            campaign.area_codes or [],
            polygon=campaign.polygon,
            audience=campaign.audience,
            segments=campaign_segments(campaign),
        )
        return Response(preview)
