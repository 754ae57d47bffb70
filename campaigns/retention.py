"""The retention policy for deliveries: who received which message is personal data, kept no longer than its purpose.

A finished run keeps its deliveries (one row per recipient, with the number) for SMSBLAST_DELIVERY_RETENTION_DAYS
after it ended; then the daily prune removes them and keeps the run's figures in a RunSummary (UU PDP 27/2022).

For each run, first one transaction counts its deliveries into the summary, as every reader counts them (progress
per run and operator, the chart and failures of its block, the results by area); then the rows are deleted 10,000
a transaction. Readers show the summary as soon as it exists, so no page mixes it with the rows still left. A pass
cut off midway leaves the summary unfinished (`removed_at` empty): the next pass deletes the rest. Only runs that
are final, ended before the cutoff and wait for nothing (no delivery queued or submitted, no batch unsettled) are
pruned: a run still sending, or whose messages may still be reported on or expire, is never touched.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery

from campaigns.dispatch import UNSETTLED_BATCH_STATUSES, UNSETTLED_DELIVERY_STATUSES
from campaigns.dispatch_selectors import block_figures_stored, run_block_figures, runs_area_counts
from campaigns.models import CampaignRun, Delivery, DispatchBatch, Mode, RunSummary
from smsblast.audit import audit_record
from smsblast.redaction import mask_numbers
from smsblast.transactions import enqueue_on_commit

logger = logging.getLogger(__name__)

# Deliveries deleted in one transaction: a run of a million is a hundred short transactions, not one long one.
DELETE_CHUNK = 10_000


@dataclass(frozen=True)
class RunPruned:
    """What a pass did (or, dry, would do) to one run."""

    run_id: int
    campaign_id: int
    finished_at: datetime
    removed: int  # deliveries deleted by this pass (a dry run: those it would delete)
    done: bool  # every delivery of the run is gone (a dry run: False)


def retention_days() -> int:
    """Return the days a finished run keeps its deliveries; 0 keeps them for good."""
    return max(0, int(settings.SMSBLAST_DELIVERY_RETENTION_DAYS))


def retention_cutoff(*, now: datetime, days: int) -> datetime:
    """Return the moment before which a run must have ended for its deliveries to go: `days` before `now`.

    More days than the calendar reaches back (a million, meant as "for good") give its first moment: no run ended
    before it, so nothing is removed.
    """
    try:
        return now - timedelta(days=days)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def runs_due_for_pruning(*, cutoff: datetime) -> QuerySet:
    """Return the targeted runs whose deliveries a pass removes, oldest end first: final, ended before `cutoff`,
    with deliveries and nothing waiting for an outcome; and those a pass cut off midway left unfinished."""
    unsettled = Q(Exists(Delivery.objects.filter(run=OuterRef("pk"), status__in=UNSETTLED_DELIVERY_STATUSES))) | Q(
        Exists(DispatchBatch.objects.filter(run=OuterRef("pk"), status__in=UNSETTLED_BATCH_STATUSES))
    )
    due = (
        Q(
            campaign__mode=Mode.TARGETED,
            status__in=CampaignRun.FINAL_STATUSES,
            finished_at__lt=cutoff,
            summary__isnull=True,
        )
        & Q(Exists(Delivery.objects.filter(run=OuterRef("pk"))))
        & ~unsettled
    )
    unfinished = Q(summary__isnull=False, summary__removed_at__isnull=True)
    return CampaignRun.objects.filter(due | unfinished).order_by("finished_at", "pk")


def run_figures(run: CampaignRun) -> dict:
    """Return what the readers of a run count from its deliveries, as a RunSummary keeps it (no number in it, even
    one an operator wrote into a reason).

    `block`: run_block_figures (progress per operator and status, the delivery chart, the failures); `areas`:
    [home area code, no longer a subscriber, status, batch status, count] for the results by area.
    """
    areas = runs_area_counts(run_ids=[run.pk])
    block = block_figures_stored(run_block_figures(run))
    # Reasons and error codes are the operators' own words: a number written into one is masked, not kept for good.
    block["counts"] = [
        [*row[:4], mask_numbers(row[4]) if row[4] else row[4], mask_numbers(row[5]) if row[5] else row[5], *row[6:]]
        for row in block["counts"]
    ]
    return {
        "block": block,
        "areas": [[area, gone, status, batch, n] for _, area, gone, status, batch, n in areas],
    }


@transaction.atomic
def run_summarize(*, run_id: int, days: int, now: datetime) -> RunSummary | None:
    """Write the run's summary from its deliveries, before any is deleted; return it, or None if the run may not be
    pruned (not final, ended within `days`, or waiting for an outcome). A summary already written is returned."""
    run = CampaignRun.objects.select_for_update(of=("self",)).select_related("campaign").filter(pk=run_id).first()
    if run is None:
        return None
    summary = RunSummary.objects.filter(run_id=run_id).first()
    if summary is not None:
        return summary
    cutoff = retention_cutoff(now=now, days=days)
    if not runs_due_for_pruning(cutoff=cutoff).filter(pk=run_id, summary__isnull=True).exists():
        return None
    figures = run_figures(run)
    return RunSummary.objects.create(
        run=run,
        figures=figures,
        recipients=sum(row[-1] for row in figures["block"]["counts"]),
        retention_days=days,
        cutoff=cutoff,
        created_at=now,
    )


def run_deliveries_prune(
    *, run_id: int, days: int, now: datetime, chunk: int = DELETE_CHUNK, max_chunks: int | None = None
) -> RunPruned | None:
    """Summarize the run (unless done before), then delete its deliveries `chunk` a transaction; return what was
    done, or None if the run may not be pruned. With `max_chunks`, stop after that many: the next pass goes on.

    The last chunk gone, the summary is marked finished and an AuditEvent records the rows removed and the cutoff.
    """
    summary = run_summarize(run_id=run_id, days=days, now=now)
    if summary is None:
        return None
    run = summary.run
    removed, chunks = 0, 0
    while max_chunks is None or chunks < max_chunks:
        with transaction.atomic():
            ids = Delivery.objects.filter(run_id=run_id).order_by().values("pk")[:chunk]
            deleted, _ = Delivery.objects.filter(pk__in=Subquery(ids)).delete()
            if deleted:
                RunSummary.objects.filter(run_id=run_id).update(removed=F("removed") + deleted)
        removed += deleted
        chunks += 1
        if deleted < chunk:
            break
    else:
        return RunPruned(run.pk, run.campaign_id, run.finished_at, removed, done=False)
    with transaction.atomic():
        if Delivery.objects.filter(run_id=run_id).exists():
            return RunPruned(run.pk, run.campaign_id, run.finished_at, removed, done=False)
        # Once, whichever pass gets here first.
        if RunSummary.objects.filter(run_id=run_id, removed_at__isnull=True).update(removed_at=now):
            summary.refresh_from_db()
            audit_record(
                actor=None,
                action="run.deliveries_remove",
                obj=run,
                details={
                    "removed": summary.removed,
                    "recipients": summary.recipients,
                    "retention_days": summary.retention_days,
                    "cutoff": summary.cutoff.isoformat(),
                },
            )
    return RunPruned(run.pk, run.campaign_id, run.finished_at, removed, done=True)


def deliveries_prune(
    *,
    now: datetime,
    days: int | None = None,
    dry_run: bool = False,
    chunk: int = DELETE_CHUNK,
    progress: Callable[[RunPruned], None] | None = None,
) -> list[RunPruned]:
    """Remove the deliveries of every run past the retention (`days`, else the setting); return what was done.

    With `dry_run`, change nothing and return what would be removed. Retention 0 removes nothing. `progress` is
    given each run as soon as it is done (a run of a million deliveries takes a while).
    """
    days = retention_days() if days is None else days
    if days <= 0:
        return []
    done = []
    for run in runs_due_for_pruning(cutoff=retention_cutoff(now=now, days=days)):
        if dry_run:
            left = Delivery.objects.filter(run_id=run.pk).count()
            pruned = RunPruned(run.pk, run.campaign_id, run.finished_at, left, done=False)
        else:
            pruned = run_deliveries_prune(run_id=run.pk, days=days, now=now, chunk=chunk)
            if pruned is None:
                continue
            logger.info("Run %s: %s deliveries removed under the retention policy", run.pk, pruned.removed)
        done.append(pruned)
        if progress is not None:
            progress(pruned)
    return done


def deliveries_prune_enqueue(*, now: datetime) -> int:
    """Enqueue the prune of the first run past the retention, on the default queue; return how many runs are due.

    Each prune enqueues the next when it is done (run_deliveries_prune_and_next): the default queue holds one at a
    time, so a fan-out enqueued meanwhile waits behind one run's prune at most, not behind every run due.
    """
    days = retention_days()
    if days <= 0:
        return 0
    due = runs_due_for_pruning(cutoff=retention_cutoff(now=now, days=days))
    count = due.count()
    if count:
        _prune_enqueue(due.values_list("pk", flat=True).first(), days)
        logger.info("Removing the deliveries of %s run(s) ended more than %s days ago", count, days)
    return count


def run_deliveries_prune_and_next(*, run_id: int, days: int, now: datetime) -> RunPruned | None:
    """Prune the run (run_deliveries_prune), then enqueue the prune of the next run past the retention, in the
    order runs_due_for_pruning gives them, if any: also when this one fails, so one run never holds up the rest."""
    try:
        return run_deliveries_prune(run_id=run_id, days=days, now=now)
    finally:
        due = runs_due_for_pruning(cutoff=retention_cutoff(now=now, days=days))
        ended = CampaignRun.objects.filter(pk=run_id).values_list("finished_at", flat=True).first()
        if ended is not None:
            due = due.filter(Q(finished_at__gt=ended) | Q(finished_at=ended, pk__gt=run_id))
        following = due.exclude(pk=run_id).values_list("pk", flat=True).first()
        if following is not None:
            _prune_enqueue(following, days)


def _prune_enqueue(run_id: int, days: int) -> None:
    from campaigns.tasks import prune_run_deliveries

    enqueue_on_commit(partial(prune_run_deliveries.delay, run_id, days))
