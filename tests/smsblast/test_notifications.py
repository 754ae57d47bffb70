"""Email notifications: written with their change, sent once after commit, retried, re-driven, never lost."""

import smtplib
from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from smsblast import notifications
from smsblast.models import AuditEvent, Notification
from tests.smsblast.factories import UserFactory

pytestmark = pytest.mark.django_db

Status = Notification.Status


def create(users, **fields):
    return notifications.notifications_create(
        users=users, kind=fields.pop("kind", "campaign.submitted"), subject="Menunggu persetujuan", body="Isi", **fields
    )


def test_only_active_users_with_an_address_get_a_notification_and_each_once():
    reader = UserFactory(username="ketua", email="ketua@blitarkab.go.id")
    UserFactory(username="no-address")
    UserFactory(username="gone", email="gone@blitarkab.go.id", is_active=False)

    written = create([reader, reader, *UserFactory._meta.model.objects.exclude(pk=reader.pk)], object_id=7)

    assert [(row.user, row.status, row.object_id) for row in written] == [(reader, Status.READY, "7")]


def test_users_sharing_one_mailbox_are_written_to_once():
    # An office's approvers often share its mailbox; it would get the same email once per account.
    first = UserFactory(username="ketua", email="satgas@blitarkab.go.id")
    UserFactory(username="wakil", email="Satgas@blitarkab.go.id")
    other = UserFactory(username="sekretaris", email="sekretaris@blitarkab.go.id")

    written = create(UserFactory._meta.model.objects.order_by("pk"))

    assert [row.user for row in written] == [first, other]


def test_it_is_sent_after_the_transaction_commits_and_only_once(django_capture_on_commit_callbacks, mailoutbox):
    reader = UserFactory(username="ketua", email="ketua@blitarkab.go.id")
    with django_capture_on_commit_callbacks() as callbacks:
        (notification,) = create([reader])
    assert len(callbacks) == 1 and mailoutbox == []  # nothing leaves before the commit

    first = notifications.notification_send(notification_id=notification.pk)
    again = notifications.notification_send(notification_id=notification.pk)

    assert (first.status, again, len(mailoutbox)) == (Status.SENT, None, 1)
    assert (mailoutbox[0].to, mailoutbox[0].subject) == (["ketua@blitarkab.go.id"], "Menunggu persetujuan")
    event = AuditEvent.objects.get(action="notification.send")
    assert (event.from_state, event.to_state, event.details["attempts"]) == (Status.READY, Status.SENT, 1)


def test_a_refusing_mail_server_is_retried_by_the_redrive_and_failed_after_the_last_attempt(monkeypatch, mailoutbox):
    (notification,) = create([UserFactory(username="ketua", email="ketua@blitarkab.go.id")])

    def refuse(*args, **kwargs):
        raise smtplib.SMTPRecipientsRefused({"ketua@blitarkab.go.id": (550, b"mailbox unavailable")})

    monkeypatch.setattr(notifications, "send_mail", refuse)
    now = timezone.now()
    for attempt in range(1, notifications.MAX_ATTEMPTS):
        notifications.notification_send(
            notification_id=notification.pk, now=now + attempt * notifications.RETRY_MAX_WAIT
        )
        notification.refresh_from_db()
        assert (notification.status, notification.attempts) == (Status.READY, attempt)
        assert "SMTPRecipientsRefused" in notification.error
    notifications.notification_send(
        notification_id=notification.pk, now=now + notifications.MAX_ATTEMPTS * notifications.RETRY_MAX_WAIT
    )

    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == (Status.FAILED, notifications.MAX_ATTEMPTS)
    assert AuditEvent.objects.get(action="notification.send").to_state == Status.FAILED
    assert mailoutbox == []


def test_a_user_whose_address_was_removed_before_sending_fails_with_a_reason(mailoutbox):
    reader = UserFactory(username="ketua", email="ketua@blitarkab.go.id")
    (notification,) = create([reader])
    reader.email = ""
    reader.save()

    sent = notifications.notification_send(notification_id=notification.pk)

    assert (sent.status, sent.error, mailoutbox) == (Status.FAILED, "The user has no email address.", [])


