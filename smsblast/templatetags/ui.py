"""Template filters shared by every page: local times with the zone label, rupiah, roles and statuses."""

import re
from datetime import datetime

from django import template
from django.utils import dateformat
from django.utils.formats import number_format
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _

from campaigns.models import Campaign
from campaigns.scheduling import Zone, zone_for_area_code
from campaigns.selectors import campaign_zone
from operators import broadcasts
from smsblast import services, sms
from smsblast.templatetags.svg import boundary_svg
from smsblast.text import label_matching

register = template.Library()

ROLE_LABELS = {
    "officer": _("officer"),
    "approver": _("approver"),
    "operator": _("operator"),
    "admin": _("administrator"),
}

STATUS_LABELS = {
    # Campaign
    "draft": _("draft"),
    "pending_approval": _("waiting for approval"),
    "approved": _("approved"),
    "scheduled": _("scheduled"),
    "sending": _("sending"),
    "paused": _("paused"),
    "completed": _("completed"),
    "completed_with_failures": _("completed with failures"),
    "rejected": _("rejected"),
    "cancelled": _("cancelled"),
    # Run and delivery
    "pending": _("pending"),
    "running": _("running"),
    "fanning_out": _("preparing recipients"),
    "queued": _("queued"),
    "submitted": _("submitted"),
    "delivered": _("delivered"),
    "undelivered": _("undelivered"),
    "expired": _("expired"),
    "failed": _("failed"),
    "stopped": _("stopped"),  # an import stopped by its officer
    "skipped": _("skipped"),
    "batch_failed": _("batch failed"),
    # Dispatch batch
    "in_flight": _("being sent"),
    "accepted": _("accepted by the operator"),
    "retry_wait": _("waiting to retry"),
    # Area broadcast at one operator
    "acknowledged": _("acknowledged"),
    "error": _("error, retrying"),
    "retries_exhausted": _("not acknowledged"),
    "cancel_pending": _("cancelling"),
    # Operator health
    "healthy": _("healthy"),
    "throttled": _("throttled"),
    "failing": _("failing"),
    "circuit_open": _("circuit open"),
    "idle": _("idle"),
    # Campaign mode and priority
    "targeted": _("targeted"),
    "area_broadcast": _("area broadcast"),
    "normal": _("normal"),
    "urgent": _("urgent"),
    "once_per_window": _("once per handset in the window"),
    "once_per_day": _("once per handset each day"),
}

AREA_LEVEL_LABELS = {
    "provinsi": _("province"),
    "kabupaten": _("regency or city"),
    "kecamatan": _("district"),
    "desa": _("village"),
}

# Why an imported row was refused: the codes of smsblast.phones.Reason and smsblast.importer.Reject.
IMPORT_REJECT_LABELS = {
    "invalid": _("not a valid phone number"),
    "not_mobile": _("not a mobile number (landline, toll-free or premium)"),
    "not_indonesian": _("a number of another country"),
    "too_short": _("too few digits for a mobile number"),
    "too_long": _("too many digits for a mobile number"),
    "missing_number": _("no number in the row"),
    "scientific_notation": _(
        "a spreadsheet saved the number in scientific notation (6.28123E+12), dropping its last digits: format the "
        "number column as Number with no decimal places and save the file again"
    ),
    "unknown_area": _("unknown area code, or an area name several areas bear"),
    "area_code_as_number": _(
        "a spreadsheet read the area code as a number, dropping its last zero (35.10 became 35.1): format the area "
        "column as Text, write the codes again and save the file again"
    ),
    "invalid_language": _("language is neither id nor en"),
    "invalid_coordinates": _("coordinates are not numbers inside Indonesia"),
    "malformed_row": _("the row cannot be read (an unclosed quote, a cell too long or a bad character)"),
    "duplicate": _("the same number as an earlier line"),
    "outside_jurisdiction": _("the area lies outside the jurisdiction of the officer who uploaded the file"),
    "homed_outside_jurisdiction": _(
        "the number is a subscriber of an area outside the jurisdiction of the officer who uploaded the file"
    ),
    "missing_area": _(
        "no area: a new number needs an area within the jurisdiction of the officer who uploaded the file"
    ),
}

