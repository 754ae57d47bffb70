"""The operator side of dispatch: send a batch through its adapter, apply delivery reports, pull mode.

A batch moves pending → in_flight (leased until `lease_expires_at`) → accepted, or → retry_wait → in_flight …,
or → failed after a permanent error or the retry budget. Its id is the Idempotency-Key the adapter sends,
and every retry reuses it (invariant 3). Deliveries are written once at fan-out and only change when the
batch fails, is cancelled or is split, when the operator refuses or reports on them, when their number opts out
before they are sent, or when they expire unreported.
"""

import copy
import functools
import json
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from campaigns.models import CampaignRun, Delivery, DispatchBatch, Priority
from operators.gateways.base import BatchResult, OutboundBatch, OutboundMessage, Outcome, get_adapter, operator_text
from operators.models import Operator
from operators.ratelimit import RateLimiter
from smsblast import sealing
from smsblast.audit import audit_record
from smsblast.errors import ServiceInvalid
from smsblast.models import AuditEvent, Subscriber, User
from smsblast.transactions import enqueue_on_commit

logger = logging.getLogger(__name__)

BatchStatus = DispatchBatch.Status
DeliveryStatus = Delivery.Status
RunStatus = CampaignRun.Status

# Attempts before a batch that keeps meeting transient errors fails for good. An attempt the operator answered
# 429 is not one of them: it asked us to slow down, not to give up. Those retries stop with the run's validity
# window, past which the batch is not leased and the reconciler fails it.
MAX_ATTEMPTS = 8
# Exponential backoff with "equal jitter": a random wait in [c/2, c] with c = min(CAP, BASE × 2^(attempt-1)).
# The floor keeps the retry budget from being spent by unlucky short waits: the seven waits before the last
# attempt add up to at least 63.5 s, so an operator outage shorter than a minute never fails a batch for good.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 120.0
# Past this exponent the wait is the cap anyway; a batch throttled thousands of times would overflow a float.
BACKOFF_MAX_EXPONENT = 32
# Runs whose batches may be leased; a paused or cancelled run leases nothing.
SENDABLE_RUN_STATUSES = (RunStatus.FANNING_OUT, RunStatus.SENDING)
# The lease itself checks that the run is sending; a batch that then waited longer than this for tokens
# checks again before sending, so a pause holds within a second.
PAUSE_CHECK_SECONDS = 0.5
# When Redis (the shared rate limiter) cannot be reached, a leased batch goes back and is tried again after this.
LIMITER_RETRY_SECONDS = 5
# A batch of an operator an admin deactivated goes back unsent and is tried again after this, so reactivating
# the operator resumes it within a minute; past the run's validity window the reconciler fails it instead.
INACTIVE_OPERATOR_RETRY_SECONDS = 30
# A wait longer than this (a Retry-After of up to a day) gets no countdown task: the Redis broker redelivers a task
# not acknowledged within its visibility timeout (an hour), so a far-future one would run twice. The reconciler
# re-enqueues a waiting batch once its next_attempt_at has passed.
SEND_COUNTDOWN_MAX_SECONDS = 300
MAX_REPORTS = 10_000
# Delivery ids are bigint: a message id of more digits, or of anything but ASCII digits, names no delivery.
MAX_MESSAGE_ID = 2**63 - 1
# Reports per statement: 5 bound values each stays under SQLite's 32,766 and PostgreSQL's 65,535 parameters.
REPORT_CHUNK = 5_000
# Operators whose adapter is "pull" fetch their batches through the operator API; no task pushes them.
PULL_ADAPTER = "pull"
# Report statuses and the delivery states each may overwrite: statuses only move forward, finals never change.
REPORT_STATUSES = {
    "SUBMITTED": (DeliveryStatus.SUBMITTED, (DeliveryStatus.QUEUED,)),
    "DELIVERED": (DeliveryStatus.DELIVERED, (DeliveryStatus.QUEUED, DeliveryStatus.SUBMITTED)),
    "UNDELIVERED": (DeliveryStatus.UNDELIVERED, (DeliveryStatus.QUEUED, DeliveryStatus.SUBMITTED)),
    "EXPIRED": (DeliveryStatus.EXPIRED, (DeliveryStatus.QUEUED, DeliveryStatus.SUBMITTED)),
    "REJECTED": (DeliveryStatus.REJECTED, (DeliveryStatus.QUEUED, DeliveryStatus.SUBMITTED)),
}


