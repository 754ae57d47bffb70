"""Email notifications: written in the transaction of the change they report, sent after it commits.

A campaign submitted tells its approvers, a decision tells the author, a run that ends or stalls tells the
author. `notifications_create` adds the rows (users without an address are left out) and enqueues one
`notification_send` task each on commit; `notifications_redrive` (housekeeping) sends again what a lost task
or a dead worker left behind. Mail goes through Django's email backend (`EMAIL_URL`): the console under
`make run`, SMTP in production.
"""

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from smsblast.audit import audit_record
from smsblast.models import Notification, User
from smsblast.transactions import enqueue_on_commit

logger = logging.getLogger(__name__)

Status = Notification.Status

# A mail server that refuses (or cannot be reached) is tried this many times before the notification fails, each
# wait twice the last up to RETRY_MAX_WAIT: about five hours in all, so a mail server's outage delays, not loses, it.
MAX_ATTEMPTS = 10
RETRY_MAX_WAIT = timedelta(hours=1)
# A ready notification this old lost its task; one sending this long lost its worker.
REDRIVE_READY_AFTER = timedelta(minutes=1)
REDRIVE_SENDING_AFTER = timedelta(minutes=10)


def _retry_wait(attempts: int) -> timedelta:
    """Return how long a ready notification tried `attempts` times waits for the redrive (the first: a lost task)."""
    return min(REDRIVE_READY_AFTER * 2**attempts, RETRY_MAX_WAIT)


def _retry_due(now: datetime) -> Q:
    """Match the notifications tried before whose wait for the next attempt is over at `now`."""
    # One whose worker died on its last attempt is tried once more, and fails if that is refused too.
    due = Q(attempts__gte=MAX_ATTEMPTS, updated_at__lte=now - RETRY_MAX_WAIT)
    for attempts in range(1, MAX_ATTEMPTS):
        due |= Q(attempts=attempts, updated_at__lte=now - _retry_wait(attempts))
    return due


def notifications_create(
    *, users: Iterable[User], kind: str, subject: str, body: str, object_id: str | int = ""
) -> list[Notification]:
    """Write one notification per user with an email address and send each once the transaction commits.

    Users sharing one mailbox (an office's) are written to once, as the first of them.
    """
    now = timezone.now()
    recipients: dict[str, User] = {}
    for user in users:
        if user.email and user.is_active:
            recipients.setdefault(user.email.strip().casefold(), user)
    notifications = Notification.objects.bulk_create(
        Notification(
            user=user,
            kind=kind,
            object_id=str(object_id),
            # A mail header holds one line; a title may hold a line break (the API, an imported CAP headline).
            subject=" ".join(subject.split())[:255],
            body=body,
            created_at=now,
            updated_at=now,
        )
        for user in recipients.values()
    )
    for notification in notifications:
        enqueue_on_commit(partial(_enqueue_send, notification.pk))
    return notifications


def _enqueue_send(notification_id: int) -> None:
    from smsblast.tasks import notification_send  # the tasks module imports this one

    notification_send.delay(notification_id)


