"""Celery tasks of the core app: thin wrappers that load rows and call the service of the same name."""

from celery import shared_task

from smsblast import notifications, services
from smsblast.errors import ServiceConflict
from smsblast.models import SubscriberImport


@shared_task(name="smsblast.subscriber_import_run")
def subscriber_import_run(import_id: int) -> None:
    """Run (or resume) a pending subscriber import; one running, completed or failed (stopped, say) is left alone."""
    job = SubscriberImport.objects.filter(pk=import_id).first()
    if job is None or job.state != SubscriberImport.State.PENDING:
        return
    try:
        services.subscriber_import_run(subscriber_import=job, resume_failed=False)
    except ServiceConflict:
        return  # another worker claimed it first


@shared_task(name="smsblast.subscriber_imports_redrive")
def subscriber_imports_redrive() -> None:
    """Queue again the uploaded imports whose task never reached a worker."""
    services.subscriber_imports_redrive()


@shared_task(name="smsblast.notification_send")
def notification_send(notification_id: int) -> None:
    """Send one notification; one already taken by another worker, sent or failed is left alone."""
    notifications.notification_send(notification_id=notification_id)


@shared_task(name="smsblast.notifications_redrive")
def notifications_redrive() -> None:
    """Send again the notifications whose task was lost, whose worker died, or whose mail server refused."""
    notifications.notifications_redrive()
