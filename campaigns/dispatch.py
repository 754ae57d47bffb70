"""The dispatch pipeline on the campaign side: schedule, start due runs, fan out, pause, resume, complete.

Flow: `campaign_schedule` sets when a campaign runs (part of its content hash) → the beat task calls
`runs_start_due` every second, which re-checks the approval (invariant 1) and creates one CampaignRun per
occurrence → `run_fan_out` streams the audience into Delivery and DispatchBatch rows, chunk by chunk, and
enqueues `operators.tasks.send_batch` per batch on the operator's queue → operators report deliveries →
`run_check_complete` closes the run; `dispatch_reconcile` (every 15 s) re-drives whatever a crash left.

Every function here may run twice or concurrently: state moves by conditional UPDATE and the row counts
decide who won; fan-out resumes from `fanout_cursor`, which advances in the same transaction as the rows.
"""

import logging
import re
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.utils import timezone

from campaigns import notices, scheduling
from campaigns.dispatch_selectors import campaign_only_awaits_reports
from campaigns.models import Campaign, CampaignRun, Delivery, DispatchBatch, Mode, Priority
from campaigns.selectors import campaign_zone, campaign_zones, target_zone
from campaigns.services import (
    CAMPAIGN_TRANSITIONS,
    campaign_approval_is_valid,
    campaign_check_actor,
    campaign_content_hash,
    campaign_dispatch_refuse,
    campaign_move,
    campaign_update,
)
from operators.models import Operator
from smsblast import sms
from smsblast.audit import audit_history, audit_record
from smsblast.errors import ServiceConflict, ServiceForbidden, ServiceInvalid
from smsblast.models import AuditEvent, Role, Subscriber, User
from smsblast.selectors import subscribers_in_area
from smsblast.transactions import enqueue_on_commit, isolated

logger = logging.getLogger(__name__)

RunStatus = CampaignRun.Status
BatchStatus = DispatchBatch.Status
DeliveryStatus = Delivery.Status

# Subscribers read and written per fan-out transaction: large enough that most batches are full,
# small enough that a worker holds a few megabytes, never the whole audience.
FANOUT_CHUNK = 20_000
# The first chunk of a fan-out is this small and each next one twice the last, up to FANOUT_CHUNK: workers
# can only start sending once a chunk commits, and a full first chunk kept them idle for its whole write.
FANOUT_FIRST_CHUNK = 2_000
# Runs whose deliveries and batches may still change.
ACTIVE_RUN_STATUSES = (RunStatus.PENDING, RunStatus.FANNING_OUT, RunStatus.SENDING, RunStatus.PAUSED)
# Delivery outcomes that make a finished run "completed_with_failures": the message never reached the
# operator's network (our batch failed) or the operator refused the number. Undelivered and expired
# messages are ordinary SMS outcomes (handset off, out of coverage) and do not.
FAILURE_STATUSES = (DeliveryStatus.FAILED, DeliveryStatus.REJECTED)
STALL_AFTER = timedelta(minutes=10)
# How a batch's last_error begins when its operator last answered 429 (see operators.services._error_text).
THROTTLED_ERROR = "HTTP 429:"
SEND_NOW = {"kind": "now"}
# Campaign states in which a due occurrence starts its run: armed, or still sending an earlier run (a paused
# campaign waits for resume).
STARTABLE = (Campaign.Status.SCHEDULED, Campaign.Status.SENDING)
QUEUED = DeliveryStatus.QUEUED.value
SKIPPED = DeliveryStatus.SKIPPED.value
# Deliveries and batches still waiting for an outcome: a run with none left may complete. Asked by naming these,
# on the (run, status) indexes one probe each; asking for "not final" walks every final row of the run instead
# (tens of milliseconds at a million, on every check).
UNSETTLED_DELIVERY_STATUSES = (DeliveryStatus.QUEUED, DeliveryStatus.SUBMITTED)
UNSETTLED_BATCH_STATUSES = (BatchStatus.PENDING, BatchStatus.IN_FLIGHT, BatchStatus.RETRY_WAIT)
# An operator may report a batch's messages before its worker has recorded the batch's answer, which takes a
# moment: the run is checked again then (the reconciler completes it if that was not enough).
ANSWER_PENDING_RECHECK_SECONDS = 2


def _lease_seconds() -> int:
    return settings.DISPATCH_LEASE_SECONDS


def _stale_after() -> timedelta:
    return timedelta(seconds=settings.DISPATCH_REDRIVE_AFTER_SECONDS)


# --- scheduling ------------------------------------------------------------------------------


@transaction.atomic
def campaign_schedule(*, campaign: Campaign, user: User, schedule: dict, now: datetime | None = None) -> Campaign:
    """Set when the campaign runs, in its area's local time (see campaigns.scheduling for the shape).

    The schedule is part of the content hash. On a draft (or rejected) campaign it is an ordinary edit,
    the normal way to schedule before submitting. On an approved campaign the approved schedule itself
    arms it (approved → scheduled, next run computed); any other schedule is an edit that voids the
    approval and returns the campaign to draft. Setting the same schedule on a scheduled campaign
    changes nothing.
    """
    now = now or timezone.now()
    # Who may schedule is answered before what they sent: a caller without the right learns nothing else.
    campaign_check_may_dispatch(campaign, user)
    try:
        normalized = scheduling.schedule_normalize(schedule)
    except scheduling.ScheduleError as exc:
        raise ServiceInvalid(str(exc), {exc.field: str(exc)}) from None
    zone = campaign_zone(campaign)
    first = scheduling.first_start(
        normalized, zone=zone, now=now, priority=campaign.priority, quiet_zones=campaign_zones(campaign)
    )
    if first is None:
        raise ServiceInvalid(
            f"This schedule has no run after now ({zone.label}); choose a later time.", {"schedule": "In the past."}
        )
    fresh = Campaign.objects.select_for_update().get(pk=campaign.pk)
    # Compare meanings, not spellings: a schedule stored as {"time": "13:00:00"} is the one approved, and a
    # campaign approved without one was approved to go out as soon as it is armed.
    same = _schedule_meaning(fresh.schedule) == normalized
    if fresh.status == Campaign.Status.APPROVED and same:
        campaign_check_may_dispatch(fresh, user)
        if not campaign_approval_is_valid(fresh):
            raise ServiceConflict("The approval no longer matches this campaign; submit it for approval again.")
        moved = campaign_move(
            campaign=fresh,
            to_state=Campaign.Status.SCHEDULED,
            actor=user,
            action="campaign.schedule",
            from_states=(Campaign.Status.APPROVED,),
            details={"schedule": normalized, "next_run_at": first.isoformat(), "zone": zone.label},
            now=now,
            next_run_at=first,
        )
        if not moved:
            raise ServiceConflict("The campaign changed state meanwhile; reload it.")
        campaign.refresh_from_db()
        return campaign
    if fresh.status == Campaign.Status.SCHEDULED and same:
        campaign_check_may_dispatch(fresh, user)
        campaign.refresh_from_db()
        return campaign
    # Anything else is an edit of the hashed content, which campaign_update makes; a state that takes no edit is
    # refused here first, so that the refusal names the schedule asked for rather than an edit.
    campaign_check_actor("update", campaign=fresh, user=user)
    if fresh.status not in CAMPAIGN_TRANSITIONS["update"] and not campaign_only_awaits_reports(fresh):
        raise ServiceConflict(_schedule_refused_message(fresh))
    campaign_update(campaign=campaign, actor=user, data={"schedule": normalized})
    return campaign


