"""Reads for area broadcasts: reach over time per operator and in total."""

from typing import Any

from django.db.models import Count, F, Max, Window
from django.db.models.functions import RowNumber

from campaigns.models import Campaign, CampaignRun, Mode
from operators.models import AreaBroadcast, AreaBroadcastReach

# The most reports one operator's reach series shows as they came; a longer one is thinned (broadcast_run_progress).
REACH_SERIES_POINTS = 2_000


def broadcast_run_progress(run: CampaignRun) -> dict[str, Any]:
    """Return a run's reach: per operator its state, log and series, and the total series over time.

    Every figure comes from the one read of the reach reports (an operator's `handsets_reached` is the
    highest of its reports), so the totals and the ends of the series agree even while reports arrive.
    An operator reporting every second through a window of days sends hundreds of thousands of reports: past
    REACH_SERIES_POINTS for one operator, each series keeps every so many of them, each with the highest count
    reported up to it, and ends with the highest of all at the latest report, so the curve keeps its shape and end.
    """
    broadcasts = list(AreaBroadcast.objects.filter(run=run).select_related("operator").order_by("operator__name"))
    reports = AreaBroadcastReach.objects.filter(broadcast__in=broadcasts)
    spans = {
        broadcast_id: (count, highest, last)
        for broadcast_id, count, highest, last in reports.values_list("broadcast_id")
        .annotate(count=Count("id"), highest=Max("handsets_reached"), last=Max("at"))
        .order_by()
    }
    largest = max((count for count, _, _ in spans.values()), default=0)
    if largest <= REACH_SERIES_POINTS:
        rows = list(reports.order_by("at", "id").values_list("broadcast_id", "handsets_reached", "at"))
    else:
        step = -(-largest // REACH_SERIES_POINTS)
        by_time = [F("at").asc(), F("id").asc()]
        sampled = reports.annotate(
            position=Window(RowNumber(), partition_by=[F("broadcast_id")], order_by=by_time),
            highest=Window(Max("handsets_reached"), partition_by=[F("broadcast_id")], order_by=by_time),
        ).filter(position__in=range(1, largest + 1, step))
        rows = list(sampled.values_list("broadcast_id", "highest", "at"))
        rows += [
            (broadcast_id, highest, last)
            for broadcast_id, (count, highest, last) in spans.items()
            if (count - 1) % step
        ]
        rows.sort(key=lambda row: row[2])
    series: dict[Any, list] = {b.pk: [] for b in broadcasts}
    total_series = []
    latest: dict[Any, int] = {}
    for broadcast_id, reported, at in rows:
        # Reports are cumulative; a late smaller one never lowers the curve.
        reached = max(reported, latest.get(broadcast_id, 0))
        latest[broadcast_id] = reached
        series[broadcast_id].append({"at": at, "handsets_reached": reached})
        total_series.append({"at": at, "handsets_reached": sum(latest.values())})
    frozen = run.frozen or {}
    return {
        "run_id": run.pk,
        "status": run.status,
        "starts_at": frozen.get("starts_at"),
        "ends_at": frozen.get("ends_at"),
        "area": frozen.get("area"),
        "handsets_reached": sum(latest.values()),
        "series": total_series,
        "operators": [
            {
                "operator": b.operator.slug,
                "name": b.operator.name,
                "broadcast_id": str(b.pk),
                "state": b.state,
                "attempts": b.attempts,
                "operator_ref": b.operator_ref,
                "acknowledged_at": b.acknowledged_at,
                "cancel_requested_at": b.cancel_requested_at,
                "handsets_reached": latest.get(b.pk, 0),
                "last_error": b.last_error,
                "next_attempt_at": b.next_attempt_at,
                "series": series[b.pk],
                "log": [{"state": e.state, "at": e.at, "details": e.details} for e in b.events.order_by("at", "id")],
            }
            for b in broadcasts
        ],
    }


def broadcast_run_reach(run: CampaignRun) -> dict[str, Any]:
    """Return a run's reach as the pages show it: the handsets reached, in total and per operator with its state.

    The pages poll it every few seconds for as long as the window lasts, and a window of days gathers reach reports
    by the hundred thousand: each operator's figure is the highest of its reports (they are cumulative, so the
    same as `broadcast_run_progress` gives), read in one grouped query, without the series and logs.
    """
    broadcasts = list(AreaBroadcast.objects.filter(run=run).select_related("operator").order_by("operator__name"))
    highest = dict(
        AreaBroadcastReach.objects.filter(broadcast__in=broadcasts)
        .values_list("broadcast_id")
        .annotate(reached=Max("handsets_reached"))
        .order_by()
    )
    return {
        "run_id": run.pk,
        "status": run.status,
        "handsets_reached": sum(highest.get(b.pk, 0) for b in broadcasts),
        "operators": [
            {
                "operator": b.operator.slug,
                "name": b.operator.name,
                "broadcast_id": str(b.pk),
                "state": b.state,
                "handsets_reached": highest.get(b.pk, 0),
                "last_error": b.last_error,
            }
            for b in broadcasts
        ],
    }


def broadcast_progress(campaign: Campaign) -> list[dict[str, Any]]:
    """Return the progress of each area-broadcast run of the campaign, latest first.

    Every run of an area broadcast is one (a campaign with runs keeps its mode), also one that found no operator to
    send to and ended at once with failures.
    """
    if campaign.mode != Mode.AREA_BROADCAST:
        return []
    runs = CampaignRun.objects.filter(campaign=campaign)
    return [broadcast_run_progress(run) for run in runs.order_by("-scheduled_for", "-id")]