def backoff_seconds(attempt: int, *, retry_after: float | None = None) -> float:
    """Return how long to wait before attempt `attempt + 1`: equal jitter, never less than Retry-After."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(max(attempt - 1, 0), BACKOFF_MAX_EXPONENT))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, float(retry_after))
    return delay


# --- sending ---------------------------------------------------------------------------------


def batch_send(*, batch_id: str, now: datetime | None = None) -> str:
    """Lease the batch, wait for rate-limit tokens, send it through the operator's adapter and record the result.

    Return what happened: "accepted", "retry", "failed", or why nothing was sent ("not_found", "final",
    "not_leased", "paused", "cancelled", "expired", "quiet", "not_due", "operator_inactive", "pull", "throttled",
    "limiter_unavailable"). Safe to call twice: only one caller wins the lease.
    """
    now = now or timezone.now()
    lease_seconds = settings.DISPATCH_LEASE_SECONDS
    batch = _batch_lease_at_once(batch_id, now=now, lease_seconds=lease_seconds)
    if batch is None:
        leased = _batch_lease_checked(batch_id, now=now, lease_seconds=lease_seconds)
        if isinstance(leased, str):
            return leased
        batch = leased
    operator = batch.operator
    if 0 < operator.segments_per_second < batch.segments or batch.size > max(1, operator.batch_size):
        # Written before the operator's limit or batch size was lowered: one such batch would exceed the limit in
        # its second, or be more recipients than the operator now takes in one request.
        batch = _batch_fit_to_limit(batch, limit=operator.segments_per_second, batch_size=operator.batch_size, now=now)
    outbound = batch_outbound(batch)
    if not outbound.recipients:
        # Every recipient opted out before the batch went out: nothing to send, the batch is done.
        return batch_record_result(
            batch_id=batch.pk, result=BatchResult(outcome=Outcome.ACCEPTED, accepted=0), leased=batch
        ).status_label

    # Wait for the shared rate limit, but give the lease back well before it could expire under us.
    limiter = RateLimiter(operator.slug, limit=operator.segments_per_second)
    waiting_since = time.monotonic()
    try:
        granted = limiter.acquire(batch.segments, timeout=max(1.0, lease_seconds / 2))
    except redis.RedisError as exc:
        # Without the shared limiter nothing may be sent (invariant 5): give the batch back at once rather
        # than leave it in flight until its lease lapses, and try again shortly.
        logger.warning(
            "Rate limiter of operator %s unreachable (%s); batch %s waits %s s and is tried again",
            operator.slug,
            exc,
            batch.pk,
            LIMITER_RETRY_SECONDS,
        )
        retry_at = timezone.now() + timedelta(seconds=LIMITER_RETRY_SECONDS)
        _release(batch, next_attempt_at=retry_at, reason="limiter_unavailable", count_attempt=False)
        return "limiter_unavailable"
    if granted is None:
        _release(batch, next_attempt_at=timezone.now(), reason="throttled", count_attempt=False)
        return "throttled"
    if time.monotonic() - waiting_since > PAUSE_CHECK_SECONDS:
        # Waiting for tokens used up part of the lease and a pause, a cancel, the operator's deactivation or its
        # switch to pull mode may have come meanwhile: renew the lease only while the run may still send and its
        # operator is active and pushed to, which checks them all in one statement.
        renewed = (
            DispatchBatch.objects.filter(
                pk=batch.pk, status=BatchStatus.IN_FLIGHT, run__status__in=SENDABLE_RUN_STATUSES, operator__active=True
            )
            .exclude(operator__adapter=PULL_ADAPTER)
            .update(lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds))
        )
        if not renewed:
            run_status = CampaignRun.objects.filter(pk=batch.run_id).values_list("status", flat=True).first()
            if run_status == RunStatus.CANCELLED:
                batch_cancel(batch=batch, now=timezone.now())
                return "cancelled"
            if not Operator.objects.filter(pk=batch.operator_id, active=True).exists():
                _release_for_inactive_operator(batch)
                return "operator_inactive"
            if Operator.objects.filter(pk=batch.operator_id, adapter=PULL_ADAPTER).exists():
                # It fetches its work now: the batch goes back unsent, to be listed for its claim.
                _release(batch, next_attempt_at=None, reason="pull", count_attempt=False)
                return "pull"
            _release(batch, next_attempt_at=None, reason="paused", count_attempt=False)
            return "paused"
        # An admin may have replaced the operator's base URL, key, secret or adapter meanwhile (a credential the
        # operator has since stopped taking would fail the batch for good): send it as the operator now stands.
        operator = Operator.objects.get(pk=batch.operator_id)
        outbound = replace(
            outbound,
            base_url=operator.base_url,
            api_key=operator.api_key,
            signing_secret=operator.signing_secret,
        )

    try:
        result = get_adapter(operator.adapter).send_batch(outbound)
    except Exception as exc:  # noqa: BLE001 - an adapter bug must not strand the batch in flight
        logger.exception("Adapter %s raised on batch %s", operator.adapter, batch.pk)
        # The exception's words stay in the log: they may hold the request (an API key in the Authorization header,
        # the recipients' numbers), and the batch's error reaches the delivery reasons and the audit trail.
        result = BatchResult(outcome=Outcome.RETRY, error=f"adapter error: {type(exc).__name__} (see the worker log)")
    if result.outcome == Outcome.ACCEPTED:
        # The batch as written may hold numbers withdrawn after opting out: the operator can take only those sent,
        # and none it refused in the same answer.
        most = len(outbound.recipients)
        if result.rejected and result.accepted > 0:
            most = _sent_not_refused({message_pk(m.message_id) for m in outbound.recipients}, result.rejected)
        if result.accepted > most:
            result = replace(result, accepted=most)
    return batch_record_result(batch_id=batch.pk, result=result, leased=batch).status_label


def _batch_fit_to_limit(batch: DispatchBatch, *, limit: int, batch_size: int, now: datetime) -> DispatchBatch:
    """Split a leased, never-sent batch that costs more than `limit` segments (0: no limit), or holds more than
    `batch_size` recipients, into batches that fit both.

    The batch keeps its id and its first recipients; the rest move, in message id order, to new pending
    batches of the same run, enqueued on the operator's queue. Only a batch on its first attempt is split:
    one tried before may be with the operator under its id already, and moving its recipients to another id
    would send them twice (invariant 3). That one, and a single message costing more than the limit, go
    alone as the limiter allows.

    A moved number that opted out after the lease is skipped: the opt-out left it to the leased batch, and
    the new batch goes out after the opt-out. The run is locked first, as deliveries_withdraw_opted_out locks
    it, so an opt-out under way either commits before the split reads the number (and the split skips it) or
    waits for the split and then withdraws the number from its new, never-sent batch.
    """
    per_message = max(1, batch.segments // max(1, batch.size))
    size = min(max(1, limit // per_message) if limit > 0 else batch.size, max(1, batch_size))
    if batch.attempts != 1 or batch.size <= size:
        return batch
    with transaction.atomic():
        # The run first, as an opt-out takes it: one under way finishes before the split reads its number.
        list(CampaignRun.objects.select_for_update(no_key=True).filter(pk=batch.run_id).values_list("pk", flat=True))
        # Our lease, on a batch never sent: nothing else moves its deliveries meanwhile.
        messages = list(Delivery.objects.filter(batch_id=batch.pk).order_by("pk").values_list("pk", flat=True))
        kept, rest = messages[:size], messages[size:]
        if not rest or not DispatchBatch.objects.filter(pk=batch.pk, status=BatchStatus.IN_FLIGHT, attempts=1).update(
            size=len(kept), segments=len(kept) * per_message, updated_at=now
        ):
            return batch
        parts = [rest[start : start + size] for start in range(0, len(rest), size)]
        batches = [
            DispatchBatch(
                run_id=batch.run_id,
                operator_id=batch.operator_id,
                size=len(part),
                segments=len(part) * per_message,
                created_at=now,
                updated_at=now,
            )
            for part in parts
        ]
        DispatchBatch.objects.bulk_create(batches)
        opted_out = Subscriber.objects.filter(msisdn=OuterRef("msisdn"), opted_out_at__isnull=False)
        skipped = (
            Delivery.objects.filter(batch_id=batch.pk, pk__gt=kept[-1], status=DeliveryStatus.QUEUED)
            .filter(Exists(opted_out))
            .update(status=DeliveryStatus.SKIPPED, reason="opted_out", done_at=now, updated_at=now)
        )
        for new, part in zip(batches, parts, strict=True):
            Delivery.objects.filter(pk__in=part).update(batch_id=new.pk)
        audit_record(
            actor=None,
            action="batch.split",
            obj=batch,
            details={
                "limit": limit,
                "batch_size": batch_size,
                "kept": len(kept),
                "moved": len(rest),
                "batches": len(batches),
                **({"opted_out": skipped} if skipped else {}),
            },
        )
        enqueue_on_commit(partial(_enqueue_batches, [(new.pk, batch.operator.queue) for new in batches]))
    batch.size, batch.segments = len(kept), len(kept) * per_message
    return batch


def _enqueue_batches(batches: list[tuple]) -> None:
    from campaigns.dispatch import batches_enqueue

    batches_enqueue(batches)


def _batch_lease_checked(batch_id, *, now: datetime, lease_seconds: int) -> DispatchBatch | str:
    """Read the batch, check what may hold it back and lease it; return it leased, or why it was not sent."""
    from campaigns.dispatch import is_quiet_for

    batch = DispatchBatch.objects.select_related("run", "run__campaign", "operator").filter(pk=batch_id).first()
    if batch is None:
        return "not_found"
    if batch.status in DispatchBatch.FINAL_STATUSES:
        return "final"
    run = batch.run
    if run.status == RunStatus.CANCELLED:
        # Nothing leases it again (a worker may still hold one in flight): an unsent batch ends here, a pulling
        # operator's too once its claim lapsed.
        batch_cancel(batch=batch, now=now, unsent_only=True)
        return "cancelled"
    if batch.operator.adapter == PULL_ADAPTER:
        return "pull"
    if run.status == RunStatus.PAUSED:
        # resume re-enqueues the batch.
        return "paused"
    if run.expires_at is not None and run.expires_at <= now:
        # Past the run's validity window the text is stale: the reconciler fails the batch instead of sending it.
        return "expired"
    quiet_until = is_quiet_for(run, now)
    if quiet_until is not None:
        # The reconciler re-enqueues it once next_attempt_at passes; no far-future task ETA. A wait that ends later
        # (an operator's Retry-After) stands.
        DispatchBatch.objects.filter(pk=batch.pk, status__in=[BatchStatus.PENDING, BatchStatus.RETRY_WAIT]).filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=quiet_until)
        ).update(next_attempt_at=quiet_until, updated_at=now)
        return "quiet"
    # A countdown task may fire a moment early; a duplicate task may fire long before.
    if batch.next_attempt_at is not None and batch.next_attempt_at > now + timedelta(seconds=1):
        return "not_due"

    with transaction.atomic():
        leased = DispatchBatch.objects.filter(
            pk=batch.pk,
            status__in=[BatchStatus.PENDING, BatchStatus.RETRY_WAIT],
            run__status__in=SENDABLE_RUN_STATUSES,
        ).update(
            status=BatchStatus.IN_FLIGHT,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=F("attempts") + 1,
            updated_at=now,
        )
        if not leased:
            return "not_leased"
        audit_record(
            actor=None,
            action="batch.lease",
            obj=batch,
            from_state=batch.status,
            to_state=BatchStatus.IN_FLIGHT,
            details={"attempt": batch.attempts + 1},
        )
    # We hold the lease, so nobody else changed these meanwhile.
    batch.status = BatchStatus.IN_FLIGHT
    batch.attempts += 1
    if not batch.operator.active:
        # An admin deactivated the operator after its batches were written: as in pull mode, it is handed no new
        # work. The batch waits, unsent and no attempt counted, until it is reactivated or the window passes.
        _release_for_inactive_operator(batch)
        return "operator_inactive"
    return batch


def _batch_lease_at_once(batch_id, *, now: datetime, lease_seconds: int) -> DispatchBatch | None:
    """Lease the batch in one statement when nothing may hold it back; return it, else None (PostgreSQL).

    The sending path's common case, once per batch: the batch is pending or due, its run is sending without
    quiet hours to respect (none set, or urgent), and its operator is active and pushed to. Then one UPDATE …
    FROM … RETURNING leases the batch and reads its operator and the run's progress time, where the checked path
    needs a joined read and an UPDATE. Anything else (paused, cancelled, past its validity window, quiet hours,
    a deactivated operator, a final or unknown batch, SQLite) returns None, and _batch_lease_checked reads,
    checks and says why.
    """
    if connection.vendor != "postgresql":
        return None
    batch_table = DispatchBatch._meta.db_table
    run_table = CampaignRun._meta.db_table
    operator_table = Operator._meta.db_table
    # Only table names are interpolated; every value is a bound parameter. The quiet-hours test errs towards
    # the checked path: a run it lets through is one is_quiet_for would never hold back.
    audit_table = AuditEvent._meta.db_table
    # The lease and its AuditEvent (invariant 6) in one statement: `prior` is the batch as it was, for the
    # event's from_state; nothing is inserted when the UPDATE matches no row.
    sql = (
        f"WITH leased AS (UPDATE {batch_table} AS b SET status = %s, lease_expires_at = %s, "  # noqa: S608
        f"attempts = b.attempts + 1, updated_at = %s FROM {run_table} AS r, {operator_table} AS o, "
        f"{batch_table} AS prior "
        "WHERE b.id = %s AND b.status IN (%s, %s) AND (b.next_attempt_at IS NULL OR b.next_attempt_at <= %s) "
        "AND r.id = b.run_id AND r.status IN (%s, %s) AND (r.expires_at IS NULL OR r.expires_at > %s) "
        "AND (COALESCE(r.frozen -> 'quiet_hours', 'null'::jsonb) = 'null'::jsonb OR r.frozen ->> 'priority' = %s) "
        "AND o.id = b.operator_id AND o.active AND o.adapter <> %s AND prior.id = b.id "
        "RETURNING b.*, prior.status AS prior_status, r.last_progress_at AS run_last_progress_at, "
        "o.slug AS operator_slug, o.adapter AS operator_adapter, o.base_url AS operator_base_url, "
        "o.api_key AS operator_api_key, o.signing_secret AS operator_signing_secret, "
        "o.segments_per_second AS operator_segments_per_second, o.batch_size AS operator_batch_size), "
        f"audited AS (INSERT INTO {audit_table} "
        "(actor_id, action, object_type, object_id, from_state, to_state, at, details) "
        "SELECT NULL, %s, %s, leased.id::text, leased.prior_status, leased.status, %s, "
        "jsonb_build_object('attempt', leased.attempts) FROM leased) "
        "SELECT * FROM leased"
    )
    params = [
        BatchStatus.IN_FLIGHT,
        now + timedelta(seconds=lease_seconds),
        now,
        batch_id,
        BatchStatus.PENDING,
        BatchStatus.RETRY_WAIT,
        # A countdown task may fire a moment early (as in the checked path).
        now + timedelta(seconds=1),
        *SENDABLE_RUN_STATUSES,
        now,
        Priority.URGENT,
        PULL_ADAPTER,
        "batch.lease",
        DispatchBatch._meta.label_lower,
        now,
    ]
    leased = list(DispatchBatch.objects.raw(sql, params))
    if not leased:
        return None
    (batch,) = leased
    batch.operator = Operator(
        id=batch.operator_id,
        slug=batch.operator_slug,
        adapter=batch.operator_adapter,
        base_url=batch.operator_base_url,
        # Read by raw SQL, so opened here rather than by the fields.
        api_key=sealing.unseal(batch.operator_api_key),
        signing_secret=sealing.unseal(batch.operator_signing_secret),
        segments_per_second=batch.operator_segments_per_second,
        batch_size=batch.operator_batch_size,
    )
    run = copy.copy(_run_content(batch.run_id))
    run.last_progress_at = batch.run_last_progress_at
    batch.run = run
    return batch


@functools.lru_cache(maxsize=64)
def _run_content(run_id: int) -> CampaignRun:
    """Return what a run sends (text, sender, frozen title and priority …), read once per process.

    These fields are frozen when the run starts. The changing ones (status, progress) are deferred, so
    reading one from this instance fetches it fresh instead of trusting a cached value.
    """
    return CampaignRun.objects.only(
        "campaign_id", "text", "sender", "encoding", "segments", "frozen", "expires_at"
    ).get(pk=run_id)


def batch_outbound(batch: DispatchBatch) -> OutboundBatch:
    """Build what the adapter sends: the frozen run content and the batch's recipients, in message id order."""
    run = batch.run
    operator = batch.operator
    recipients = [
        OutboundMessage(message_id=str(pk), msisdn=msisdn)
        for pk, msisdn in Delivery.objects.filter(batch_id=batch.pk)
        # A number that opted out before the batch was first sent is left out (deliveries_withdraw_opted_out).
        .exclude(status=DeliveryStatus.SKIPPED)
        .order_by("pk")
        .values_list("pk", "msisdn")
    ]
    return OutboundBatch(
        batch_id=str(batch.pk),
        campaign_id=run.campaign_id,
        campaign_title=(run.frozen or {}).get("title") or run.campaign.title,
        sender=run.sender,
        text=run.text,
        encoding=run.encoding,
        segments=run.segments,
        priority=(run.frozen or {}).get("priority", "normal"),
        expires_at=run.expires_at.isoformat() if run.expires_at else "",
        callback_url=f"{settings.PUBLIC_BASE_URL.rstrip('/')}/api/v1/operator/delivery-reports/",
        recipients=recipients,
        base_url=operator.base_url,
        api_key=operator.api_key,
        signing_secret=operator.signing_secret,
    )


