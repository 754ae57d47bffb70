"""Area broadcasts: validation, reach estimate, the run at the start of the window, one provider message per
operator with its own retries, cancels, reach reports and the end of the window.

Flow: `area_broadcasts_tick` (every few seconds from beat) starts due campaigns with `area_broadcast_run_start`,
which re-checks the approval (invariant 1), freezes text, area and window on the run and writes one
AreaBroadcast per operator; `area_broadcast_send` pushes one of them through the operator's adapter and
records the answer. A failing operator only delays its own row. A cancel is delivered to every operator that may
hold the broadcast (it acknowledged, or a send went out unanswered; one in flight is awaited) and retried until
the operator confirms or answers that it holds none (`area_broadcast_cancel_send`); a cancelled broadcast is never
pushed again.
"""

import logging
import random
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import shapely
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from shapely.geometry.base import BaseGeometry

from campaigns import notices
from campaigns.models import Campaign, CampaignRun, Mode
from operators import areageom
from operators.gateways.base import (
    AreaBroadcastResult,
    OutboundAreaBroadcast,
    Outcome,
    get_adapter,
    sends_area_broadcasts,
)
from operators.models import AreaBroadcast, AreaBroadcastEvent, AreaBroadcastReach, BroadcastSettings, Operator
from operators.services import runs_mark_progress_on_commit
from smsblast import sms
from smsblast.audit import audit_record
from smsblast.errors import ServiceConflict, ServiceInvalid
from smsblast.models import Area, AreaLevel, User
from smsblast.transactions import isolated

logger = logging.getLogger(__name__)

State = AreaBroadcast.State
CampaignStatus = Campaign.Status
RunStatus = CampaignRun.Status

MIN_WINDOW = timedelta(minutes=5)
MAX_WINDOW = timedelta(hours=24)
# Campaign states from which the window may start: approved, or approved and scheduled.
STARTABLE = (CampaignStatus.APPROVED, CampaignStatus.SCHEDULED)
# A send or cancel request in flight for longer than this is presumed lost (worker died) and re-driven.
LEASE = timedelta(seconds=60)
# Sends are retried with exponential backoff and jitter, each operator on its own clock, for as long as the
# window lasts: a warning must reach an operator that recovers late in it. A broadcast without a recorded
# window end (none is created so) gets this many attempts.
MAX_SEND_ATTEMPTS = 10
MAX_BACKOFF_SECONDS = 120.0
# A backoff passing the window's end would give up on an operator while up to MAX_BACKOFF_SECONDS of the window are
# left: it is tried once more this long before the end instead, time enough to be acknowledged and broadcast.
LAST_TRY_BEFORE_END = timedelta(seconds=30)
# Why an operator's broadcast ended without its acknowledgement, as stored in `last_error` (the pages translate
# these; the two prefixes come before the operator's own error).
WINDOW_ENDED_UNACKNOWLEDGED = "The window ended before the operator acknowledged."
WINDOW_ENDED_BEFORE_CANCEL = "The window ended before the cancel was confirmed."
NOT_ACKNOWLEDGED_IN_WINDOW = "Not acknowledged before the window ends: "
# Why a send waits: its operator was deactivated in the admin, which hands it no new work (as for batches).
OPERATOR_INACTIVE = "The operator is deactivated; sent once it is reactivated while the window lasts."
INACTIVE_HOLD = timedelta(seconds=30)
RETRIES_SPENT = "Retry budget spent: "

SPILL_NOTE = (
    "Operators send to every handset their cells in the area serve. Cells reach past the boundary, so "
    "handsets just outside may receive the message too, and visitors entering during the window add to "
    "the estimate; people without a phone, or with it off, are not reached."
)


# --- validation and estimate ---------------------------------------------------------------


def broadcast_operators(campaign: Campaign) -> list[Operator]:
    """Return the operators the campaign uses: its slugs or every active one; exercises use test endpoints only.

    An operator whose adapter sends no area broadcasts (one that pulls its batches, the log adapter) is left out:
    a send to it could only be retried until the window ends.
    """
    operators = Operator.objects.filter(active=True)
    if campaign.operator_slugs:
        operators = operators.filter(slug__in=campaign.operator_slugs)
    if campaign.exercise:
        operators = operators.filter(is_test_endpoint=True)
    return [operator for operator in operators.order_by("name") if sends_area_broadcasts(operator.adapter)]


def broadcast_errors(campaign: Campaign, *, now: datetime | None = None) -> dict[str, str]:
    """Return field errors that keep an area-broadcast campaign from being submitted or started."""
    now = now or timezone.now()
    errors: dict[str, str] = {}
    if campaign.mode != Mode.AREA_BROADCAST:
        return {"mode": "Not an area-broadcast campaign."}
    if not campaign.area_codes and not campaign.polygon:
        errors["area_codes"] = "Choose at least one area or draw a polygon."
    if campaign.polygon:
        try:
            areageom.drawn_area_geometry(campaign.polygon, checked=False)
        except areageom.AreaError as exc:
            errors["polygon"] = str(exc)
    if not campaign.starts_at or not campaign.ends_at:
        errors["starts_at"] = "An area broadcast needs a window: starts_at and ends_at."
    else:
        window = campaign.ends_at - campaign.starts_at
        if window < MIN_WINDOW:
            errors["ends_at"] = "The window must last at least 5 minutes."
        elif window > MAX_WINDOW:
            errors["ends_at"] = "The window may last at most 24 hours."
        if campaign.starts_at <= now:
            errors["starts_at"] = "The window must start in the future."
    if campaign.operator_slugs:
        known = dict(
            Operator.objects.filter(slug__in=campaign.operator_slugs, active=True).values_list("slug", "adapter")
        )
        missing = sorted(set(campaign.operator_slugs) - set(known))
        unable = sorted(slug for slug, adapter in known.items() if not sends_area_broadcasts(adapter))
        if missing:
            errors["operator_slugs"] = f"Unknown or inactive operators: {', '.join(missing)}."
        elif unable:
            errors["operator_slugs"] = (
                f"These operators cannot receive area broadcasts (they fetch their batches, or their adapter sends "
                f"batches only): {', '.join(unable)}."
            )
    if "operator_slugs" not in errors and not broadcast_operators(campaign):
        errors["operator_slugs"] = (
            "An exercise goes only to operators marked as test endpoints, and none is selected."
            if campaign.exercise
            else "No active operator is selected."
        )
    return errors


