"""Reads over campaigns: lists per role, audience and cost estimates, history."""

from typing import Any

from django.db.models import Count, Q, QuerySet

from campaigns import scheduling
from campaigns.models import Campaign
from smsblast import sms
from smsblast.audit import audit_history
from smsblast.models import AuditEvent, Role, User, area_code_within, area_common_ancestor, area_subtree_q
from smsblast.selectors import polygon_covering_area, polygon_home_areas, polygon_province, subscribers_in_area


def target_zone(area_codes, polygon: dict | None = None) -> scheduling.Zone:
    """Return the zone a target's times are entered and shown in: that of its first area, else of its polygon.

    A target drawn only as a polygon takes the zone of the province holding most of it (WIT for a polygon
    over Jayapura); with neither, WIB.
    """
    codes = list(area_codes or []) if isinstance(area_codes, list | tuple) else []
    if not codes and polygon:
        province = polygon_province(polygon)
        codes = [province] if province else []
    return scheduling.zone_for_area_codes(codes)


def campaign_zone(campaign: Campaign) -> scheduling.Zone:
    """Return the zone the campaign's times are entered and shown in (see target_zone)."""
    return target_zone(campaign.area_codes, campaign.polygon)


def target_zones(area_codes, polygon: dict | None = None) -> list[scheduling.Zone]:
    """Return every zone a target reaches, the one its times are entered in first: whose nights quiet hours keep."""
    codes = list(area_codes or []) if isinstance(area_codes, list | tuple) else []
    province = polygon_province(polygon) if polygon else None
    zones = [target_zone(codes, polygon)]
    for code in [*codes, *([province] if province else [])]:
        zone = scheduling.zone_for_area_code(code)
        if zone not in zones:
            zones.append(zone)
    return zones


def campaign_zones(campaign: Campaign) -> list[scheduling.Zone]:
    """Return every zone the campaign reaches, its entry zone first (see target_zones)."""
    return target_zones(campaign.area_codes, campaign.polygon)


def target_scope(area_codes, polygon: dict | None, *, author: User) -> str:
    """Return the deepest area code holding a whole target: its area codes, the boundary around its polygon and
    the homes its polygon reaches.

    "" when only the whole country holds it (areas of several provinces, a polygon no known boundary holds). A
    campaign without a target yet belongs to its author's jurisdiction. Stored as `Campaign.area_scope`.
    """
    codes = [code for code in area_codes or [] if isinstance(code, str)]
    if polygon:
        holder = polygon_covering_area(polygon)
        if holder is None:
            return ""
        codes.append(holder)
        # It reaches the subscribers whose home boundary meets it, a neighbour's too; homes known only by an area
        # above the holder are reached from anywhere below it.
        exact, subtree = polygon_home_areas(polygon)
        codes.extend(code for code in exact | subtree if not area_code_within(holder, code))
    if not codes:
        return author.jurisdiction_code or ""
    return area_common_ancestor(codes)


def campaigns_visible(user: User) -> QuerySet[Campaign]:
    """Return every campaign the user may see; each campaign page and API answer 404 for the others.

    Officers, approvers and admins see the campaigns of the installation; an officer or approver with a
    jurisdiction only those whose whole target lies within it (`Campaign.area_scope` at or below it), so a
    province's user sees its regencies' campaigns. Anyone else sees none.
    """
    if user is None or not user.is_authenticated or not user.has_role(Role.OFFICER, Role.APPROVER, Role.ADMIN):
        return Campaign.objects.none()
    jurisdiction = user.jurisdiction_code
    if jurisdiction is None:
        return Campaign.objects.all()
    return Campaign.objects.filter(area_subtree_q("area_scope", [jurisdiction]))


def campaign_list(user: User, filters: dict[str, Any] | None = None) -> QuerySet[Campaign]:
    """Return the campaigns the user may see (`campaigns_visible`), newest first, narrowed by `filters`.

    Filters: `status`, `mode`, `author` (a user id) and `q` (words in the title, text or sender).
    """
    queryset = campaigns_visible(user).select_related("author")
    filters = filters or {}
    if filters.get("status"):
        queryset = queryset.filter(status=filters["status"])
    if filters.get("mode"):
        queryset = queryset.filter(mode=filters["mode"])
    if filters.get("author"):
        queryset = queryset.filter(author_id=filters["author"])
    for word in str(filters.get("q") or "").split():
        queryset = queryset.filter(Q(title__icontains=word) | Q(text__icontains=word) | Q(sender__icontains=word))
    return queryset


def campaign_segments(campaign: Campaign) -> int:
    """Return the number of segments of the campaign's text, or 0 when the text cannot be sent."""
    try:
        return sms.analyze(campaign.text).segments
    except sms.TextError:
        return 0


