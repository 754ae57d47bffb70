"""Campaign API actions for the send pipeline: schedule, pause, resume, runs, deliveries, report.csv, areas.csv."""

from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import ngettext
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound

from campaigns import dispatch
from campaigns.dispatch_selectors import (
    AREA_REPORT_COLUMNS,
    PROGRESS_STATUSES,
    REMOVED,
    REPORT_COLUMNS,
    campaign_area_report_rows,
    campaign_deliveries,
    campaign_removed_runs,
    campaign_report_rows,
    effective_status,
    runs_progress,
)
from campaigns.models import Mode
from campaigns.selectors import campaign_zone
from campaigns.serializers import CAMPAIGN_RUN_PROGRESS, progress_in_zone
from operators.broadcast_selectors import broadcast_run_progress
from smsblast.api import CSV_SEPARATOR_PARAMETER, FileContentNegotiation, Gone, Pagination, csv_separator
from smsblast.api_views import validated
from smsblast.errors import ServiceConflict, ServiceInvalid
from smsblast.roles import IsStaffRole


class ScheduleSerializer(serializers.Serializer):
    schedule = serializers.JSONField(
        required=False,
        help_text=(
            "Omit it to arm an approved campaign with the schedule it was approved with. "
            'Local times in the area\'s zone, e.g. {"kind": "daily", "time": "13:00", "weekday_times": {"4": "10:00"}, '
            '"until": "2021-12-31", "quiet_hours": {"start": "21:00", "end": "06:00"}}; kinds: now, once (with "at"), '
            "daily, weekly (with weekdays, Monday = 0)."
        ),
    )


class DeliverySerializer(serializers.Serializer):
    message_id = serializers.IntegerField(source="pk")
    run = serializers.IntegerField(source="run_id")
    msisdn = serializers.CharField()
    operator = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()
    reason = serializers.CharField()
    operator_ref = serializers.CharField()
    error_code = serializers.CharField()
    done_at = serializers.DateTimeField(allow_null=True)  # null until the operator reports

    def get_operator(self, delivery) -> str:
        return delivery.operator.slug if delivery.operator else ""

    def get_status(self, delivery) -> str:
        return effective_status(delivery.status, delivery.batch.status if delivery.batch else None)


class DeliveryPagination(Pagination):
    """A page of deliveries, naming the runs whose recipients the retention policy removed (they have none)."""

    def __init__(self, removed: list | None = None):
        self.removed = removed or []

    def get_paginated_response(self, data):
        response = super().get_paginated_response(data)
        response.data["removed_runs"] = [summary.run_id for summary in self.removed]
        response.data["removed_note"] = removed_runs_text(self.removed) if self.removed else ""
        return response

    def get_paginated_response_schema(self, schema):
        schema = super().get_paginated_response_schema(schema)
        schema["properties"]["removed_runs"] = {
            "type": "array",
            "items": {"type": "integer"},
            "description": "Runs whose recipients the retention policy removed: they list none; "
            "their figures remain under runs/.",
        }
        schema["properties"]["removed_note"] = {
            "type": "string",
            "description": "Says which runs' recipients were removed and after how many days; empty when none.",
        }
        schema["required"] = [*schema.get("required", []), "removed_runs", "removed_note"]
        return schema


def removed_runs_text(removed: list) -> str:
    """Say, in the language in force, that the recipients of these runs were removed and their figures remain."""
    days = min(summary.retention_days for summary in removed)
    return ngettext(
        "The recipients of runs that ended more than %(days)s day ago were removed under the retention policy for "
        "personal data; the figures of each run remain (runs, areas.csv). Removed: runs %(runs)s.",
        "The recipients of runs that ended more than %(days)s days ago were removed under the retention policy for "
        "personal data; the figures of each run remain (runs, areas.csv). Removed: runs %(runs)s.",
        days,
    ) % {"days": days, "runs": ", ".join(str(summary.run_id) for summary in removed)}