def _top_codes(codes) -> list[str]:
    """Drop codes that lie below another selected code, so no population is counted twice."""
    codes = sorted(set(codes))
    return [c for c in codes if not any(c != other and c.startswith(f"{other}.") for other in codes)]


def area_population(area: Area) -> tuple[int | None, str]:
    """Return the area's population and where it comes from.

    Census figures exist for provinces and regencies; a kecamatan or desa gets its regency's population
    shared equally among the regency's areas of the same level.
    """
    if area.population is not None:
        return area.population, "census"
    if area.level == AreaLevel.PROVINSI:
        total = sum(
            p or 0
            for p in Area.objects.filter(parent=area, level=AreaLevel.KABUPATEN).values_list("population", flat=True)
        )
        return (total, "sum of regencies") if total else (None, "unknown")
    regency_code = ".".join(area.code.split(".")[:2])
    regency = Area.objects.filter(code=regency_code).only("population").first()
    if regency is None or regency.population is None:
        return None, "unknown"
    siblings = Area.objects.within([regency_code]).filter(level=area.level).count()
    return regency.population // max(siblings, 1), f"regency population shared by {siblings} {area.level}"


def broadcast_estimate(campaign: Campaign) -> dict[str, Any]:
    """Return the estimated handsets reached: {"handsets", "ownership_rate", "note", "by_area": [...]}."""
    rate = BroadcastSettings.load().phone_ownership_rate
    by_area = []
    total = 0
    known = False
    for area in Area.objects.filter(code__in=_top_codes(campaign.area_codes or [])).order_by("code"):
        population, source = area_population(area)
        handsets = _handsets(population, rate)
        by_area.append(
            {
                "code": area.code,
                "name": area.name,
                "level": area.level,
                "population": population,
                "population_source": source,
                "handsets": handsets,
            }
        )
        if handsets is not None:
            total += handsets
            known = True
    if campaign.polygon:
        # The polygon is broadcast to with the chosen areas: only its part outside them adds handsets.
        drawn = _polygon_estimate(campaign.polygon, rate, outside=_code_shapes(campaign.area_codes or []))
        by_area.extend(drawn)
        for row in drawn:
            total += row["handsets"] or 0
            known = known or row["handsets"] is not None
    return {
        "handsets": total if known else None,
        "ownership_rate": float(rate),
        "note": SPILL_NOTE if known else "No population figures are loaded for this area. " + SPILL_NOTE,
        "by_area": by_area,
    }


def _handsets(population: int | None, rate: Decimal) -> int | None:
    return None if population is None else int(Decimal(population) * rate)


def _polygon_estimate(polygon: dict, rate: Decimal, *, outside: list | None = None) -> list[dict[str, Any]]:
    """Estimate a drawn polygon from the regencies it overlaps, pro rata by the overlapped share of their area.

    With `outside` (shapes of areas estimated already), only the part of the polygon outside them is estimated.
    """
    try:
        drawn = areageom.drawn_area_geometry(polygon, checked=False)
    except areageom.AreaError:
        return []
    if outside:
        drawn = drawn.difference(areageom.union_of(outside))
        if drawn.is_empty:
            return []
    rows = []
    regencies = _regency_boundaries()
    nearby = sorted(regencies.near(drawn))
    for area in Area.objects.filter(code__in=nearby).only("code", "name", "level", "population").order_by("code"):
        boundary = regencies.shape(area.code)
        if boundary is None or not boundary.intersects(drawn) or boundary.area == 0:
            continue
        share = boundary.intersection(drawn).area / boundary.area
        population = None if area.population is None else int(area.population * share)
        rows.append(
            {
                "code": area.code,
                "name": area.name,
                "level": area.level,
                "population": population,
                "population_source": f"{share:.0%} of the regency's area",
                "handsets": _handsets(population, rate),
            }
        )
    return rows


# Regency boundaries change only when load_areas runs or an admin edits one: a process reads them again after
# this many seconds, or at once when their number changes (as polygon targeting does, smsblast.selectors).
REGENCY_BOUNDARY_TTL = 300.0
_regency_cache: dict = {}