# Why an import stopped, as smsblast.services stores it in the job's `error`; other texts show as stored.
IMPORT_ERROR_LABELS = {
    services.IMPORT_FAILED_FILE: _(
        "The server could not read the file or write the list of rejected rows (its disk may be full). Resume the "
        "import; if it stops again, ask an administrator to look at the server's disk and log."
    ),
    services.IMPORT_FAILED_DATABASE: _(
        "The database could not save the rows. Resume the import; if it stops again, ask an administrator to look "
        "at the database and the server's log."
    ),
    services.IMPORT_FAILED: _(
        "An unexpected error stopped the import. Resume it; if it stops again, ask an administrator to look at the "
        "server's log."
    ),
    services.IMPORT_INTERRUPTED: _("Interrupted: the worker running it stopped."),
}

# Why a delivery failed, for the reasons the system itself records; an operator's own reason shows as sent.
DELIVERY_REASON_LABELS = {
    "no_report": _("the operator never reported the outcome"),
    "validity_passed": _("the validity window passed before the operator took the batch"),
}

# Why an operator's area broadcast ended unacknowledged, as operators.broadcasts stores it; the operator's error shows
# as sent.
BROADCAST_ERROR_LABELS = {
    broadcasts.WINDOW_ENDED_UNACKNOWLEDGED: _("The window ended before the operator acknowledged."),
    broadcasts.WINDOW_ENDED_BEFORE_CANCEL: _("The window ended before the cancel was confirmed."),
    broadcasts.OPERATOR_INACTIVE: _("The operator is deactivated; sent once it is reactivated while the window lasts."),
}
BROADCAST_ERROR_PREFIXES = {
    broadcasts.NOT_ACKNOWLEDGED_IN_WINDOW: _("Not acknowledged before the window ends: %(error)s"),
    broadcasts.RETRIES_SPENT: _("Every retry was spent: %(error)s"),
}

# A batch whose retries ran out, as operators.services.batch_send words it; the operator's last error shows as sent.
GAVE_UP = re.compile(
    r"Gave up after (?P<attempts>\d+) attempts(?: \(and (?P<throttled>\d+) answered 429\))?; last error: (?P<error>.*)",
    re.DOTALL,
)
GAVE_UP_LABEL = _("Gave up after %(attempts)s attempts; last error: %(error)s")
# The reasons the system itself gives a cancel (campaigns.services, campaigns.cap_import), as recorded in English.
SYSTEM_REASONS = (
    (
        re.compile(r"Superseded by the CAP update of campaign (?P<campaign>\d+), approved\."),
        _("Superseded by the CAP update of campaign %(campaign)s, approved."),
    ),
    (
        re.compile(r"Withdrawn by the issuer \(CAP Cancel (?P<identifier>.*) from (?P<sender>.*)\)\.", re.DOTALL),
        _("Withdrawn by the issuer (CAP Cancel %(identifier)s from %(sender)s)."),
    ),
    (
        re.compile(r"Replaced by the same CAP alert, verified as signed by (?P<signer>.*)\.", re.DOTALL),
        _("Replaced by the same CAP alert, verified as signed by %(signer)s."),
    ),
    # campaigns.dispatch: a schedule's end date passed, occurrences missed until the next was near;
    # campaigns.services: an approval no longer matching.
    (
        re.compile(
            re.escape("The schedule's end date passed before these occurrences could start; they were not sent.")
        ),
        _("The schedule's end date passed before these occurrences could start; they were not sent."),
    ),
    (
        re.compile(re.escape("These occurrences were missed until the next one was nearer; it is sent instead.")),
        _("These occurrences were missed until the next one was nearer; it is sent instead."),
    ),
    (
        re.compile(
            r"Missed by longer than its validity \((?P<minutes>\d+) minutes\): it would have reached handsets after "
            r"it expired, so it was not sent\."
        ),
        _(
            "Missed by longer than its validity (%(minutes)s minutes): it would have reached handsets after it "
            "expired, so it was not sent."
        ),
    ),
    (
        re.compile(re.escape("The approval does not match the campaign's current content; nothing was sent.")),
        _("The approval does not match the campaign's current content; nothing was sent."),
    ),
)
GAVE_UP_THROTTLED_LABEL = _(
    "Gave up after %(attempts)s attempts (and %(throttled)s answered 429); last error: %(error)s"
)

