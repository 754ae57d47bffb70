"""Reads over runs: progress per run and per operator, deliveries, and the streamed CSV report."""

import csv
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, models
from django.db.models import Case, Count, ExpressionWrapper, Max, Min, Prefetch, Q, QuerySet, Sum, When
from django.db.models.functions import TruncMinute, TruncSecond
from django.utils import timezone, translation
from django.utils.translation import ngettext

from campaigns.models import Campaign, CampaignRun, Delivery, DispatchBatch, Mode, RunSummary
from campaigns.selectors import campaign_zone
from operators.models import Operator
from smsblast.text import spreadsheet_text

DeliveryStatus = Delivery.Status
BatchStatus = DispatchBatch.Status
# Every delivery status, in the order the progress bar shows them.
PROGRESS_STATUSES = [status.value for status in DeliveryStatus]
# The final statuses that count as failed on the progress pages (skipped and cancelled were never sent).
FAILED_STATUSES = (DeliveryStatus.UNDELIVERED, DeliveryStatus.EXPIRED, DeliveryStatus.REJECTED, DeliveryStatus.FAILED)
# A run's delivery chart counts by the second while its outcomes span less than this, else by the minute.
CHART_BY_SECOND = timedelta(minutes=10)
# The largest groups of failed recipients a run's progress block lists.
FAILURES_SHOWN = 20
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


def run_progress_block(run: CampaignRun) -> dict[str, Any]:
    """Return what a run's progress block shows, reading the run's deliveries once however large it is.

    `progress` as run_progress gives it; `first` and `last`, the earliest and latest moments a delivery was done
    (None before any); `delivered`, (operator name or "–", moment, count) of the delivered messages in time order,
    by the second while first and last lie less than CHART_BY_SECOND apart, else by the minute; `failures`, the
    failed recipients grouped by state, reason, error code and operator name, the largest FAILURES_SHOWN first.

    A run whose deliveries the retention policy removed shows the same from its summary (run_block_figures, as
    counted before the first of them was deleted).
    """
    figures = run_block_figures(run)
    # Read after the deliveries: a summary written meanwhile was written before any of them went, so the rows just
    # counted are whole, and the summary, once there, is what the run shows.
    summary = RunSummary.objects.filter(run_id=run.pk).first()
    if summary is not None:
        figures = block_figures_loaded(summary.figures["block"])
    return _block(run, figures, {op.pk: op for op in Operator.objects.all()}, summary)


def run_block_figures(run: CampaignRun) -> dict[str, Any]:
    """Count what a run's progress block shows from its deliveries, by operator id (names are read when shown).

    `counts`, [operator id, status, in a batch, in an accepted batch, reason, error code, count]; `first` and
    `last`, as run_progress_block; `delivered`, [operator id, moment, count] by the second or the minute.

    The block is polled every 2 s while a run sends, so one grouped query counts the deliveries for all of these:
    by operator, status, batch, reason and error code, and delivered ones also by moment. It counts those by the
    second while the run cannot yet span CHART_BY_SECOND (every outcome is stamped between the run's start and
    now), else by the minute. Only when all the outcomes of a run that started longer ago lie that close together
    (its reports stopped coming within minutes of the first) does a second query count the delivered by the second.
    Moments are cut in UTC: the chart places them by their distance from the first, the same in any zone.
    """
    until = run.finished_at or timezone.now()
    by_second = run.started_at is None or until - run.started_at < CHART_BY_SECOND
    trunc = TruncSecond if by_second else TruncMinute
    delivered_at = Case(When(status=DeliveryStatus.DELIVERED, then="done_at"), output_field=models.DateTimeField())
    rows = list(
        _delivery_counts([run.pk])
        .annotate(moment=trunc(delivered_at, tzinfo=UTC))
        .values_list("operator_id", "status", "batched", "accepted", "reason", "error_code", "moment")
        .annotate(n=Count("id"), first=Min("done_at"), last=Max("done_at"))
        .order_by()
    )
    done = [(row[8], row[9]) for row in rows if row[8] is not None]
    first, last = (min(row[0] for row in done), max(row[1] for row in done)) if done else (None, None)

    delivered: dict[tuple[datetime, int | None], int] = defaultdict(int)
    if first is not None and last - first < CHART_BY_SECOND and not by_second:
        seconds = (
            Delivery.objects.filter(run_id=run.pk, status=DeliveryStatus.DELIVERED, done_at__isnull=False)
            .annotate(moment=TruncSecond("done_at", tzinfo=UTC))
            .values_list("operator_id", "moment")
            .annotate(n=Count("id"))
            .order_by()
        )
        for operator_id, moment, n in seconds:
            delivered[moment, operator_id] += n
    else:
        by_minute = first is not None and last - first >= CHART_BY_SECOND
        for operator_id, *_, moment, n, _, _ in rows:
            if moment is not None:
                delivered[moment.replace(second=0) if by_minute else moment, operator_id] += n

    counts: dict[tuple, int] = defaultdict(int)
    for operator_id, status, batched, accepted, reason, code, _, n, _, _ in rows:
        counts[operator_id, status, bool(batched), bool(accepted), reason, code] += n
    return {
        "counts": [[*key, n] for key, n in counts.items()],
        "first": first,
        "last": last,
        "delivered": [[operator_id, moment, n] for (moment, operator_id), n in delivered.items()],
    }