class _RegencyBoundaries:
    """The kabupaten/kota boundaries a drawn polygon is estimated from, read once per process.

    Reading and repairing all 514 of them took seconds; their bounding boxes pick the few a polygon may meet,
    and only those are read as shapes (as `areageom.geometry_from_geojson` reads them), each once.
    """

    def __init__(self) -> None:
        regencies = Area.objects.filter(level=AreaLevel.KABUPATEN, boundary__isnull=False)
        # As text, parsed by GEOS in one call: decoding the JSON into Python first took as long again.
        rows = list(regencies.annotate(text=Cast("boundary", TextField())).values_list("code", "text"))
        self.count = len(rows)
        self.codes = [code for code, _ in rows]
        outlines = shapely.from_geojson([text for _, text in rows], on_invalid="ignore")
        # One that GEOS cannot read is always looked at, and skipped there as before when it cannot be read.
        self.unread = [code for code, outline in zip(self.codes, outlines, strict=True) if outline is None]
        self.tree = shapely.STRtree([shapely.envelope(outline) for outline in outlines])
        self.shapes: dict[str, BaseGeometry | None] = {}

    def near(self, drawn: BaseGeometry) -> set[str]:
        """Return the codes of the regencies whose bounding box meets that of `drawn`."""
        return {self.codes[index] for index in self.tree.query(shapely.envelope(drawn))} | set(self.unread)

    def shape(self, code: str) -> BaseGeometry | None:
        """Return the regency's boundary as a shape, None when it cannot be read."""
        if code not in self.shapes:
            boundary = Area.objects.filter(code=code).values_list("boundary", flat=True).first()
            try:
                self.shapes[code] = areageom.geometry_from_geojson(boundary) if boundary else None
            except areageom.AreaError:
                self.shapes[code] = None
        return self.shapes[code]


def _regency_boundaries() -> _RegencyBoundaries:
    count = Area.objects.filter(level=AreaLevel.KABUPATEN, boundary__isnull=False).count()
    cached = _regency_cache.get("regencies")
    if cached is None or cached.count != count or time.monotonic() >= _regency_cache["until"]:
        cached = _RegencyBoundaries()
        _regency_cache.update(regencies=cached, until=time.monotonic() + REGENCY_BOUNDARY_TTL)
    return cached


def broadcast_area_shapes(campaign: Campaign) -> list:
    """Return the shapely geometries of the campaign's area: boundaries of its codes and its drawn polygon.

    A code without a boundary of its own is covered by the boundaries of the areas below it, where known,
    else by that of the nearest area above it: an area sent too large is better than one left out.
    """
    shapes = _code_shapes(campaign.area_codes or [])
    if campaign.polygon:
        shapes.append(areageom.drawn_area_geometry(campaign.polygon, checked=False))
    return shapes


def approved_area_shapes(campaign: Campaign) -> list:
    """Return the shapely geometries of the campaign's area as its approval froze them (invariant 1): a boundary
    edited since does not move the area sent. An approval from before areas were frozen gives today's boundaries."""
    from campaigns.services import campaign_current_approval

    approval = campaign_current_approval(campaign)
    if approval is None or approval.area_shapes is None:
        return broadcast_area_shapes(campaign)
    return [areageom.geometry_from_geojson(geometry) for geometry in approval.area_shapes]


def _code_shapes(codes) -> list:
    """Return the shapely geometries covering the areas of `codes` (see `broadcast_area_shapes`)."""
    shapes = []
    for code in _top_codes(codes):
        own = Area.objects.filter(code=code, boundary__isnull=False).values_list("boundary", flat=True).first()
        boundaries = [own] if own else Area.objects.within([code]).filter(boundary__isnull=False)
        if not own:
            boundaries = list(boundaries.values_list("boundary", flat=True)) or _ancestor_boundary(code)
        for boundary in boundaries:
            try:
                shapes.append(areageom.geometry_from_geojson(boundary))
            except areageom.AreaError:
                logger.warning("Area %s has an unreadable boundary", code)
    return shapes


def _ancestor_boundary(code: str) -> list[dict]:
    """Return the boundary of the nearest area above `code` that has one, as a list (empty if none has)."""
    parts = code.split(".")
    ancestors = [".".join(parts[:depth]) for depth in range(len(parts) - 1, 0, -1)]
    known = dict(Area.objects.filter(code__in=ancestors, boundary__isnull=False).values_list("code", "boundary"))
    return next(([known[ancestor]] for ancestor in ancestors if ancestor in known), [])


# --- start of the window -------------------------------------------------------------------


def area_broadcasts_due(*, now: datetime) -> list[int]:
    """Return ids of approved area-broadcast campaigns whose window has begun and has no run yet."""
    return list(
        Campaign.objects.filter(
            mode=Mode.AREA_BROADCAST, status__in=STARTABLE, starts_at__lte=now, ends_at__gt=now
        ).values_list("id", flat=True)
    )


def area_broadcasts_missed(*, now: datetime) -> list[int]:
    """Return ids of approved area-broadcast campaigns whose window ended before it could start."""
    return list(
        Campaign.objects.filter(mode=Mode.AREA_BROADCAST, status__in=STARTABLE, ends_at__lte=now).values_list(
            "id", flat=True
        )
    )


@transaction.atomic
def area_broadcast_window_missed(*, campaign_id: int, now: datetime) -> bool:
    """End an approved area broadcast whose window passed before it started (no scheduler tick in its window, or
    approved in its last seconds): cancelled, saying that nothing was sent, and its author told. Return whether it
    was ended here; a campaign started, cancelled or changed meanwhile is left alone."""
    from campaigns.notices import campaign_notify_window_missed
    from campaigns.services import campaign_move

    campaign = Campaign.objects.select_for_update().filter(pk=campaign_id, mode=Mode.AREA_BROADCAST).first()
    if campaign is None or campaign.status not in STARTABLE or not campaign.ends_at or campaign.ends_at > now:
        return False
    moved = campaign_move(
        campaign=campaign,
        to_state=CampaignStatus.CANCELLED,
        actor=None,
        action="campaign.window_missed",
        details={
            "reason": "The broadcast window ended before it could start; nothing was sent.",
            "ends_at": campaign.ends_at.isoformat(),
        },
        now=now,
        next_run_at=None,
    )
    if moved:
        campaign_notify_window_missed(campaign=campaign)
    return moved


