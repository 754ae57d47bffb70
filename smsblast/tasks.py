"""Celery tasks of the core app: thin wrappers that load rows and call the service of the same name."""

from celery import shared_task

from smsblast import services
from smsblast.errors import ServiceConflict
from smsblast.models import SubscriberImport


@shared_task(name="smsblast.subscriber_import_run")
def subscriber_import_run(import_id: int) -> None:
    """Run (or resume) a subscriber import; a job already running or completed is left alone."""
    job = SubscriberImport.objects.filter(pk=import_id).first()
    if job is None or job.state in (SubscriberImport.State.COMPLETED, SubscriberImport.State.RUNNING):
        return
    try:
        services.subscriber_import_run(subscriber_import=job)
    except ServiceConflict:
        return  # another worker claimed it first
