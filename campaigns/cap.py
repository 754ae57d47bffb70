"""CAP 1.2 export of an approved campaign (OASIS Common Alerting Protocol), built with lxml.

An approved campaign exports as an `Alert`; approved again after an edit, as an `Update` whose `references` name
the alerts of its earlier approvals ("sender,identifier,sent"); once cancelled, as a `Cancel` naming all of them.
Times carry the offset of the area's zone (WIB, WITA or WIT), as CAP requires.
"""

import re
from datetime import datetime, timedelta
from urllib.parse import urlparse

from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import pgettext_lazy
from lxml import etree

from campaigns import scheduling
from campaigns.models import Approval, Campaign, Mode, Priority
from campaigns.selectors import campaign_zone, campaign_zones, target_zone
from campaigns.services import campaign_content_hash
from smsblast.errors import ServiceConflict
from smsblast.models import Area

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
# The CAP 1.2 values of the alert fields, each with its name in the user's language: the review page shows the value
# as exported beside its name, since the approver approves the alert as operators and other systems read it.
CAP_VALUE_LABELS = {
    "cap_category": {
        "Geo": pgettext_lazy("CAP category", "Geophysical"),
        "Met": pgettext_lazy("CAP category", "Meteorological"),
        "Safety": pgettext_lazy("CAP category", "Public safety"),
        "Security": pgettext_lazy("CAP category", "Security"),
        "Rescue": pgettext_lazy("CAP category", "Rescue"),
        "Fire": pgettext_lazy("CAP category", "Fire"),
        "Health": pgettext_lazy("CAP category", "Health"),
        "Env": pgettext_lazy("CAP category", "Environmental"),
        "Transport": pgettext_lazy("CAP category", "Transport"),
        "Infra": pgettext_lazy("CAP category", "Infrastructure"),
        "CBRNE": pgettext_lazy("CAP category", "Chemical, biological, radiological, nuclear or explosive"),
        "Other": pgettext_lazy("CAP category", "Other"),
    },
    "cap_urgency": {
        "Immediate": pgettext_lazy("CAP urgency", "Immediate"),
        "Expected": pgettext_lazy("CAP urgency", "Expected"),
        "Future": pgettext_lazy("CAP urgency", "Future"),
        "Past": pgettext_lazy("CAP urgency", "Past"),
        "Unknown": pgettext_lazy("CAP urgency", "Unknown"),
    },
    "cap_severity": {
        "Extreme": pgettext_lazy("CAP severity", "Extreme"),
        "Severe": pgettext_lazy("CAP severity", "Severe"),
        "Moderate": pgettext_lazy("CAP severity", "Moderate"),
        "Minor": pgettext_lazy("CAP severity", "Minor"),
        "Unknown": pgettext_lazy("CAP severity", "Unknown"),
    },
    "cap_certainty": {
        "Observed": pgettext_lazy("CAP certainty", "Observed"),
        "Likely": pgettext_lazy("CAP certainty", "Likely"),
        "Possible": pgettext_lazy("CAP certainty", "Possible"),
        "Unlikely": pgettext_lazy("CAP certainty", "Unlikely"),
        "Unknown": pgettext_lazy("CAP certainty", "Unknown"),
    },
}
CAP_CATEGORIES = frozenset(CAP_VALUE_LABELS["cap_category"])
CAP_URGENCIES = frozenset(CAP_VALUE_LABELS["cap_urgency"])
CAP_SEVERITIES = frozenset(CAP_VALUE_LABELS["cap_severity"])
CAP_CERTAINTIES = frozenset(CAP_VALUE_LABELS["cap_certainty"])
# What an officer leaves blank follows the campaign's priority.
CAP_DEFAULTS = {
    Priority.URGENT: {"urgency": "Immediate", "severity": "Severe", "certainty": "Observed"},
    Priority.NORMAL: {"urgency": "Expected", "severity": "Moderate", "certainty": "Likely"},
}
GEOCODE_NAME = "KEMENDAGRI"
# XML 1.0 allows no control character but tab, newline and carriage return. GSM-7's form feed (a page break)
# becomes a newline; anything else is left out of the document.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0e-\x1f\ufffe\uffff]")


def cap_sender() -> str:
    """Return this installation's CAP sender id (CAP_SENDER, else derived from the public host)."""
    return settings.CAP_SENDER or f"smsblast@{urlparse(settings.PUBLIC_BASE_URL).hostname or 'localhost'}"


def cap_identifier(campaign: Campaign, approval: Approval) -> str:
    """Return the identifier of the alert of the campaign as `approval` approved it, unique per sender.

    An edited and approved again campaign is another message, so it gets another identifier.
    """
    return f"{cap_sender().split('@')[-1]}.campaign.{campaign.pk}.{approval.pk}"