@transaction.atomic
def area_broadcast_run_start(*, campaign_id: int, now: datetime | None = None) -> CampaignRun | None:
    """Start the campaign's window: freeze what is sent on a run and write one provider message per operator.

    Returns None when the campaign is not (or no longer) startable, or its approval does not bind its current
    content; nothing is sent then (invariant 1).
    """
    from campaigns.services import (
        campaign_approval_is_valid,
        campaign_content_hash,
        campaign_dispatch_refuse,
        campaign_move,
    )

    now = now or timezone.now()
    campaign = Campaign.objects.select_for_update().filter(pk=campaign_id, mode=Mode.AREA_BROADCAST).first()
    if campaign is None or campaign.status not in STARTABLE or not campaign.starts_at or not campaign.ends_at:
        return None
    if campaign.starts_at > now or campaign.ends_at <= now:
        return None
    if not campaign_approval_is_valid(campaign):
        campaign_dispatch_refuse(campaign=campaign, now=now)
        return None
    analysis = sms.analyze(campaign.text)
    operators = broadcast_operators(campaign)
    shapes = approved_area_shapes(campaign)
    estimate = broadcast_estimate(campaign)
    frozen = {
        "area": {
            "codes": sorted(campaign.area_codes or []),
            "geometry": areageom.broadcast_area(shapes) if shapes else None,
        },
        "starts_at": campaign.starts_at.isoformat(),
        "ends_at": campaign.ends_at.isoformat(),
        "repeat_policy": campaign.repeat_policy,
        "exercise": campaign.exercise,
        "priority": campaign.priority,
        "operators": [operator.slug for operator in operators],
        "estimated_handsets": estimate["handsets"],
    }
    try:
        with transaction.atomic():
            run = CampaignRun.objects.create(
                campaign=campaign,
                scheduled_for=campaign.starts_at,
                status=RunStatus.SENDING,
                content_hash=campaign_content_hash(campaign),
                text=campaign.text,
                sender=campaign.sender,
                segments=analysis.segments,
                encoding=analysis.encoding,
                frozen=frozen,
                fanout_done=True,
                started_at=now,
                expires_at=campaign.ends_at,
                last_progress_at=now,
            )
    except IntegrityError:
        return None  # this window already has its run
    started = campaign_move(
        campaign=campaign,
        to_state=CampaignStatus.SENDING,
        actor=None,
        action="campaign.start",
        details={"run_id": run.pk, "mode": Mode.AREA_BROADCAST, "operators": frozen["operators"]},
        now=now,
        next_run_at=None,
    )
    if not started:
        raise ServiceConflict("The campaign changed state while its window was starting.")
    audit_record(actor=None, action="run.start", obj=run, to_state=RunStatus.SENDING)
    areas_by_limit: dict[int, dict | None] = {}
    for operator in operators:
        if operator.vertex_limit not in areas_by_limit:
            areas_by_limit[operator.vertex_limit] = (
                areageom.broadcast_area(shapes, vertex_limit=max(operator.vertex_limit, 5)) if shapes else None
            )
        broadcast = AreaBroadcast.objects.create(
            run=run, operator=operator, area=areas_by_limit[operator.vertex_limit] or {}
        )
        _event(broadcast, State.PENDING, {"vertex_limit": operator.vertex_limit}, from_state="")
    if not operators:
        area_broadcast_run_finish(run_id=run.pk, now=now, force=True)
    else:
        for broadcast_id in AreaBroadcast.objects.filter(run=run).values_list("id", flat=True):
            _enqueue_after_commit("send", broadcast_id)
    return run


# --- sending -------------------------------------------------------------------------------


def area_broadcast_send(*, broadcast_id, now: datetime | None = None) -> AreaBroadcast | None:
    """Push one provider message through its operator's adapter and record the answer.

    Returns None when the row is not due (final, in flight elsewhere, or waiting for its next attempt).
    """
    claimed_at = now or timezone.now()
    broadcast = _claim_send(broadcast_id, claimed_at)
    if broadcast is None:
        return None
    return _record_send(broadcast, _adapter_call(broadcast, "send_area_broadcast"), now=now)


@transaction.atomic
def _claim_send(broadcast_id, now: datetime) -> AreaBroadcast | None:
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    # Only the broadcast row: the default ordering joins its run and operator, which FOR UPDATE would lock too,
    # after the broadcast, where the end of the window takes the run first.
    broadcast = AreaBroadcast.objects.select_for_update(of=("self",)).filter(pk=broadcast_id).filter(due).first()
    if broadcast is None or broadcast.state not in (State.PENDING, State.ERROR, State.SENDING):
        return None
    run_ends = _window_end(broadcast)
    if run_ends and run_ends <= now:
        _finish_unacknowledged(broadcast, WINDOW_ENDED_UNACKNOWLEDGED)
        return None
    if broadcast.cancel_requested_at:
        # Cancelled while a send was in flight that never answered (its lease ran out): told to stop, not re-sent.
        _cancel_instead_of_send(broadcast, now)
        return None
    if not Operator.objects.filter(pk=broadcast.operator_id, active=True).exists():
        # Held unsent, no attempt counted, and looked at again shortly: reactivated, it is sent within a minute.
        AreaBroadcast.objects.filter(pk=broadcast.pk, state=broadcast.state).update(
            next_attempt_at=now + INACTIVE_HOLD, last_error=OPERATOR_INACTIVE, updated_at=now
        )
        return None
    previous = broadcast.state
    rows = AreaBroadcast.objects.filter(pk=broadcast.pk, state=previous).update(
        state=State.SENDING, attempts=broadcast.attempts + 1, next_attempt_at=now + LEASE, updated_at=now
    )
    if rows != 1:
        return None
    broadcast.refresh_from_db()
    _event(broadcast, State.SENDING, {"attempt": broadcast.attempts}, from_state=previous)
    return AreaBroadcast.objects.select_related("operator", "run").get(pk=broadcast.pk)