def _schedule_refused_message(campaign: Campaign) -> str:
    """Say that a campaign in its state takes no schedule, and in which states it would."""
    allowed = ", ".join(sorted(status.replace("_", " ") for status in CAMPAIGN_TRANSITIONS["update"]))
    message = (
        f"Cannot schedule a campaign that is {campaign.status.replace('_', ' ')}; "
        f"a schedule can be set only when it is {allowed}."
    )
    if campaign.status == Campaign.Status.SENDING:
        message += (
            " A recurring campaign's schedule may also be changed once its runs have been sent and only wait for"
            " reports."
        )
    return message


def _schedule_meaning(schedule) -> dict | None:
    """Return the normalized schedule; an empty one means "now", as run_start reads it."""
    return _normalized_or_none(schedule or SEND_NOW)


def _normalized_or_none(schedule) -> dict | None:
    try:
        return scheduling.schedule_normalize(schedule or {})
    except scheduling.ScheduleError:
        return None


@transaction.atomic
def campaign_schedule_approved(*, campaign: Campaign, user: User, now: datetime | None = None) -> Campaign:
    """Arm an approved campaign with the schedule it was approved with (approved → scheduled).

    A campaign approved without a schedule goes out as soon as it is armed; its stored (hashed) schedule
    stays empty, so the approval still matches. The campaign is read under its row lock: one edited back to
    draft meanwhile (another tab, another user) is refused, never edited again with the schedule read before.
    """
    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    campaign.refresh_from_db()
    if campaign.status not in (Campaign.Status.APPROVED, Campaign.Status.SCHEDULED):
        campaign_check_may_dispatch(campaign, user)
        raise ServiceConflict(
            f"Only an approved campaign can be scheduled; this one is {campaign.status.replace('_', ' ')}."
        )
    return campaign_schedule(campaign=campaign, user=user, schedule=campaign.schedule or SEND_NOW, now=now)


def campaign_may_dispatch(*, campaign: Campaign, user: User | None) -> bool:
    """Return whether the user may schedule, pause or resume sending: the author, an approver or an admin."""
    if user is None or not user.is_authenticated:
        return False
    return user.has_role(Role.ADMIN, Role.APPROVER) or (user.has_role(Role.OFFICER) and campaign.author_id == user.pk)


def campaign_check_may_dispatch(campaign: Campaign, user: User) -> None:
    """Raise ServiceForbidden unless the user may schedule, pause or resume the campaign's sending."""
    if user is None or not user.is_authenticated:
        raise ServiceForbidden("Log in first.")
    if not campaign_may_dispatch(campaign=campaign, user=user):
        raise ServiceForbidden("Only the campaign's author, an approver or an admin may do this.")


# --- starting runs ---------------------------------------------------------------------------


def runs_start_due(*, now: datetime | None = None, limit: int = 100) -> list[int]:
    """Start every scheduled targeted campaign whose next run time has come; return the new run ids.

    Called every second by celery beat. A Redis lock keeps two beats from racing through the same rows, and
    each start is a conditional UPDATE plus the (campaign, scheduled_for) unique constraint, so a run never
    starts twice even if the lock is lost. A recurring campaign still sending its previous run (waiting for
    reports, which may take its whole validity window) starts the next occurrence on time all the same.
    """
    from operators.ratelimit import redis_client

    now = now or timezone.now()
    lock = redis_client().lock("smsblast:lock:runs_start_due", timeout=30, blocking=False)
    if not lock.acquire():
        return []
    try:
        due = list(
            Campaign.objects.filter(status__in=STARTABLE, mode=Mode.TARGETED, next_run_at__lte=now).values_list(
                "pk", flat=True
            )[:limit]
        )
        started = []
        for campaign_id in due:
            # One campaign that cannot start must not hold back every other warning due.
            with isolated(
                logger, "Campaign %s: its due run could not start; the other due campaigns go on", campaign_id
            ):
                run = run_start(campaign_id=campaign_id, now=now)
                if run is not None:
                    started.append(run.pk)
        return started
    finally:
        try:
            lock.release()
        except Exception:  # noqa: BLE001 - an expired lock is not an error worth failing the beat for
            logger.warning("runs_start_due lock expired before release")


@transaction.atomic
def run_start(*, campaign_id: int, now: datetime | None = None) -> CampaignRun | None:
    """Start the due run of one scheduled campaign; return it, or None if another process did or it may not.

    Re-checks the approval against the campaign's current content (invariant 1): a mismatch sends nothing,
    returns the campaign to draft and records why. A recurring campaign still sending an earlier run starts
    this one beside it.
    """
    now = now or timezone.now()
    # Locked, in the order run_check_complete, pause and cancel take it (campaign row first): the state read here
    # is the one the claim below moves from and its audit event names, not one a run completing meanwhile changed.
    # No stronger than the claim's UPDATE: a fan-out of an earlier run, re-checking its foreign key, is not held up.
    campaign = Campaign.objects.select_for_update(no_key=True).filter(pk=campaign_id, status__in=STARTABLE).first()
    if campaign is None or campaign.next_run_at is None or campaign.next_run_at > now:
        return None
    claimed = scheduled_for = campaign.next_run_at

    if not campaign_approval_is_valid(campaign):
        # A campaign with a run in progress goes back to draft only once that run has ended.
        if campaign.status == Campaign.Status.SCHEDULED:
            campaign_dispatch_refuse(campaign=campaign, now=now, match={"next_run_at": claimed})
        return None

    try:
        analysis = sms.analyze(campaign.text)
    except sms.TextError as exc:
        logger.error("Campaign %s has unsendable text: %s", campaign.pk, exc)
        return None
    zone = campaign_zone(campaign)
    quiet_zones = campaign_zones(campaign)
    # If the scheduler was down (or the campaign paused) past later occurrences, only the latest one due runs:
    # the older ones are skipped rather than fired in a burst or sent a day late beside it. That one too is
    # skipped when the next occurrence is nearer than it is late.
    schedule = _schedule_meaning(campaign.schedule) or SEND_NOW
    skipped = 0
    upcoming = partial(scheduling.next_start, schedule, zone=zone, priority=campaign.priority, quiet_zones=quiet_zones)
    while (later := upcoming(after=scheduled_for)) and later <= now:
        scheduled_for = later
        skipped += 1
    next_run_at = upcoming(after=max(scheduled_for, now))
    if scheduling.is_past_end(schedule, zone=zone, start=scheduled_for, now=now):
        _schedule_end(campaign, claimed=claimed, skipped=skipped + 1, now=now)
        return None
    # Started now, a normal run still waits out its quiet hours: it is as late as when it may first send.
    sends_at = scheduling.may_send_at(
        now, schedule=schedule, zone=zone, priority=campaign.priority, quiet_zones=quiet_zones
    )
    if next_run_at is not None and sends_at - scheduled_for > next_run_at - sends_at:
        # Missed by longer than the next occurrence is away: that one is sent, not the same text twice in a row.
        _occurrences_skip(campaign, claimed=claimed, skipped=skipped + 1, next_run_at=next_run_at, now=now)
        return None
    if now - scheduled_for > timedelta(minutes=campaign.validity_minutes):
        # Started this late, it would reach handsets after the message stopped holding (its CAP export already says
        # it has expired). Quiet hours ahead do not count: a run started in time waits them out by design.
        _validity_missed(
            campaign,
            claimed=claimed,
            scheduled_for=scheduled_for,
            skipped=skipped + 1,
            next_run_at=next_run_at,
            now=now,
        )
        return None
    # Only from the state read (and checked above): if the previous run completed meanwhile, the next tick starts
    # this one, so its audit event names the state it really left (invariant 6).
    rows = Campaign.objects.filter(pk=campaign.pk, status=campaign.status, next_run_at=claimed).update(
        status=Campaign.Status.SENDING, next_run_at=next_run_at, updated_at=now
    )
    if rows != 1:
        return None
    try:
        with transaction.atomic():
            run = CampaignRun.objects.create(
                campaign=campaign,
                scheduled_for=scheduled_for,
                status=RunStatus.FANNING_OUT,
                content_hash=campaign_content_hash(campaign),
                text=campaign.text,
                sender=campaign.sender,
                segments=analysis.segments,
                encoding=analysis.encoding,
                frozen={
                    "title": campaign.title,
                    "area_codes": list(campaign.area_codes or []),
                    "polygon": campaign.polygon,
                    "audience": campaign.audience or {},
                    "priority": campaign.priority,
                    "quiet_hours": schedule.get("quiet_hours"),
                    "zone": zone.name,
                    "quiet_zones": [quiet_zone.name for quiet_zone in quiet_zones],
                    # What each operator charged per segment when the run started: its cost stays what it was.
                    "tariffs": {
                        str(pk): tariff for pk, tariff in Operator.objects.values_list("pk", "tariff_per_segment")
                    },
                },
                started_at=now,
                # Counted from when it may first send: a run started in its quiet hours keeps its whole window.
                expires_at=sends_at + timedelta(minutes=campaign.validity_minutes),
                last_progress_at=now,
                fanout_progress_at=now,
            )
    except IntegrityError:
        # The occurrence already has its run: undo our claim so the campaign's state stays as it was.
        transaction.set_rollback(True)
        return None
    audit_record(
        actor=None,
        action="campaign.run_start",
        obj=campaign,
        from_state=campaign.status,
        to_state=Campaign.Status.SENDING,
        details={"run_id": run.pk, "scheduled_for": scheduled_for.isoformat(), "occurrences_skipped": skipped},
    )
    audit_record(actor=None, action="run.start", obj=run, to_state=RunStatus.FANNING_OUT)
    enqueue_on_commit(partial(_enqueue_fan_out, run.pk))
    return run


