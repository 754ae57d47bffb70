"""Campaign drafting, four-eyes approval and cancellation.

Every transition reads the current state under a row lock, checks it against
CAMPAIGN_TRANSITIONS, then changes it with a conditional UPDATE whose row count
is checked, so that two concurrent requests cannot both win; each writes one
AuditEvent (invariant 6). The approval binds the campaign's content hash, and
dispatch re-checks it with `campaign_approval_is_valid` (invariant 1).
"""

import datetime
import hashlib
import json
import logging
import re
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from campaigns import notices, scheduling
from campaigns.dispatch_selectors import campaign_only_awaits_reports
from campaigns.models import Approval, Campaign, Mode, Priority, RepeatPolicy
from campaigns.selectors import CAP_SOURCE_REPLACED_MARK, campaigns_visible, target_scope, target_zone
from operators.models import Operator
from smsblast import sms
from smsblast.audit import audit_record
from smsblast.errors import OutsideJurisdiction, ServiceConflict, ServiceForbidden, ServiceInvalid
from smsblast.models import Area, AuditEvent, Role, User, area_code_within
from smsblast.selectors import polygon_covering_area, polygon_geometry, polygon_home_areas

logger = logging.getLogger(__name__)
Status = Campaign.Status

# The states each action may start from; the UI and the tests read this table.
CAMPAIGN_TRANSITIONS: dict[str, frozenset[str]] = {
    "update": frozenset({Status.DRAFT, Status.REJECTED, Status.APPROVED, Status.SCHEDULED}),
    "submit": frozenset({Status.DRAFT}),
    "approve": frozenset({Status.PENDING_APPROVAL}),
    "reject": frozenset({Status.PENDING_APPROVAL}),
    "cancel": frozenset(set(Status) - Campaign.FINAL_STATUSES),
}

# An edit of these returns the campaign to draft and voids its approval when the content changes (sending: only a
# recurring campaign whose runs wait for reports alone may be edited, see campaign_update).
APPROVED_STATUSES = frozenset({Status.APPROVED, Status.SCHEDULED, Status.SENDING})

# Where each action leads; "update" returns an approved, scheduled or rejected campaign to draft
# when its content changes (a draft stays a draft).
CAMPAIGN_TARGETS: dict[str, str] = {
    "update": Status.DRAFT,
    "submit": Status.PENDING_APPROVAL,
    "approve": Status.APPROVED,
    "reject": Status.REJECTED,
    "cancel": Status.CANCELLED,
}

# Fields covered by the content hash: what an approver approves and what a run transmits.
CONTENT_FIELDS = (
    "text",
    "sender",
    "mode",
    "area_codes",
    "polygon",
    "audience",
    "schedule",
    "priority",
    "starts_at",
    "ends_at",
    "repeat_policy",
    "operator_slugs",
    "exercise",
    "validity_minutes",
    # Published too: the title travels with every batch and heads the CAP alert, whose instruction and
    # category, event, urgency, severity and certainty come from these.
    "title",
    "instruction",
    "cap_category",
    "cap_event",
    "cap_urgency",
    "cap_severity",
    "cap_certainty",
)

# Fields an author may set; where an imported CAP alert came from is provenance, outside the hash.
EDITABLE_FIELDS = frozenset({*CONTENT_FIELDS, "cap_source_identifier", "cap_source_sender", "cap_source_references"})

# Operators take alphanumeric sender IDs of up to 16 characters (the batch contract's own example, PEMKAB-BLITAR,
# has 13), but a GSM handset shows at most 11: a longer one is accepted with a warning, as the operator may shorten it.
SENDER_MAX_LENGTH = 16
SENDER_SHOWN_LENGTH = 11
# Operators accept letters, digits, spaces, dots and hyphens in an alphanumeric sender ID;
# at least one letter, or handsets treat it as a phone number.
SENDER_RE = re.compile(rf"^(?=.*[A-Za-z])[A-Za-z0-9 .\-]{{1,{SENDER_MAX_LENGTH}}}$")
SENDER_RULE = (
    f"A sender ID of 1 to {SENDER_MAX_LENGTH} letters, digits, spaces, dots or hyphens with at least one letter "
    "is required."
)
_AREA_CODE_RE = re.compile(r"^\d{2}(\.\d{2}(\.\d{2}(\.\d{4})?)?)?$")
# The most areas one campaign names: each is read on every page showing it (a larger area holds many of them).
MAX_AREA_CODES = 500
# The audience filters subscribers_in_area understands; anything else would silently filter nothing.
AUDIENCE_FILTERS = frozenset({"languages", "operators"})
# Broadcast windows outside these years are typing errors; year 1 in WIB is not even storable in UTC.
MIN_YEAR, MAX_YEAR = 2000, 9998
# How the refusal of direction overrides and control characters in a text reads, and its code in
# ServiceInvalid.codes, by which the pages word it in the user's language.
REFUSED_CHARACTERS_PHRASE = "reorder the text shown or that handsets do not show"
REFUSED_CHARACTERS = "refused_characters"
# The approved fields a reader sees: the text handsets show, the title heading the review page and every batch, and
# the CAP instruction the alert's export carries.
REFUSED_CHARACTER_FIELDS = ("text", "title", "instruction")
# What each of them could lead to, in the refusal on submit.
_REFUSED_CHARACTER_EFFECTS = {
    "text": "an approver and handsets could read different text",
    "title": "an approver could read a different title",
    "instruction": "an approver could read a different instruction than the alert's readers",
}
_STATUS_LABELS = {value: value.replace("_", " ") for value in Status.values}


# --- content hash and approval ------------------------------------------------------------


def campaign_content(campaign: Campaign) -> dict[str, Any]:
    """Return the hashed content of the campaign as a JSON-ready dict in canonical form."""
    content = {}
    for field in CONTENT_FIELDS:
        value = getattr(campaign, field)
        if isinstance(value, datetime.datetime):
            value = value.astimezone(datetime.UTC).isoformat()
        content[field] = value
    content["area_codes"] = sorted(set(campaign.area_codes or []))
    content["operator_slugs"] = sorted(set(campaign.operator_slugs or []))
    content["audience"] = campaign.audience or {}
    content["schedule"] = campaign.schedule or {}
    return content