ACTION_LABELS = {
    "campaign.create": _("created"),
    "campaign.update": _("edited"),
    "campaign.submit": _("submitted for approval"),
    "campaign.approve": _("approved"),
    "campaign.reject": _("rejected"),
    "campaign.cancel": _("cancelled"),
    "campaign.schedule": _("scheduled"),
    "campaign.pause": _("paused"),
    "campaign.resume": _("resumed"),
    "campaign.run_start": _("run started"),
    "campaign.run_complete": _("run finished"),
    "campaign.start": _("run started"),  # an area broadcast's window opened
    "campaign.complete": _("run finished"),  # an area broadcast's window closed
    "campaign.cap_import": _("imported from a CAP alert"),
    "campaign.cap_source_duplicate": _("marked as a second import of the same CAP alert"),
    "campaign.cap_source_replaced": _("replaced by the same CAP alert, verified as signed"),
    "campaign.dispatch_refused": _("sending refused: approval does not match"),
    "campaign.schedule_end": _("schedule ended: missed runs not sent"),
    "campaign.window_missed": _("broadcast window ended before it could start: nothing sent"),
    "campaign.occurrences_skip": _("missed runs not sent: the next one is near"),
    "campaign.validity_missed": _("run missed past its validity: nothing sent"),
    "run.start": _("run started"),
    "run.fanned_out": _("recipients prepared"),
    "run.complete": _("run finished"),
    "run.pause": _("run paused"),
    "run.resume": _("run resumed"),
    "run.cancel": _("run cancelled"),
    "run.expire": _("undelivered messages expired"),
    "run.stalled": _("no progress for 10 minutes"),
    "run.deliveries_remove": _("recipients removed under the retention policy"),
    "area_broadcast.failed": _("an operator did not take the broadcast"),
    "area.load": _("area table loaded from files"),
}


ENCODING_LABELS = {"GSM7": "GSM-7", "UCS2": "UCS-2"}  # stored and sent without the hyphen


def _label(labels: dict, code: str | None) -> str:
    """Return the label of a code from one of the tables above; a code without one shows as recorded."""
    return str(labels.get(code or "", code or ""))


@register.filter
def action_label(action: str) -> str:
    """Return an audit action in the user's language; unknown actions show as recorded."""
    return _label(ACTION_LABELS, action)


@register.filter
def role_label(role: str | None) -> str:
    """Return the role's name in the user's language."""
    return _label(ROLE_LABELS, role)


@register.filter
def area_level_label(level: str | None) -> str:
    """Return an area's level (provinsi, kabupaten, kecamatan, desa) in the user's language."""
    return _label(AREA_LEVEL_LABELS, level)


@register.filter
def import_reject_label(reason: str) -> str:
    """Return why an imported row was refused in the user's language; unknown codes show as recorded."""
    return _label(IMPORT_REJECT_LABELS, reason)


@register.filter
def import_error_label(error: str) -> str:
    """Return why an import stopped in the user's language when the text is one the import itself stores."""
    return _label(IMPORT_ERROR_LABELS, error)


@register.filter
def delivery_reason_label(reason: str) -> str:
    """Return why a delivery failed in the user's language when the reason is one of the system's own codes."""
    gave_up = GAVE_UP.match(reason or "")
    if gave_up and gave_up["throttled"]:
        return str(GAVE_UP_THROTTLED_LABEL) % gave_up.groupdict()
    if gave_up:
        return str(GAVE_UP_LABEL) % gave_up.groupdict()
    return _label(DELIVERY_REASON_LABELS, reason)


@register.filter
def audit_reason_label(reason: str) -> str:
    """Return the reason of a change in the user's language when the system gave it; a person's shows as written."""
    return label_matching(reason, SYSTEM_REASONS)


@register.filter
def broadcast_error_label(error: str) -> str:
    """Return why an operator's area broadcast ended in the user's language, with the operator's error as sent."""
    for prefix, label in BROADCAST_ERROR_PREFIXES.items():
        if (error or "").startswith(prefix):
            return str(label) % {"error": error[len(prefix) :]}
    return _label(BROADCAST_ERROR_LABELS, error)


@register.filter
def status_label(status: str | None) -> str:
    """Return a campaign, run, delivery or operator state in the user's language."""
    return _label(STATUS_LABELS, status)


# Why a marked character of an SMS text matters (see smsblast.sms.hidden_characters).
HIDDEN_KIND_LABELS = {
    sms.REORDERS: _(
        "reorders the text shown around it, so a screen and a handset may read differently; submission refuses it"
    ),
    sms.CONTROL: _("a control character, which handsets show as nothing or a box; submission refuses it"),
    sms.INVISIBLE: _("shown by nothing, yet sent and counted; it can split a word, number or link"),
    sms.LOOK_ALIKE: _("looks like a common letter or digit but is another: a link or number with it leads elsewhere"),
    sms.EDGE_BLANK: _("a blank at the start or end of the text: not seen, yet sent and counted"),
}


