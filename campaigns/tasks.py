"""Celery tasks of the campaign side of dispatch: thin wrappers that take ids and call campaigns.dispatch."""

from celery import shared_task
from django.utils import timezone

from campaigns import dispatch, retention
from smsblast.health import health_mark_reconciled


@shared_task(ignore_result=True)
def start_due_runs() -> None:
    """Start the runs whose time has come (celery beat, every second)."""
    dispatch.runs_start_due()


@shared_task(ignore_result=True, acks_late=True)
def fan_out_run(run_id: int) -> None:
    """Write the run's deliveries and batches; resumes from its cursor, so a redelivery is harmless."""
    dispatch.run_fan_out(run_id=run_id)


@shared_task(ignore_result=True)
def check_run_complete(run_id: int) -> None:
    """Close the run if every delivery is final."""
    dispatch.run_check_complete(run_id=run_id)


@shared_task(ignore_result=True)
def reconcile_dispatch() -> None:
    """Re-drive expired leases and lost tasks, expire overdue deliveries, complete runs (every 15 s)."""
    dispatch.dispatch_reconcile()
    health_mark_reconciled()


@shared_task(ignore_result=True)
def prune_deliveries() -> None:
    """Enqueue the removal of the deliveries of runs past the retention, a run at a time (celery beat, daily)."""
    retention.deliveries_prune_enqueue(now=timezone.now())


@shared_task(ignore_result=True, acks_late=True)
def prune_run_deliveries(run_id: int, days: int) -> None:
    """Summarize the run and remove its deliveries, then enqueue the next run's; a redelivery goes on where a pass
    was cut off."""
    retention.run_deliveries_prune_and_next(run_id=run_id, days=days, now=timezone.now())