def _release(batch: DispatchBatch, *, next_attempt_at: datetime | None, reason: str, count_attempt: bool) -> None:
    """Give a leased batch back (in_flight → pending) without sending it."""
    updates = {"status": BatchStatus.PENDING, "lease_expires_at": None, "next_attempt_at": next_attempt_at}
    if not count_attempt:
        updates["attempts"] = F("attempts") - 1
    with transaction.atomic():
        released = DispatchBatch.objects.filter(pk=batch.pk, status=BatchStatus.IN_FLIGHT).update(
            updated_at=timezone.now(), **updates
        )
        if released:
            audit_record(
                actor=None,
                action="batch.release",
                obj=batch,
                from_state=BatchStatus.IN_FLIGHT,
                to_state=BatchStatus.PENDING,
                details={"reason": reason, **({"until": next_attempt_at.isoformat()} if next_attempt_at else {})},
            )
    if reason in ("throttled", "limiter_unavailable", "operator_inactive"):
        countdown = (next_attempt_at - timezone.now()).total_seconds()
        enqueue_on_commit(partial(_enqueue_send, batch.pk, batch.operator.queue, countdown))


def _release_for_inactive_operator(batch: DispatchBatch) -> None:
    """Give a leased batch of a deactivated operator back unsent, to be tried again shortly."""
    retry_at = timezone.now() + timedelta(seconds=INACTIVE_OPERATOR_RETRY_SECONDS)
    _release(batch, next_attempt_at=retry_at, reason="operator_inactive", count_attempt=False)


