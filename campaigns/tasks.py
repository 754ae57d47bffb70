"""Celery tasks of the campaign side of dispatch: thin wrappers that take ids and call campaigns.dispatch."""

from celery import shared_task

from campaigns import dispatch
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