def _cancel_instead_of_send(broadcast: AreaBroadcast, now: datetime) -> None:
    previous = broadcast.state
    rows = AreaBroadcast.objects.filter(pk=broadcast.pk, state=previous).update(
        state=State.CANCEL_PENDING, next_attempt_at=now, updated_at=now
    )
    if rows == 1:
        broadcast.refresh_from_db()
        _event(broadcast, State.CANCEL_PENDING, {"cancel_requested": True}, from_state=previous)
        _enqueue_after_commit("cancel", broadcast.pk)


def _outbound(broadcast: AreaBroadcast) -> OutboundAreaBroadcast:
    run = broadcast.run
    operator = broadcast.operator
    frozen = run.frozen
    return OutboundAreaBroadcast(
        broadcast_id=str(broadcast.pk),
        campaign_id=run.campaign_id,
        sender=run.sender,
        text=run.text,
        encoding=run.encoding,
        segments=run.segments,
        area_codes=list(frozen["area"]["codes"]),
        geometry=broadcast.area or None,
        starts_at=frozen["starts_at"],
        ends_at=frozen["ends_at"],
        repeat_policy=frozen.get("repeat_policy", ""),
        callback_url=area_broadcast_callback_url(),
        base_url=operator.base_url,
        api_key=operator.api_key,
        signing_secret=operator.signing_secret,
        estimated_handsets=_operator_share(frozen.get("estimated_handsets"), len(frozen.get("operators") or [])),
    )


def _operator_share(handsets: int | None, operators: int) -> int | None:
    return None if handsets is None else handsets // max(operators, 1)


def area_broadcast_callback_url() -> str:
    """Return where operators post reach reports."""
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/api/v1/operator/area-broadcast-reports/"


def _backoff_seconds(attempts: int, retry_after: float | None) -> float:
    base = float(getattr(settings, "AREA_BROADCAST_RETRY_BASE_SECONDS", 2.0))
    delay = min(MAX_BACKOFF_SECONDS, base * 2 ** max(attempts - 1, 0))
    delay *= 0.5 + random.random() / 2  # jitter keeps retries of several rows from arriving together
    return max(delay, retry_after or 0.0)


@transaction.atomic
def _record_send(broadcast: AreaBroadcast, result: AreaBroadcastResult, *, now: datetime | None) -> AreaBroadcast:
    """Record the operator's answer; `now`, when given, is the caller's clock for when to retry."""
    clock = max(now, timezone.now()) if now else timezone.now()
    now = timezone.now()
    locked = AreaBroadcast.objects.select_for_update().get(pk=broadcast.pk)
    if locked.state != State.SENDING:
        return locked  # the lease expired and another attempt took over; its answer counts
    details = {"attempt": locked.attempts, "status_code": result.status_code}
    if result.outcome == Outcome.ACCEPTED:
        to_state = State.CANCEL_PENDING if locked.cancel_requested_at else State.ACKNOWLEDGED
        updates = {
            "state": to_state,
            "operator_ref": result.operator_ref[:100],
            "acknowledged_at": now,
            "next_attempt_at": now if to_state == State.CANCEL_PENDING else None,
            "last_error": "",
        }
        details["operator_ref"] = result.operator_ref
    elif result.outcome == Outcome.RETRY and locked.cancel_requested_at:
        # Cancelled meanwhile: the failed attempt may still have reached the operator, which is told to stop.
        to_state = State.CANCEL_PENDING
        updates = {"state": to_state, "next_attempt_at": now, "last_error": result.error}
        details["error"] = result.error
    elif result.outcome == Outcome.RETRY and (retry_at := _retry_at(locked, clock, result.retry_after)):
        to_state = State.ERROR
        updates = {"state": to_state, "next_attempt_at": retry_at, "last_error": result.error}
        details["error"] = result.error
    else:
        to_state = State.RETRIES_EXHAUSTED
        if result.outcome == Outcome.FAILED:
            reason = result.error
        elif _window_end(locked) is not None:
            reason = f"{NOT_ACKNOWLEDGED_IN_WINDOW}{result.error}"
        else:
            reason = f"{RETRIES_SPENT}{result.error}"
        updates = {"state": to_state, "next_attempt_at": None, "last_error": reason, "finished_at": now}
        details["error"] = reason
    AreaBroadcast.objects.filter(pk=locked.pk, state=State.SENDING).update(updated_at=now, **updates)
    locked.refresh_from_db()
    _event(locked, to_state, details, from_state=State.SENDING)
    if to_state == State.CANCEL_PENDING:
        _enqueue_after_commit("cancel", locked.pk)
    elif to_state == State.RETRIES_EXHAUSTED:
        _audit_operator_failure(locked)
    return locked


def _retry_at(broadcast: AreaBroadcast, clock: datetime, retry_after: float | None) -> datetime | None:
    """Return when a failed send is tried again, or None when it is not.

    After its backoff while the window is still open then; when the backoff would pass the end, once more
    LAST_TRY_BEFORE_END before it, unless the operator asked to wait longer (Retry-After) or that moment has passed.
    """
    retry_at = clock + timedelta(seconds=_backoff_seconds(broadcast.attempts, retry_after))
    window_end = _window_end(broadcast)
    if window_end is None:
        return retry_at if broadcast.attempts < MAX_SEND_ATTEMPTS else None
    if retry_at < window_end:
        return retry_at
    last_try = window_end - LAST_TRY_BEFORE_END
    if last_try <= clock or (retry_after and clock + timedelta(seconds=retry_after) > last_try):
        return None
    return last_try


