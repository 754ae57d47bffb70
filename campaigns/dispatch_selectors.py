"""Reads over runs: progress per run and per operator, deliveries, and the streamed CSV report."""

import csv
from collections.abc import Iterator
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet, Sum

from campaigns.models import Campaign, CampaignRun, Delivery, DispatchBatch
from campaigns.selectors import campaign_zone
from operators.models import Operator
from smsblast.text import spreadsheet_text

DeliveryStatus = Delivery.Status
BatchStatus = DispatchBatch.Status
# Every delivery status, in the order the progress bar shows them.
PROGRESS_STATUSES = [status.value for status in DeliveryStatus]
# The final statuses that count as failed on the progress pages (skipped and cancelled were never sent).
FAILED_STATUSES = (DeliveryStatus.UNDELIVERED, DeliveryStatus.EXPIRED, DeliveryStatus.REJECTED, DeliveryStatus.FAILED)
# Outside an accepted batch, only an operator's report (or the expiry of one it reported submitted) sets these:
# the operator had the message though its answer to the batch was lost.
REPORTED_STATUSES = frozenset(
    {
        DeliveryStatus.SUBMITTED,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.UNDELIVERED,
        DeliveryStatus.EXPIRED,
        DeliveryStatus.REJECTED,
    }
)


def effective_status(status: str, batch_status: str | None) -> str:
    """Return the status to show: a queued message of an accepted batch has been submitted to the operator."""
    if status == DeliveryStatus.QUEUED and batch_status == BatchStatus.ACCEPTED:
        return DeliveryStatus.SUBMITTED
    return status


def run_progress(run: CampaignRun) -> dict[str, Any]:
    """Return the run's progress: counts by status, batches, segments sent and cost so far, overall and per operator.

    Cost is at the tariffs frozen when the run started, so an admin's later change does not rewrite it.

    Deliveries are written once at fan-out and the batch carries "submitted", so a queued delivery whose batch
    the operator accepted counts as submitted. Segments and cost count the messages operators accepted: those of
    accepted batches less the ones refused in the answer, and those of any other batch the operator reported
    on (its answer to the batch was lost, then the batch failed or was cancelled). Skipped, cancelled and failed
    messages were never with an operator and cost nothing.
    Each count set (overall and per operator) also carries its recipients, delivered, failed and pending
    (not yet final) totals for the pages. Two grouped queries, whatever the size of the run.
    """
    return runs_progress([run])[0]