def campaign_audience(campaign: Campaign) -> dict[str, Any]:
    """Return who a targeted run would reach and what it would cost, per operator.

    `total` counts the recipients: subscribers in the area and audience a run's fan-out would send to.
    Fan-out skips the opted-out ones and those of an inactive or no known operator; `opted_out` and each
    operator's `skipped` (with `skipped_reason`) count them, `skipped` sums them by reason. Cost is
    segments × recipients × the operator's tariff per segment. One aggregate query, grouped by operator.
    """
    segments = campaign_segments(campaign)
    rows = (
        subscribers_in_area(campaign.area_codes or [], audience=campaign.audience, polygon=campaign.polygon)
        .values("operator_id", "operator__slug", "operator__name", "operator__tariff_per_segment", "operator__active")
        .annotate(
            everyone=Count("id"),
            opted_out=Count("id", filter=Q(opted_out_at__isnull=False)),
        )
        .order_by("operator__name")
    )
    by_operator = []
    total = opted_out = cost = 0
    skipped = {"opted_out": 0, "operator_inactive": 0, "no_operator": 0}
    for row in rows:
        if row["operator_id"] is None:
            skipped_reason = "no_operator"
        else:
            skipped_reason = "" if row["operator__active"] else "operator_inactive"
        reachable = row["everyone"] - row["opted_out"]
        recipients = 0 if skipped_reason else reachable
        operator_cost = sms.content_cost(segments, recipients, row["operator__tariff_per_segment"] or 0)
        by_operator.append(
            {
                "slug": row["operator__slug"] or "",
                "name": row["operator__name"] or "Unknown operator",
                "recipients": recipients,
                "opted_out": row["opted_out"],
                "skipped": reachable - recipients,
                "skipped_reason": skipped_reason,
                "segments": segments * recipients,
                "cost": operator_cost,
            }
        )
        total += recipients
        opted_out += row["opted_out"]
        cost += operator_cost
        skipped["opted_out"] += row["opted_out"]
        if skipped_reason:
            skipped[skipped_reason] += reachable
    return {
        "total": total,
        "opted_out": opted_out,
        "skipped": skipped,
        "by_operator": by_operator,
        "segments": segments * total,
        "segments_per_message": segments,
        "cost": cost,
    }


def campaign_history(campaign: Campaign) -> QuerySet[AuditEvent]:
    """Return the campaign's audit events, oldest first, with their actors."""
    return audit_history(campaign)


# A campaign in these states has no approval in force: approving it is still to come.
UNAPPROVED_STATUSES = frozenset({Campaign.Status.DRAFT, Campaign.Status.PENDING_APPROVAL, Campaign.Status.REJECTED})


# Marks the source of a campaign imported from a copy of an alert whose signature was not verified, once the same
# alert verified as signed replaced it (services.campaign_replace_unverified_import).
CAP_SOURCE_REPLACED_MARK = " (unverified, replaced)"


def campaign_cap_source(campaign: Campaign, *, user: User) -> dict[str, Any] | None:
    """Return where an imported CAP alert came from and what its import could not keep; None for a composed one.

    The approver decides on it knowing its issuer and identifier, the earlier alerts it updates (and the
    unfinished campaigns imported from them, visible to `user`, which its approval cancels), an approved update
    replacing it (which refuses its approval), whether its signature was verified against a trusted issuer's
    certificate (and by whom it was signed), what was edited since its import (which no signature covers) and
    which parts of its text were cut to fit.
    """
    from campaigns.services import campaign_replaced_by, campaigns_superseded  # the services build on these

    if not campaign.cap_source_identifier:
        return None
    details = _cap_import_details(campaign)
    identifier = campaign.cap_source_identifier
    return {
        "sender": campaign.cap_source_sender,
        "identifier": identifier.removesuffix(CAP_SOURCE_REPLACED_MARK),
        # The page says so in the reader's language rather than show the mark.
        "replaced_by_verified": identifier.endswith(CAP_SOURCE_REPLACED_MARK),
        "references": [identifier for _sender, identifier in campaign.cap_source_references or []],
        # What its approval would cancel: once approved, it cancelled what there was and cancels nothing more.
        "supersedes": list(campaigns_superseded(campaign, user=user).order_by("id"))
        if campaign.status in UNAPPROVED_STATUSES
        else [],
        # Only one waiting for its approver can be refused; an alert its update cancelled, or sent, is past that.
        "replaced_by": campaign_replaced_by(campaign, user=user)
        if campaign.status == Campaign.Status.PENDING_APPROVAL
        else None,
        "signature": _cap_signature(details),
        "edited": _edited_since_import(campaign),
        "cut": [cut for cut in details.get("cut") or [] if cut.get("dropped_words")],
    }


def _edited_since_import(campaign: Campaign) -> list[str]:
    """Return the names of the fields edited since the campaign was imported, as its form labels them."""
    edits = campaign_history(campaign).filter(action="campaign.update").values_list("details", flat=True)
    changed = {name for details in edits for name in (details or {}).get("changed") or []}
    # A field renamed since an edit was recorded is named as it was.
    labels = {field.name: field.verbose_name for field in Campaign._meta.concrete_fields}
    return [str(labels.get(name, name)) for name in sorted(changed)]


def campaign_cap_signature(campaign: Campaign) -> dict[str, str]:
    """Return the signature of the CAP alert the campaign was imported from: its state, signer and reason."""
    return _cap_signature(_cap_import_details(campaign))


def _cap_import_details(campaign: Campaign) -> dict[str, Any]:
    imported = (
        campaign_history(campaign).filter(action="campaign.cap_import").order_by("-at", "-id").values("details").first()
    )
    return (imported or {}).get("details") or {}


def _cap_signature(details: dict[str, Any]) -> dict[str, str]:
    # Imports before signatures were checked recorded only "signed": not verified, signer unknown.
    return details.get("signature") or {
        "state": "untrusted" if details.get("signed") else "unsigned",
        "signer": "",
        "reason": "",
    }


# A recurring campaign adds a handful of events a day: its page and its API detail carry only the latest.
HISTORY_SHOWN = 100


def campaign_history_latest(campaign: Campaign) -> tuple[list[AuditEvent], int]:
    """Return the campaign's latest HISTORY_SHOWN audit events, oldest first, and how many it has in all."""
    events = campaign_history(campaign)
    latest = list(events.order_by("-at", "-id")[:HISTORY_SHOWN])
    total = len(latest) if len(latest) < HISTORY_SHOWN else events.count()
    return latest[::-1], total