def _window_end(broadcast: AreaBroadcast) -> datetime | None:
    ends = (broadcast.run.frozen or {}).get("ends_at")
    return datetime.fromisoformat(ends) if ends else None


def _finish_unacknowledged(broadcast: AreaBroadcast, reason: str) -> None:
    now = timezone.now()
    previous = broadcast.state
    rows = AreaBroadcast.objects.filter(pk=broadcast.pk, state=previous).update(
        state=State.RETRIES_EXHAUSTED, next_attempt_at=None, last_error=reason, finished_at=now, updated_at=now
    )
    if rows == 1:
        broadcast.refresh_from_db()
        _event(broadcast, State.RETRIES_EXHAUSTED, {"error": reason}, from_state=previous)
        _audit_operator_failure(broadcast)


def _audit_operator_failure(broadcast: AreaBroadcast) -> None:
    audit_record(
        actor=None,
        action="area_broadcast.failed",
        obj=broadcast.run,
        details={"operator": broadcast.operator.slug, "broadcast_id": str(broadcast.pk), "error": broadcast.last_error},
    )


# --- cancel --------------------------------------------------------------------------------


@transaction.atomic
def area_broadcast_run_cancel(
    *, run: CampaignRun, now: datetime | None = None, actor: User | None = None
) -> CampaignRun:
    """Cancel a run's broadcasts: at once where nothing was sent, through the operator everywhere else.

    `actor` is who cancelled the campaign; None when the tick passes a cancel on.
    """
    now = now or timezone.now()
    previous = run.status
    if previous not in CampaignRun.FINAL_STATUSES:
        # The run was read before this call: only a cancel that moved it is audited (the window may have ended).
        if CampaignRun.objects.filter(pk=run.pk, status=previous).update(status=RunStatus.CANCELLED, finished_at=now):
            audit_record(actor=actor, action="run.cancel", obj=run, from_state=previous, to_state=RunStatus.CANCELLED)
        run.refresh_from_db()
    # Only the broadcast rows: the default ordering joins their operators, which FOR UPDATE would lock too.
    for broadcast in AreaBroadcast.objects.select_for_update(of=("self",)).filter(
        run=run, cancel_requested_at__isnull=True
    ):
        area_broadcast_cancel_request(broadcast=broadcast, now=now, actor=actor)
    return run


def area_broadcast_cancel_request(
    *, broadcast: AreaBroadcast, now: datetime, actor: User | None = None
) -> AreaBroadcast:
    """Mark one provider message for cancelling; the cancel goes out at once unless a send is in flight."""
    if broadcast.state in AreaBroadcast.FINAL_STATES or broadcast.cancel_requested_at:
        return broadcast
    if broadcast.state == State.PENDING and broadcast.attempts == 0:
        to_state, updates = State.CANCELLED, {"finished_at": now, "next_attempt_at": None}
    elif broadcast.state == State.SENDING:
        # A send in flight: its answer decides (acknowledged, or failed and perhaps held), then the cancel follows.
        to_state, updates = broadcast.state, {}
    else:
        # Acknowledged, or sent before without an answer: the operator may hold it, so it is told to stop. It is
        # never pushed again: an operator that does not hold it answers 404, which ends the broadcast cancelled.
        to_state, updates = State.CANCEL_PENDING, {"next_attempt_at": now}
    previous = broadcast.state
    rows = AreaBroadcast.objects.filter(pk=broadcast.pk, state=previous).update(
        state=to_state, cancel_requested_at=now, updated_at=now, **updates
    )
    if rows != 1:
        raise ServiceConflict("The broadcast changed state while being cancelled; try again.")
    broadcast.refresh_from_db()
    _event(
        broadcast,
        to_state,
        {"cancel_requested": True},
        from_state=previous,
        action="area_broadcast.cancel_request",
        actor=actor,
    )
    if to_state == State.CANCEL_PENDING:
        _enqueue_after_commit("cancel", broadcast.pk)
    return broadcast


def area_broadcast_cancel_send(*, broadcast_id, now: datetime | None = None) -> AreaBroadcast | None:
    """Deliver the cancel of an acknowledged broadcast to its operator; retried until the operator confirms."""
    now = now or timezone.now()
    broadcast = _claim_cancel(broadcast_id, now)
    if broadcast is None:
        return None
    return _record_cancel(broadcast, _adapter_call(broadcast, "cancel_area_broadcast"))


@transaction.atomic
def _claim_cancel(broadcast_id, now: datetime) -> AreaBroadcast | None:
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    # One UPDATE: a second one of the row in this transaction would re-check its run foreign key, waiting on
    # a window's end that holds the run and waits on this row (a deadlock).
    rows = (
        AreaBroadcast.objects.filter(pk=broadcast_id, state=State.CANCEL_PENDING)
        .filter(due)
        .update(next_attempt_at=now + LEASE, cancel_attempts=F("cancel_attempts") + 1, updated_at=now)
    )
    if rows != 1:
        return None
    return AreaBroadcast.objects.select_related("operator", "run").get(pk=broadcast_id)


@transaction.atomic
def _record_cancel(broadcast: AreaBroadcast, result: AreaBroadcastResult) -> AreaBroadcast:
    now = timezone.now()
    details = {"cancel_attempt": broadcast.cancel_attempts, "status_code": result.status_code}
    if result.outcome == Outcome.ACCEPTED or result.status_code in (404, 410):
        # 404/410: the operator no longer holds the broadcast (it ended), which is what a cancel wants.
        to_state = State.CANCELLED
        updates = {"next_attempt_at": None, "finished_at": now, "last_error": ""}
    else:
        to_state = State.CANCEL_PENDING
        delay = _backoff_seconds(min(broadcast.cancel_attempts, 5), result.retry_after)
        updates = {"next_attempt_at": now + timedelta(seconds=delay), "last_error": result.error}
        details["error"] = result.error
    rows = AreaBroadcast.objects.filter(pk=broadcast.pk, state=State.CANCEL_PENDING).update(
        state=to_state, updated_at=now, **updates
    )
    broadcast.refresh_from_db()
    if rows == 1:
        _event(broadcast, to_state, details, from_state=State.CANCEL_PENDING)
    return broadcast