def _schedule_end(campaign: Campaign, *, claimed: datetime, skipped: int, now: datetime) -> None:
    """Start nothing more for a campaign whose schedule's end date passed before its due occurrences could run.

    A campaign still sending an earlier run keeps sending and completes with it; otherwise it completes now, with
    failures if any of its runs had them. Called by run_start with the campaign row locked.
    """
    details = {
        "reason": "The schedule's end date passed before these occurrences could start; they were not sent.",
        "occurrences_skipped": skipped,
    }
    if campaign.status == Campaign.Status.SENDING:
        _next_run_move(campaign, claimed=claimed, to=None, action="campaign.schedule_end", details=details, now=now)
        return
    campaign_move(
        campaign=campaign,
        to_state=_ended_state(campaign, none_sent=Campaign.Status.COMPLETED),
        actor=None,
        action="campaign.schedule_end",
        match={"next_run_at": claimed},
        details=details,
        now=now,
        next_run_at=None,
    )


def _occurrences_skip(
    campaign: Campaign, *, claimed: datetime, skipped: int, next_run_at: datetime, now: datetime
) -> None:
    """Start nothing for occurrences missed until closer to the next one; the campaign waits for that one.

    Called by run_start with the campaign row locked; the campaign keeps its state (scheduled, or sending an
    earlier run).
    """
    details = {
        "reason": "These occurrences were missed until the next one was nearer; it is sent instead.",
        "occurrences_skipped": skipped,
        "next_run_at": next_run_at.isoformat(),
    }
    action = "campaign.occurrences_skip"
    _next_run_move(campaign, claimed=claimed, to=next_run_at, action=action, details=details, now=now)


def _ended_state(campaign: Campaign, *, none_sent: str) -> str:
    """Return the state a campaign with no run left to start ends in: completed, with failures if any of its runs
    had them, or `none_sent` if it never started one."""
    statuses = set(campaign.runs.values_list("status", flat=True))
    if not statuses:
        return none_sent
    if RunStatus.COMPLETED_WITH_FAILURES in statuses:
        return Campaign.Status.COMPLETED_WITH_FAILURES
    return Campaign.Status.COMPLETED


def _validity_missed(
    campaign: Campaign,
    *,
    claimed: datetime,
    scheduled_for: datetime,
    skipped: int,
    next_run_at: datetime | None,
    now: datetime,
) -> None:
    """Send nothing for an occurrence missed (the scheduler down) by longer than its validity, and tell the author.

    A recurring campaign waits for its next occurrence, or ends as `_schedule_end` would after its last one; a
    campaign that never sent a run is cancelled. Called by run_start with the campaign row locked.
    """
    details = {
        "reason": (
            f"Missed by longer than its validity ({campaign.validity_minutes} minutes): it would have reached "
            "handsets after it expired, so it was not sent."
        ),
        "scheduled_for": scheduled_for.isoformat(),
        "occurrences_skipped": skipped,
    }
    action = "campaign.validity_missed"
    if next_run_at is not None or campaign.status == Campaign.Status.SENDING:
        details["next_run_at"] = next_run_at.isoformat() if next_run_at else None
        moved = _next_run_move(campaign, claimed=claimed, to=next_run_at, action=action, details=details, now=now)
    else:
        moved = campaign_move(
            campaign=campaign,
            to_state=_ended_state(campaign, none_sent=Campaign.Status.CANCELLED),
            actor=None,
            action=action,
            match={"next_run_at": claimed},
            details=details,
            now=now,
            next_run_at=None,
        )
    if moved:  # told once, by whoever recorded it
        notices.campaign_notify_run_missed(campaign=campaign, scheduled_for=scheduled_for)


def _next_run_move(
    campaign: Campaign, *, claimed: datetime, to: datetime | None, action: str, details: dict, now: datetime
) -> bool:
    """Move the campaign's next run from `claimed` to `to`, keeping its state, and audit it; return whether it moved
    (not if another process moved it first)."""
    if not Campaign.objects.filter(pk=campaign.pk, status=campaign.status, next_run_at=claimed).update(
        next_run_at=to, updated_at=now
    ):
        return False
    state = campaign.status
    audit_record(actor=None, action=action, obj=campaign, from_state=state, to_state=state, details=details)
    return True


def _enqueue_fan_out(run_id: int) -> None:
    from campaigns.tasks import fan_out_run

    fan_out_run.delay(run_id)


# --- fan-out ---------------------------------------------------------------------------------