def test_a_user_deactivated_before_sending_is_not_mailed_and_it_fails_with_a_reason(mailoutbox):
    # An approver who left the office while the mail server was down must not be asked to review after all.
    reader = UserFactory(username="ketua", email="ketua@blitarkab.go.id")
    (notification,) = create([reader])
    reader.is_active = False
    reader.save()

    sent = notifications.notification_send(notification_id=notification.pk)

    assert (sent.status, sent.error, mailoutbox) == (Status.FAILED, "The user is no longer active.", [])
    assert AuditEvent.objects.get(action="notification.send").to_state == Status.FAILED


def test_the_redrive_sends_again_what_a_lost_task_or_a_dead_worker_left(monkeypatch, private_broker):
    reader = UserFactory(username="ketua", email="ketua@blitarkab.go.id")
    lost, dead, fresh, busy, done = (
        create([reader]) + create([reader]) + create([reader]) + create([reader]) + create([reader])
    )
    now = timezone.now()
    Notification.objects.filter(pk=lost.pk).update(updated_at=now - timedelta(minutes=2))
    Notification.objects.filter(pk=dead.pk).update(status=Status.SENDING, updated_at=now - timedelta(minutes=11))
    Notification.objects.filter(pk=busy.pk).update(status=Status.SENDING, updated_at=now - timedelta(minutes=2))
    Notification.objects.filter(pk=done.pk).update(status=Status.SENT, updated_at=now - timedelta(hours=1))
    enqueued = []
    monkeypatch.setattr(notifications, "_enqueue_send", enqueued.append)

    assert notifications.notifications_redrive(now=now) == 2

    assert sorted(enqueued) == sorted([lost.pk, dead.pk])
    assert Notification.objects.get(pk=dead.pk).status == Status.READY
    assert {Notification.objects.get(pk=pk).status for pk in (fresh.pk, busy.pk, done.pk)} == {
        Status.READY,
        Status.SENDING,
        Status.SENT,
    }


def test_a_subject_written_over_several_lines_is_sent_on_one(mailoutbox):
    # A campaign title may hold a line break (the API and an imported CAP headline keep it); a mail header may not.
    (notification,) = notifications.notifications_create(
        users=[UserFactory(username="ketua", email="ketua@blitarkab.go.id")],
        kind="campaign.submitted",
        subject="Menunggu persetujuan Anda: Banjir\r\nDesa Sumberejo",
        body="Isi",
    )

    sent = notifications.notification_send(notification_id=notification.pk)

    assert (sent.status, mailoutbox[0].subject) == (Status.SENT, "Menunggu persetujuan Anda: Banjir Desa Sumberejo")


def test_a_message_the_mail_backend_cannot_send_counts_as_an_attempt_instead_of_hanging_in_sending(monkeypatch):
    (notification,) = create([UserFactory(username="ketua", email="ketua@blitarkab.go.id")])

    def broken(*args, **kwargs):
        raise ValueError("unexpected")

    monkeypatch.setattr(notifications, "send_mail", broken)
    notifications.notification_send(notification_id=notification.pk)

    notification.refresh_from_db()
    assert (notification.status, notification.attempts, notification.error) == (
        Status.READY,
        1,
        "ValueError: unexpected",
    )


def test_a_mail_server_down_for_an_hour_delays_a_notification_without_losing_it(
    monkeypatch, private_broker, mailoutbox
):
    (notification,) = create([UserFactory(username="ketua", email="ketua@blitarkab.go.id")])
    server = {"up": False}
    send_mail = notifications.send_mail

    def unless_down(*args, **kwargs):
        if not server["up"]:
            raise ConnectionRefusedError(111, "Connection refused")
        return send_mail(*args, **kwargs)

    enqueued = []
    monkeypatch.setattr(notifications, "send_mail", unless_down)
    monkeypatch.setattr(notifications, "_enqueue_send", enqueued.append)

    def beat_for(minutes: int) -> None:
        """Let the redrive run every 30 s for `minutes`, sending what it enqueues; time passes by ageing the row."""
        for _ in range(minutes * 2):
            Notification.objects.filter(pk=notification.pk).update(updated_at=F("updated_at") - timedelta(seconds=30))
            notifications.notifications_redrive()
            while enqueued:
                notifications.notification_send(notification_id=enqueued.pop())

    notifications.notification_send(notification_id=notification.pk)
    beat_for(60)
    notification.refresh_from_db()
    assert (notification.status, mailoutbox) == (Status.READY, [])

    server["up"] = True
    beat_for(60)
    notification.refresh_from_db()
    assert (notification.status, len(mailoutbox)) == (Status.SENT, 1)