@register.filter
def hidden_kind_label(kind: str) -> str:
    """Return why a marked character of an SMS text matters, in the user's language."""
    return _label(HIDDEN_KIND_LABELS, kind)


def sms_parts_marked(text: str, parts: list[str], hidden: list[sms.HiddenChar]) -> list[SafeString]:
    """Return the parts of an SMS text as HTML in which every hidden character is marked with its code point.

    A character drawn as nothing, or one that reorders the text around it, is replaced by its marker, so that
    the page shows the characters in the order they are sent; a look-alike and a blank at either end keep their
    place beside theirs. The marker's name is read out by screen readers.
    """
    by_position = {item.position: item for item in hidden}
    shown, start = [], 0
    for part in parts:
        pieces = []
        for offset, char in enumerate(part):
            item = by_position.get(start + offset)
            if item is None:
                pieces.append(escape(char))
                continue
            marker = format_html(
                '<mark class="hidden-char" data-hidden-char="{}" title="{}">[{}]'
                '<span class="visually-hidden"> {}</span></mark>',
                item.code_point,
                item.name,
                item.code_point,
                item.name,
            )
            if item.kind == sms.LOOK_ALIKE:
                pieces.append(escape(char) + marker)
            elif item.kind == sms.EDGE_BLANK:
                pieces.append(marker + escape(char))
            else:
                pieces.append(marker)
        shown.append(mark_safe("".join(pieces)))  # noqa: S308 -- every character escaped above
        start += len(part)
    return shown


@register.filter
def marked(value) -> SafeString:
    """Return a line of approved text (a title, an instruction) as HTML with its hidden characters marked."""
    value = str(value)
    return sms_parts_marked(value, [value], sms.hidden_characters(value))[0]


@register.filter
def encoding_label(encoding: str | None) -> str:
    """Return an SMS encoding as people write it: GSM-7 or UCS-2 (stored and sent as GSM7 / UCS2)."""
    return _label(ENCODING_LABELS, encoding)


@register.filter
def local_time(moment: datetime | None, where=None) -> str:
    """Return `moment` in a zone, with its label: "23 Nov 2026 13:00 WIB".

    `where` is a Zone, a campaign (the zone its times are shown in) or an area code (the first of a list).
    """
    if not moment:
        return ""
    if isinstance(where, Zone):
        zone = where
    elif isinstance(where, Campaign):
        zone = campaign_zone(where)
    else:
        if isinstance(where, list | tuple):
            where = where[0] if where else None
        zone = zone_for_area_code(where)
    return f"{dateformat.format(moment.astimezone(zone.tzinfo), 'j M Y H:i')} {zone.label}"


@register.filter
def zone_label(area_code) -> str:
    """Return WIB, WITA or WIT for an area code (or the first of a list)."""
    if isinstance(area_code, list | tuple):
        area_code = area_code[0] if area_code else None
    return zone_for_area_code(area_code).label


@register.filter
def rupiah(amount) -> str:
    """Return an amount as "Rp 1.234.567", grouped for the user's language ("Rp 1,234,567" in English)."""
    if amount is None or amount == "":
        return "–"
    try:
        value = int(amount)
    except (TypeError, ValueError):
        return str(amount)
    return "Rp " + number_format(value, force_grouping=True)


@register.filter
def thousands(value) -> str:
    """Return an integer grouped by thousands for the user's language: "1.234" in Indonesian, "1,234" in English."""
    try:
        return number_format(int(value), force_grouping=True)
    except (TypeError, ValueError):
        return str(value)


@register.filter
def percent(part, whole) -> int:
    """Return part/whole as a whole percentage between 0 and 100."""
    try:
        return max(0, min(100, int(round(100 * float(part) / float(whole)))))
    except (TypeError, ValueError, ZeroDivisionError):
        return 0


@register.simple_tag
def area_map(areas, title: str = "") -> str:
    """Return an inline SVG of the areas' boundaries (areas with `name` and `boundary`), or "" if none has one."""
    return mark_safe(boundary_svg([(area.name, area.boundary) for area in areas], title=title))  # noqa: S308