def campaign_content_hash(campaign: Campaign) -> str:
    """Return the SHA-256 (hex) of the campaign's canonical content JSON."""
    canonical = json.dumps(campaign_content(campaign), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def sender_warning(sender: str) -> str:
    """Return a warning when handsets would not show the whole sender ID, else an empty string."""
    if len(sender or "") <= SENDER_SHOWN_LENGTH:
        return ""
    return (
        f"GSM handsets show at most {SENDER_SHOWN_LENGTH} characters of an alphanumeric sender ID; "
        f"{sender!r} has {len(sender)}, so it may appear cut short and the operator may shorten it."
    )


def text_warning(text: str) -> str:
    """Return a warning about what the text sends that a reader does not see as it is, else an empty string.

    It names each hidden character (see smsblast.sms.hidden_characters) and the ASCII form of each domain the
    text writes in letters outside ASCII.
    """
    hidden = sms.hidden_characters(text or "")
    hosts = sms.international_hosts(text or "")
    warnings = []
    if hidden:
        named = "; ".join(
            f"{item.code_point} {item.name} at character {item.position + 1} ({_HIDDEN_KINDS[item.kind]})"
            for item in hidden[:10]
        )
        more = f"; and {len(hidden) - 10} more" if len(hidden) > 10 else ""
        warnings.append(f"The text holds characters that are not seen as they are sent: {named}{more}.")
    if hosts:
        # A domain in letters outside ASCII can look like an ASCII one; its ASCII form tells them apart.
        opened = "; ".join(f"{host.written} opens as {host.ascii}" for host in hosts)
        warnings.append(f"The text links to a domain written with letters outside ASCII: {opened}.")
    return " ".join(warnings)


_HIDDEN_KINDS = {
    sms.REORDERS: "reorders the text shown around it; submission refuses it",
    sms.CONTROL: "a control character; submission refuses it",
    sms.INVISIBLE: "shown by nothing, yet sent and counted",
    sms.LOOK_ALIKE: "looks like a common letter or digit but is another",
    sms.EDGE_BLANK: "a blank at the start or end, sent and counted",
}


def campaign_current_approval(campaign: Campaign) -> Approval | None:
    """Return the latest approval decision of the campaign that has not been voided, if any."""
    return campaign.approvals.filter(voided_at__isnull=True).select_related("approver").order_by("-id").first()


def campaign_approval_is_valid(campaign: Campaign) -> bool:
    """Return whether an un-voided approval binds exactly the campaign's current content (invariant 1)."""
    approval = campaign_current_approval(campaign)
    return (
        approval is not None
        and approval.decision == Approval.Decision.APPROVED
        and approval.content_hash == campaign_content_hash(campaign)
    )


def campaign_allowed_actions(*, campaign: Campaign, user: User) -> list[str]:
    """Return the actions of CAMPAIGN_TRANSITIONS this user may take on the campaign in its state."""
    allowed = []
    for action, from_states in CAMPAIGN_TRANSITIONS.items():
        if campaign.status not in from_states and not (action == "update" and campaign_only_awaits_reports(campaign)):
            continue
        try:
            campaign_check_actor(action, campaign=campaign, user=user)
        except ServiceForbidden:
            continue
        allowed.append(action)
    return allowed


# --- writes ------------------------------------------------------------------------------


@transaction.atomic
def campaign_create(
    *,
    author: User,
    title: str,
    text: str = "",
    sender: str = "",
    mode: str = Mode.TARGETED,
    area_codes: list[str] | None = None,
    priority: str = Priority.NORMAL,
    polygon: dict | None = None,
    audience: dict | None = None,
    schedule: dict | None = None,
    audit_details: dict | None = None,
    **other_fields: Any,
) -> Campaign:
    """Create a draft campaign by an officer or admin; other EDITABLE_FIELDS may be passed by name."""
    if not author.has_role(Role.OFFICER, Role.ADMIN):
        raise ServiceForbidden("Only an officer or an admin may create campaigns.")
    unknown = set(other_fields) - EDITABLE_FIELDS
    if unknown:
        raise ServiceInvalid(f"Unknown campaign fields: {', '.join(sorted(unknown))}.")
    fields = {
        "title": title,
        "text": text,
        "sender": sender,
        "mode": mode,
        "area_codes": area_codes or [],
        "priority": priority,
        "polygon": polygon,
        "audience": audience or {},
        "schedule": schedule or {},
        **other_fields,
    }
    fields = _clean_fields(fields)
    _check_window(fields)
    _check_jurisdiction(user=author, area_codes=fields["area_codes"], polygon=fields["polygon"])
    fields["area_scope"] = target_scope(fields["area_codes"], fields["polygon"], author=author)
    campaign = Campaign.objects.create(author=author, status=Status.DRAFT, **fields)
    audit_record(actor=author, action="campaign.create", obj=campaign, to_state=Status.DRAFT, details=audit_details)
    return campaign


@transaction.atomic
def campaign_copy(*, source: Campaign, author: User, now: datetime.datetime | None = None) -> tuple[Campaign, bool]:
    """Create a draft with the content of `source` (any state) by an officer or admin; return it and whether
    a time of the source's had passed and was left out.

    Everything the approval binds is copied (text, sender, area, drawn polygon, audience, priority, CAP fields,
    validity), but not where an imported alert came from. A one-off time, a recurring schedule's end date or an
    area broadcast's window already past (or started) would only be refused on submit, so the copy goes without it: sent
    on approval, or with a window still to set. Audited as `campaign.create`, naming the source.
    """
    now = now or timezone.now()
    fields = {name: getattr(source, name) for name in CONTENT_FIELDS}
    local_now = now.astimezone(target_zone(source.area_codes, source.polygon).tzinfo)
    schedule = dict(fields["schedule"] or {})
    passed = False
    if schedule.get("kind") == "once" and schedule.get("at", "") <= local_now.strftime("%Y-%m-%dT%H:%M"):
        schedule, passed = {}, True
    elif schedule.get("until") and schedule["until"] < local_now.date().isoformat():
        schedule, passed = {}, True
    # A window already started is refused on submit as well as one already over (it must start in the future).
    started = fields["starts_at"] is not None and fields["starts_at"] <= now
    if started or (fields["ends_at"] is not None and fields["ends_at"] <= now):
        fields["starts_at"], fields["ends_at"], passed = None, None, True
    fields["schedule"] = schedule
    campaign = campaign_create(author=author, **fields, audit_details={"copied_from": source.pk})
    return campaign, passed


@transaction.atomic
def campaign_update(
    *, campaign: Campaign, actor: User, data: dict[str, Any], expected_hash: str | None = None
) -> Campaign:
    """Edit a campaign as its author or an admin.

    A rejected campaign goes back to draft. An approved or scheduled campaign whose hashed
    content changes goes back to draft and its approval is voided, so it needs approving again; so does a
    sending recurring campaign whose runs only wait for delivery reports (they keep their own approved content).
    With `expected_hash` (the content hash of the version the edit was made on), an edit of a
    campaign changed since is refused, so a form opened before another edit cannot silently undo it.
    """
    campaign_check_actor("update", campaign=campaign, user=actor)
    unknown = set(data) - EDITABLE_FIELDS
    if unknown:
        raise ServiceInvalid(f"These fields cannot be edited: {', '.join(sorted(unknown))}.")
    current = _locked_status(campaign, "update", also=(Status.SENDING,))
    if current == Status.SENDING and not campaign_only_awaits_reports(campaign):
        raise ServiceConflict(
            _wrong_state_message("update", current)
            + " A recurring campaign may also be edited once its runs have been sent and only wait for reports."
        )
    if expected_hash and expected_hash != campaign_content_hash(campaign):
        raise ServiceConflict(
            "The campaign was changed after you opened it, so nothing was saved; "
            "compare with the current version and save again."
        )
    fields = _clean_fields(data, area_codes=campaign.area_codes, polygon=campaign.polygon)
    _check_window(fields, stored=campaign)
    if fields.get("mode", campaign.mode) != campaign.mode and campaign.runs.exists():
        # Its runs are completed, expired and reported on by the machinery of its mode, whatever the campaign's state
        # (an edit may have returned it to draft while they wait for reports): another mode would strand them, and
        # once they ended its reports and pages would read them as runs of the other mode.
        raise ServiceConflict(
            "It has runs, completed and reported on as its mode, so its mode cannot change; "
            "copy it into a new campaign instead."
        )
    scope = None
    if "area_codes" in fields or "polygon" in fields:
        area_codes, polygon = fields.get("area_codes", campaign.area_codes), fields.get("polygon", campaign.polygon)
        _check_jurisdiction(user=actor, area_codes=area_codes, polygon=polygon)
        scope = target_scope(area_codes, polygon, author=campaign.author)
    if "schedule" in fields and _schedule_meaning(fields["schedule"]) == _schedule_meaning(campaign.schedule):
        # No schedule and {"kind": "now"} are one send; keeping the stored spelling keeps the hash it was approved at.
        fields["schedule"] = campaign.schedule

    old_hash = campaign_content_hash(campaign)
    changed = sorted(name for name, value in fields.items() if getattr(campaign, name) != value)
    for name, value in fields.items():
        setattr(campaign, name, value)
    content_changed = campaign_content_hash(campaign) != old_hash

    if not changed and current != Status.REJECTED:
        return campaign
    to_state = current
    if current == Status.REJECTED or (content_changed and current in APPROVED_STATUSES):
        to_state = Status.DRAFT
    updates = dict(fields, status=to_state, updated_at=timezone.now())
    if scope is not None:
        updates["area_scope"] = scope
    if to_state != current:
        updates["next_run_at"] = None
    _conditional_update(campaign, "update", current, updates)

    details: dict[str, Any] = {"changed": changed}
    if to_state == Status.DRAFT and current in APPROVED_STATUSES:
        voided = _approvals_in_force(campaign)
        Approval.objects.filter(id__in=voided).update(voided_at=timezone.now())
        details["voided_approvals"] = voided
    audit_record(
        actor=actor, action="campaign.update", obj=campaign, from_state=current, to_state=to_state, details=details
    )
    return campaign


@transaction.atomic
def campaign_submit(*, campaign: Campaign, actor: User) -> Campaign:
    """Send a complete draft to the approver (draft → pending_approval)."""
    campaign_check_actor("submit", campaign=campaign, user=actor)
    current = _locked_status(campaign, "submit")
    _check_complete(campaign)
    _conditional_update(campaign, "submit", current, {"status": Status.PENDING_APPROVAL})
    audit_record(
        actor=actor,
        action="campaign.submit",
        obj=campaign,
        from_state=current,
        to_state=Status.PENDING_APPROVAL,
        details={"content_hash": campaign_content_hash(campaign)},
    )
    notices.campaign_notify_submitted(campaign=campaign)
    return campaign


@transaction.atomic
def campaign_approve(*, campaign: Campaign, approver: User, content_hash: str) -> Campaign:
    """Approve exactly the content the approver reviewed (pending_approval → approved).

    Only an approver who is not the author may approve (invariant 2), and only when
    `content_hash` equals the current hash, so a change made during review is never approved.
    """
    campaign_check_actor("approve", campaign=campaign, user=approver)
    current = _locked_status(campaign, "approve")
    if not isinstance(content_hash, str) or not content_hash:
        raise ServiceInvalid("content_hash is required: send the hash of the version you reviewed.")
    current_hash = campaign_content_hash(campaign)
    if content_hash != current_hash:
        raise ServiceConflict(
            "The campaign changed since you reviewed it; review the current version and approve its hash."
        )
    if campaign.mode == Mode.AREA_BROADCAST and campaign.ends_at and campaign.ends_at <= timezone.now():
        # Approved, it would wait for a window that never comes again and send nothing.
        raise ServiceConflict(
            "The broadcast window ended before approval, so nothing would be sent; reject it for a new window."
        )
    # Submission refuses these characters, yet a campaign submitted before it did still holds them.
    refused = {field: refused_characters(getattr(campaign, field)) for field in REFUSED_CHARACTER_FIELDS}
    if any(refused.values()):
        raise ServiceInvalid(
            f"The campaign holds characters that {REFUSED_CHARACTERS_PHRASE}, so the approver and handsets could "
            "read different text; it was not approved. Reject it so that its author removes them.",
            {field: f"Holds {named}." for field, named in refused.items() if named},
            codes={field: REFUSED_CHARACTERS for field, named in refused.items() if named},
        )
    replaced_by = campaign_replaced_by(campaign, user=approver)
    if replaced_by is not None:
        raise ServiceConflict(
            f"This CAP alert was replaced by the update imported as campaign {replaced_by.pk}, approved already; "
            "reject this one instead."
        )
    _decide(campaign, approver=approver, action="approve", from_state=current, details={"content_hash": current_hash})
    if campaign.cap_source_references:
        _cancel_superseded(campaign, actor=approver)
    return campaign


def campaigns_superseded(campaign: Campaign, *, user: User) -> QuerySet[Campaign]:
    """Return the unfinished campaigns, visible to `user`, imported from the alerts a CAP Update supersedes.

    An Update replaces the messages its references name and, through earlier updates, those they replaced.
    An exercise replaces only exercises, and an actual alert only actual ones: a drill never withdraws a warning.
    """
    from campaigns.cap_import import campaigns_imported_from, cap_superseded  # cap_import builds on this module

    if not campaign.cap_source_references:
        return Campaign.objects.none()
    references = cap_superseded({tuple(pair) for pair in campaign.cap_source_references})
    return (
        (campaigns_imported_from(references) & campaigns_visible(user))
        .filter(exercise=campaign.exercise)
        .exclude(pk=campaign.pk)
        .exclude(status__in=Campaign.FINAL_STATUSES)
    )


# An update in these states has been approved: its handsets get it, or got it, instead of what it replaces.
REPLACING_STATUSES = frozenset(
    {
        Status.APPROVED,
        Status.SCHEDULED,
        Status.SENDING,
        Status.PAUSED,
        Status.COMPLETED,
        Status.COMPLETED_WITH_FAILURES,
    }
)


def campaign_replaced_by(campaign: Campaign, *, user: User) -> Campaign | None:
    """Return the approved campaign, visible to `user`, imported from a CAP Update that replaces this one's alert.

    An update imported and approved before the alert it replaces cancelled nothing; approved after it, that alert
    would reach handsets after its update.
    """
    from campaigns.cap_import import campaigns_imported_from, cap_superseding  # cap_import builds on this module

    if not campaign.cap_source_identifier:
        return None
    query = campaigns_imported_from(cap_superseding((campaign.cap_source_sender, campaign.cap_source_identifier)))
    return (
        (query & campaigns_visible(user))
        .filter(exercise=campaign.exercise, status__in=REPLACING_STATUSES)
        .exclude(pk=campaign.pk)
        .order_by("id")
        .first()
    )


def _cancel_superseded(campaign: Campaign, *, actor: User) -> None:
    """Cancel what an approved CAP Update replaces, so handsets get the update instead of both messages."""
    reason = f"Superseded by the CAP update of campaign {campaign.pk}, approved."
    # Newest first, as a CAP Cancel takes them; the update itself (newer still) is locked already.
    for older in campaigns_superseded(campaign, user=actor).select_for_update().order_by("-id"):
        current = _locked_status(older, "cancel")
        _cancel(older, actor=actor, from_state=current, reason=reason)


@transaction.atomic
def campaign_reject(*, campaign: Campaign, approver: User, reason: str) -> Campaign:
    """Send the campaign back to its author with a reason (pending_approval → rejected)."""
    campaign_check_actor("reject", campaign=campaign, user=approver)
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason:
        raise ServiceInvalid("A reason is required to reject a campaign.", {"reason": "This field is required."})
    current = _locked_status(campaign, "reject")
    _decide(campaign, approver=approver, action="reject", from_state=current, reason=reason)
    return campaign


@transaction.atomic
def campaign_cancel(*, campaign: Campaign, actor: User, reason: str = "") -> Campaign:
    """Stop the campaign for good from any state that is not final (→ cancelled)."""
    campaign_check_actor("cancel", campaign=campaign, user=actor)
    current = _locked_status(campaign, "cancel")
    _cancel(campaign, actor=actor, from_state=current, reason=reason)
    return campaign


@transaction.atomic
def campaign_withdraw_by_issuer(
    *,
    campaign: Campaign,
    actor: User,
    reason: str,
    references: list[tuple[str, str]],
    now: datetime.datetime | None = None,
) -> Campaign:
    """Withdraw a campaign imported from a CAP alert because the alert's issuer cancelled it.

    The feed is the authority, not whoever imported the alert, so any officer or admin may pass the
    Cancel on; `references` are the (sender, identifier) pairs the Cancel names, and the campaign must
    have been imported from one of them. A campaign still waiting for its approver is rejected with
    the reason (→ rejected); any other unfinished campaign is cancelled (→ cancelled).
    """
    if actor is None or not actor.is_authenticated or not actor.has_role(Role.OFFICER, Role.ADMIN):
        raise ServiceForbidden("Only an officer or an admin may pass on an issuer's cancellation.")
    source = (campaign.cap_source_sender, campaign.cap_source_identifier)
    if not campaign.cap_source_identifier or source not in {tuple(reference) for reference in references}:
        raise ServiceForbidden("The cancellation does not come from the alert this campaign was imported from.")
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason:
        raise ServiceInvalid("A reason is required to withdraw a campaign.")
    current = _locked_status(campaign, "cancel")
    if current == Status.PENDING_APPROVAL:
        # The approver has not decided yet: send it back to its author with the reason, as a rejection would.
        _decide(
            campaign,
            approver=actor,
            action="reject",
            from_state=current,
            reason=reason,
            details={"withdrawn_by_issuer": True},
        )
    else:
        _cancel(campaign, actor=actor, from_state=current, reason=reason, now=now)
    return campaign


@transaction.atomic
def campaign_replace_unverified_import(*, campaign: Campaign, actor: User, signer: str) -> Campaign:
    """Cancel a campaign imported from a CAP alert whose signature was not verified, because the same alert (its
    sender and identifier) now arrives verified as signed by `signer`; free its source for the verified import.

    Only a campaign not yet approved (draft, pending approval, rejected) or already cancelled is replaced: one
    approved is the approver's to compare and cancel. Its identifier is kept, marked, in `cap_source_identifier`
    and in the audit event, so it no longer matches the alert's later updates or Cancel.
    """
    current = _locked_status(campaign, "cancel", also=(Status.CANCELLED,))
    if current not in (Status.DRAFT, Status.PENDING_APPROVAL, Status.REJECTED, Status.CANCELLED):
        raise ServiceConflict(f"Campaign {campaign.pk} is {current}; only one not yet approved is replaced.")
    if current != Status.CANCELLED:
        _cancel(
            campaign,
            actor=actor,
            from_state=current,
            reason=f"Replaced by the same CAP alert, verified as signed by {signer}.",
        )
    marked = campaign.cap_source_identifier[: 300 - len(CAP_SOURCE_REPLACED_MARK)] + CAP_SOURCE_REPLACED_MARK
    audit_record(
        actor=actor,
        action="campaign.cap_source_replaced",
        obj=campaign,
        details={"identifier": campaign.cap_source_identifier, "marked": marked, "signer": signer},
    )
    Campaign.objects.filter(pk=campaign.pk).update(cap_source_identifier=marked, updated_at=timezone.now())
    campaign.cap_source_identifier = marked
    return campaign


# --- helpers -----------------------------------------------------------------------------


def campaign_move(
    *,
    campaign: Campaign,
    to_state: str,
    actor: User | None,
    action: str,
    from_states: tuple[str, ...] | None = None,
    match: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    now=None,
    **fields: Any,
) -> bool:
    """Move the campaign to `to_state` if it is still in one of `from_states` and matches `match`.

    The state change is one conditional UPDATE (also setting `fields`); when it wins, the AuditEvent is written
    (invariant 6). Return whether it moved: the caller decides whether losing the race is an error. The
    instance is left as it was read. `from_states` defaults to the state the instance was read in.
    """
    from_states = from_states or (campaign.status,)
    rows = Campaign.objects.filter(pk=campaign.pk, status__in=from_states, **(match or {})).update(
        status=to_state, updated_at=now or timezone.now(), **fields
    )
    if rows != 1:
        return False
    audit_record(
        actor=actor,
        action=action,
        obj=campaign,
        from_state=from_states[0] if len(from_states) == 1 else campaign.status,
        to_state=to_state,
        details=details,
    )
    return True


def campaign_dispatch_refuse(*, campaign: Campaign, now=None, match: dict[str, Any] | None = None) -> bool:
    """Send nothing for a campaign whose approval no longer matches its content, and return it to draft.

    Invariant 1 at dispatch time: back in draft it is edited and approved again, instead of being refused
    on every scheduler tick; its approval is voided, so that an edit restoring the approved content does not
    leave a draft holding an approval in force. Return whether this call moved it.
    """
    voided = _approvals_in_force(campaign)
    moved = campaign_move(
        campaign=campaign,
        to_state=Campaign.Status.DRAFT,
        actor=None,
        action="campaign.dispatch_refused",
        match=match,
        details={
            "reason": "The approval does not match the campaign's current content; nothing was sent.",
            "content_hash": campaign_content_hash(campaign),
            "voided_approvals": voided,
        },
        now=now,
        next_run_at=None,
    )
    if moved:
        Approval.objects.filter(id__in=voided).update(voided_at=now or timezone.now())
        logger.warning("Campaign %s not sent: its approval does not match its content", campaign.pk)
    return moved


def _approvals_in_force(campaign: Campaign) -> list[int]:
    """Return the ids of the campaign's approving decisions not voided yet."""
    return list(
        campaign.approvals.filter(voided_at__isnull=True, decision=Approval.Decision.APPROVED).values_list(
            "id", flat=True
        )
    )


def campaign_edited_by(*, campaign: Campaign, user: User) -> bool:
    """Return whether the user changed hashed content of the campaign (e.g. as an admin), so co-wrote it.

    Four eyes (invariant 2) means the approver did not write what is approved: not only the author, anyone
    whose edit, as recorded in the audit trail, changed the content.
    """
    edits = AuditEvent.objects.filter(
        object_type=campaign._meta.label_lower, object_id=str(campaign.pk), action="campaign.update", actor=user
    ).values_list("details", flat=True)
    return any(set((details or {}).get("changed") or []) & set(CONTENT_FIELDS) for details in edits)


def campaign_check_actor(action: str, *, campaign: Campaign, user: User) -> None:
    """Raise ServiceForbidden unless the user's role and relation to the campaign allow the action."""
    if user is None or not user.is_authenticated:
        raise ServiceForbidden("Log in first.")
    is_author = campaign.author_id == user.pk
    if action in {"update", "submit"}:
        if not (user.has_role(Role.ADMIN) or (is_author and user.has_role(Role.OFFICER))):
            raise ServiceForbidden("Only the campaign's author or an admin may do this.")
    elif action in {"approve", "reject"}:
        if not user.has_role(Role.APPROVER):
            raise ServiceForbidden(f"Only an approver may {action} a campaign.")
        if is_author or campaign_edited_by(campaign=campaign, user=user):
            raise ServiceForbidden(f"You wrote this campaign; another approver must {action} it.")
    elif action == "cancel":
        if not (user.has_role(Role.ADMIN, Role.APPROVER) or (is_author and user.has_role(Role.OFFICER))):
            raise ServiceForbidden("Only the campaign's author, an approver or an admin may cancel it.")
    elif not (user.has_role(Role.ADMIN) or (is_author and user.has_role(Role.OFFICER))):
        # Any other action (scheduling, run control) belongs to the author, as editing does.
        raise ServiceForbidden("Only the campaign's author or an admin may do this.")


def _decide(
    campaign: Campaign,
    *,
    approver: User,
    action: str,
    from_state: str,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> Approval:
    """Record an approve or reject decision on the current content: transition, Approval row and audit event."""
    to_state = CAMPAIGN_TARGETS[action]
    content_hash = campaign_content_hash(campaign)
    _conditional_update(campaign, action, from_state, {"status": to_state})
    approval = Approval.objects.create(
        campaign=campaign,
        approver=approver,
        decision=Approval.Decision.APPROVED if action == "approve" else Approval.Decision.REJECTED,
        content_hash=content_hash,
        reason=reason,
        snapshot=_snapshot(campaign),
        area_shapes=_approved_area_shapes(campaign) if action == "approve" else None,
    )
    audit_details = {"approval_id": approval.pk, **({"reason": reason} if reason else {}), **(details or {})}
    audit_record(
        actor=approver,
        action=f"campaign.{action}",
        obj=campaign,
        from_state=from_state,
        to_state=to_state,
        details=audit_details,
    )
    notices.campaign_notify_decided(campaign=campaign, approver=approver, approved=action == "approve", reason=reason)
    return approval


def _approved_area_shapes(campaign: Campaign) -> list[dict] | None:
    """Return an area broadcast's area as the approver saw it, as GeoJSON geometries; None for a targeted campaign."""
    if campaign.mode != Mode.AREA_BROADCAST:
        return None
    from shapely.geometry import mapping

    from operators.broadcasts import broadcast_area_shapes

    # Through JSON, as stored: shapely's mapping holds tuples.
    return json.loads(json.dumps([mapping(geometry) for geometry in broadcast_area_shapes(campaign)]))


def _cancel(
    campaign: Campaign, *, actor: User, from_state: str, reason: str = "", now: datetime.datetime | None = None
) -> None:
    """Cancel the campaign and its unfinished runs, recording the audit event (→ cancelled)."""
    _conditional_update(campaign, "cancel", from_state, {"status": Status.CANCELLED, "next_run_at": None})
    details = {"reason": reason.strip()} if isinstance(reason, str) and reason.strip() else {}
    audit_record(
        actor=actor,
        action="campaign.cancel",
        obj=campaign,
        from_state=from_state,
        to_state=Status.CANCELLED,
        details=details,
    )
    # Stop its unfinished runs too, in this transaction: a targeted run's unsent batches and their
    # deliveries are cancelled; an area broadcast's operators are asked to withdraw what they hold.
    if campaign.mode == Mode.AREA_BROADCAST:
        from operators.broadcasts import area_broadcast_campaign_cancel

        area_broadcast_campaign_cancel(campaign=campaign, now=now, actor=actor)
    else:
        from campaigns.dispatch import campaign_runs_cancel

        campaign_runs_cancel(campaign=campaign, actor=actor)


def _locked_status(campaign: Campaign, action: str, *, also: tuple[str, ...] = ()) -> str:
    """Lock the campaign row, refresh the instance and return its state, or raise ServiceConflict.

    `also`: states the caller checks further itself, beside those CAMPAIGN_TRANSITIONS allows.
    """
    fresh = Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    if fresh is None:
        raise ServiceConflict("The campaign no longer exists.")
    for field in campaign._meta.concrete_fields:
        setattr(campaign, field.attname, getattr(fresh, field.attname))
    if fresh.status not in CAMPAIGN_TRANSITIONS[action] and fresh.status not in also:
        raise ServiceConflict(_wrong_state_message(action, fresh.status))
    return fresh.status


def _conditional_update(campaign: Campaign, action: str, from_state: str, updates: dict[str, Any]) -> None:
    """Apply `updates` only if the campaign is still in `from_state`; raise ServiceConflict otherwise."""
    updates.setdefault("updated_at", timezone.now())
    rows = Campaign.objects.filter(pk=campaign.pk, status=from_state).update(**updates)
    if rows != 1:
        now_status = Campaign.objects.filter(pk=campaign.pk).values_list("status", flat=True).first()
        raise ServiceConflict(_wrong_state_message(action, now_status or "deleted"))
    for name, value in updates.items():
        setattr(campaign, name, value)


def _wrong_state_message(action: str, status: str) -> str:
    label = _STATUS_LABELS.get(status, status)
    allowed = ", ".join(sorted(_STATUS_LABELS[s] for s in CAMPAIGN_TRANSITIONS[action]))
    return f"Cannot {action} a campaign that is {label}; {action} is allowed only when it is {allowed}."


def _clean_fields(
    fields: dict[str, Any], *, area_codes: list[str] | None = None, polygon: dict | None = None
) -> dict[str, Any]:
    """Check the shape of editable fields and return them normalised; raise ServiceInvalid on bad input.

    `area_codes` and `polygon` are the campaign's stored target, whose zone dates the schedule when
    `fields` has none.
    """
    cleaned = dict(fields)
    errors: dict[str, str] = {}

    for name in ("title", "text", "sender"):
        if name in cleaned and not isinstance(cleaned[name], str):
            errors[name] = "Must be a string."
    if isinstance(cleaned.get("title"), str):
        cleaned["title"] = cleaned["title"].strip()
        if not cleaned["title"]:
            errors["title"] = "A title is required."
        elif len(cleaned["title"]) > Campaign._meta.get_field("title").max_length:
            errors["title"] = "At most 200 characters."
    if isinstance(cleaned.get("sender"), str):
        cleaned["sender"] = cleaned["sender"].strip()
        if len(cleaned["sender"]) > SENDER_MAX_LENGTH:
            errors["sender"] = (
                f"A sender ID has at most {SENDER_MAX_LENGTH} characters; this one has {len(cleaned['sender'])}."
            )
    if "mode" in cleaned and cleaned["mode"] not in Mode.values:
        errors["mode"] = f"Must be one of: {', '.join(Mode.values)}."
    if "priority" in cleaned and cleaned["priority"] not in Priority.values:
        errors["priority"] = f"Must be one of: {', '.join(Priority.values)}."
    if "repeat_policy" in cleaned and cleaned["repeat_policy"] not in RepeatPolicy.values:
        errors["repeat_policy"] = f"Must be one of: {', '.join(RepeatPolicy.values)}."

    if "area_codes" in cleaned:
        codes = cleaned["area_codes"]
        if codes is None:
            codes = []
        if not isinstance(codes, list | tuple) or not all(isinstance(code, str) for code in codes):
            errors["area_codes"] = "Must be a list of Kemendagri codes."
        else:
            codes = sorted({code.strip() for code in codes if code.strip()})
            malformed = [code for code in codes if not _AREA_CODE_RE.match(code)]
            if len(codes) > MAX_AREA_CODES:
                errors["area_codes"] = (
                    f"At most {MAX_AREA_CODES} areas, not {len(codes)}: choose the larger areas that hold them."
                )
            elif malformed:
                errors["area_codes"] = f"Not Kemendagri codes: {', '.join(malformed[:10])}."
            else:
                known = set(Area.objects.filter(code__in=codes).values_list("code", flat=True))
                unknown = [code for code in codes if code not in known]
                if unknown:
                    errors["area_codes"] = f"Unknown area codes: {', '.join(unknown[:10])}."
            cleaned["area_codes"] = codes
    if "operator_slugs" in cleaned:
        slugs = cleaned["operator_slugs"] or []
        if not isinstance(slugs, list | tuple) or not all(isinstance(slug, str) for slug in slugs):
            errors["operator_slugs"] = "Must be a list of operator slugs."
        else:
            cleaned["operator_slugs"] = sorted(set(slugs))
    for name in ("audience", "schedule"):
        if name in cleaned:
            if cleaned[name] is None:
                cleaned[name] = {}
            if not isinstance(cleaned[name], dict):
                errors[name] = "Must be a JSON object."
    if cleaned.get("schedule") and "schedule" not in errors:
        try:
            cleaned["schedule"] = _schedule_checked(
                cleaned["schedule"], cleaned.get("area_codes", area_codes), cleaned.get("polygon", polygon)
            )
        except scheduling.ScheduleError as exc:
            errors["schedule"] = str(exc) if exc.field == "schedule" else f"{exc.field}: {exc}"
    if cleaned.get("polygon") is not None:
        polygon = cleaned["polygon"]
        if not isinstance(polygon, dict) or polygon.get("type") not in {"Polygon", "MultiPolygon"}:
            errors["polygon"] = "Must be a GeoJSON Polygon or MultiPolygon."
        elif not isinstance(polygon.get("coordinates"), list) or not polygon["coordinates"]:
            errors["polygon"] = "A GeoJSON geometry needs coordinates."
        else:
            # Unreadable or flat coordinates are refused here, before the campaign is saved with them.
            try:
                polygon_geometry(polygon)
            except ServiceInvalid as exc:
                errors["polygon"] = str(exc)
    if "audience" in cleaned and "audience" not in errors:
        problem = _audience_problem(cleaned["audience"])
        if problem:
            errors["audience"] = problem
    if _has_nul(cleaned.get("polygon")):
        errors["polygon"] = "Must not contain NUL characters."
    elif _has_lone_surrogate(cleaned.get("polygon")):
        errors["polygon"] = "Must not contain lone surrogate characters."
    for name in ("starts_at", "ends_at"):
        value = cleaned.get(name)
        if value is not None and not isinstance(value, datetime.datetime):
            errors[name] = "Must be a date and time."
        elif value is not None and timezone.is_naive(value):
            errors[name] = "Must include a time zone."
        elif value is not None and not _storable_time(value):
            errors[name] = f"Must be a time between the years {MIN_YEAR} and {MAX_YEAR}."
    if "validity_minutes" in cleaned:
        value = cleaned["validity_minutes"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7 * 24 * 60:
            errors["validity_minutes"] = "Must be a whole number of minutes between 1 and 10080."
    if "exercise" in cleaned and not isinstance(cleaned["exercise"], bool):
        errors["exercise"] = "Must be true or false."

    if errors:
        raise ServiceInvalid(_errors_message(errors), errors)
    return cleaned


def _check_window(fields: dict[str, Any], *, stored: Campaign | None = None) -> None:
    """Raise ServiceInvalid if a broadcast window being set ends before it starts.

    One end moved alone is checked against the other as stored. Said at once, while the author can fix it, as the
    form does; the other window rules wait for submit, which checks them against the time of submitting.
    """
    if "starts_at" not in fields and "ends_at" not in fields:
        return
    starts = fields.get("starts_at", stored.starts_at if stored else None)
    ends = fields.get("ends_at", stored.ends_at if stored else None)
    if starts is not None and ends is not None and ends <= starts:
        message = "The broadcast window must end after it starts."
        raise ServiceInvalid(_errors_message({"ends_at": message}), {"ends_at": message})


def _check_jurisdiction(*, user: User, area_codes, polygon: dict | None) -> None:
    """Raise ServiceInvalid, naming the area, unless the whole target lies within the user's jurisdiction.

    A drawn polygon must lie inside the known boundary of the jurisdiction or of an area below it (see
    `polygon_covering_area`): where no such boundary is known, a limited user targets by area codes.
    """
    jurisdiction = user.jurisdiction_code
    if jurisdiction is None:
        return
    where = f"{jurisdiction} {user.jurisdiction.name}"
    outside = [code for code in area_codes or [] if not area_code_within(code, jurisdiction)]
    if outside:
        named = _named_areas(outside)
        message = f"Outside your jurisdiction ({where}): {', '.join(named)}. Choose areas within it."
        raise OutsideJurisdiction(message, {"area_codes": message}, areas=named, jurisdiction=where)
    if polygon and not area_code_within(polygon_covering_area(polygon) or "", jurisdiction):
        message = f"The drawn polygon does not lie within the known boundary of your jurisdiction ({where})."
        raise OutsideJurisdiction(message, {"polygon": message}, areas=[], jurisdiction=where)
    if polygon:
        # A subscriber is reached when the boundary of its home meets the polygon: one touching a neighbour's
        # boundary reaches that neighbour's homes. Homes known only by an area above the jurisdiction are its own.
        exact, subtree = polygon_home_areas(polygon)
        outside = sorted(
            code
            for code in exact | subtree
            if not area_code_within(code, jurisdiction) and not area_code_within(jurisdiction, code)
        )
        if outside:
            named = _named_areas(outside)
            message = f"Outside your jurisdiction ({where}): {', '.join(named)}. Choose areas within it."
            raise OutsideJurisdiction(message, {"polygon": message}, areas=named, jurisdiction=where)


def _named_areas(codes: list[str]) -> list[str]:
    """Return the first ten codes each followed by its area's name ("33.16 Kabupaten Blora")."""
    names = dict(Area.objects.filter(code__in=codes[:10]).values_list("code", "name"))
    return [f"{code} {names.get(code, '')}".strip() for code in codes[:10]]


def _storable_time(value: datetime.datetime) -> bool:
    """Return whether an aware time lies in years the database stores and window arithmetic cannot overflow."""
    try:
        return MIN_YEAR <= value.astimezone(datetime.UTC).year <= MAX_YEAR
    except OverflowError:
        return False


def _audience_problem(audience: dict) -> str:
    """Return what is wrong with audience filters ({"languages": [...], "operators": [...]}), or ""."""
    unknown = sorted(set(audience) - AUDIENCE_FILTERS)
    if unknown:
        return f"Unknown audience filters: {', '.join(unknown)}; use {' and '.join(sorted(AUDIENCE_FILTERS))}."
    for name, values in audience.items():
        if not isinstance(values, list) or not all(isinstance(value, str) and value for value in values):
            return f"{name} must be a list of names."
        if _has_nul(values):
            return f"{name} must not contain NUL characters."
        if _has_lone_surrogate(values):
            return f"{name} must not contain lone surrogate characters."
    if audience.get("operators"):
        # A slug no operator has would filter out every subscriber, and the run would reach nobody.
        slugs = sorted(Operator.objects.values_list("slug", flat=True))
        unknown = sorted(set(audience["operators"]) - set(slugs))
        if unknown:
            known = f"name them by slug: {', '.join(slugs)}" if slugs else "no operator is set up yet"
            return f"Unknown operators: {', '.join(unknown[:10])}; {known}."
    return ""


def _has_nul(value: Any) -> bool:
    """Return whether a JSON value holds a NUL character, which PostgreSQL's jsonb cannot store."""
    return value is not None and "\\u0000" in json.dumps(value)


def _has_lone_surrogate(value: Any) -> bool:
    """Return whether a JSON value holds a lone surrogate (the JSON escape \\ud800 decodes to one).

    UTF-8 cannot encode it: PostgreSQL's jsonb refuses it, and no answer could carry it back.
    """
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def _schedule_meaning(schedule) -> dict | None:
    """Return a schedule's normal form, an empty one being "now" (as dispatch reads it); None if malformed."""
    try:
        return scheduling.schedule_normalize(schedule or {"kind": "now"})
    except scheduling.ScheduleError:
        return None


def _schedule_checked(schedule: dict, area_codes, polygon) -> dict:
    """Return the schedule in its normal form, or raise ScheduleError if it is malformed or already over.

    A recurring schedule whose last day (`until`, in the area's zone) is before today would never run.
    """
    normalized = scheduling.schedule_normalize(schedule)
    until = normalized.get("until")
    if until:
        zone = target_zone(area_codes, polygon if isinstance(polygon, dict) else None)
        today = timezone.now().astimezone(zone.tzinfo).date()
        if datetime.date.fromisoformat(until) < today:
            raise scheduling.ScheduleError(
                f"The end date {until} is before today ({today.isoformat()} {zone.label}).", "until"
            )
    return normalized


def refused_characters(value: str) -> str:
    """Name the direction overrides and control characters in value (at most ten), or return "" when it has none."""
    refused = [item for item in sms.hidden_characters(value or "") if item.kind in sms.REFUSED_KINDS]
    return ", ".join(f"{item.code_point} {item.name} at character {item.position + 1}" for item in refused[:10])


def _check_complete(campaign: Campaign) -> None:
    """Raise ServiceInvalid unless the campaign has everything a reviewer needs and a run can send."""
    errors: dict[str, str] = {}
    reasons: dict[str, str] = {}  # ServiceInvalid.codes
    try:
        sms.analyze(campaign.text)
    except sms.TextError as exc:
        errors["text"] = str(exc)
    # Direction overrides and control characters have no use in an SMS, and what they do differs between the
    # approver's screen and each handset (see smsblast.sms): approving such a text is approving an unknown one. The
    # title heads the review page and the approver's email and travels with every batch; the instruction is carried
    # by the alert's CAP export.
    for field, effect in _REFUSED_CHARACTER_EFFECTS.items():
        refused = refused_characters(getattr(campaign, field))
        if refused and field not in errors:
            errors[field] = (
                f"The {field} holds characters that {REFUSED_CHARACTERS_PHRASE} ({refused}), so {effect}. Remove them."
            )
            reasons[field] = REFUSED_CHARACTERS
    if not SENDER_RE.match(campaign.sender or ""):
        errors["sender"] = SENDER_RULE
    codes = campaign.area_codes or []
    if not Area.objects.filter(code__in=codes).exists() and not campaign.polygon:
        errors["area_codes"] = "Choose at least one existing area or draw a polygon."
    if campaign.starts_at and campaign.ends_at and campaign.ends_at <= campaign.starts_at:
        errors["ends_at"] = "The broadcast window must end after it starts."
    if campaign.mode == Mode.TARGETED and campaign.exercise:
        # Only an area broadcast can be limited to test endpoints; a targeted run reaches real subscribers.
        errors["exercise"] = "Only an area broadcast can be an exercise; a targeted campaign reaches real subscribers."
    if campaign.mode == Mode.TARGETED and campaign.operator_slugs:
        # A targeted run sends to its audience on every operator: approved, these would limit nothing.
        errors["operator_slugs"] = (
            "Only an area broadcast is limited to operators here; limit a targeted campaign's operators with its "
            'audience filter {"operators": [...]}.'
        )
    if campaign.mode == Mode.AREA_BROADCAST and _schedule_meaning(campaign.schedule) != {"kind": "now"}:
        # It goes out once, in its window: another schedule or quiet hours would be approved and never followed.
        errors["schedule"] = "An area broadcast is sent in its window; leave its schedule at now, without quiet hours."
    if campaign.mode == Mode.AREA_BROADCAST:
        from operators.broadcasts import broadcast_errors  # window, area and operator rules of area broadcasts

        errors = {**broadcast_errors(campaign), **errors}
    if errors:
        raise ServiceInvalid(_errors_message(errors), errors, codes=reasons)


def _errors_message(errors: dict[str, str]) -> str:
    return " ".join(f"{name}: {message}" for name, message in errors.items())


def _snapshot(campaign: Campaign) -> dict[str, Any]:
    """Return what the approver saw: the hashed content."""
    return campaign_content(campaign)