def runs_progress(runs) -> list[dict[str, Any]]:
    """Return `run_progress` of each of `runs`, in their order, with the same three queries for any number of runs."""
    runs = list(runs)
    if not runs:
        return []
    operators = {op.pk: op for op in Operator.objects.all()}
    per_run: dict[int, dict[int | None, dict[str, Any]]] = {run.pk: {} for run in runs}

    def bucket(run_id: int, operator_id: int | None) -> dict[str, Any]:
        per_operator = per_run[run_id]
        if operator_id not in per_operator:
            operator = operators.get(operator_id)
            per_operator[operator_id] = {
                "slug": operator.slug if operator else "",
                "name": operator.name if operator else "No operator",
                "counts": dict.fromkeys(PROGRESS_STATUSES, 0),
                "batches": {},
                "messages_sent": 0,
                "segments_sent": 0,
                "cost": 0,
            }
        return per_operator[operator_id]

    run_ids = list(per_run)
    rows = (
        Delivery.objects.filter(run_id__in=run_ids)
        .values_list("run_id", "operator_id", "status", "batch__status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for run_id, operator_id, status, batch_status, n in rows:
        entry = bucket(run_id, operator_id)
        entry["counts"][effective_status(status, batch_status)] += n
        if batch_status is not None and batch_status != BatchStatus.ACCEPTED and status in REPORTED_STATUSES:
            entry["messages_sent"] += n
    batch_rows = (
        DispatchBatch.objects.filter(run_id__in=run_ids)
        .values_list("run_id", "operator_id", "status")
        .annotate(n=Count("id"), accepted=Sum("accepted_count"))
        .order_by()
    )
    for run_id, operator_id, status, n, accepted in batch_rows:
        entry = bucket(run_id, operator_id)
        entry["batches"][status] = n
        if status == BatchStatus.ACCEPTED:
            entry["messages_sent"] += accepted or 0
    return [_progress(run, per_run[run.pk], operators) for run in runs]


def _progress(run: CampaignRun, per_operator: dict[int | None, dict[str, Any]], operators: dict) -> dict[str, Any]:
    """Return one run's progress from its per-operator counts (see run_progress)."""
    # The tariffs frozen when the run started; a run started before they were frozen uses today's.
    tariffs = (run.frozen or {}).get("tariffs") or {}
    for operator_id, entry in per_operator.items():
        operator = operators.get(operator_id)
        entry["segments_sent"] = entry.pop("messages_sent") * run.segments
        entry["cost"] = entry["segments_sent"] * tariffs.get(
            str(operator_id), operator.tariff_per_segment if operator else 0
        )

    totals = dict.fromkeys(PROGRESS_STATUSES, 0)
    batches: dict[str, int] = {}
    for entry in per_operator.values():
        for status, n in entry["counts"].items():
            totals[status] += n
        for status, n in entry["batches"].items():
            batches[status] = batches.get(status, 0) + n
        entry.update(_summary(entry["counts"]))
    summary = _summary(totals)
    recipients, final = summary["recipients"], summary["recipients"] - summary["pending"]
    return {
        "id": run.pk,
        "status": run.status,
        "scheduled_for": run.scheduled_for,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "expires_at": run.expires_at,
        "fanout_done": run.fanout_done,
        "segments_per_message": run.segments,
        **summary,
        "final": final,
        # Rounded down, so the bar reaches 100 % only once every message is final.
        "percent_final": (1000 * final // recipients) / 10 if recipients else (100.0 if run.fanout_done else 0.0),
        "counts": totals,
        "done": run.status in CampaignRun.FINAL_STATUSES,
        "batches": batches,
        "segments_sent": sum(entry["segments_sent"] for entry in per_operator.values()),
        "cost": sum(entry["cost"] for entry in per_operator.values()),
        "operators": sorted(per_operator.values(), key=lambda entry: (entry["slug"] == "", entry["name"])),
    }


def _summary(counts: dict[str, int]) -> dict[str, int]:
    """Return the recipients, delivered, failed and pending (not yet final) totals of shown counts by status."""
    final = sum(counts[status] for status in Delivery.FINAL_STATUSES)
    recipients = sum(counts.values())
    return {
        "recipients": recipients,
        "delivered": counts[DeliveryStatus.DELIVERED],
        "failed": sum(counts[status] for status in FAILED_STATUSES),
        "pending": recipients - final,
    }


def campaign_progress(campaign: Campaign) -> dict[str, Any] | None:
    """Return the progress of the campaign's latest run, or None before its first run."""
    run = campaign.runs.order_by("-scheduled_for", "-id").first()
    return run_progress(run) if run else None


def campaign_deliveries(campaign: Campaign, *, status: str | None = None, run_id: int | None = None) -> QuerySet:
    """Return the campaign's deliveries, newest run first, filtered by shown status and run.

    The operator and batch status of a page's rows are read for that page only: joined in the same query, they were
    joined for every delivery of the campaign before the page was sorted out (a run holds up to millions).
    """
    queryset = Delivery.objects.filter(run__campaign=campaign).prefetch_related(
        "operator", Prefetch("batch", queryset=DispatchBatch.objects.only("id", "status"))
    )
    if run_id is not None:
        queryset = queryset.filter(run_id=run_id)
    if status == DeliveryStatus.SUBMITTED:
        # The shown "submitted" includes queued messages of accepted batches.
        queryset = queryset.filter(
            Q(status=DeliveryStatus.SUBMITTED) | Q(status=DeliveryStatus.QUEUED, batch__status=BatchStatus.ACCEPTED)
        )
    elif status == DeliveryStatus.QUEUED:
        queryset = queryset.filter(status=DeliveryStatus.QUEUED).exclude(batch__status=BatchStatus.ACCEPTED)
    elif status:
        queryset = queryset.filter(status=status)
    return queryset.order_by("-run_id", "id")


REPORT_COLUMNS = [
    "run_id",
    "scheduled_for",
    "message_id",
    "msisdn",
    "operator",
    "status",
    "reason",
    "operator_ref",
    "error_code",
    "done_at",
]


class _Echo:
    """A file-like object whose write returns the line, for streaming csv.writer output."""

    def write(self, value: str) -> str:
        return value


def campaign_report_rows(campaign: Campaign, *, run_id: int | None = None) -> Iterator[str]:
    """Yield the campaign's delivery report as CSV lines, streamed from the database in chunks.

    With `run_id`, only that run's rows (a recurring campaign's report otherwise holds every occurrence).

    Times carry the offset of the campaign's zone, as its pages show them and its schedule is entered.
    """
    writer = csv.writer(_Echo())
    yield writer.writerow(REPORT_COLUMNS)
    zone = campaign_zone(campaign).tzinfo
    runs = {pk: moment.astimezone(zone).isoformat() for pk, moment in campaign.runs.values_list("pk", "scheduled_for")}
    slugs = dict(Operator.objects.values_list("pk", "slug"))
    deliveries = Delivery.objects.filter(run__campaign=campaign)
    if run_id is not None:
        deliveries = deliveries.filter(run_id=run_id)
    rows = deliveries.order_by("run_id", "id").values_list(
        "run_id",
        "id",
        "msisdn",
        "operator_id",
        "status",
        "batch__status",
        "reason",
        "operator_ref",
        "error_code",
        "done_at",
    )
    for run_id, message_id, msisdn, operator_id, status, batch_status, reason, ref, code, done_at in rows.iterator(
        chunk_size=5000
    ):
        yield writer.writerow(
            [
                run_id,
                runs.get(run_id, ""),
                message_id,
                msisdn,
                slugs.get(operator_id, ""),
                effective_status(status, batch_status),
                spreadsheet_text(reason),
                spreadsheet_text(ref),
                spreadsheet_text(code),
                done_at.astimezone(zone).isoformat() if done_at else "",
            ]
        )