# --- reach reports -------------------------------------------------------------------------


@transaction.atomic
def area_broadcast_report(*, operator: Operator, broadcast_id, handsets_reached: int, at: datetime) -> AreaBroadcast:
    """Record a cumulative reach report of one of the operator's own broadcasts.

    A repeated report is stored once; a late, smaller count is kept in the log but never lowers the figure.
    """
    broadcast = AreaBroadcast.objects.filter(pk=broadcast_id, operator=operator).first()
    if broadcast is None:
        raise ServiceInvalid(f"No area broadcast {broadcast_id} of this operator.", {"broadcast_id": "Unknown."})
    if isinstance(handsets_reached, bool) or not isinstance(handsets_reached, int) or handsets_reached < 0:
        raise ServiceInvalid("handsets_reached must be a whole number ≥ 0.", {"handsets_reached": "Invalid."})
    # Nobody was reached after the report arrived: a later time is the operator's clock, and would stretch the
    # reach series to it.
    if at > timezone.now():
        if AreaBroadcastReach.objects.filter(broadcast=broadcast, handsets_reached=handsets_reached).exists():
            # Its time is its arrival, so a repeat would arrive as a new point: the count is known, nothing is new.
            return broadcast
        at = timezone.now()
    # Nor before the broadcast was handed over: an earlier time (year 1, 1970) is a clock, not a reach.
    at = max(at, broadcast.created_at)
    _, created = AreaBroadcastReach.objects.get_or_create(broadcast=broadcast, at=at, handsets_reached=handsets_reached)
    if created:
        AreaBroadcast.objects.filter(pk=broadcast.pk, handsets_reached__lt=handsets_reached).update(
            handsets_reached=handsets_reached, reached_at=at, updated_at=timezone.now()
        )
        runs_mark_progress_on_commit([broadcast.run_id], timezone.now())
    broadcast.refresh_from_db()
    return broadcast


# --- end of the window and the periodic tick -----------------------------------------------


@transaction.atomic
def area_broadcast_run_finish(*, run_id: int, now: datetime | None = None, force: bool = False) -> CampaignRun | None:
    """Close a run whose window has ended: acknowledged broadcasts complete, the others failed.

    The campaign completes, or completes with failures when some operator never acknowledged.
    """
    from campaigns.services import campaign_move

    now = now or timezone.now()
    # The campaign row first, then the run, in the order a cancel takes them: the other way round, a cancel
    # holding the campaign and waiting for this run deadlocks with this transaction.
    campaign_id = CampaignRun.objects.filter(pk=run_id).values_list("campaign_id", flat=True).first()
    Campaign.objects.select_for_update().filter(pk=campaign_id).first()
    run = CampaignRun.objects.select_for_update().select_related("campaign").filter(pk=run_id).first()
    if run is None:
        return None
    ends_at = run.expires_at
    if not force and (ends_at is None or ends_at > now):
        return run
    # Only the broadcast rows: locking their operators too would wait on, and deadlock with, any fan-out or
    # window start writing rows that refer to those operators.
    for broadcast in AreaBroadcast.objects.select_for_update(of=("self",)).select_related("operator").filter(run=run):
        if broadcast.state == State.ACKNOWLEDGED or (
            broadcast.state == State.CANCEL_PENDING and broadcast.acknowledged_at is not None
        ):
            note = "" if broadcast.state == State.ACKNOWLEDGED else WINDOW_ENDED_BEFORE_CANCEL
            previous = broadcast.state
            rows = AreaBroadcast.objects.filter(pk=broadcast.pk, state=previous).update(
                state=State.COMPLETED, finished_at=now, next_attempt_at=None, updated_at=now, last_error=note
            )
            if rows == 1:
                broadcast.refresh_from_db()
                details = {"handsets_reached": broadcast.handsets_reached, "note": note}
                _event(broadcast, State.COMPLETED, details, from_state=previous)
        elif broadcast.state not in AreaBroadcast.FINAL_STATES:
            _finish_unacknowledged(broadcast, WINDOW_ENDED_UNACKNOWLEDGED)
    if run.status in CampaignRun.FINAL_STATUSES:
        return run
    failed = AreaBroadcast.objects.filter(run=run).exclude(state=State.COMPLETED).exists() or not run.frozen.get(
        "operators"
    )
    to_state = RunStatus.COMPLETED_WITH_FAILURES if failed else RunStatus.COMPLETED
    previous = run.status
    if CampaignRun.objects.filter(pk=run.pk, status=previous).update(status=to_state, finished_at=now) != 1:
        return run
    run.refresh_from_db()
    reached = sum(AreaBroadcast.objects.filter(run=run).values_list("handsets_reached", flat=True))
    audit_record(
        actor=None, action="run.complete", obj=run, from_state=previous, to_state=to_state, details={"reached": reached}
    )
    notices.run_notify_broadcast_ended(run=run)
    campaign = run.campaign
    campaign_to = CampaignStatus.COMPLETED_WITH_FAILURES if failed else CampaignStatus.COMPLETED
    campaign_move(
        campaign=campaign,
        to_state=campaign_to,
        actor=None,
        action="campaign.complete",
        from_states=(CampaignStatus.SENDING,),
        details={"run_id": run.pk, "handsets_reached": reached},
        now=now,
    )
    return run