def batch_size_for(operator, *, segments: int) -> int:
    """Return how many recipients go in one of the operator's batches.

    At most `batch_size`, and never more segments than the operator allows in one second: a batch is sent in
    one request, so a bigger one would break the rate limit (invariant 5) in the second it is sent.
    """
    size = max(1, operator.batch_size)
    if operator.segments_per_second:
        size = min(size, max(1, operator.segments_per_second // max(1, segments)))
    return size


def run_audience(run: CampaignRun, *, id_range: tuple[int, int | None] | None = None):
    """Return the run's recipients as frozen at start: the area subtree (and drawn polygon) narrowed by the audience.

    `id_range` (after, up_to) keeps the subscribers with ids in it (see `subscribers_in_area`).
    """
    frozen = run.frozen or {}
    return subscribers_in_area(
        frozen.get("area_codes", []),
        audience=frozen.get("audience") or {},
        polygon=frozen.get("polygon"),
        id_range=id_range,
    )


def _chunk_rows(run: CampaignRun, size: int) -> tuple[list, int | None]:
    """Return the next chunk of (id, msisdn, operator id, opted out at) after the cursor and the id it ends at.

    The id is None when the rows read reach the end of the audience. A drawn polygon's coordinate test reads
    the coordinates of every subscriber it is given, so such a run takes the next `size` subscribers by id
    and tests those alone: the chunk may then hold fewer recipients, or none, before the end.
    """
    columns = ("pk", "msisdn", "operator_id", "opted_out_at")
    after = run.fanout_cursor
    if not (run.frozen or {}).get("polygon"):
        rows = list(run_audience(run).filter(pk__gt=after).order_by("pk").values_list(*columns)[:size])
        return rows, (rows[-1][0] if rows else None)
    window = list(Subscriber.objects.filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)[size - 1 : size])
    up_to = window[0] if window else None
    rows = list(run_audience(run, id_range=(after, up_to)).order_by("pk").values_list(*columns))
    if up_to is None:
        up_to = rows[-1][0] if rows else None
    return rows, up_to


def run_fan_out(*, run_id: int, chunk_size: int = FANOUT_CHUNK) -> int:
    """Write the run's deliveries and batches chunk by chunk and enqueue the batches; return batches created.

    Chunks grow from FANOUT_FIRST_CHUNK to `chunk_size` subscribers. Each is one transaction that writes its
    Delivery rows (opted-out subscribers and those without an active operator as `skipped` with a reason),
    its DispatchBatch rows (one operator each, at most the operator's batch_size recipients) and advances
    `fanout_cursor`, so a rerun after a crash resumes after the last subscriber written and creates nothing
    twice.
    """
    created = 0
    size = min(FANOUT_FIRST_CHUNK, chunk_size)
    while True:
        # Read per chunk: an operator the admin deactivates, adds or gives another batch size during a long
        # fan-out counts from the next chunk on.
        operators = {op.pk: op for op in Operator.objects.all()}
        with transaction.atomic():
            # The row lock serializes two fan-outs of the same run; the second sees the moved cursor.
            run = CampaignRun.objects.select_for_update().filter(pk=run_id).first()
            if run is None or run.fanout_done or run.status not in (RunStatus.FANNING_OUT, RunStatus.PAUSED):
                break
            rows, chunk_end = _chunk_rows(run, size)
            if any(row[2] is not None and row[2] not in operators for row in rows):
                # An operator added since they were read, whose save moved these numbers to it: theirs, not numbers
                # without an operator.
                operators = {op.pk: op for op in Operator.objects.all()}
            size = min(size * 2, chunk_size)
            now = timezone.now()
            if chunk_end is None:
                # One UPDATE of the locked row: a second one in this transaction would re-check the campaign
                # foreign key, waiting on a cancel that holds the campaign and waits on this run (a deadlock).
                run.fanout_done = True
                run.last_progress_at = run.fanout_progress_at = now
                fields = ["fanout_done", "last_progress_at", "fanout_progress_at"]
                fanned_out = run.status == RunStatus.FANNING_OUT
                if fanned_out:
                    run.status = RunStatus.SENDING
                    fields.append("status")
                run.save(update_fields=fields)
                if fanned_out:
                    audit_record(
                        actor=None,
                        action="run.fanned_out",
                        obj=run,
                        from_state=RunStatus.FANNING_OUT,
                        to_state=RunStatus.SENDING,
                        details={"batches": run.batches.count()},
                    )
                enqueue_on_commit(partial(run_check_complete_enqueue, run.pk))
                break
            batches = _fan_out_chunk_once(run, rows, operators, now) if rows else []
            run.fanout_cursor = chunk_end
            run.last_progress_at = run.fanout_progress_at = now
            fields = ["fanout_cursor", "last_progress_at", "fanout_progress_at"]
            tariffs = (run.frozen or {}).get("tariffs")
            added = {str(batch.operator_id) for batch in batches} - set(tariffs or {})
            if tariffs is not None and added:
                # An operator added after the run started: its cost stays at the tariff it had when first sent to.
                tariffs.update({pk: operators[int(pk)].tariff_per_segment for pk in added})
                fields.append("frozen")
            run.save(update_fields=fields)
            created += len(batches)
            if run.status == RunStatus.FANNING_OUT:
                enqueue_on_commit(partial(batches_enqueue, [(b.pk, operators[b.operator_id].queue) for b in batches]))
    return created


def _fan_out_chunk_once(
    run: CampaignRun, rows: list, operators: dict[int, Operator], now: datetime
) -> list[DispatchBatch]:
    """Write one chunk, leaving out numbers the run already has a delivery for (invariant 3).

    A subscriber row deleted and added again (or given another row's number) after its chunk was written
    comes back past the cursor under a new id. The (run, msisdn) constraint refuses its second delivery, which
    would fail the chunk on every rerun and never end the fan-out; such a number keeps its first delivery.
    """
    try:
        with transaction.atomic():
            return _fan_out_chunk(run, rows, operators, now)
    except IntegrityError:
        pass
    msisdns = [row[1] for row in rows]
    written = set(Delivery.objects.filter(run=run, msisdn__in=msisdns).values_list("msisdn", flat=True))
    rows = [row for row in rows if row[1] not in written]
    return _fan_out_chunk(run, rows, operators, now) if rows else []


def _fan_out_chunk(run: CampaignRun, rows: list, operators: dict[int, Operator], now: datetime) -> list[DispatchBatch]:
    """Write the deliveries and batches of one chunk of (subscriber id, msisdn, operator id, opted out at)."""
    by_operator: dict[int, list[str]] = {}
    # (reason, operator id) → numbers: a skipped number keeps its operator, so progress counts it under that operator.
    skipped: dict[tuple[str, int | None], list[str]] = {}
    for _pk, msisdn, operator_id, opted_out_at in rows:
        if operator_id not in operators:
            skipped.setdefault(("opted_out" if opted_out_at else "no_operator", None), []).append(msisdn)
        elif opted_out_at is not None:
            skipped.setdefault(("opted_out", operator_id), []).append(msisdn)
        elif not operators[operator_id].active:
            skipped.setdefault(("operator_inactive", operator_id), []).append(msisdn)
        else:
            by_operator.setdefault(operator_id, []).append(msisdn)

    batches: list[DispatchBatch] = []
    # Deliveries in groups sharing everything but the number: (batch id, operator id, status, reason, numbers).
    groups: list[tuple] = []
    for operator_id, msisdns in by_operator.items():
        size = batch_size_for(operators[operator_id], segments=run.segments)
        for start in range(0, len(msisdns), size):
            part = msisdns[start : start + size]
            batch = DispatchBatch(
                run=run,
                operator_id=operator_id,
                size=len(part),
                segments=len(part) * run.segments,
                created_at=now,
                updated_at=now,
            )
            batches.append(batch)
            groups.append((batch.pk, operator_id, QUEUED, "", part))
    groups.extend((None, operator_id, SKIPPED, reason, msisdns) for (reason, operator_id), msisdns in skipped.items())
    DispatchBatch.objects.bulk_create(batches)
    _deliveries_write(run, groups, now)
    return batches


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_UNSAFE = re.compile(r"[\\\t\n\r]")


def _deliveries_write(run: CampaignRun, groups: list[tuple], now: datetime) -> None:
    """Insert the deliveries once (PostgreSQL: COPY, several times faster than INSERT; else bulk_create)."""
    if connection.vendor == "postgresql":
        table = Delivery._meta.db_table
        columns = "run_id, batch_id, operator_id, msisdn, status, reason, operator_ref, error_code, updated_at"
        # COPY text format built per group as prefix + number + suffix: the per-row Python work is one
        # string join. Ids, statuses and reasons are ours; a number holding a tab or backslash is escaped.
        parts = []
        for batch_id, operator_id, status, reason, msisdns in groups:
            if batch_id is None:
                operator = "\\N" if operator_id is None else operator_id
                prefix, suffix = f"{run.pk}\t\\N\t{operator}\t", f"\t{status}\t{reason}\t\t\t{now.isoformat()}\n"
            else:
                prefix, suffix = f"{run.pk}\t{batch_id}\t{operator_id}\t", f"\t{status}\t{reason}\t\t\t\\N\n"
            if _COPY_UNSAFE.search("".join(msisdns)):
                msisdns = [msisdn.translate(_COPY_ESCAPES) for msisdn in msisdns]
            parts.append(prefix + (suffix + prefix).join(msisdns) + suffix)
        # A unique violation surfaces as Django's IntegrityError, as it does from bulk_create.
        with (
            connection.wrap_database_errors,
            connection.cursor() as cursor,
            cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
        ):
            copy.write("".join(parts))
        return
    Delivery.objects.bulk_create(
        [
            Delivery(
                run_id=run.pk,
                batch_id=batch_id,
                operator_id=operator_id,
                msisdn=msisdn,
                status=status,
                reason=reason,
                updated_at=now if status == SKIPPED else None,
            )
            for batch_id, operator_id, status, reason, msisdns in groups
            for msisdn in msisdns
        ],
        batch_size=2000,
    )


def batches_enqueue(batches: list[tuple]) -> None:
    """Enqueue send_batch for each (batch id, operator queue); duplicates are harmless (leasing decides)."""
    from operators.tasks import send_batch

    for batch_id, queue in batches:
        send_batch.apply_async((str(batch_id),), queue=queue)


def run_check_complete_enqueue(run_id: int) -> None:
    """Enqueue check_run_complete for the run once nothing of it waits for an outcome; call it after a commit.

    Called after every commit that may settle a run's last delivery or batch (a report request, an answer or ack
    refusing numbers, a batch failing, a fan-out ending, ...), so a run completes as soon as it may rather than on
    the reconciler's next pass. It first asks whether a delivery still waits (one index probe): the many report
    requests of a large run enqueue nothing until the last, and a spare task only finds the run complete.
    """
    from campaigns.tasks import check_run_complete

    if Delivery.objects.filter(run_id=run_id, status__in=UNSETTLED_DELIVERY_STATUSES).exists():
        return
    waiting = DispatchBatch.objects.filter(run_id=run_id, status__in=UNSETTLED_BATCH_STATUSES).exists()
    check_run_complete.apply_async((run_id,), countdown=ANSWER_PENDING_RECHECK_SECONDS if waiting else 0)


# --- completion ------------------------------------------------------------------------------


@transaction.atomic
def run_check_complete(*, run_id: int, now: datetime | None = None) -> CampaignRun | None:
    """Close the run if fan-out is done and every delivery is final; the campaign follows. Return the run.

    A recurring campaign with a next occurrence goes back to scheduled; otherwise it ends completed, or
    completed_with_failures when a batch of any of its runs failed or an operator rejected numbers.
    """
    now = now or timezone.now()
    run = CampaignRun.objects.select_related("campaign").filter(pk=run_id).first()
    if run is None or run.status not in (RunStatus.SENDING, RunStatus.PAUSED) or not run.fanout_done:
        return run
    if run.campaign.mode != Mode.TARGETED:
        return run  # an area broadcast has no deliveries; the end of its window completes it (operators.broadcasts)
    if run.deliveries.filter(status__in=UNSETTLED_DELIVERY_STATUSES).exists():
        return run
    if run.batches.filter(status__in=UNSETTLED_BATCH_STATUSES).exists():
        return run
    failed = run.deliveries.filter(status__in=FAILURE_STATUSES).exists()
    to_state = RunStatus.COMPLETED_WITH_FAILURES if failed else RunStatus.COMPLETED
    # The campaign row first, then the run, in the order pause and cancel take them: the other way round,
    # a cancel holding the campaign and waiting for this run deadlocks with this UPDATE.
    locked = Campaign.objects.select_for_update().filter(pk=run.campaign_id).first()
    rows = CampaignRun.objects.filter(pk=run.pk, status=run.status).update(
        status=to_state, finished_at=now, last_progress_at=now
    )
    if rows != 1:
        return run
    audit_record(actor=None, action="run.complete", obj=run, from_state=run.status, to_state=to_state)
    run.status = to_state
    notices.run_notify_ended(run=run)

    campaign = run.campaign
    if campaign.runs.filter(status__in=ACTIVE_RUN_STATUSES).exists():
        return run
    # As the lock found it: a start meanwhile may have found the schedule ended (run_start, _schedule_end).
    campaign.next_run_at = locked.next_run_at
    # A paused recurring campaign stays paused: its next occurrence waits for resume.
    from_states = (Campaign.Status.SENDING, Campaign.Status.PAUSED)
    if campaign.next_run_at is not None:
        campaign_to = Campaign.Status.SCHEDULED
        from_states = (Campaign.Status.SENDING,)
    elif campaign.runs.filter(status=RunStatus.COMPLETED_WITH_FAILURES).exists():
        # Any of its runs, not only the one finishing last: runs of a recurring campaign may overlap.
        campaign_to = Campaign.Status.COMPLETED_WITH_FAILURES
    else:
        campaign_to = Campaign.Status.COMPLETED
    campaign_move(
        campaign=campaign,
        to_state=campaign_to,
        actor=None,
        action="campaign.run_complete",
        from_states=from_states,
        details={"run_id": run.pk, "run_status": to_state},
        now=now,
    )
    return run


# --- pause, resume, cancel -------------------------------------------------------------------


@transaction.atomic
def campaign_pause(*, campaign: Campaign, actor: User) -> Campaign:
    """Halt the campaign's sending run (sending → paused): no batch is leased after this commits.

    Batches already handed to an operator finish; the rest wait, and fan-out still writes rows.
    """
    campaign_check_may_dispatch(campaign, actor)
    if campaign.mode != Mode.TARGETED:
        raise ServiceConflict("An area broadcast cannot be paused; cancel it instead.")
    now = timezone.now()
    paused = campaign_move(
        campaign=campaign,
        to_state=Campaign.Status.PAUSED,
        actor=actor,
        action="campaign.pause",
        from_states=(Campaign.Status.SENDING,),
        now=now,
    )
    if not paused:
        raise ServiceConflict(f"Only a sending campaign can be paused; this one is {_status_of(campaign)}.")
    # Locking the runs waits for a fan-out that may be moving one fanning_out → sending, and reads its new state.
    for run in campaign.runs.select_for_update().filter(status__in=[RunStatus.FANNING_OUT, RunStatus.SENDING]):
        if CampaignRun.objects.filter(pk=run.pk, status=run.status).update(status=RunStatus.PAUSED):
            audit_record(actor=actor, action="run.pause", obj=run, from_state=run.status, to_state=RunStatus.PAUSED)
    campaign.refresh_from_db()
    return campaign


@transaction.atomic
def campaign_resume(*, campaign: Campaign, actor: User) -> Campaign:
    """Continue a paused campaign (paused → sending) and re-enqueue its waiting batches.

    A recurring campaign whose run ended while it was paused goes back to scheduled for its next occurrence.
    """
    campaign_check_may_dispatch(campaign, actor)
    now = timezone.now()
    # The campaign row first, as run_check_complete takes it, so no run completes between the check and the move.
    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    waiting_runs = campaign.runs.filter(status=RunStatus.PAUSED).exists()
    resumed = campaign_move(
        campaign=campaign,
        to_state=Campaign.Status.SENDING if waiting_runs else Campaign.Status.SCHEDULED,
        actor=actor,
        action="campaign.resume",
        from_states=(Campaign.Status.PAUSED,),
        now=now,
    )
    if not resumed:
        raise ServiceConflict(f"Only a paused campaign can be resumed; this one is {_status_of(campaign)}.")
    # Locking the runs waits for a fan-out that may be finishing one, and reads whether it is done.
    for run in campaign.runs.select_for_update().filter(status=RunStatus.PAUSED):
        to_state = RunStatus.SENDING if run.fanout_done else RunStatus.FANNING_OUT
        if not CampaignRun.objects.filter(pk=run.pk, status=RunStatus.PAUSED).update(
            status=to_state, last_progress_at=now, fanout_progress_at=now
        ):
            continue
        audit_record(actor=actor, action="run.resume", obj=run, from_state=RunStatus.PAUSED, to_state=to_state)
        waiting = list(
            run.batches.filter(status__in=[BatchStatus.PENDING, BatchStatus.RETRY_WAIT]).values_list(
                "pk", "operator__slug"
            )
        )
        DispatchBatch.objects.filter(pk__in=[pk for pk, _ in waiting]).update(updated_at=now)
        enqueue_on_commit(partial(batches_enqueue, [(pk, f"dispatch.{slug}") for pk, slug in waiting]))
        if not run.fanout_done:
            enqueue_on_commit(partial(_enqueue_fan_out, run.pk))
        else:
            enqueue_on_commit(partial(run_check_complete_enqueue, run.pk))
    campaign.refresh_from_db()
    return campaign


def campaign_runs_cancel(*, campaign: Campaign, actor: User | None, now: datetime | None = None) -> int:
    """Cancel the campaign's unfinished runs: their unsent batches and those batches' deliveries are cancelled.

    Called by campaign_cancel inside its transaction. A batch already in flight finishes: if the operator
    accepts it, its messages were sent and reports still finalize them. Return the runs cancelled.
    """
    now = now or timezone.now()
    cancelled = 0
    # Locking the runs waits for a fan-out that may be moving one fanning_out → sending, and reads its new state.
    for run in campaign.runs.select_for_update().filter(status__in=ACTIVE_RUN_STATUSES):
        if not CampaignRun.objects.filter(pk=run.pk, status=run.status).update(
            status=RunStatus.CANCELLED, finished_at=now, last_progress_at=now
        ):
            continue
        cancelled += 1
        # Locked after their run (the lock order), so each batch's event names the state it left (invariant 6).
        unsent = list(
            run.batches.filter(status__in=[BatchStatus.PENDING, BatchStatus.RETRY_WAIT])
            .select_for_update(of=("self",))
            .values_list("pk", "status")
        )
        batch_ids = [pk for pk, _ in unsent]
        DispatchBatch.objects.filter(pk__in=batch_ids, status__in=[BatchStatus.PENDING, BatchStatus.RETRY_WAIT]).update(
            status=BatchStatus.CANCELLED, last_error="The campaign was cancelled.", updated_at=now
        )
        AuditEvent.objects.bulk_create(
            AuditEvent(
                actor=actor if actor is not None and actor.pk else None,
                action="batch.cancel",
                object_type=DispatchBatch._meta.label_lower,
                object_id=str(pk),
                from_state=from_state,
                to_state=BatchStatus.CANCELLED,
                details={"run_id": run.pk},
            )
            for pk, from_state in unsent
        )
        deliveries = Delivery.objects.filter(run=run, status=DeliveryStatus.QUEUED).filter(
            Q(batch__status=BatchStatus.CANCELLED) | Q(batch__isnull=True)
        )
        count = deliveries.update(status=DeliveryStatus.CANCELLED, reason="campaign_cancelled", updated_at=now)
        audit_record(
            actor=actor,
            action="run.cancel",
            obj=run,
            from_state=run.status,
            to_state=RunStatus.CANCELLED,
            details={"batches_cancelled": len(batch_ids), "deliveries_cancelled": count},
        )
    return cancelled


def _status_of(campaign: Campaign) -> str:
    status = Campaign.objects.filter(pk=campaign.pk).values_list("status", flat=True).first() or "deleted"
    return status.replace("_", " ")


# --- reconciler ------------------------------------------------------------------------------


def dispatch_reconcile(*, now: datetime | None = None) -> dict[str, int]:
    """Repair what crashes and lost messages leave behind; return counts of what was done (invariant 4).

    - batches in flight whose lease expired (the worker died) go back to pending and are re-enqueued with
      the same id, so the operator's idempotency check drops a send it already took;
    - pending or retry-wait batches that are due and untouched for a while are re-enqueued (their task may
      have been lost), a cancelled run's pending ones too (their task cancels them); leasing is conditional, so a
      duplicate task does nothing;
    - fan-outs that stopped mid-way are restarted from their cursor;
    - deliveries without a final report after the run's validity window expire, and batches never accepted
      by then fail;
    - runs whose deliveries are all final are completed; runs with no progress for 10 minutes are logged and
      recorded, once per stall.
    """
    from operators.services import SEND_COUNTDOWN_MAX_SECONDS

    now = now or timezone.now()
    stale = now - _stale_after()
    counts = {"leases": 0, "requeued": 0, "fanouts": 0, "expired": 0, "completed": 0, "stalled": 0}
    # Area-broadcast runs have no batches or deliveries; operators.broadcasts keeps them.
    targeted_runs = CampaignRun.objects.filter(campaign__mode=Mode.TARGETED)
    active_runs = targeted_runs.filter(status__in=[RunStatus.FANNING_OUT, RunStatus.SENDING])

    expired_leases = list(
        DispatchBatch.objects.filter(status=BatchStatus.IN_FLIGHT, lease_expires_at__lt=now).values_list(
            "pk", "operator__slug", "attempts"
        )
    )
    redrive = []
    for batch_id, slug, attempts in expired_leases:
        with transaction.atomic():
            if not DispatchBatch.objects.filter(
                pk=batch_id, status=BatchStatus.IN_FLIGHT, lease_expires_at__lt=now
            ).update(status=BatchStatus.PENDING, lease_expires_at=None, next_attempt_at=None, updated_at=now):
                continue
            audit_record(
                actor=None,
                action="batch.lease_expired",
                obj=DispatchBatch(pk=batch_id),
                from_state=BatchStatus.IN_FLIGHT,
                to_state=BatchStatus.PENDING,
                details={"attempts": attempts},
            )
        redrive.append((batch_id, f"dispatch.{slug}"))
        logger.warning("Batch %s lease expired; re-driving it with the same id", batch_id)
    counts["leases"] = len(redrive)

    # A batch that waited for a moment has a countdown task due then, which busy workers may start late: it is lost
    # only once it has been due for as long. One that waited longer than a countdown task may carry has none: the
    # reconciler is what sends it once it is due.
    without_task = Q(next_attempt_at__gt=F("updated_at") + timedelta(seconds=SEND_COUNTDOWN_MAX_SECONDS))
    # A pulling operator's batch of a running run waits for its claim: no task sends it.
    waiting_to_be_pushed = Q(run__in=active_runs, status__in=[BatchStatus.PENDING, BatchStatus.RETRY_WAIT]) & ~Q(
        operator__adapter="pull"
    )
    # A cancelled run's batch is pending only when a lease or a pulling operator's claim lapsed after the cancel:
    # its task cancels it, once sent.
    cancelled_runs = targeted_runs.filter(status=RunStatus.CANCELLED)
    untouched = DispatchBatch.objects.filter(
        waiting_to_be_pushed | Q(run__in=cancelled_runs, status=BatchStatus.PENDING), updated_at__lt=stale
    ).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=stale) | Q(without_task, next_attempt_at__lte=now)
    )
    # A batch waiting its turn behind its operator's queue (a low rate limit, busy workers) is as untouched as one
    # whose task was lost; queueing it again would copy every waiting task on every pass until the queue drains.
    # Those of an operator whose queue holds tasks are re-driven once it has drained.
    busy = _queues_holding_tasks(set(untouched.order_by().values_list("operator__slug", flat=True).distinct()))
    lost = list(untouched.exclude(operator__slug__in=busy).values_list("pk", "operator__slug")[:5000])
    DispatchBatch.objects.filter(pk__in=[pk for pk, _ in lost]).update(updated_at=now)
    redrive.extend((pk, f"dispatch.{slug}") for pk, slug in lost)
    counts["requeued"] = len(lost)
    if redrive:
        # Outside a transaction this runs at once; inside one (tests, callers) after it commits.
        enqueue_on_commit(partial(batches_enqueue, redrive))

    # Restarting is not progress: the mark stays, so a fan-out that no restart gets going is reported as stalled.
    # Until one writes a chunk each pass enqueues another; they queue behind the run's row lock and resume from
    # its cursor, so a spare one writes nothing. Judged by the fan-out's own mark: the sends and reports of the
    # chunks written keep the run's progress moving long after the fan-out task died. A run started before
    # runs had that mark is judged by its progress.
    silent_fanout = Q(fanout_progress_at__lt=stale) | Q(fanout_progress_at__isnull=True, last_progress_at__lt=stale)
    for run_id in (
        targeted_runs.filter(status=RunStatus.FANNING_OUT, fanout_done=False)
        .filter(silent_fanout)
        .values_list("pk", flat=True)
    ):
        enqueue_on_commit(partial(_enqueue_fan_out, run_id))
        counts["fanouts"] += 1

    for run in targeted_runs.filter(status__in=ACTIVE_RUN_STATUSES, expires_at__lt=now, fanout_done=True):
        counts["expired"] += run_expire_overdue(run=run, now=now)
    # A cancelled run's batches already with the operator finish too: what they never report on expires.
    unsettled = [DeliveryStatus.QUEUED, DeliveryStatus.SUBMITTED]
    unreported = Delivery.objects.filter(run=OuterRef("pk"), status__in=unsettled)
    for run in targeted_runs.filter(status=RunStatus.CANCELLED, expires_at__lt=now).filter(Exists(unreported)):
        counts["expired"] += run_expire_overdue(run=run, now=now)

    for run_id in targeted_runs.filter(status__in=[RunStatus.SENDING, RunStatus.PAUSED], fanout_done=True).values_list(
        "pk", flat=True
    ):
        run = run_check_complete(run_id=run_id, now=now)
        if run is not None and run.status in CampaignRun.FINAL_STATUSES:
            counts["completed"] += 1

    # A batch held until a moment in the last STALL_AFTER (quiet hours, an operator's Retry-After) was waiting,
    # not stalled: count the stall from when it may be sent. A deactivated operator's batch is given back and held
    # again every 30 s for as long as the operator stays off, and a throttling operator's is answered 429 and held
    # again at every retry for as long as it throttles: those are judged by how long that has gone on.
    held = DispatchBatch.objects.filter(
        run=OuterRef("pk"), next_attempt_at__gte=now - STALL_AFTER, operator__active=True
    ).exclude(last_error__startswith=THROTTLED_ERROR)
    for run in active_runs.filter(last_progress_at__lt=now - STALL_AFTER).exclude(Exists(held)):
        if is_quiet_for(run, now) is not None:
            continue  # waiting out its quiet hours is not a stall
        inactive, inactive_long = _run_held_by_operators(
            run,
            now=now,
            waiting=Q(operator__active=False),
            held_again=Q(action="batch.release", details__reason="operator_inactive"),
        )
        throttling, throttling_long = _run_held_by_operators(
            run,
            now=now,
            waiting=Q(operator__active=True, last_error__startswith=THROTTLED_ERROR),
            held_again=Q(action="batch.retry", details__error__startswith=THROTTLED_ERROR),
        )
        if (inactive and not inactive_long) or (throttling and not throttling_long):
            continue  # an operator holds it back, for less than STALL_AFTER so far
        if run_report_stall(run=run, inactive_operators=inactive, throttling_operators=throttling):
            counts["stalled"] += 1
    return counts