def test_a_notification_whose_worker_died_on_its_last_attempt_is_still_sent(monkeypatch, private_broker, mailoutbox):
    (notification,) = create([UserFactory(username="ketua", email="ketua@blitarkab.go.id")])
    now = timezone.now()
    Notification.objects.filter(pk=notification.pk).update(
        status=Status.SENDING, attempts=notifications.MAX_ATTEMPTS, updated_at=now - timedelta(hours=2)
    )
    enqueued = []
    monkeypatch.setattr(notifications, "_enqueue_send", enqueued.append)

    notifications.notifications_redrive(now=now)  # the dead worker's notification is ready again
    notifications.notifications_redrive(now=now + notifications.RETRY_MAX_WAIT)

    assert enqueued == [notification.pk]
    sent = notifications.notification_send(notification_id=notification.pk, now=now + notifications.RETRY_MAX_WAIT)
    assert sent.status == Status.SENT


def test_a_second_task_for_a_notification_just_refused_waits_for_the_retry_instead_of_trying_again(
    monkeypatch, private_broker
):
    # The mail process is behind (a mail server that does not answer takes EMAIL_TIMEOUT per attempt): the redrive
    # enqueues a notification again while its first task still waits in the queue, and both reach the worker.
    (notification,) = create([UserFactory(username="ketua", email="ketua@blitarkab.go.id")])
    Notification.objects.filter(pk=notification.pk).update(updated_at=timezone.now() - timedelta(minutes=2))
    enqueued = []
    monkeypatch.setattr(notifications, "_enqueue_send", enqueued.append)
    assert notifications.notifications_redrive() == 1

    def timeout(*args, **kwargs):
        raise TimeoutError("timed out")

    monkeypatch.setattr(notifications, "send_mail", timeout)
    first = notifications.notification_send(notification_id=notification.pk)  # the task enqueued on commit
    second = notifications.notification_send(notification_id=enqueued.pop())  # the redrive's, right after

    notification.refresh_from_db()
    assert (first.attempts, second, notification.status, notification.attempts) == (1, None, Status.READY, 1)


def test_a_mail_server_that_does_not_answer_for_an_hour_fails_none_of_the_notifications_waiting(
    monkeypatch, private_broker, mailoutbox
):
    """A slow mail process and a beat that re-enqueues what waits must not spend the retries of five hours in one."""
    readers = [UserFactory(username=f"ketua{n}", email=f"ketua{n}@blitarkab.go.id") for n in range(8)]
    clock = {"now": timezone.now()}
    monkeypatch.setattr(notifications.timezone, "now", lambda: clock["now"])
    queue = []
    monkeypatch.setattr(notifications, "_enqueue_send", queue.append)
    written = create(readers)
    queue.extend(row.pk for row in written)  # the tasks enqueued on commit
    server = {"answers": False}
    send_mail = notifications.send_mail

    def unless_silent(*args, **kwargs):
        if not server["answers"]:
            clock["now"] += timedelta(seconds=30)  # EMAIL_TIMEOUT
            raise TimeoutError("timed out")
        return send_mail(*args, **kwargs)

    monkeypatch.setattr(notifications, "send_mail", unless_silent)

    def run_for(minutes: int) -> None:
        """Let the mail process take one task at a time while beat runs the redrive every 30 s."""
        end, next_beat = clock["now"] + timedelta(minutes=minutes), clock["now"]
        while clock["now"] < end:
            if clock["now"] >= next_beat:
                notifications.notifications_redrive()
                next_beat += timedelta(seconds=30)
            if queue:
                notifications.notification_send(notification_id=queue.pop(0))
            else:
                clock["now"] = next_beat

    run_for(60)
    assert Notification.objects.filter(status=Status.FAILED).count() == 0
    server["answers"] = True
    run_for(120)
    assert sorted(Notification.objects.values_list("status", flat=True)) == [Status.SENT] * len(readers)
    assert sorted(message.to[0] for message in mailoutbox) == sorted(reader.email for reader in readers)