def cap_time(moment: datetime, campaign: Campaign) -> str:
    """Return `moment` in the area's zone as CAP wants it: seconds, and an explicit offset (never "Z")."""
    local = moment.astimezone(campaign_zone(campaign).tzinfo).replace(microsecond=0)
    return local.isoformat()


def cap_approval_sent(approval: Approval, campaign: Campaign) -> str:
    """Return the `sent` of the alert `approval` let out, as it was exported: in the zone of the area approved.

    References name earlier alerts by this exact text, so a later edit of the area must not change it.
    """
    snapshot = approval.snapshot or {}
    if "area_codes" not in snapshot and "polygon" not in snapshot:
        return cap_time(approval.created_at, campaign)
    zone = target_zone(snapshot.get("area_codes") or [], snapshot.get("polygon"))
    return approval.created_at.astimezone(zone.tzinfo).replace(microsecond=0).isoformat()


def cap_values(campaign: Campaign) -> dict[str, str]:
    """Return category, urgency, severity and certainty: as composed where valid, else the priority's defaults."""
    defaults = CAP_DEFAULTS.get(campaign.priority, CAP_DEFAULTS[Priority.NORMAL])
    return {
        "category": campaign.cap_category if campaign.cap_category in CAP_CATEGORIES else "Health",
        "urgency": campaign.cap_urgency if campaign.cap_urgency in CAP_URGENCIES else defaults["urgency"],
        "severity": campaign.cap_severity if campaign.cap_severity in CAP_SEVERITIES else defaults["severity"],
        "certainty": campaign.cap_certainty if campaign.cap_certainty in CAP_CERTAINTIES else defaults["certainty"],
    }


def _approval(campaign: Campaign) -> Approval:
    approval = (
        campaign.approvals.filter(decision=Approval.Decision.APPROVED, voided_at__isnull=True).order_by("-id").first()
    )
    if approval is None:
        raise ServiceConflict(_("Only an approved campaign can be exported as CAP; this one has no valid approval."))
    if approval.content_hash != campaign_content_hash(campaign):
        raise ServiceConflict(_("The campaign changed after it was approved; it needs a new approval before export."))
    return approval


def _approved_alerts(campaign: Campaign) -> list[Approval]:
    """Return every approval that let the campaign out, oldest first: each one's content was an alert of its own."""
    return list(campaign.approvals.filter(decision=Approval.Decision.APPROVED).order_by("id"))


def cap_exportable(campaign: Campaign) -> bool:
    """Return whether the campaign has a CAP document: its approval holds, or it was approved, then cancelled."""
    if campaign.status == Campaign.Status.CANCELLED:
        return campaign.approvals.filter(decision=Approval.Decision.APPROVED).exists()
    try:
        _approval(campaign)
    except ServiceConflict:
        return False
    return True


def _cancelled_at(campaign: Campaign) -> datetime:
    from smsblast.audit import audit_history

    event = audit_history(campaign).filter(action="campaign.cancel").order_by("-at").first()
    return event.at if event else campaign.updated_at


def _in_force(campaign: Campaign, approved_at: datetime) -> tuple[datetime | None, datetime | None]:
    """Return the alert's effective and expires: an area broadcast's window; for a targeted campaign sent at a set
    time or again and again, from its first run to the end of its last run's validity (no end without an `until`).

    Its officer may start the schedule hours or days after the approval: the first run is then the one that start
    let out, as the run itself (or, before it, the campaign's next run) says, not the first the approval would have.
    """
    validity = timedelta(minutes=campaign.validity_minutes)
    try:
        schedule = scheduling.schedule_normalize(campaign.schedule or {"kind": "now"})
    except scheduling.ScheduleError:
        schedule = {"kind": "now"}
    run = None
    if campaign.mode == Mode.TARGETED:
        run = campaign.runs.filter(scheduled_for__gte=approved_at).order_by("scheduled_for", "id").first()
    if campaign.mode == Mode.TARGETED and schedule["kind"] != "now":
        zone, zones = campaign_zone(campaign), campaign_zones(campaign)
        timing = {"schedule": schedule, "zone": zone, "priority": campaign.priority, "quiet_zones": zones}
        if run is not None:
            first = run.scheduled_for
        elif campaign.next_run_at is not None:
            first = campaign.next_run_at
        else:
            first = scheduling.first_start(now=approved_at, **timing)
        if first is not None:
            if schedule["kind"] == "once":
                return first, first + validity
            last = scheduling.last_occurrence(schedule, zone=zone)
            if last is None:
                return first, None
            return first, max(first, scheduling.may_send_at(last, **timing)) + validity
    if campaign.ends_at:
        return campaign.starts_at, campaign.ends_at
    if run is not None and run.expires_at is not None:
        # Sent "now" when its officer started it, maybe hours after the approval: that run's own validity window
        # says until when the alert is in force (next_run_at is cleared as the run starts).
        return campaign.starts_at, run.expires_at
    start = campaign.next_run_at or campaign.starts_at or approved_at
    return campaign.starts_at, start + validity