def _run_held_by_operators(run: CampaignRun, *, now: datetime, waiting: Q, held_again: Q) -> tuple[list[str], bool]:
    """Return the operators whose unsent batches of the run that match `waiting` hold it back, and whether they
    have held it back for STALL_AFTER since the run's last progress.

    Such batches are held again every little while for as long as their operator holds them back (a deactivated
    operator's are given back unsent every 30 s, a throttling operator's are answered 429 at every retry), so their
    wait never looks long: the first `held_again` event on them after the run's last progress says since when they
    hold it back. Batches not held again lately (no worker leases them) are as stalled as any other.
    """
    batches = DispatchBatch.objects.filter(waiting, run=run).exclude(status__in=DispatchBatch.FINAL_STATUSES)
    slugs = list(batches.order_by("operator__slug").values_list("operator__slug", flat=True).distinct())
    if not slugs:
        return [], True
    # They are held again together, so a few of them tell.
    recent = [
        str(pk) for pk in batches.filter(next_attempt_at__gte=now - STALL_AFTER).values_list("pk", flat=True)[:50]
    ]
    if not recent:
        return slugs, True
    held_long = (
        AuditEvent.objects.filter(
            object_type=DispatchBatch._meta.label_lower,
            object_id__in=recent,
            at__gt=run.last_progress_at,
            at__lte=now - STALL_AFTER,
        )
        .filter(held_again)
        .exists()
    )
    return slugs, held_long