# Logged when one campaign's or run's step of the tick raises (rolled back, tried again at the next tick).
TICK_STEP_FAILED = "Area broadcasts: could not %s %s; the tick goes on with the others"


def area_broadcasts_tick(*, now: datetime | None = None) -> dict[str, list]:
    """Do what is due: start windows, pass cancels on, end windows; return the sends and cancels to enqueue.

    Idempotent and cheap when nothing is due, so beat may call it every few seconds.
    """
    now = now or timezone.now()
    started = []
    for campaign_id in area_broadcasts_due(now=now):
        with isolated(logger, TICK_STEP_FAILED, "start the window of campaign", campaign_id):
            run = area_broadcast_run_start(campaign_id=campaign_id, now=now)
            if run is not None:
                started.append(run.pk)
    for campaign_id in area_broadcasts_missed(now=now):
        with isolated(logger, TICK_STEP_FAILED, "close the missed window of campaign", campaign_id):
            area_broadcast_window_missed(campaign_id=campaign_id, now=now)
    # A campaign cancelled through its service (which also marks its runs cancelled): pass the cancel on
    # to every operator whose broadcast has not heard of it yet.
    uncancelled = (
        AreaBroadcast.objects.filter(cancel_requested_at__isnull=True)
        .exclude(state__in=AreaBroadcast.FINAL_STATES)
        .filter(Q(run__status=RunStatus.CANCELLED) | Q(run__campaign__status=CampaignStatus.CANCELLED))
    )
    for run in CampaignRun.objects.filter(pk__in=uncancelled.values("run_id")):
        with isolated(logger, TICK_STEP_FAILED, "pass on the cancel of run", run.pk):
            area_broadcast_run_cancel(run=run, now=now)
    live_runs = CampaignRun.objects.filter(campaign__mode=Mode.AREA_BROADCAST).exclude(
        status__in=CampaignRun.FINAL_STATUSES
    )
    for run_id in live_runs.filter(expires_at__lte=now).values_list("id", flat=True):
        with isolated(logger, TICK_STEP_FAILED, "end the window of run", run_id):
            area_broadcast_run_finish(run_id=run_id, now=now)
    # Cancelled runs still close their broadcasts when the window ends (a cancel never confirmed).
    unfinished = AreaBroadcast.objects.exclude(state__in=AreaBroadcast.FINAL_STATES).values("run_id")
    ended = CampaignRun.objects.filter(status=RunStatus.CANCELLED, expires_at__lte=now, pk__in=unfinished)
    for run_id in ended.values_list("id", flat=True):
        with isolated(logger, TICK_STEP_FAILED, "end the window of run", run_id):
            area_broadcast_run_finish(run_id=run_id, now=now)
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    sends = list(
        AreaBroadcast.objects.filter(due, state__in=(State.PENDING, State.ERROR, State.SENDING)).values_list(
            "id", flat=True
        )
    )
    cancels = list(AreaBroadcast.objects.filter(due, state=State.CANCEL_PENDING).values_list("id", flat=True))
    return {"started": started, "sends": [str(i) for i in sends], "cancels": [str(i) for i in cancels]}


def area_broadcast_campaign_cancel(
    *, campaign: Campaign, now: datetime | None = None, actor: User | None = None
) -> None:
    """Pass a cancelled campaign's cancel on to its live runs at once (the tick would within seconds), in the
    name of `actor`, who cancelled it."""
    for run in CampaignRun.objects.filter(campaign=campaign).exclude(status__in=CampaignRun.FINAL_STATUSES):
        area_broadcast_run_cancel(run=run, now=now, actor=actor)


# --- helpers -------------------------------------------------------------------------------


def _adapter_call(broadcast: AreaBroadcast, method: str) -> AreaBroadcastResult:
    """Call the operator adapter's `method` with the broadcast; an exception it raises counts as a retry.

    An adapter bug must not leave the row in flight until the lease runs out.
    """
    try:
        return getattr(get_adapter(broadcast.operator.adapter), method)(_outbound(broadcast))
    except Exception as exc:
        logger.exception("Area broadcast %s: adapter raised in %s", broadcast.pk, method)
        return AreaBroadcastResult(outcome=Outcome.RETRY, error=f"{type(exc).__name__}: {exc}"[:500])


def _event(
    broadcast: AreaBroadcast,
    state: str,
    details: dict | None = None,
    *,
    from_state: str,
    action: str = "",
    actor: User | None = None,
) -> AreaBroadcastEvent:
    """Append to the provider message's status log and write the AuditEvent of its state change (invariant 6).

    `actor` is the user whose request made the change; None when the system did.
    """
    details = details or {}
    audit_record(
        actor=actor,
        action=action or f"area_broadcast.{state}",
        obj=broadcast,
        from_state=from_state,
        to_state=state,
        details={"run_id": broadcast.run_id, "operator_id": broadcast.operator_id, **details},
    )
    return AreaBroadcastEvent.objects.create(broadcast=broadcast, state=state, details=details)


def _enqueue_after_commit(kind: str, broadcast_id) -> None:
    def enqueue():
        from operators import broadcast_tasks

        task = broadcast_tasks.area_broadcast_cancel if kind == "cancel" else broadcast_tasks.area_broadcast_send
        try:
            task.delay(str(broadcast_id))
        except Exception:  # the broker may be down; the tick picks the row up again
            logger.warning("Could not enqueue %s of area broadcast %s; the tick will retry", kind, broadcast_id)

    transaction.on_commit(enqueue)