@dataclass
class BatchOutcome:
    status: str
    status_label: str
    retry_in: float | None = None
    rejected: list = field(default_factory=list)


def batch_record_result(
    *,
    batch_id,
    result: BatchResult,
    now: datetime | None = None,
    leased: DispatchBatch | None = None,
    actor: User | None = None,
) -> BatchOutcome:
    """Record the adapter's answer for a leased batch and return the outcome.

    ACCEPTED: the batch is accepted and the refused message ids become `rejected` deliveries. RETRY: the
    batch waits (same id) with exponential backoff and full jitter, honouring Retry-After, and is
    re-enqueued, unless the retry budget is spent (a 429 spends none; it is counted in `throttled`). FAILED,
    or RETRY past the budget: the batch fails for good and its deliveries fail with the reason, which the
    batch keeps in `last_error`. `leased` is the batch as its lease holder knows it (with run and operator),
    which saves reading it again. `actor` is who gave the answer when it is not the system's own push: a
    pulling operator's user acknowledging its batch.
    """
    now = now or timezone.now()
    batch = leased or DispatchBatch.objects.select_related("operator", "run").get(pk=batch_id)
    if result.outcome == Outcome.ACCEPTED and not 0 <= result.accepted <= batch.size:
        # The operator's count is its own word: keep it within the batch, so a count no batch can have
        # (negative, or past the column's range) still records the batch as accepted.
        result = replace(result, accepted=min(max(result.accepted, 0), batch.size))
    if (
        result.outcome == Outcome.ACCEPTED
        and not result.rejected
        and connection.vendor == "postgresql"
        and not _run_progress_due(batch, now)
    ):
        # The common answer, recorded in one statement (see _batch_accept_audited).
        if not _batch_accept_audited(batch, accepted=result.accepted, now=now, actor=actor):
            return BatchOutcome(batch.status, "final")
        return BatchOutcome(BatchStatus.ACCEPTED, "accepted", rejected=result.rejected)
    with transaction.atomic():
        return _batch_record_result(batch, result, now, actor=actor)


def _batch_record_result(
    batch: DispatchBatch, result: BatchResult, now: datetime, *, actor: User | None = None
) -> BatchOutcome:
    from_state = batch.status
    if result.outcome == Outcome.ACCEPTED:
        # The operator took it: true even if our lease lapsed meanwhile and the batch went back to pending, which
        # is then the state its audit event starts from.
        unsent = [BatchStatus.IN_FLIGHT, BatchStatus.PENDING, BatchStatus.RETRY_WAIT]
        current = (
            DispatchBatch.objects.select_for_update(of=("self",))
            .filter(pk=batch.pk, status__in=unsent)
            .values_list("status", flat=True)
            .first()
        )
        if current is None:
            return BatchOutcome(batch.status, "final")
        from_state = current
        rows = DispatchBatch.objects.filter(pk=batch.pk, status__in=unsent).update(
            status=BatchStatus.ACCEPTED,
            accepted_count=result.accepted,
            accepted_at=now,
            lease_expires_at=None,
            next_attempt_at=None,
            last_error="",
            updated_at=now,
        )
        if not rows:
            return BatchOutcome(batch.status, "final")
        rejected = _deliveries_reject(batch, result.rejected, now) if result.rejected else 0
        _run_progressed(batch, now)
        audit_record(
            actor=actor,
            action="batch.accept",
            obj=batch,
            from_state=from_state,
            to_state=BatchStatus.ACCEPTED,
            details={"accepted": result.accepted, "rejected": rejected, "attempts": batch.attempts},
        )
        if rejected:
            enqueue_on_commit(partial(_enqueue_check_complete, batch.run_id))
        return BatchOutcome(BatchStatus.ACCEPTED, "accepted", rejected=result.rejected)

    if not DispatchBatch.objects.filter(pk=batch.pk, status=BatchStatus.IN_FLIGHT).exists():
        # Our lease was re-driven by the reconciler; the new holder records its own answer.
        return BatchOutcome(batch.status, "not_leased")
    if CampaignRun.objects.filter(pk=batch.run_id, status=RunStatus.CANCELLED).exists():
        batch_cancel(batch=batch, now=now)
        return BatchOutcome(BatchStatus.CANCELLED, "cancelled")
    error = _error_text(result)
    # A 429 asks us to slow down: it spends no retry budget while the run's validity window bounds the retries.
    throttled = result.outcome == Outcome.RETRY and result.status_code == 429 and batch.run.expires_at is not None
    if result.outcome == Outcome.RETRY and (throttled or batch.attempts - batch.throttled < MAX_ATTEMPTS):
        # The wait still grows with every attempt, throttled ones too, up to the cap.
        delay = backoff_seconds(batch.attempts, retry_after=result.retry_after)
        if not DispatchBatch.objects.filter(pk=batch.pk, status=BatchStatus.IN_FLIGHT).update(
            status=BatchStatus.RETRY_WAIT,
            next_attempt_at=now + timedelta(seconds=delay),
            lease_expires_at=None,
            last_error=error,
            updated_at=now,
            **({"throttled": F("throttled") + 1} if throttled else {}),
        ):
            # Another worker's answer came first (the batch was re-leased after our lease lapsed).
            return BatchOutcome(batch.status, "not_leased")
        if throttled:
            batch.throttled += 1
        audit_record(
            actor=None,
            action="batch.retry",
            obj=batch,
            from_state=from_state,
            to_state=BatchStatus.RETRY_WAIT,
            details={
                "error": error,
                "attempts": batch.attempts,
                **({"throttled": batch.throttled} if batch.throttled else {}),
                "retry_in": round(delay, 3),
            },
        )
        enqueue_on_commit(partial(_enqueue_send, batch.pk, batch.operator.queue, delay))
        return BatchOutcome(BatchStatus.RETRY_WAIT, "retry", retry_in=delay)

    if result.outcome == Outcome.RETRY:
        also = f" (and {batch.throttled} answered 429)" if batch.throttled else ""
        error = f"Gave up after {batch.attempts - batch.throttled} attempts{also}; last error: {error}"
    batch_fail(batch=batch, reason=error, now=now, from_state=from_state)
    return BatchOutcome(BatchStatus.FAILED, "failed")


def batch_fail(*, batch: DispatchBatch, reason: str, now: datetime, from_state: str) -> None:
    """Fail the batch for good: keep the reason and fail its deliveries that have no outcome yet.

    A batch that is final already stays as it is: a worker whose lease lapsed may answer after the one that
    re-leased it got the batch accepted.
    """
    if (
        not DispatchBatch.objects.filter(pk=batch.pk)
        .exclude(status__in=DispatchBatch.FINAL_STATUSES)
        .update(status=BatchStatus.FAILED, lease_expires_at=None, last_error=reason, updated_at=now)
    ):
        return
    failed = Delivery.objects.filter(batch_id=batch.pk, status=DeliveryStatus.QUEUED).update(
        status=DeliveryStatus.FAILED, reason=reason[:200], updated_at=now
    )
    _run_progressed(batch, now)
    audit_record(
        actor=None,
        action="batch.fail",
        obj=batch,
        from_state=from_state,
        to_state=BatchStatus.FAILED,
        details={"error": reason, "attempts": batch.attempts, "deliveries_failed": failed},
    )
    enqueue_on_commit(partial(_enqueue_check_complete, batch.run_id))