def _queues_holding_tasks(slugs: set[str]) -> set[str]:
    """Return the operators among `slugs` whose dispatch queue still holds tasks, as the broker counts them.

    When the broker cannot be asked, none: their batches are re-driven, which a duplicate task never harms.
    """
    from config.celery import app

    busy = set()
    if not slugs:
        return busy
    try:
        with app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, interval_start=0)
            channel = broker.default_channel
            for slug in sorted(slugs):
                if channel.queue_declare(queue=f"dispatch.{slug}").message_count:
                    busy.add(slug)
    except Exception as exc:  # noqa: BLE001 - any broker trouble means "unknown", not a failed reconciler pass
        logger.warning("Could not count the tasks waiting in the dispatch queues (%s); re-driving anyway", exc)
        return set()
    return busy


@transaction.atomic
def run_report_stall(
    *, run: CampaignRun, inactive_operators: list[str] = (), throttling_operators: list[str] = ()
) -> bool:
    """Log and record that the run has made no progress since its mark, once per stall; return whether it did.

    The reconciler finds a stalled run on every pass: one report per stall (a new one only after the run moved
    and stalled again) keeps the error log readable, and the run's history shows it. `inactive_operators` names
    the deactivated operators whose batches wait unsent, `throttling_operators` the operators that answer its
    batches 429. The run's row is locked first: two passes at once (the control process and a worker both take
    the control queue) report it, and email its author, once.
    """
    list(CampaignRun.objects.select_for_update(no_key=True).filter(pk=run.pk).values_list("pk", flat=True))
    since = run.last_progress_at.isoformat()
    if audit_history(run).filter(action="run.stalled", details__since=since).exists():
        return False
    waiting_for = (
        f"; its batches wait for deactivated operator {', '.join(inactive_operators)}" if inactive_operators else ""
    )
    if throttling_operators:
        waiting_for += f"; operator {', '.join(throttling_operators)} answers its batches 429 (too many requests)"
    logger.error(
        "Run %s of campaign %s has made no progress since %s%s",
        run.pk,
        run.campaign_id,
        run.last_progress_at,
        waiting_for,
    )
    details = {
        "since": since,
        **({"inactive_operators": list(inactive_operators)} if inactive_operators else {}),
        **({"throttling_operators": list(throttling_operators)} if throttling_operators else {}),
    }
    audit_record(actor=None, action="run.stalled", obj=run, details=details)
    notices.run_notify_stalled(
        run=run, inactive_operators=inactive_operators, throttling_operators=throttling_operators
    )
    return True