def notification_send(*, notification_id: int, now: datetime | None = None) -> Notification | None:
    """Hand a ready notification to the mail server once; return it, or None when another worker has it or it is done.

    A refusal, an unreachable server or any other error puts it back to ready for the redrive, until MAX_ATTEMPTS;
    then it fails. One tried before is taken only once its wait is over: the redrive may have enqueued it again
    while its task waited behind others in the mail queue, and that task must not spend its next attempt at once.
    """
    now = now or timezone.now()
    taken = Notification.objects.filter(
        Q(attempts=0) | _retry_due(now), pk=notification_id, status=Status.READY
    ).update(status=Status.SENDING, attempts=F("attempts") + 1, updated_at=now)
    if not taken:
        return None
    notification = Notification.objects.select_related("user").get(pk=notification_id)
    address = notification.user.email
    if not address:
        return _finish(notification, Status.FAILED, error="The user has no email address.")
    if not notification.user.is_active:
        return _finish(notification, Status.FAILED, error="The user is no longer active.")
    try:
        send_mail(notification.subject, notification.body, settings.DEFAULT_FROM_EMAIL, [address])
    except Exception as exc:  # noqa: BLE001 - whatever stops it counts as an attempt, never leaving it sending
        error = f"{type(exc).__name__}: {exc}"[:500]
        if notification.attempts < MAX_ATTEMPTS:
            logger.warning("Notification %s not sent (attempt %s): %s", notification.pk, notification.attempts, error)
            with transaction.atomic():
                if Notification.objects.filter(pk=notification.pk, status=Status.SENDING).update(
                    status=Status.READY, error=error, updated_at=timezone.now()
                ):
                    # The next attempt overwrites `error`: each refusal stays in the history (invariant 6).
                    audit_record(
                        actor=None,
                        action="notification.retry",
                        obj=notification,
                        from_state=Status.SENDING,
                        to_state=Status.READY,
                        details={"kind": notification.kind, "attempts": notification.attempts, "error": error},
                    )
            return notification
        logger.error("Notification %s failed after %s attempts: %s", notification.pk, notification.attempts, error)
        return _finish(notification, Status.FAILED, error=error)
    return _finish(notification, Status.SENT)


@transaction.atomic
def _finish(notification: Notification, to_state: str, *, error: str = "") -> Notification:
    now = timezone.now()
    fields = {"status": to_state, "error": error, "updated_at": now}
    if to_state == Status.SENT:
        fields["sent_at"] = now
    if Notification.objects.filter(pk=notification.pk, status=Status.SENDING).update(**fields):
        audit_record(
            actor=None,
            action="notification.send",
            obj=notification,
            from_state=Status.READY,
            to_state=to_state,
            details={
                "kind": notification.kind,
                "attempts": notification.attempts,
                **({"error": error} if error else {}),
            },
        )
        for name, value in fields.items():
            setattr(notification, name, value)
    return notification


def notifications_redrive(*, now: datetime | None = None, limit: int = 500) -> int:
    """Send again the notifications a lost task, a dead worker or a refusing mail server left unsent, each once its
    wait is over; return how many were enqueued."""
    now = now or timezone.now()
    lost = Notification.objects.filter(status=Status.SENDING, updated_at__lt=now - REDRIVE_SENDING_AFTER)
    for notification in lost.only("pk", "attempts", "kind"):
        with transaction.atomic():
            if lost.filter(pk=notification.pk).update(status=Status.READY, updated_at=now - REDRIVE_READY_AFTER):
                audit_record(
                    actor=None,
                    action="notification.release",
                    obj=notification,
                    from_state=Status.SENDING,
                    to_state=Status.READY,
                    details={
                        "kind": notification.kind,
                        "attempts": notification.attempts,
                        "reason": "Its worker did not finish within 10 minutes.",
                    },
                )
    waited = Q(attempts=0, updated_at__lte=now - _retry_wait(0)) | _retry_due(now)
    due = list(
        Notification.objects.filter(waited, status=Status.READY)
        .order_by("updated_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    # One waiting its turn behind the mail queue (a mail process stopped, or held by a mail server that does not
    # answer) is as untouched as one whose task was lost; queueing it again would copy every waiting task on every
    # pass until the queue drains. They are re-driven once it has drained.
    if due and _mail_queue_holds_tasks():
        return 0
    for notification_id in due:
        _enqueue_send(notification_id)
    return len(due)


def _mail_queue_holds_tasks() -> bool:
    """Return whether the mail queue still holds tasks, as the broker counts them; when it cannot be asked, no."""
    from config.celery import app

    queue = settings.CELERY_TASK_ROUTES["smsblast.notification_send"]["queue"]
    try:
        with app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, interval_start=0)
            return bool(broker.default_channel.queue_declare(queue=queue).message_count)
    except Exception as exc:  # noqa: BLE001 - any broker trouble means "unknown": re-drive, a duplicate never harms
        logger.warning("Could not count the tasks waiting in the mail queue (%s); re-driving anyway", exc)
        return False