@transaction.atomic
def batch_cancel(*, batch: DispatchBatch, now: datetime, unsent_only: bool = False) -> None:
    """Cancel a batch of a cancelled run that was not accepted; its queued deliveries are cancelled.

    `unsent_only` leaves a batch in flight alone: its lease holder records the operator's answer.
    """
    from_state = batch.status
    batches = DispatchBatch.objects.filter(pk=batch.pk)
    if unsent_only:
        batches = batches.filter(status__in=[BatchStatus.PENDING, BatchStatus.RETRY_WAIT])
    rows = batches.exclude(status__in=DispatchBatch.FINAL_STATUSES).update(
        status=BatchStatus.CANCELLED,
        lease_expires_at=None,
        last_error="The campaign was cancelled.",
        updated_at=now,
    )
    if not rows:
        return
    Delivery.objects.filter(batch_id=batch.pk, status=DeliveryStatus.QUEUED).update(
        status=DeliveryStatus.CANCELLED, reason="campaign_cancelled", updated_at=now
    )
    audit_record(actor=None, action="batch.cancel", obj=batch, from_state=from_state, to_state=BatchStatus.CANCELLED)


def _batch_accept_audited(batch: DispatchBatch, *, accepted: int, now: datetime, actor: User | None = None) -> bool:
    """Accept the batch and write its AuditEvent in one statement (PostgreSQL); return whether it moved.

    Raw SQL because this is once per batch on the sending path: a data-modifying CTE is atomic on its own,
    so the state change and its audit row (invariant 6) commit together in one round trip, where the ORM
    needs four (BEGIN, UPDATE, INSERT, COMMIT). The conditions are those of the ORM path in
    _batch_record_result; nothing is inserted when the UPDATE matches no row.
    """
    batch_table = DispatchBatch._meta.db_table
    audit_table = AuditEvent._meta.db_table
    # Only table names are interpolated; every value is a bound parameter.
    # `prior` is the batch as it was, for the event's from_state: pending when the lease lapsed meanwhile. Locked,
    # so a change committed while this waited for the row (the reconciler taking the lease back) is what it reads.
    sql = (
        f"WITH prior AS (SELECT id, status FROM {batch_table} WHERE id = %s FOR UPDATE), "  # noqa: S608
        f"accepted AS (UPDATE {batch_table} AS b SET status = %s, accepted_count = %s, accepted_at = %s, "
        "lease_expires_at = NULL, next_attempt_at = NULL, last_error = '', updated_at = %s "
        "FROM prior WHERE b.id = prior.id AND prior.status IN (%s, %s, %s) "
        "RETURNING prior.status AS prior_status) "
        f"INSERT INTO {audit_table} (actor_id, action, object_type, object_id, from_state, to_state, at, details) "
        "SELECT %s, %s, %s, %s, accepted.prior_status, %s, %s, %s::jsonb FROM accepted"
    )
    details = {"accepted": accepted, "rejected": 0, "attempts": batch.attempts}
    params = [
        batch.pk,
        BatchStatus.ACCEPTED,
        accepted,
        now,
        now,
        BatchStatus.IN_FLIGHT,
        BatchStatus.PENDING,
        BatchStatus.RETRY_WAIT,
        actor.pk if actor is not None else None,
        "batch.accept",
        DispatchBatch._meta.label_lower,
        str(batch.pk),
        BatchStatus.ACCEPTED,
        now,
        json.dumps(details),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


def _run_progress_due(batch: DispatchBatch, now: datetime) -> bool:
    """Return whether the batch's run may need its progress time moved (see _run_progressed)."""
    known = batch.run.last_progress_at if "run" in batch._state.fields_cache else None
    return known is None or known <= now - timedelta(seconds=5)


def _run_progressed(batch: DispatchBatch, now: datetime) -> None:
    """Note progress on the batch's run, at most every few seconds: every batch would contend for its row.

    After the commit (see runs_mark_progress_on_commit): a cancel takes the run before the batches.
    """
    if _run_progress_due(batch, now):
        runs_mark_progress_on_commit([batch.run_id], now, every=timedelta(seconds=5))


def _sent_not_refused(sent: set[int | None], rejected: list[tuple[str, str]]) -> int:
    """Return how many of the sent message ids an answer does not refuse: the most it can have accepted."""
    return len(sent - {message_pk(message_id) for message_id, _reason in rejected})


def _deliveries_reject(batch: DispatchBatch, rejected: list[tuple[str, str]], now: datetime) -> int:
    """Mark the messages the operator refused inside an accepted batch; return how many changed."""
    by_reason: dict[str, list[int]] = {}
    for message_id, reason in rejected:
        pk = message_pk(message_id)
        if pk is not None:
            by_reason.setdefault(operator_text(reason)[:200] or "rejected", []).append(pk)
    # Locked in id order first, as a report request takes its messages: updated reason by reason, they would be
    # taken in the answer's order, and a report on the same messages arriving meanwhile would deadlock with this.
    refused = sorted({pk for ids in by_reason.values() for pk in ids})
    list(
        Delivery.objects.select_for_update(no_key=True)
        .filter(batch_id=batch.pk, pk__in=refused)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    changed = 0
    for reason, ids in by_reason.items():
        changed += Delivery.objects.filter(
            batch_id=batch.pk, pk__in=ids, status__in=[DeliveryStatus.QUEUED, DeliveryStatus.SUBMITTED]
        ).update(status=DeliveryStatus.REJECTED, reason=reason, done_at=now, updated_at=now)
    return changed


def _error_text(result: BatchResult) -> str:
    """Return the reason a batch keeps: the operator's status once, then its words (the HTTP adapter's carry it)."""
    code = f"HTTP {result.status_code}: " if result.status_code else ""
    error = operator_text(result.error) or result.outcome.value
    return (error if code and error.startswith(code) else code + error)[:1000]


def _enqueue_send(batch_id, queue: str, countdown: float) -> None:
    """Enqueue send_batch after `countdown` seconds, or leave a longer wait to the reconciler."""
    from operators.tasks import send_batch

    if countdown > SEND_COUNTDOWN_MAX_SECONDS:
        # Its next_attempt_at stays as the operator asked; the reconciler re-drives it once that has passed.
        return
    send_batch.apply_async((str(batch_id),), queue=queue, countdown=max(0.0, countdown))


def _enqueue_check_complete(run_id: int) -> None:
    from campaigns.dispatch import run_check_complete_enqueue

    run_check_complete_enqueue(run_id)


# --- delivery reports ------------------------------------------------------------------------


class ReportsInvalid(ValueError):
    """A malformed delivery-report request; the message says which report and why; `field` names it."""

    def __init__(self, message: str, field: str = "reports"):
        super().__init__(message)
        self.field = field


def _report_refused(field: str, reason: str) -> ReportsInvalid:
    """Return the refusal of one report's `field` ("reports[3].status"), its message starting with the field."""
    return ReportsInvalid(f"{field} {reason}", field)


@dataclass(frozen=True)
class ReportsOutcome:
    applied: int
    unchanged: int
    rejected: list[dict]

    def as_dict(self) -> dict:
        return {"applied": self.applied, "unchanged": self.unchanged, "rejected": self.rejected}


@dataclass(frozen=True)
class _Report:
    message_id: int
    status: str
    operator_ref: str
    error_code: str
    done_at: datetime | None


def message_pk(message_id) -> int | None:
    """Return the delivery id an operator's message id names, or None when it cannot name one of ours."""
    text = str(message_id)
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_MESSAGE_ID)):
        return None
    pk = int(text)
    return pk if pk <= MAX_MESSAGE_ID else None