@transaction.atomic
def run_expire_overdue(*, run: CampaignRun, now: datetime) -> int:
    """Past the validity window: unreported messages expire, never-accepted batches fail. Return rows changed."""
    # A batch a worker is leasing right now is skipped: the lease refuses it past the window, and the next pass
    # fails it. Each failed batch gets its own event with the state it left (invariant 6).
    unsent = list(
        run.batches.filter(status__in=[BatchStatus.PENDING, BatchStatus.RETRY_WAIT])
        .select_for_update(skip_locked=True, of=("self",))
        .values_list("pk", "status")
    )
    reason = "The validity window passed before the operator accepted the batch."
    DispatchBatch.objects.filter(pk__in=[pk for pk, _ in unsent]).update(
        status=BatchStatus.FAILED, last_error=reason, updated_at=now
    )
    AuditEvent.objects.bulk_create(
        AuditEvent(
            action="batch.fail",
            object_type=DispatchBatch._meta.label_lower,
            object_id=str(pk),
            from_state=from_state,
            to_state=BatchStatus.FAILED,
            details={"error": reason},
        )
        for pk, from_state in unsent
    )
    failed = Delivery.objects.filter(run=run, batch__status=BatchStatus.FAILED, status=DeliveryStatus.QUEUED).update(
        status=DeliveryStatus.FAILED, reason="validity_passed", updated_at=now
    )
    # Without waiting for messages a report holds: it locks its rows in its own order and this UPDATE would
    # take them in another (a deadlock). A message skipped now is final after that report, or expires next pass.
    # A message the operator reported submitted is with the operator whatever became of its batch (the
    # answer to the batch may have been lost, then the batch failed or was cancelled): it expires too.
    unreported = (
        Delivery.objects.filter(run=run)
        .filter(
            Q(batch__status=BatchStatus.ACCEPTED, status=DeliveryStatus.QUEUED) | Q(status=DeliveryStatus.SUBMITTED)
        )
        .select_for_update(skip_locked=True, no_key=True, of=("self",))
        .values("pk")
    )
    expired = Delivery.objects.filter(pk__in=unreported).update(
        status=DeliveryStatus.EXPIRED, reason="no_report", updated_at=now
    )
    if unsent or expired:
        audit_record(
            actor=None,
            action="run.expire",
            obj=run,
            details={"batches_failed": len(unsent), "deliveries_failed": failed, "deliveries_expired": expired},
        )
    return failed + expired