def test_notifications_waiting_their_turn_in_the_mail_queue_are_not_queued_again_until_their_tasks_are_lost(
    private_broker, redis_client, django_capture_on_commit_callbacks
):
    """A mail process that is stopped, or behind a slow mail server, must not find a copy per redrive of each task."""
    readers = [UserFactory(username=f"ketua{n}", email=f"ketua{n}@blitarkab.go.id") for n in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        create(readers)  # no mail process runs: the tasks wait in the mail queue
    assert redis_client.llen("mail") == 3

    later = timezone.now() + timedelta(minutes=2)
    for minute in range(3):
        notifications.notifications_redrive(now=later + timedelta(minutes=minute))
    assert redis_client.llen("mail") == 3

    # Redis loses them: now they are lost, and queued again once each.
    redis_client.flushdb()
    assert notifications.notifications_redrive(now=later + timedelta(minutes=4)) == 3
    assert redis_client.llen("mail") == 3


def test_each_attempt_the_mail_server_refused_is_in_the_notifications_history_with_its_error(monkeypatch):
    (notification,) = create([UserFactory(username="ketua", email="ketua@blitarkab.go.id")])
    refusals = iter([ConnectionRefusedError(111, "Connection refused"), TimeoutError("timed out")])

    def refuse(*args, **kwargs):
        raise next(refusals)

    monkeypatch.setattr(notifications, "send_mail", refuse)
    now = timezone.now()
    notifications.notification_send(notification_id=notification.pk, now=now)
    notifications.notification_send(notification_id=notification.pk, now=now + notifications.RETRY_MAX_WAIT)

    events = AuditEvent.objects.filter(object_id=str(notification.pk), action="notification.retry").order_by("id")
    assert [(e.from_state, e.to_state, e.details["attempts"], e.details["error"]) for e in events] == [
        (Status.SENDING, Status.READY, 1, "ConnectionRefusedError: [Errno 111] Connection refused"),
        (Status.SENDING, Status.READY, 2, "TimeoutError: timed out"),
    ]


def test_a_notification_whose_worker_died_is_given_back_by_the_redrive_with_an_event(private_broker, monkeypatch):
    (notification,) = create([UserFactory(username="ketua", email="ketua@blitarkab.go.id")])
    now = timezone.now()
    Notification.objects.filter(pk=notification.pk).update(
        status=Status.SENDING, attempts=1, updated_at=now - timedelta(minutes=11)
    )
    monkeypatch.setattr(notifications, "_enqueue_send", lambda notification_id: None)

    notifications.notifications_redrive(now=now)
    notifications.notifications_redrive(now=now)

    (event,) = AuditEvent.objects.filter(object_id=str(notification.pk), action="notification.release")
    assert (event.from_state, event.to_state, event.details["attempts"]) == (Status.SENDING, Status.READY, 1)


def test_a_worker_whose_notification_was_sent_by_another_meanwhile_leaves_it_sent(monkeypatch):
    (notification,) = create([UserFactory(username="ketua", email="ketua@blitarkab.go.id")])
    Notification.objects.filter(pk=notification.pk).update(attempts=notifications.MAX_ATTEMPTS - 1)

    def refuse_after_another_worker_sent_it(*args, **kwargs):
        # Stuck long enough for the redrive to give the notification to another worker, which sent it.
        Notification.objects.filter(pk=notification.pk).update(status=Status.SENT, sent_at=timezone.now())
        raise smtplib.SMTPRecipientsRefused({"ketua@blitarkab.go.id": (550, b"mailbox unavailable")})

    monkeypatch.setattr(notifications, "send_mail", refuse_after_another_worker_sent_it)
    # Its last attempt's wait is over: a worker takes it.
    notifications.notification_send(notification_id=notification.pk, now=timezone.now() + notifications.RETRY_MAX_WAIT)

    notification.refresh_from_db()
    assert (notification.status, notification.error) == (Status.SENT, "")
    assert not AuditEvent.objects.filter(action="notification.send").exists()