def block_figures_stored(figures: dict[str, Any]) -> dict[str, Any]:
    """Return run_block_figures as JSON can hold them: moments as ISO 8601 text."""

    def text(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment is not None else None

    return {
        "counts": figures["counts"],
        "first": text(figures["first"]),
        "last": text(figures["last"]),
        "delivered": [[operator_id, text(moment), n] for operator_id, moment, n in figures["delivered"]],
    }


def block_figures_loaded(stored: dict[str, Any]) -> dict[str, Any]:
    """Return run_block_figures from what block_figures_stored kept."""

    def moment(text: str | None) -> datetime | None:
        return datetime.fromisoformat(text) if text is not None else None

    return {
        "counts": stored["counts"],
        "first": moment(stored["first"]),
        "last": moment(stored["last"]),
        "delivered": [[operator_id, moment(at), n] for operator_id, at, n in stored["delivered"]],
    }


def _block(run: CampaignRun, figures: dict[str, Any], operators: dict, summary) -> dict[str, Any]:
    """Return run_progress_block from the run's block figures."""
    counts = figures["counts"]
    rows = [(run.pk, operator, status, batched, accepted, n) for operator, status, batched, accepted, *_, n in counts]
    progress = _runs_progress([run], rows, operators, {run.pk: summary} if summary else {})[0]

    def name(operator_id: int | None) -> str:
        operator = operators.get(operator_id)
        return (operator.name if operator else "") or "–"

    delivered: dict[tuple[datetime, str], int] = defaultdict(int)
    for operator_id, moment, n in figures["delivered"]:
        delivered[moment, name(operator_id)] += n

    failures: dict[tuple, int] = defaultdict(int)
    for operator_id, status, _, _, reason, code, n in counts:
        if status in FAILED_STATUSES:
            operator = operators.get(operator_id)
            failures[status, reason, code, operator.name if operator else None] += n
    return {
        "progress": progress,
        "first": figures["first"],
        "last": figures["last"],
        "delivered": [(operator, moment, n) for (moment, operator), n in sorted(delivered.items())],
        # The largest groups first; groups of the same size by state, reason, error code and operator.
        "failures": [
            {"status": status, "reason": reason, "error_code": code, "operator__name": operator, "n": n}
            for (status, reason, code, operator), n in sorted(
                failures.items(), key=lambda item: (-item[1], *(part or "" for part in item[0]))
            )
        ][:FAILURES_SHOWN],
    }


def _delivery_counts(run_ids: list[int]) -> QuerySet:
    """Return the deliveries of the runs, each marked whether it is in a batch (`batched`) and in an accepted one.

    The accepted batches of the runs are a few hundred ids the database looks each delivery's batch up in, cheaper
    than joining every delivery to its batch.
    """
    accepted = DispatchBatch.objects.filter(run_id__in=run_ids, status=BatchStatus.ACCEPTED).values("id")
    return Delivery.objects.filter(run_id__in=run_ids).annotate(
        batched=ExpressionWrapper(Q(batch__isnull=False), output_field=models.BooleanField()),
        accepted=ExpressionWrapper(Q(batch__in=accepted), output_field=models.BooleanField()),
    )


def runs_progress(runs) -> list[dict[str, Any]]:
    """Return `run_progress` of each of `runs`, in their order, with the same three queries for any number of runs."""
    runs = list(runs)
    if not runs:
        return []
    rows = list(
        _delivery_counts([run.pk for run in runs])
        .values_list("run_id", "operator_id", "status", "batched", "accepted")
        .annotate(n=Count("id"))
        .order_by()
    )
    # After the deliveries, as run_progress_block reads them: a run with a summary shows it, never a part of its rows.
    summaries = RunSummary.objects.in_bulk([run.pk for run in runs])
    rows = [row for row in rows if row[0] not in summaries]
    for run_id, summary in summaries.items():
        for operator_id, status, batched, accepted, _, _, n in summary.figures["block"]["counts"]:
            rows.append((run_id, operator_id, status, batched, accepted, n))
    return _runs_progress(runs, rows, {op.pk: op for op in Operator.objects.all()}, summaries)


def _runs_progress(runs: list[CampaignRun], rows, operators: dict, summaries: dict) -> list[dict[str, Any]]:
    """Return the progress of each of `runs` from its deliveries counted by operator, status and batch.

    `rows` are (run id, operator id, status, in a batch, in an accepted batch, count); `summaries`, the RunSummary
    of each run whose deliveries the retention policy removed (its rows are counted from it).
    """
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
    for run_id, operator_id, status, batched, accepted, n in rows:
        entry = bucket(run_id, operator_id)
        entry["counts"][effective_status(status, BatchStatus.ACCEPTED if accepted else None)] += n
        if batched and not accepted and status in REPORTED_STATUSES:
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
    return [_progress(run, per_run[run.pk], operators, summaries.get(run.pk)) for run in runs]


def _progress(
    run: CampaignRun, per_operator: dict[int | None, dict[str, Any]], operators: dict, kept: RunSummary | None
) -> dict[str, Any]:
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
        # When the retention policy removed the run's recipients (their numbers and states); the figures remain.
        "recipients_removed_at": kept.created_at if kept else None,
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


# A delivery of a run whose recipients the retention policy removed: the rows still there are being deleted. The
# summaries are a row per pruned run, read as one hashed list.
_run_summarized = Q(run_id__in=RunSummary.objects.values("run_id"))


def campaign_removed_runs(campaign: Campaign, *, run_id: int | None = None) -> list[RunSummary]:
    """Return the summaries of the campaign's runs (or of one) whose recipients the retention policy removed,
    newest run first."""
    summaries = RunSummary.objects.filter(run__campaign=campaign).select_related("run").defer("figures")
    if run_id is not None:
        summaries = summaries.filter(run_id=run_id)
    return list(summaries.order_by("-run__scheduled_for", "-run_id"))


def campaign_deliveries(campaign: Campaign, *, status: str | None = None, run_id: int | None = None) -> QuerySet:
    """Return the campaign's deliveries, newest run first, filtered by shown status and run.

    Runs whose recipients the retention policy removed have none (campaign_removed_runs names them).

    The operator and batch status of a page's rows are read for that page only: joined in the same query, they were
    joined for every delivery of the campaign before the page was sorted out (a run holds up to millions).
    """
    queryset = (
        Delivery.objects.filter(run__campaign=campaign)
        .exclude(_run_summarized)
        .prefetch_related("operator", Prefetch("batch", queryset=DispatchBatch.objects.only("id", "status")))
    )
    accepted = DispatchBatch.objects.filter(run__campaign=campaign, status=BatchStatus.ACCEPTED)
    if run_id is not None:
        queryset = queryset.filter(run_id=run_id)
        accepted = accepted.filter(run_id=run_id)
    # The shown "submitted" includes queued messages of accepted batches. Their ids (a few hundred a run) are looked
    # up, not every delivery of the campaign joined to its batch; the status list lets the (run, status) index
    # skip the rest.
    if status == DeliveryStatus.SUBMITTED:
        queryset = queryset.filter(
            Q(status=DeliveryStatus.SUBMITTED) | Q(status=DeliveryStatus.QUEUED, batch__in=accepted.values("id")),
            status__in=[DeliveryStatus.SUBMITTED, DeliveryStatus.QUEUED],
        )
    elif status == DeliveryStatus.QUEUED:
        queryset = queryset.filter(status=DeliveryStatus.QUEUED).exclude(batch__in=accepted.values("id"))
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


# The status of a report row standing for a run whose recipients the retention policy removed.
REMOVED = "removed"


def recipients_removed_text(summary: RunSummary) -> str:
    """Say, in the language in force, that a run's recipients were removed and its figures remain."""
    return ngettext(
        "The recipients of this run (their numbers and each one's state) were removed under the retention policy for "
        "personal data, which keeps them %(days)s day after a run ends; its figures remain.",
        "The recipients of this run (their numbers and each one's state) were removed under the retention policy for "
        "personal data, which keeps them %(days)s days after a run ends; its figures remain.",
        summary.retention_days,
    ) % {"days": summary.retention_days}


class _Echo:
    """A file-like object whose write returns the line, for streaming csv.writer output."""

    def write(self, value: str) -> str:
        return value


def campaign_report_rows(campaign: Campaign, *, run_id: int | None = None, separator: str = ",") -> Iterator[str]:
    """Yield the campaign's delivery report as CSV lines, streamed from the database in chunks.

    With `run_id`, only that run's rows (a recurring campaign's report otherwise holds every occurrence). A run whose
    recipients the retention policy removed has one row instead, its status `removed` and `reason` saying so.

    Times carry the offset of the campaign's zone, as its pages show them and its schedule is entered. Cells are
    separated by `separator`: "," or ";" (for Excel set for Indonesia).
    """
    # Streamed after the request has been answered: the language of the request is the one its rows are written in.
    return _report_lines(campaign, run_id=run_id, language=translation.get_language(), separator=separator)


def _spreadsheet_number(msisdn: str) -> str:
    """Return an E.164 number as a spreadsheet text formula, so Excel shows its every digit and its plus."""
    return f'="{msisdn}"' if msisdn[1:].isdigit() and msisdn[:1] == "+" else spreadsheet_text(msisdn, separator=";")


def _report_lines(campaign: Campaign, *, run_id: int | None, language: str | None, separator: str) -> Iterator[str]:
    """Yield campaign_report_rows."""
    writer = csv.writer(_Echo(), delimiter=separator)
    # A byte-order mark first: a spreadsheet reads the file as UTF-8 only with one, else it garbles operators' text.
    yield "\ufeff" + writer.writerow(REPORT_COLUMNS)
    zone = campaign_zone(campaign).tzinfo
    runs = {pk: moment.astimezone(zone).isoformat() for pk, moment in campaign.runs.values_list("pk", "scheduled_for")}
    # An admin may name an operator "-…" (a slug allows it), which a spreadsheet would read as a formula.
    slugs = {pk: spreadsheet_text(slug, separator=separator) for pk, slug in Operator.objects.values_list("pk", "slug")}
    deliveries = Delivery.objects.filter(run__campaign=campaign).exclude(_run_summarized)
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
    listed = set()
    # Text from outside (an operator's reason, reference and error code) is written so a spreadsheet shows it; the
    # number is left as written, "+62…", for a program reading the file: every stored number is E.164 (import, admin
    # and opt-outs normalise), which a spreadsheet reads as a number at worst, never as a formula. The semicolon
    # file is for Excel, which would show +6281234567890 as 6,28123E+12 and save it so, losing its last digits:
    # there the number is Excel's text formula ="+6281234567890" (digits and a plus only, so nothing else runs).
    number = _spreadsheet_number if separator == ";" else str
    for row_run, message_id, msisdn, operator_id, status, batch_status, reason, ref, code, done_at in rows.iterator(
        chunk_size=5000
    ):
        listed.add(row_run)
        yield writer.writerow(
            [
                row_run,
                runs.get(row_run, ""),
                message_id,
                number(msisdn),
                slugs.get(operator_id, ""),
                effective_status(status, batch_status),
                spreadsheet_text(reason, separator=separator),
                spreadsheet_text(ref, separator=separator),
                spreadsheet_text(code, separator=separator),
                done_at.astimezone(zone).isoformat() if done_at else "",
            ]
        )
    # Read after the rows, as runs_progress reads them: a run the prune began on meanwhile was listed whole (its
    # summary is written before any of its rows goes) or left out, and then has its summary here.
    for summary in reversed(campaign_removed_runs(campaign, run_id=run_id)):
        if summary.run_id in listed:
            continue
        with translation.override(language):
            reason = recipients_removed_text(summary)
        yield writer.writerow([summary.run_id, runs.get(summary.run_id, ""), "", "", "", REMOVED, reason, "", "", ""])


AREA_REPORT_STATUSES = [
    DeliveryStatus.DELIVERED,
    DeliveryStatus.SUBMITTED,
    DeliveryStatus.QUEUED,
    DeliveryStatus.UNDELIVERED,
    DeliveryStatus.EXPIRED,
    DeliveryStatus.REJECTED,
    DeliveryStatus.FAILED,
    DeliveryStatus.SKIPPED,
    DeliveryStatus.CANCELLED,
]
AREA_REPORT_COLUMNS = ["area_code", "area_name", "recipients", *AREA_REPORT_STATUSES, "delivered_percent"]
# Kemendagri code lengths: provinsi "35", kabupaten "35.05", kecamatan "35.05.01", desa "35.05.01.2001".
_NEXT_LEVEL_LENGTH = {2: 5, 5: 8, 8: 13, 13: 13}


def area_report_level(area_codes) -> int:
    """Return the code length the area report groups by: one level below the widest target area (kecamatan
    for a regency), the kecamatan for a campaign drawn as a polygon."""
    lengths = [len(code) for code in area_codes or [] if isinstance(code, str) and len(code) in _NEXT_LEVEL_LENGTH]
    return _NEXT_LEVEL_LENGTH[min(lengths)] if lengths else 8


def campaign_area_report_rows(campaign: Campaign, *, run_id: int | None = None, separator: str = ",") -> Iterator[str]:
    """Yield, as CSV lines, the recipients of the campaign's runs (or of one) per area one level below its target,
    by status, with the share delivered: where a warning did not reach people.

    Cells are separated by `separator`: "," or ";" for Excel set for Indonesia, whose decimal separator is the
    comma, which the share then has.

    A recipient counts in the area its subscriber is homed in now; a subscriber known only by coordinates (a drawn
    polygon reaches it) and a number no longer held count apart, under no area. A run whose recipients the
    retention policy removed counts them where they were homed when they were removed (its summary).
    """
    from smsblast.models import Area

    run = campaign.runs.filter(pk=run_id).first() if run_id is not None else None
    length = area_report_level((run.frozen or {}).get("area_codes") if run else campaign.area_codes)
    # Keyed by area code; None for subscribers homed in no area, "" for numbers no longer held.
    by_area: dict[str | None, dict[str, int]] = defaultdict(lambda: dict.fromkeys(AREA_REPORT_STATUSES, 0))
    rows = runs_area_counts(run_ids=[run.pk] if run else None, campaign=campaign, length=length)
    # After the deliveries, as runs_progress reads them: a run with a summary shows it, never a part of its rows.
    summaries = RunSummary.objects.filter(run_id=run.pk) if run else RunSummary.objects.filter(run__campaign=campaign)
    summarized = {}
    for run_id, figures in summaries.values_list("run_id", "figures"):
        summarized[run_id] = [
            (run_id, area[:length] if area else area, gone, status, batch_status, n)
            for area, gone, status, batch_status, n in figures["areas"]
        ]
    rows = [row for row in rows if row[0] not in summarized]
    for area_rows in summarized.values():
        rows.extend(area_rows)
    for _, area, gone, status, batch_status, n in rows:
        by_area["" if gone else area][effective_status(status, batch_status)] += n
    names = dict(Area.objects.filter(code__in=[code for code in by_area if code]).values_list("code", "name"))
    writer = csv.writer(_Echo(), delimiter=separator)
    yield "\ufeff" + writer.writerow(AREA_REPORT_COLUMNS)
    # The code is left as written for a program to join on; codes are Kemendagri's dotted digits, never a formula.
    for code in sorted(by_area, key=lambda code: (not code, code == "", code or "")):
        counts = by_area[code]
        recipients = sum(counts.values())
        sent = recipients - counts[DeliveryStatus.SKIPPED] - counts[DeliveryStatus.CANCELLED]
        share = f"{100 * counts[DeliveryStatus.DELIVERED] / sent:.1f}" if sent else ""
        if separator == ";":  # a semicolon file is for a spreadsheet whose decimal separator is the comma
            share = share.replace(".", ",")
        name = names.get(code, "") if code else "(no home area)" if code is None else "(no longer a subscriber)"
        yield writer.writerow(
            [code or "", spreadsheet_text(name, separator=separator), recipients, *counts.values(), share]
        )


def runs_area_counts(*, run_ids: list[int] | None, campaign: Campaign | None = None, length: int = 13) -> list[tuple]:
    """Return (run id, home area code cut to `length`, no longer a subscriber, status, batch status, count) of the
    deliveries of `run_ids`, or of every run of `campaign` when run_ids is None.

    Raw SQL for the join: the ORM would look each number's subscriber up in a subquery per delivery, five times
    slower on a run of 1,000,000 (1.0 s against 5 s on PostgreSQL). Only table names are interpolated.
    """
    from smsblast.models import Subscriber

    run_table = CampaignRun._meta.db_table
    if run_ids is None:
        runs, params = f"d.run_id IN (SELECT id FROM {run_table} WHERE campaign_id = %s)", [campaign.pk]  # noqa: S608
    else:
        runs, params = f"d.run_id IN ({', '.join(['%s'] * len(run_ids))})", list(run_ids)
    sql = (
        "SELECT d.run_id, substr(s.area_id, 1, %s), s.id IS NULL, d.status, b.status, count(*) "  # noqa: S608
        f"FROM {Delivery._meta.db_table} d "
        f"LEFT JOIN {Subscriber._meta.db_table} s ON s.msisdn = d.msisdn "
        f"LEFT JOIN {DispatchBatch._meta.db_table} b ON b.id = d.batch_id "
        f"WHERE {runs} GROUP BY 1, 2, 3, 4, 5"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [length, *params])
        return [(run_id, area, bool(gone), status, batch, n) for run_id, area, gone, status, batch, n in cursor]


def campaign_only_awaits_reports(campaign: Campaign) -> bool:
    """Return whether a sending recurring campaign has handed every message of its runs to the operators and only
    waits for their delivery reports (or for their expiry): its next occurrences may then be edited.

    A daily campaign whose reports are slow, or never all come, would otherwise stay sending, and so not editable,
    until each run's validity window ends, often just as the next run starts.
    """
    from campaigns.scheduling import is_recurring

    if campaign.status != Campaign.Status.SENDING or not is_recurring(campaign.schedule or {}):
        return False
    if campaign.mode != Mode.TARGETED:
        return False  # an area broadcast is with the operators for its whole window, whatever schedule it holds
    active = campaign.runs.exclude(status__in=CampaignRun.FINAL_STATUSES)
    if active.filter(~Q(status=CampaignRun.Status.SENDING) | Q(fanout_done=False)).exists():
        return False
    unsent = [BatchStatus.PENDING, BatchStatus.IN_FLIGHT, BatchStatus.RETRY_WAIT]
    return not DispatchBatch.objects.filter(run__in=active, status__in=unsent).exists()