def deliveries_withdraw_opted_out(*, msisdn: str, now: datetime) -> dict[int, int]:
    """Skip a number's deliveries still waiting in batches never sent, after it opted out; return {run id: count}.

    A STOP during a run (a long one, or one waiting out quiet hours) holds for the batches not sent yet. Only a
    batch never posted gives a number up: once sent, it is retried with the body of its first attempt under
    the same idempotency key (invariant 3). The runs under way are locked first, newest first as a cancel takes
    them: that waits for a fan-out chunk being written, which may hold the number as read before the opt-out,
    so its deliveries are seen here; later chunks read the number opted out. Then the batches are locked, so a
    worker leases one either before (and sends the number) or after (and leaves it out: batch_outbound reads no
    skipped delivery). A split of a leased batch for a lowered rate limit takes its run's lock first too: it
    either commits before, and its new batch is found here, or skips the number itself. A batch left with no
    one to send to is accepted with 0 here, so neither a push worker nor a pulling operator is handed it. Not
    waited for: a run that starts while this transaction runs, whose first chunk may read the number in the few
    milliseconds before it commits.
    """
    runs = list(
        CampaignRun.objects.filter(
            campaign__mode=Mode.TARGETED,
            status__in=[CampaignRun.Status.FANNING_OUT, CampaignRun.Status.SENDING, CampaignRun.Status.PAUSED],
        )
        # The weakest row lock that waits for a fan-out's (FOR UPDATE) and leaves batch inserts (KEY SHARE) alone.
        .select_for_update(no_key=True, of=("self",))
        .order_by("-scheduled_for", "-id")
        .values_list("pk", flat=True)
    )
    if not runs:
        return {}
    waiting = Delivery.objects.filter(run_id__in=runs, msisdn=msisdn, status=QUEUED, batch__isnull=False)
    unsent = list(
        DispatchBatch.objects.select_for_update(of=("self",))
        .filter(pk__in=list(waiting.values_list("batch_id", flat=True)), status=BatchStatus.PENDING, attempts=0)
        # A number has one batch per run; taken newest run first, as campaign_runs_cancel takes them, so a STOP
        # and a cancel of a campaign with two runs under way never wait for each other in a circle.
        .order_by("-run__scheduled_for", "-run_id")
        .values_list("pk", flat=True)
    )
    if not unsent:
        return {}
    withdrawn = waiting.filter(batch_id__in=unsent)
    counts = dict(withdrawn.values("run_id").annotate(n=Count("pk")).values_list("run_id", "n"))
    withdrawn.update(status=SKIPPED, reason="opted_out", done_at=now, updated_at=now)
    _batches_close_emptied(unsent, now=now)
    return counts


def _batches_close_emptied(batch_ids: list, *, now: datetime) -> None:
    """Accept with 0 the locked, never-sent batches left with no queued delivery; audit each and check its run."""
    queued = Delivery.objects.filter(batch_id=OuterRef("pk"), status=QUEUED)
    emptied = list(
        DispatchBatch.objects.filter(pk__in=batch_ids, status=BatchStatus.PENDING, attempts=0)
        .exclude(Exists(queued))
        .values_list("pk", "run_id")
    )
    for batch_id, run_id in emptied:
        if not DispatchBatch.objects.filter(pk=batch_id, status=BatchStatus.PENDING, attempts=0).update(
            status=BatchStatus.ACCEPTED, accepted_count=0, accepted_at=now, next_attempt_at=None, updated_at=now
        ):
            continue
        audit_record(
            actor=None,
            action="batch.accept",
            obj=DispatchBatch(pk=batch_id),
            from_state=BatchStatus.PENDING,
            to_state=BatchStatus.ACCEPTED,
            details={"accepted": 0, "rejected": 0, "attempts": 0, "reason": "opted_out"},
        )
        enqueue_on_commit(partial(run_check_complete_enqueue, run_id))


def is_quiet_for(run: CampaignRun, now: datetime) -> datetime | None:
    """Return when the quiet hours holding back this normal-priority run end, or None if it may send now."""
    frozen = run.frozen or {}
    if frozen.get("priority", Priority.NORMAL) == Priority.URGENT or not frozen.get("quiet_hours"):
        return None
    zones = [zone for name in frozen.get("quiet_zones") or [] if (zone := scheduling.zone_named(name))]
    if not zones:
        # A run started before runs kept every zone they reach: its own zone and those of its areas. Its polygon's
        # province is not looked up again here, on every lease of one of its batches.
        own = scheduling.zone_named(frozen.get("zone"))
        zones = [own or target_zone(frozen.get("area_codes"), frozen.get("polygon"))]
        for code in frozen.get("area_codes") or []:
            if (zone := scheduling.zone_for_area_code(code)) not in zones:
                zones.append(zone)
    return scheduling.quiet_hours_end_in(now, quiet_hours=frozen["quiet_hours"], zones=zones)