class CampaignDispatchActionsMixin:
    """Scheduling and run-control actions (schedule, pause, resume, runs, deliveries, report.csv, areas.csv).

    Mixed into CampaignViewSet, which supplies get_object (the campaigns the caller may see) and
    detail_response. Services check who may act on the campaign.
    """

    def get_content_negotiator(self):
        # Asked once before the action is known (for the request's parsers), and again to pick the renderer.
        if getattr(self, "action", None) in {"report_csv", "areas_csv"}:
            return FileContentNegotiation()
        return super().get_content_negotiator()

    @extend_schema(request=ScheduleSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaffRole])
    def schedule(self, request, pk=None):
        """Set the schedule: on an approved campaign, its approved schedule arms it; any change returns it to draft."""
        campaign = self.get_object()
        dispatch.campaign_check_may_dispatch(campaign, request.user)
        data = validated(ScheduleSerializer(data=request.data))
        if "schedule" in data:
            campaign = dispatch.campaign_schedule(campaign=campaign, user=request.user, schedule=data["schedule"])
        else:
            campaign = dispatch.campaign_schedule_approved(campaign=campaign, user=request.user)
        return self.detail_response(campaign)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"], permission_classes=[IsStaffRole])
    def pause(self, request, pk=None):
        """Stop sending new batches within a second; batches already with the operator finish."""
        campaign = dispatch.campaign_pause(campaign=self.get_object(), actor=request.user)
        return self.detail_response(campaign)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"], permission_classes=[IsStaffRole])
    def resume(self, request, pk=None):
        """Continue a paused campaign."""
        campaign = dispatch.campaign_resume(campaign=self.get_object(), actor=request.user)
        return self.detail_response(campaign)

    @extend_schema(responses={200: CAMPAIGN_RUN_PROGRESS})
    @action(detail=True, methods=["get"], permission_classes=[IsStaffRole])
    def runs(self, request, pk=None):
        """Return each run's progress, newest first.

        A targeted run: counts by status, batches, segments sent and cost, per operator. An area broadcast's run
        has no deliveries: the handsets reached and each operator's state, as under the detail's `broadcast`.
        """
        campaign = self.get_object()
        paginator = Pagination()
        runs = paginator.paginate_queryset(campaign.runs.order_by("-scheduled_for", "-id"), request, view=self)
        zone = campaign_zone(campaign)
        if campaign.mode == Mode.AREA_BROADCAST:
            reach = [progress_in_zone(broadcast_run_progress(run), zone) for run in runs]
            return paginator.get_paginated_response(reach)
        # One set of grouped queries for the whole page: a recurring campaign gathers a run a day.
        return paginator.get_paginated_response([progress_in_zone(progress, zone) for progress in runs_progress(runs)])

    @extend_schema(
        parameters=[
            OpenApiParameter("status", enum=PROGRESS_STATUSES),
            OpenApiParameter("run", int, description="Only this run's deliveries."),
        ],
        responses={
            200: DeliverySerializer(many=True),
            410: OpenApiResponse(
                description="Every run asked for (the campaign's, or the one named) had its recipients removed under "
                "the retention policy; each run's figures remain under runs/."
            ),
        },
    )
    @action(detail=True, methods=["get"], permission_classes=[IsStaffRole], pagination_class=DeliveryPagination)
    def deliveries(self, request, pk=None):
        """List the campaign's deliveries (paginated), optionally one status or one run.

        The runs whose recipients the retention policy removed list none: the answer names them (`removed_runs`),
        and is 410 when every run asked for is one of them.
        """
        campaign = self.get_object()
        status = request.query_params.get("status") or None
        if status and status not in PROGRESS_STATUSES:
            raise ServiceInvalid(f"Unknown status {status!r}; use one of {', '.join(PROGRESS_STATUSES)}.")
        run = request.query_params.get("run") or None
        if run is not None and not (run.isascii() and run.isdigit() and len(run) <= 18):
            raise ServiceInvalid("run must be a run id.")
        run_id = int(run) if run else None
        removed = campaign_removed_runs(campaign, run_id=run_id)
        if removed and (run_id is not None or not campaign.runs.filter(summary__isnull=True).exists()):
            raise Gone(removed_runs_text(removed))
        queryset = campaign_deliveries(campaign, status=status, run_id=run_id)
        paginator = DeliveryPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        # Read again after the page: a run the prune began on meanwhile, left out of it, is named.
        paginator.removed = campaign_removed_runs(campaign, run_id=run_id)
        # Times in the campaign's zone, as report.csv gives the same rows.
        with timezone.override(campaign_zone(campaign).tzinfo):
            return paginator.get_paginated_response(DeliverySerializer(page, many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("run", int, description="Only this run's rows (404 when not a run of it)."),
            CSV_SEPARATOR_PARAMETER,
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="UTF-8 with a byte-order mark, separated by commas (by semicolons with `sep=semicolon`, "
                'for Excel, each msisdn then written ="+62…" so that it shows whole); '
                f"one row per recipient per run: {','.join(REPORT_COLUMNS)}. "
                f"A run whose recipients the retention policy removed has one row instead, status `{REMOVED}`, its "
                "reason saying so.",
            ),
            410: OpenApiResponse(
                description="Every run asked for had its recipients removed under the retention policy; each run's "
                "figures remain under runs/ and in areas.csv."
            ),
            409: OpenApiResponse(
                description=(
                    "The campaign is an area broadcast: it has no per-recipient deliveries; "
                    "`GET /api/v1/campaigns/{id}/runs/` gives each run's handsets reached per operator."
                )
            ),
        },
    )
    @action(detail=True, methods=["get"], url_path=r"report\.csv", permission_classes=[IsStaffRole])
    def report_csv(self, request, pk=None):
        """Stream every delivery of every run (or of one, with `run`) as CSV: one row per recipient per run."""
        return self._csv_report(request, campaign_report_rows, "report", per_recipient=True)

    @extend_schema(
        parameters=[
            OpenApiParameter("run", int, description="Only this run's recipients (404 when not a run of it)."),
            CSV_SEPARATOR_PARAMETER,
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="UTF-8 with a byte-order mark, separated by commas (by semicolons with `sep=semicolon`, "
                "the delivered share then with a decimal comma); one row per area one level below the campaign's "
                "target (kecamatan for a regency), the recipients homed there by status: "
                f"{','.join(AREA_REPORT_COLUMNS)}.",
            ),
            409: OpenApiResponse(description="The campaign is an area broadcast: it has no listed recipients."),
        },
    )
    @action(detail=True, methods=["get"], url_path=r"areas\.csv", permission_classes=[IsStaffRole])
    def areas_csv(self, request, pk=None):
        """Count the recipients of every run (or of one, with `run`) per area below the target, by status."""
        return self._csv_report(request, campaign_area_report_rows, "areas")

    def _csv_report(self, request, rows_of, name: str, *, per_recipient: bool = False) -> StreamingHttpResponse:
        campaign = self.get_object()
        if campaign.mode == Mode.AREA_BROADCAST:
            raise ServiceConflict(
                f"Campaign #{campaign.pk} is an area broadcast: the operators send it to handsets in the area, not to "
                f"listed recipients, so it has no per-recipient report. GET /api/v1/campaigns/{campaign.pk}/runs/ "
                "gives each run's handsets reached per operator."
            )
        separator = csv_separator(request)
        run = request.query_params.get("run") or None
        filename = f"campaign-{campaign.pk}-{name}.csv"
        if run is not None:
            if not (run.isascii() and run.isdigit() and len(run) <= 18):
                raise ServiceInvalid("run must be a run id.")
            if not campaign.runs.filter(pk=int(run)).exists():
                raise NotFound(f"Campaign {campaign.pk} has no run {run}.")
            filename = f"campaign-{campaign.pk}-run-{run}-{name}.csv"
        if per_recipient:
            removed = campaign_removed_runs(campaign, run_id=int(run) if run else None)
            if removed and (run is not None or not campaign.runs.filter(summary__isnull=True).exists()):
                raise Gone(removed_runs_text(removed))
        response = StreamingHttpResponse(
            rows_of(campaign, run_id=int(run) if run else None, separator=separator),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