def _area_geometry(campaign: Campaign, approval: Approval) -> dict | None:
    """Return the area as sent (the first run's frozen area), else the smoothed area `approval` froze (invariant 1:
    a boundary edited since moves neither the area operators are sent nor the alert's), else computed now."""
    from operators import areageom
    from operators.broadcasts import broadcast_area_shapes

    run = campaign.runs.exclude(frozen={}).order_by("scheduled_for", "id").first()
    if run and (run.frozen.get("area") or {}).get("geometry"):
        return run.frozen["area"]["geometry"]
    if approval.area_shapes is not None:
        shapes = [areageom.geometry_from_geojson(geometry) for geometry in approval.area_shapes]
    else:
        shapes = broadcast_area_shapes(campaign)  # approved before areas were frozen
    return areageom.broadcast_area(shapes) if shapes else None


def cap_alert(campaign: Campaign) -> etree._Element:
    """Return the CAP 1.2 `alert` element of an approved (or approved, then cancelled) campaign."""
    from operators.areageom import cap_polygons

    cancelled = campaign.status == Campaign.Status.CANCELLED
    approved = _approved_alerts(campaign)
    if cancelled and approved:
        # A cancel withdraws whatever went out, even when the campaign was edited (unapproved) before it.
        approval = approved[-1]
        publishable = approval.voided_at is None and approval.content_hash == campaign_content_hash(campaign)
    else:
        approval, publishable = _approval(campaign), True
    sender = cap_sender()
    identifier = cap_identifier(campaign, approval)
    original_sent = cap_approval_sent(approval, campaign)
    # The alerts of earlier approvals: an update supersedes them, a cancel ends them with the current one.
    superseded = [
        f"{sender},{cap_identifier(campaign, earlier)},{cap_approval_sent(earlier, campaign)}"
        for earlier in approved
        if earlier.pk < approval.pk
    ]

    alert = etree.Element(f"{{{CAP_NS}}}alert", nsmap={None: CAP_NS})

    def add(parent, name: str, text: str | None = None):
        element = etree.SubElement(parent, f"{{{CAP_NS}}}{name}")
        if text is not None:
            element.text = _XML_FORBIDDEN.sub("", text.replace("\x0c", "\n"))
        return element

    add(alert, "identifier", f"{identifier}.cancel" if cancelled else identifier)
    add(alert, "sender", sender)
    add(alert, "sent", cap_time(_cancelled_at(campaign), campaign) if cancelled else original_sent)
    add(alert, "status", "Exercise" if campaign.exercise else "Actual")
    add(alert, "msgType", "Cancel" if cancelled else "Update" if superseded else "Alert")
    add(alert, "scope", "Public")
    if cancelled:
        add(alert, "note", "Pesan dibatalkan.")
        add(alert, "references", " ".join([*superseded, f"{sender},{identifier},{original_sent}"]))
    elif superseded:
        add(alert, "references", " ".join(superseded))
    if not publishable:
        return alert  # CAP allows a Cancel without info; content no approver saw is never published

    values = cap_values(campaign)
    info = add(alert, "info")
    add(info, "language", "id-ID")
    add(info, "category", values["category"])
    add(info, "event", campaign.cap_event or campaign.title)
    add(info, "urgency", values["urgency"])
    add(info, "severity", values["severity"])
    add(info, "certainty", values["certainty"])
    effective, expires = _in_force(campaign, approval.created_at)
    if effective:
        add(info, "effective", cap_time(effective, campaign))
    if expires:
        add(info, "expires", cap_time(expires, campaign))
    add(info, "senderName", campaign.sender)
    add(info, "headline", campaign.title)
    add(info, "description", campaign.text)
    if campaign.instruction:
        add(info, "instruction", campaign.instruction)

    codes = sorted(campaign.area_codes or [])
    names = dict(Area.objects.filter(code__in=codes).values_list("code", "name"))
    area = add(info, "area")
    described = [names.get(code, code) for code in codes]
    if campaign.polygon:
        described.append("Wilayah yang digambar")
    add(area, "areaDesc", ", ".join(described) or campaign.title)
    geometry = _area_geometry(campaign, approval)
    for polygon in cap_polygons(geometry) if geometry else []:
        add(area, "polygon", polygon)
    for code in codes:
        geocode = add(area, "geocode")
        add(geocode, "valueName", GEOCODE_NAME)
        add(geocode, "value", code)
    return alert


def cap_document(campaign: Campaign) -> bytes:
    """Return the campaign's CAP 1.2 document as UTF-8 XML bytes."""
    return etree.tostring(cap_alert(campaign), xml_declaration=True, encoding="UTF-8", pretty_print=True)