def delivery_reports_parse(payload) -> list:
    """Validate a delivery-report request body; return its reports or raise ReportsInvalid."""
    if not isinstance(payload, dict) or not isinstance(payload.get("reports"), list):
        raise ReportsInvalid('Send {"reports": [...]}.')
    reports = payload["reports"]
    if len(reports) > MAX_REPORTS:
        raise ReportsInvalid(f"At most {MAX_REPORTS} reports a request; this one has {len(reports)}.")
    parsed = []
    for index, item in enumerate(reports):
        if not isinstance(item, dict):
            raise _report_refused(f"reports[{index}]", "must be an object.")
        status = str(item.get("status", "")).upper()
        if status not in REPORT_STATUSES:
            raise _report_refused(f"reports[{index}].status", f"must be one of: {', '.join(REPORT_STATUSES)}.")
        message_id = item.get("message_id")
        if message_id is None or str(message_id) == "":
            raise _report_refused(f"reports[{index}].message_id", "is required.")
        # Text or numbers only: a list or an object would be kept as Python writes it ("['T-1']").
        for name in ("message_id", "operator_ref", "error_code"):
            if isinstance(item.get(name), list | dict | bool):
                raise _report_refused(f"reports[{index}].{name}", "must be a string.")
        if not _is_text(str(message_id)):
            raise _report_refused(f"reports[{index}].message_id", "must not contain lone surrogate characters.")
        done_at = item.get("done_at")
        if done_at not in (None, ""):
            done_at = _aware_time(done_at)
            if done_at is None:
                raise _report_refused(f"reports[{index}].done_at", "must be an ISO 8601 time with an offset.")
        else:
            done_at = None
        operator_ref, error_code = str(item.get("operator_ref") or "")[:100], str(item.get("error_code") or "")[:40]
        for name, value in (("operator_ref", operator_ref), ("error_code", error_code)):
            if "\x00" in value or not _is_text(value):
                raise _report_refused(f"reports[{index}].{name}", "must not contain NUL or lone surrogate characters.")
        parsed.append((str(message_id), status, operator_ref, error_code, done_at))
    return parsed


def _is_text(value: str) -> bool:
    """Return whether UTF-8 can carry `value`.

    A JSON escape such as \\ud800 decodes to a lone surrogate, which no database column or answer can hold.
    """
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _aware_time(value) -> datetime | None:
    """Return an ISO 8601 time with an offset as an aware datetime, or None if it is not one (or out of range)."""
    try:
        moment = parse_datetime(value) if isinstance(value, str) else None
        # A time whose UTC equivalent falls outside years 1-9999 cannot be stored.
        return moment.astimezone(UTC) if moment is not None and not timezone.is_naive(moment) else None
    except (ValueError, OverflowError):
        return None


def runs_mark_progress_on_commit(run_ids, now: datetime, *, every: timedelta = timedelta(0)) -> None:
    """Move the runs' progress mark to `now` once the current transaction has committed.

    With `every`, only a mark older than that moves: a row many writers would otherwise all update.

    Outside the transaction on purpose: a report holds its message rows until it commits, and a cancel or a
    window's end takes the run before those rows. Updating the run inside would take the two the other
    way round, and the two transactions would deadlock.
    """
    run_ids = sorted(set(run_ids))

    def mark() -> None:
        # One run per statement: a statement marking several would hold one while waiting for the next, and a
        # cancel or pause takes a campaign's runs in its own order.
        for run_id in run_ids:
            CampaignRun.objects.filter(pk=run_id).filter(
                Q(last_progress_at__isnull=True) | Q(last_progress_at__lt=now - every)
            ).update(last_progress_at=now)

    transaction.on_commit(mark)


def delivery_reports_apply(*, operator: Operator, reports: list, now: datetime | None = None) -> ReportsOutcome:
    """Apply validated reports of one operator in bulk; return applied, unchanged and rejected counts.

    Only the operator's own messages are touched; others (and unknown ids) come back as rejected. Each
    delivery moves only forward (queued → submitted → a final status) and a final status never changes, so
    repeating a request changes nothing. One UPDATE per chunk sets each row's own status, reference,
    error code and time.
    """
    now = now or timezone.now()
    rejected: list[dict] = []
    wanted: dict[int, _Report] = {}
    # Each id as the operator wrote it ("0000321" names 321): a refusal names what was sent, not our spelling.
    sent_as: dict[int, list[str]] = {}
    for message_id, status, operator_ref, error_code, done_at in reports:
        pk = message_pk(message_id)
        if pk is None:
            rejected.append({"message_id": message_id, "reason": "unknown_message"})
            continue
        spellings = sent_as.setdefault(pk, [])
        if message_id not in spellings:
            spellings.append(message_id)
        # Several reports of a message in one request end as if they had arrived one after another: the first
        # final status wins, and submitted only counts while no final one came.
        earlier = wanted.get(pk)
        if earlier is None:
            wanted[pk] = _Report(pk, status, operator_ref, error_code, done_at)
        elif earlier.status == "SUBMITTED" and status != "SUBMITTED":
            operator_ref, error_code = operator_ref or earlier.operator_ref, error_code or earlier.error_code
            wanted[pk] = _Report(pk, status, operator_ref, error_code, done_at)

    # In id order, whatever the request's order: two requests naming the same messages then lock their rows
    # in the same order and one waits for the other instead of deadlocking.
    ids = sorted(wanted)
    owned, unsent = _owned_messages(operator, ids)  # message id → run id; the operator's, never handed to it
    for message_id in ids:
        if message_id not in owned:
            reason = "not_sent" if message_id in unsent else "unknown_message"
            rejected.extend({"message_id": sent, "reason": reason} for sent in sent_as[message_id])

    applied = 0
    mine = [wanted[message_id] for message_id in ids if message_id in owned]
    with transaction.atomic():
        for start in range(0, len(mine), REPORT_CHUNK):
            applied += _reports_update(operator, mine[start : start + REPORT_CHUNK], now)
        run_ids = sorted(set(owned.values()))
        if applied:
            runs_mark_progress_on_commit(run_ids, now)
            audit_record(
                actor=operator.user,
                action="delivery.report",
                obj=operator,
                details={"applied": applied, "unchanged": len(mine) - applied, "runs": run_ids[:20]},
            )
            for run_id in run_ids:
                enqueue_on_commit(partial(_enqueue_check_complete, run_id))
    return ReportsOutcome(applied=applied, unchanged=len(mine) - applied, rejected=rejected)


def _owned_messages(operator: Operator, ids: list[int]) -> tuple[dict[int, int], set[int]]:
    """Return {message id: run id} of those of `ids` that are the operator's deliveries handed to it, and the ids
    of the operator's deliveries never handed to it.

    A message is handed over once its batch was posted or claimed (attempts counts that; a lease given back unsent
    takes its attempt back). A report on one still waiting (quiet hours, a pause, the rate limit), skipped or moved
    to a batch not sent yet names a message the operator cannot have: applied, it would show the message delivered
    and count it as sent, and cost, even if the batch is then cancelled, fails or leaves out a number that opted out.
    """
    rows: list[tuple[int, int, bool]] = []
    if connection.vendor == "postgresql":
        # One array parameter: ten thousand placeholders would cost more to render than the query to run.
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT d.id, d.run_id, COALESCE(b.attempts, 0) > 0 FROM {Delivery._meta.db_table} AS d "  # noqa: S608
                f"LEFT JOIN {DispatchBatch._meta.db_table} AS b ON b.id = d.batch_id "
                "WHERE d.id = ANY(%s) AND d.operator_id = %s",
                [ids, operator.pk],
            )
            rows = cursor.fetchall()
    else:
        for start in range(0, len(ids), REPORT_CHUNK):
            chunk = ids[start : start + REPORT_CHUNK]
            rows.extend(
                Delivery.objects.filter(pk__in=chunk, operator=operator)
                .annotate(handed_over=Q(batch__attempts__gt=0))
                .values_list("pk", "run_id", "handed_over")
            )
    owned = {message_id: run_id for message_id, run_id, handed_over in rows if handed_over}
    return owned, {message_id for message_id, _run_id, handed_over in rows if not handed_over}


def _reports_update(operator: Operator, reports: list[_Report], now: datetime) -> int:
    """Apply reports in one UPDATE … FROM a list of rows; return the rows that moved forward.

    Raw SQL because each row gets its own status, reference, code and time in a single statement: a Django
    update per status cannot carry per-row values, and row-by-row saves are an order of magnitude slower.
    PostgreSQL takes the rows as five arrays (unnest); SQLite as a VALUES list of bound parameters.
    """
    table = Delivery._meta.db_table
    run_table = CampaignRun._meta.db_table
    # Raw SQL skips field adaptation: store times as the backend expects (SQLite: naive UTC text).
    adapt = connection.ops.adapt_datetimefield_value
    columns = [[], [], [], [], []]
    for report in reports:
        target, _ = REPORT_STATUSES[report.status]
        # Nothing was done after its report arrived: a time past that is an operator's clock, not a delivery.
        done_at = min(report.done_at, now) if report.done_at else now
        for column, value in zip(
            columns,
            (report.message_id, target, report.operator_ref, report.error_code, adapt(done_at)),
            strict=True,
        ):
            column.append(value)
    if connection.vendor == "postgresql":
        reports_table = (
            "(SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::timestamptz[]) "
            "AS r (message_id, status, operator_ref, error_code, done_at)) AS reports"
        )
        row_params = columns
    else:
        # SQLite names VALUES columns column1…; a CTE would hide the row count from its driver.
        values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(reports))
        reports_table = (
            "(SELECT column1 AS message_id, column2 AS status, column3 AS operator_ref, column4 AS error_code, "  # noqa: S608
            f"column5 AS done_at FROM (VALUES {values})) AS reports"
        )
        row_params = [value for row in zip(*columns, strict=True) for value in row]
    # Only the table name and placeholders are interpolated; every value is a bound parameter.
    sql = (
        f"UPDATE {table} SET status = reports.status, "  # noqa: S608
        # A cancelled message's reason goes with the cancel: the report is what became of the message.
        f"reason = CASE WHEN {table}.status = %s THEN '' ELSE {table}.reason END, "
        # A report without a reference or code keeps the one an earlier report gave (submitted, then final).
        f"operator_ref = COALESCE(NULLIF(reports.operator_ref, ''), {table}.operator_ref), "
        f"error_code = COALESCE(NULLIF(reports.error_code, ''), {table}.error_code), "
        # Nor was anything done before its run started: an earlier time (year 1, 1970) is a clock, not a delivery.
        "done_at = CASE WHEN reports.done_at < runs.started_at THEN runs.started_at ELSE reports.done_at END, "
        "updated_at = %s "
        f"FROM {reports_table}, {run_table} AS runs WHERE {table}.id = reports.message_id "
        f"AND runs.id = {table}.run_id AND {table}.operator_id = %s "
        f"AND ({table}.status IN (%s, %s) OR ({table}.status = %s AND reports.status <> %s))"
    )
    # Cancelled, too: only messages handed over reach here, and a cancel ends a batch whose send went unanswered
    # (a timeout, a lapsed claim), which the operator may have delivered; its report says what became of it.
    params = [
        DeliveryStatus.CANCELLED,  # the reason's CASE
        adapt(now),
        *row_params,
        operator.pk,
        DeliveryStatus.QUEUED,
        DeliveryStatus.CANCELLED,
        DeliveryStatus.SUBMITTED,
        DeliveryStatus.SUBMITTED,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


# --- pull mode -------------------------------------------------------------------------------


def _run_still_valid(now: datetime) -> Q:
    """Match batches whose run's validity window is still open: past it the reconciler fails them."""
    return Q(run__expires_at__isnull=True) | Q(run__expires_at__gt=now)


def batches_ready_for(*, operator: Operator):
    """Return the operator's batches that may be claimed now (pending or due for retry, run sending, not quiet)."""
    from campaigns.dispatch import is_quiet_for

    now = timezone.now()
    # As the push path does, a normal run's batches wait out its quiet hours; few runs are sending at a time.
    quiet_runs = [
        run.pk
        for run in CampaignRun.objects.filter(status__in=SENDABLE_RUN_STATUSES).only("frozen")
        if is_quiet_for(run, now) is not None
    ]
    return (
        DispatchBatch.objects.filter(
            operator=operator,
            status__in=[BatchStatus.PENDING, BatchStatus.RETRY_WAIT],
            run__status__in=SENDABLE_RUN_STATUSES,
        )
        .filter(_run_still_valid(now))
        .exclude(run_id__in=quiet_runs)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .select_related("run", "run__campaign", "operator")
        # The id breaks ties: a fan-out chunk writes many batches in one instant, and rows the order leaves tied
        # may come back in another order on each page, repeating some batches and never listing others.
        .order_by("created_at", "pk")
    )


@transaction.atomic
def batch_claim(*, operator: Operator, batch_id) -> OutboundBatch:
    """Lease a ready batch to a pulling operator and return its content; raise LookupError if not claimable.

    Claiming again a batch the operator's claim still holds returns the same content under the same lease.
    """
    from campaigns.dispatch import is_quiet_for

    now = timezone.now()
    run = (
        CampaignRun.objects.filter(batches__pk=batch_id, batches__operator=operator)
        .only("frozen", "status", "expires_at")
        .first()
    )
    # Locked first, so the audit event names the state the claim moved the batch from.
    prior = (
        DispatchBatch.objects.select_for_update(of=("self",))
        .filter(pk=batch_id, operator=operator)
        .values_list("status", flat=True)
        .first()
    )
    if prior == BatchStatus.IN_FLIGHT:
        # A claim taken before quiet hours began is answered again in them: the operator holds the batch already.
        held = _batch_claim_held(operator=operator, batch_id=batch_id, now=now)
        if held is not None:
            return held
    quiet_until = is_quiet_for(run, now) if run is not None and run.status in SENDABLE_RUN_STATUSES else None
    if quiet_until is not None:
        raise LookupError(f"This batch waits for its campaign's quiet hours, which end at {quiet_until.isoformat()}.")
    rows = (
        DispatchBatch.objects.filter(
            pk=batch_id,
            operator=operator,
            status__in=[BatchStatus.PENDING, BatchStatus.RETRY_WAIT],
            run__status__in=SENDABLE_RUN_STATUSES,
        )
        .filter(_run_still_valid(now))
        .update(
            status=BatchStatus.IN_FLIGHT,
            lease_expires_at=now + timedelta(seconds=settings.DISPATCH_LEASE_SECONDS),
            attempts=F("attempts") + 1,
            updated_at=now,
        )
    )
    if not rows:
        raise LookupError(_claim_refusal(prior, run, now))
    batch = DispatchBatch.objects.select_related("run", "run__campaign", "operator").get(pk=batch_id)
    audit_record(actor=operator.user, action="batch.claim", obj=batch, from_state=prior, to_state=BatchStatus.IN_FLIGHT)
    return batch_outbound(batch)


def _claim_refusal(status: str | None, run: CampaignRun | None, now: datetime) -> str:
    """Return why the caller's batch in `status` of `run` cannot be claimed; an unknown or another's says no more."""
    if status is None or run is None:
        return "This batch is not ready to be claimed."
    if status in DispatchBatch.FINAL_STATUSES:
        return f"This batch is {status}: it is not handed out again."
    if run.status == RunStatus.PAUSED:
        return "This batch's campaign is paused: the batch is listed again when it resumes."
    if run.status not in SENDABLE_RUN_STATUSES:
        return f"This batch's campaign is {run.status}: the batch is not handed out."
    if run.expires_at is not None and run.expires_at <= now:
        return "This batch is past its campaign's validity window: it is not handed out."
    if status == BatchStatus.IN_FLIGHT:
        return "This batch's claim lapsed (or a worker holds it): it is listed again shortly, under the same batch_id."
    return "This batch is not ready to be claimed."


def _batch_claim_held(*, operator: Operator, batch_id, now: datetime) -> OutboundBatch | None:
    """Return the batch's content again if the operator's own claim on it still holds, else None.

    A client whose claim answer was lost claims again: it gets the same batch under the same lease. The lease is
    not renewed, so claiming again and again cannot keep a batch from the reconciler, and nothing is written:
    nothing changed (invariant 6). A run no longer sending or past its validity window hands nothing out, as a
    first claim would not.
    """
    batch = (
        DispatchBatch.objects.select_related("run", "run__campaign", "operator")
        .filter(
            pk=batch_id,
            operator=operator,
            status=BatchStatus.IN_FLIGHT,
            lease_expires_at__gt=now,
            run__status__in=SENDABLE_RUN_STATUSES,
        )
        .filter(_run_still_valid(now))
        .first()
    )
    if batch is None:
        return None
    # The batch's latest lease must be this operator's claim: one a push worker took (before the operator turned
    # to pull) is the worker's to send.
    latest_lease = (
        AuditEvent.objects.filter(
            object_type=DispatchBatch._meta.label_lower, object_id=str(batch.pk), to_state=BatchStatus.IN_FLIGHT
        )
        .order_by("-id")
        .values_list("action", "actor_id")
        .first()
    )
    if latest_lease != ("batch.claim", operator.user_id):
        return None
    return batch_outbound(batch)


def _ack_refused(batch: DispatchBatch) -> LookupError:
    """Return the refusal of an ack of a batch that ended unaccepted: failed or cancelled, with why."""
    return LookupError(f"This batch is {batch.status} and takes no acknowledgement: {batch.last_error}".strip())


def batch_ack(*, operator: Operator, batch_id, accepted: int | None, rejected: list) -> BatchOutcome:
    """Record a pulling operator's acknowledgement of a claimed batch (in_flight → accepted)."""
    batch = DispatchBatch.objects.filter(pk=batch_id, operator=operator).first()
    if batch is None:
        raise LookupError("No such batch.")
    if batch.status == BatchStatus.ACCEPTED:
        return BatchOutcome(batch.status, "accepted")
    # A claim whose lease lapsed went back to pending, but the operator may well have sent it: its late ack
    # still counts, as a late answer to a push does. A batch never claimed has nothing to acknowledge.
    claimed_before = batch.status in (BatchStatus.PENDING, BatchStatus.RETRY_WAIT) and batch.attempts > 0
    if batch.status in DispatchBatch.FINAL_STATUSES:
        # Failed past its run's validity window, or cancelled with its campaign, after (or without) a claim.
        raise _ack_refused(batch)
    if batch.status != BatchStatus.IN_FLIGHT and not claimed_before:
        raise LookupError("Claim the batch before acknowledging it.")
    # What the claim handed over: the batch's messages but those withdrawn when their number opted out before the
    # first claim (deliveries_withdraw_opted_out leaves a batch claimed before alone, so this is what was handed).
    handed = set(
        Delivery.objects.filter(batch_id=batch.pk).exclude(status=DeliveryStatus.SKIPPED).values_list("pk", flat=True)
    )
    if accepted is not None and accepted > len(handed):
        raise ServiceInvalid(
            f"accepted must be at most the {len(handed)} recipients the batch handed over.", {"accepted": "too many"}
        )
    not_refused = _sent_not_refused(handed, [(item.get("message_id"), "") for item in rejected])
    if accepted is not None and accepted > not_refused:
        raise ServiceInvalid(
            f"accepted must be at most the {not_refused} recipients handed over that it does not refuse.",
            {"accepted": "too many"},
        )
    if accepted is None:
        # Without a count, the messages handed over that it did not refuse (each refusal counted once).
        accepted = not_refused
    result = BatchResult(
        outcome=Outcome.ACCEPTED,
        accepted=accepted,
        # A null reason is no reason: the message is recorded "rejected", as without one, not "None".
        rejected=[(str(item.get("message_id")), str(item.get("reason") or "")) for item in rejected],
    )
    outcome = batch_record_result(batch_id=batch.pk, result=result, actor=operator.user)
    if outcome.status_label == "final":
        # Another ack (a repeat sent while this one waited), a cancel or the validity window's end came first.
        batch.refresh_from_db(fields=["status", "last_error"])
        if batch.status != BatchStatus.ACCEPTED:
            raise _ack_refused(batch)
        return BatchOutcome(batch.status, "accepted")
    # An operator may report a batch's messages before it acknowledges the batch: then this ack is the last word.
    enqueue_on_commit(partial(_enqueue_check_complete, batch.run_id))
    return outcome


# --- operator settings ---------------------------------------------------------------------------

# What an admin edits on an operator; each change is audited (invariant 6). Credentials are named, never written.
OPERATOR_AUDITED_FIELDS = (
    "name",
    "slug",
    "active",
    "is_test_endpoint",
    "user_id",
    "prefixes",
    "adapter",
    "base_url",
    "segments_per_second",
    "batch_size",
    "tariff_per_segment",
    "vertex_limit",
)
OPERATOR_SECRET_FIELDS = ("api_key", "signing_secret")


def operator_settings(operator: Operator) -> dict:
    """Return the operator's audited settings as stored, credentials included (for operator_record_change only)."""
    return {name: getattr(operator, name) for name in (*OPERATOR_AUDITED_FIELDS, *OPERATOR_SECRET_FIELDS)}


def operator_record_change(*, operator: Operator, before: dict | None, actor) -> None:
    """Audit an admin's creation or edit of an operator: each changed setting from → to, a credential only as replaced.

    `before` is operator_settings() of the row before the edit, None for a new operator. Nothing is written when
    nothing changed. Called inside the admin's transaction, so the change and its event commit together.
    """
    after = operator_settings(operator)
    if before is None:
        changed = {name: {"to": after[name]} for name in OPERATOR_AUDITED_FIELDS}
        secrets = [name for name in OPERATOR_SECRET_FIELDS if after[name]]
    else:
        changed = {
            name: {"from": before[name], "to": after[name]}
            for name in OPERATOR_AUDITED_FIELDS
            if before[name] != after[name]
        }
        secrets = [name for name in OPERATOR_SECRET_FIELDS if before[name] != after[name]]
        if not changed and not secrets:
            return
    state = {True: "active", False: "inactive"}
    audit_record(
        actor=actor,
        action="operator.create" if before is None else "operator.update",
        obj=operator,
        from_state="" if before is None else state[before["active"]],
        to_state=state[operator.active],
        details={"changed": changed, **({"credentials_replaced": secrets} if secrets else {})},
    )


def operators_add_known_prefixes(*, operators: Iterable[Operator], actor) -> dict[Operator, list[str]]:
    """Seed the routing table from phonenumbers' carrier data; return the prefixes added to each operator.

    Each operator whose name or slug names one of the four carriers (`smsblast.phones.operator_key_for`) gets the
    prefixes phonenumbers knows for it, but for those another operator routes already; the numbers under them are
    routed to it, and each change is audited as an admin's edit of the operator.
    """
    from smsblast.phones import carrier_prefixes, operator_key_for
    from smsblast.services import subscriber_routing_lock, subscribers_reroute

    known = carrier_prefixes()
    added: dict[Operator, list[str]] = {}
    with transaction.atomic():
        subscriber_routing_lock()
        routed = {prefix for listed in Operator.objects.values_list("prefixes", flat=True) for prefix in listed or []}
        for operator in Operator.objects.select_for_update().filter(pk__in=[selected.pk for selected in operators]):
            key = operator_key_for(operator.slug) or operator_key_for(operator.name)
            prefixes = sorted(prefix for prefix, owner in known.items() if owner == key and prefix not in routed)
            added[operator] = prefixes
            if not prefixes:
                continue
            before = operator_settings(operator)
            operator.prefixes = sorted({*(operator.prefixes or []), *prefixes})
            operator.save(update_fields=["prefixes", "updated_at"])
            routed.update(prefixes)
            subscribers_reroute(prefixes=prefixes)
            operator_record_change(operator=operator, before=before, actor=actor)
    return added
