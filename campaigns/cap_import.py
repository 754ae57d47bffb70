"""CAP 1.1/1.2 import: an alert from any issuer becomes a draft area broadcast; a Cancel withdraws it.

Parsing refuses DTDs outright (defusedxml), which stops entity expansion bombs and external entities before
anything is read. An XML signature is checked against the issuers' certificates the installation trusts
(campaigns/cap_signature.py); the draft still needs an approver, who sees the source and whether it was verified.
"""

import re
from dataclasses import dataclass, field
from datetime import MAXYEAR, UTC, datetime, timedelta
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from campaigns.cap import CAP_CATEGORIES, CAP_CERTAINTIES, CAP_SEVERITIES, CAP_URGENCIES
from campaigns.cap_signature import CapSignature, SignatureState, cap_signature_check, cap_signature_reason_label
from campaigns.models import Campaign, Mode, Priority
from campaigns.selectors import campaign_cap_signature, campaigns_visible, target_scope
from smsblast import sms
from smsblast.audit import audit_record
from smsblast.errors import OutsideJurisdiction, ServiceConflict, ServiceInvalid
from smsblast.models import Area, AreaLevel, User, area_code_within
from smsblast.text import label_matching

CAP_NAMESPACES = {
    "urn:oasis:names:tc:emergency:cap:1.2": "1.2",
    "urn:oasis:names:tc:emergency:cap:1.1": "1.1",
}
MAX_DOCUMENT_BYTES = 1024 * 1024
# A regency covered less than this by the alert's shapes is narrowed to its kecamatan, where their
# boundaries are loaded.
WHOLE_REGENCY_SHARE = 0.9
# Shapes that only graze an area (an overlap below this share of both the area and the shapes) do not pull it in.
MIN_OVERLAP_SHARE = 0.01
DEFAULT_WINDOW = timedelta(hours=1)
# An earlier import in these states, none verified, gives way to the same alert verified as signed.
REPLACEABLE_STATUSES = (
    Campaign.Status.DRAFT,
    Campaign.Status.PENDING_APPROVAL,
    Campaign.Status.REJECTED,
    Campaign.Status.CANCELLED,
)
# The most polygons and circles an alert's area is read from: agencies draw a handful, and each one is matched against
# every known regency's boundary.
MAX_AREA_SHAPES = 1000
# Drafts start no sooner than this, so the officer and the approver have time to review.
REVIEW_LEAD = timedelta(minutes=15)
_DOTTED_CODE = re.compile(r"^\d{2}(\.\d{2}(\.\d{2}(\.\d{4})?)?)?$")
_WHITESPACE = re.compile(r"\s+")


@dataclass
class CapArea:
    description: str = ""
    polygons: list[str] = field(default_factory=list)
    circles: list[str] = field(default_factory=list)
    geocodes: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class CapInfo:
    language: str = "en-US"
    categories: list[str] = field(default_factory=list)
    event: str = ""
    urgency: str = ""
    severity: str = ""
    certainty: str = ""
    effective: str = ""
    onset: str = ""
    expires: str = ""
    headline: str = ""
    description: str = ""
    instruction: str = ""
    areas: list[CapArea] = field(default_factory=list)


@dataclass
class CapAlert:
    version: str
    identifier: str
    sender: str
    sent: str
    status: str
    msg_type: str
    references: list[tuple[str, str, str]]
    infos: list[CapInfo]
    signature: CapSignature
    scope: str = "Public"

    @property
    def signed(self) -> bool:
        return self.signature.state != SignatureState.UNSIGNED


# --- parsing (no database) -----------------------------------------------------------------


def cap_parse(raw: bytes) -> CapAlert:
    """Return the alert in a CAP 1.1 or 1.2 document; raise ServiceInvalid saying why it cannot be read."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ServiceInvalid(cap_too_large_message())
    if not raw.strip():
        raise ServiceInvalid(_("The request carries no document: send the CAP XML as the body or as a file."))
    try:
        root = fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise ServiceInvalid(
            _("The document declares a DTD or entities (%(error)s); CAP needs neither, so it is refused.")
            % {"error": type(exc).__name__}
        ) from exc
    except ParseError as exc:
        raise ServiceInvalid(_("The document is not well-formed XML: %(error)s.") % {"error": exc}) from exc
    except (LookupError, ValueError) as exc:  # an encoding the XML declaration names but the parser cannot read
        raise ServiceInvalid(
            _("The document's encoding cannot be read (%(error)s); send it as UTF-8.") % {"error": exc}
        ) from exc
    namespace, _brace, local = root.tag[1:].partition("}") if root.tag.startswith("{") else ("", "", root.tag)
    if local != "alert" or namespace not in CAP_NAMESPACES:
        raise ServiceInvalid(
            _("Not a CAP alert: the root element is %(element)s; expected 'alert' in the CAP 1.1 or 1.2 namespace.")
            % {"element": repr(root.tag)}
        )
    signature = cap_signature_check(raw, root)
    if signature.signed_xml is not None:
        # See what is signed: the alert is read from what its issuer's key signed, not the document around it.
        root = fromstring(signature.signed_xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    ns = {"cap": namespace}

    def text(parent: Element, name: str) -> str:
        found = parent.find(f"cap:{name}", ns)
        return (found.text or "").strip() if found is not None else ""

    identifier, sender, sent = text(root, "identifier"), text(root, "sender"), text(root, "sent")
    status, msg_type, scope = text(root, "status"), text(root, "msgType"), text(root, "scope")
    missing = [name for name, value in (("identifier", identifier), ("sender", sender), ("sent", sent)) if not value]
    missing += [name for name, value in (("status", status), ("msgType", msg_type)) if not value]
    if missing:
        raise ServiceInvalid(_("Not a valid CAP alert: missing %(elements)s.") % {"elements": ", ".join(missing)})
    references = []
    for item in text(root, "references").split():
        parts = item.split(",")
        if len(parts) == 3:
            references.append((parts[0], parts[1], parts[2]))
    infos = []
    for element in root.findall("cap:info", ns):
        info = CapInfo(
            language=text(element, "language") or "en-US",
            categories=[(c.text or "").strip() for c in element.findall("cap:category", ns)],
            **{
                name: text(element, cap_name)
                for name, cap_name in (
                    ("event", "event"),
                    ("urgency", "urgency"),
                    ("severity", "severity"),
                    ("certainty", "certainty"),
                    ("effective", "effective"),
                    ("onset", "onset"),
                    ("expires", "expires"),
                    ("headline", "headline"),
                    ("description", "description"),
                    ("instruction", "instruction"),
                )
            },
        )
        for area_element in element.findall("cap:area", ns):
            info.areas.append(
                CapArea(
                    description=text(area_element, "areaDesc"),
                    polygons=[(p.text or "").strip() for p in area_element.findall("cap:polygon", ns) if p.text],
                    circles=[(c.text or "").strip() for c in area_element.findall("cap:circle", ns) if c.text],
                    geocodes=[
                        (text(g, "valueName"), text(g, "value")) for g in area_element.findall("cap:geocode", ns)
                    ],
                )
            )
        infos.append(info)
    return CapAlert(
        version=CAP_NAMESPACES[namespace],
        identifier=identifier,
        sender=sender,
        sent=sent,
        status=status,
        msg_type=msg_type,
        references=references,
        infos=infos,
        signature=signature,
        scope=scope,
    )


# Indonesian as a CAP <language> may name it: BCP 47 "id", the withdrawn ISO 639 "in" (still what Java writes for
# an Indonesian locale) and ISO 639-2 "ind", each with or without a region.
_INDONESIAN_LANGUAGES = frozenset({"id", "in", "ind"})


def _is_indonesian(language: str) -> bool:
    return language.lower().replace("_", "-").split("-")[0] in _INDONESIAN_LANGUAGES


def cap_pick_info(alert: CapAlert) -> CapInfo | None:
    """Return the Indonesian info block if there is one, else the first."""
    for info in alert.infos:
        if _is_indonesian(info.language):
            return info
    return alert.infos[0] if alert.infos else None


def cap_fit_text(info: CapInfo, *, max_segments: int) -> tuple[str, list[dict[str, Any]]]:
    """Return headline, description and instruction joined and cut to fit `max_segments`, and what was cut.

    Parts are kept in that order; the first part that does not fit is cut at a word boundary and marked with
    "...", and every later part is dropped. What a part repeats of an earlier one (a description opening with
    the headline) is sent once.
    """
    parts: list[tuple[str, str]] = []
    for name in ("headline", "description", "instruction"):
        value = _WHITESPACE.sub(" ", getattr(info, name)).strip()
        for _part, earlier in parts:
            if value.startswith(earlier):  # a description that opens with the headline
                value = value[len(earlier) :].lstrip(" .:-")
        if value and not any(value in earlier for _, earlier in parts):
            parts.append((name, value))
    kept: list[str] = []
    cuts: list[dict[str, Any]] = []
    for index, (name, value) in enumerate(parts):
        if _fits(" ".join([*kept, value]), max_segments):
            kept.append(value)
            continue
        words = value.split(" ")
        low, high = 0, len(words) - 1  # the largest count of words that fits with "..."
        while low < high:
            middle = (low + high + 1) // 2
            if _fits(" ".join([*kept, " ".join(words[:middle]) + "..."]), max_segments):
                low = middle
            else:
                high = middle - 1
        if low:
            kept.append(" ".join(words[:low]) + "...")
            cuts.append({"part": name, "kept_words": low, "dropped_words": len(words) - low})
        else:
            cuts.append({"part": name, "kept_words": 0, "dropped_words": len(words)})
        for later_name, later in parts[index + 1 :]:
            cuts.append({"part": later_name, "kept_words": 0, "dropped_words": len(later.split(" "))})
        break
    return " ".join(kept), cuts


def _fits(text: str, max_segments: int) -> bool:
    try:
        sms.analyze(text, max_segments=max_segments)
    except sms.TextError:
        return False
    return True


def cap_datetime(value: str) -> datetime | None:
    """Return a CAP dateTime as an aware datetime, or None when absent or unreadable."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
        # A time in the last year a datetime holds leaves no room for the broadcast window after it.
        if moment is not None and moment.tzinfo is not None and moment.astimezone(UTC).year >= MAXYEAR:
            return None
    except (ValueError, OverflowError):
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def _is_cap_time(value: str) -> bool:
    """Return whether `value` is a date and time with a UTC offset (however far in the future)."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


def cap_too_large_message() -> str:
    """Return the refusal of a document over MAX_DOCUMENT_BYTES, in the user's language."""
    return _("The document is larger than %(size)s KiB.") % {"size": MAX_DOCUMENT_BYTES // 1024}


# --- areas ---------------------------------------------------------------------------------

# Why a polygon or circle of an alert is skipped, as operators.areageom (which has no Django) words it in English.
_AREA_ERRORS = (
    (re.compile(r"Unreadable CAP polygon (?P<text>.*)\.", re.DOTALL), gettext_lazy("Unreadable CAP polygon %(text)s.")),
    (
        re.compile(re.escape("A CAP polygon needs at least four lat,lon pairs.")),
        gettext_lazy("A CAP polygon needs at least four lat,lon pairs."),
    ),
    (
        re.compile(re.escape("A CAP polygon point lies outside latitude/longitude range.")),
        gettext_lazy("A CAP polygon point lies outside latitude/longitude range."),
    ),
    (re.compile(re.escape("A CAP polygon encloses no area.")), gettext_lazy("A CAP polygon encloses no area.")),
    (re.compile(r"Unreadable CAP circle (?P<text>.*)\.", re.DOTALL), gettext_lazy("Unreadable CAP circle %(text)s.")),
    (
        re.compile(re.escape("A CAP circle lies outside latitude/longitude range or has no finite, positive radius.")),
        gettext_lazy("A CAP circle lies outside latitude/longitude range or has no finite, positive radius."),
    ),
    (
        re.compile(r"A drawn area has at most (?P<limit>[\d,]+) points; this one has (?P<points>[\d,]+)\."),
        gettext_lazy("A drawn area has at most %(limit)s points; this one has %(points)s."),
    ),
    (
        re.compile(
            r"The area crosses itself in more than (?P<count>\d+) places, too many to repair: draw its outline "
            r"without crossing lines\."
        ),
        gettext_lazy(
            "The area crosses itself in more than %(count)s places, too many to repair: draw its outline without "
            "crossing lines."
        ),
    ),
)


def cap_area_error_label(error: Exception) -> str:
    """Return why a polygon or circle of an alert cannot be read, in the user's language where it is known."""
    return label_matching(str(error), _AREA_ERRORS)


def _has_area(info: CapInfo) -> bool:
    return any(area.polygons or area.circles or area.geocodes for area in info.areas)


def _geocode_codes(info: CapInfo) -> list[str]:
    """Return the Kemendagri codes among the geocode values (dotted or bare digits), whatever their valueName."""
    candidates = set()
    for area in info.areas:
        for _value_name, value in area.geocodes:
            value = value.strip()
            if value.isdigit() and len(value) in (2, 4, 6, 10):
                value = ".".join(filter(None, (value[:2], value[2:4], value[4:6], value[6:])))
            if _DOTTED_CODE.match(value):
                candidates.add(value)
    return sorted(Area.objects.filter(code__in=candidates).values_list("code", flat=True))


def _shape_codes(info: CapInfo) -> tuple[list[str], list[str]]:
    """Return the known areas the alert's polygons and circles cover, and notes on shapes that were unreadable."""
    from shapely.ops import unary_union

    from operators import areageom

    count = sum(len(area.polygons) + len(area.circles) for area in info.areas)
    if count > MAX_AREA_SHAPES:
        raise ServiceInvalid(
            _("The alert's area is drawn with %(count)s polygons and circles; at most %(limit)s are read.")
            % {"count": count, "limit": MAX_AREA_SHAPES}
        )
    shapes, notes = [], []
    for area in info.areas:
        for polygon in area.polygons:
            try:
                shapes.append(areageom.parse_cap_polygon(polygon))
            except areageom.AreaError as exc:
                if area.description:
                    note = _("Skipped a polygon of %(area)s: %(error)s")
                else:
                    note = _("Skipped a polygon of an area: %(error)s")
                notes.append(note % {"area": area.description, "error": cap_area_error_label(exc)})
        for circle in area.circles:
            try:
                shapes.append(areageom.parse_cap_circle(circle))
            except areageom.AreaError as exc:
                if area.description:
                    note = _("Skipped a circle of %(area)s: %(error)s")
                else:
                    note = _("Skipped a circle of an area: %(error)s")
                notes.append(note % {"area": area.description, "error": cap_area_error_label(exc)})
    if not shapes:
        return [], notes
    alert_shape = unary_union(shapes)
    codes = []
    regencies = Area.objects.filter(level=AreaLevel.KABUPATEN, boundary__isnull=False)
    for code, boundary in regencies.values_list("code", "boundary").iterator():
        share, alert_share = _overlap(alert_shape, boundary)
        if max(share, alert_share) < MIN_OVERLAP_SHARE:
            continue
        districts = []
        if share < WHOLE_REGENCY_SHARE:
            below = Area.objects.filter(level=AreaLevel.KECAMATAN, code__startswith=f"{code}.", boundary__isnull=False)
            boundaries = below.values_list("code", "boundary")
            districts = [c for c, b in boundaries if max(_overlap(alert_shape, b)) >= MIN_OVERLAP_SHARE]
        codes.extend(districts or [code])
    return sorted(codes), notes


def _overlap(alert_shape, boundary: dict) -> tuple[float, float]:
    """Return the shares of the boundary and of the alert's shapes that their intersection covers.

    A shape small against a large regency (a 10 km circle in Kab. Merauke) still lies in it, so an area is
    judged by both shares: only an overlap small against both merely grazes it.
    """
    from operators import areageom

    try:
        geometry = areageom.geometry_from_geojson(boundary)
    except areageom.AreaError:
        return 0.0, 0.0
    if geometry.area == 0 or alert_shape.area == 0 or not geometry.intersects(alert_shape):
        return 0.0, 0.0
    common = geometry.intersection(alert_shape).area
    return common / geometry.area, common / alert_shape.area


# --- import --------------------------------------------------------------------------------


@dataclass
class CapImportResult:
    action: str  # "created", "cancelled" or "rejected"
    campaign: Campaign
    cut: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def cap_import(*, raw: bytes, actor: User, now: datetime | None = None) -> CapImportResult:
    """Import a CAP document: an Alert (or Update) becomes a draft area broadcast; a Cancel withdraws its alert.

    Raises ServiceInvalid with the reason, creating nothing, for invalid XML, a non-CAP document, a status
    other than Actual or Exercise, a scope other than Public (or none), an onset, effective or expires that is no
    time with a UTC offset, or an alert without a usable area; OutsideJurisdiction for an alert whose area lies
    wholly outside the officer's jurisdiction; ServiceConflict for an alert (its sender and identifier) imported
    before for an area that includes or lies within this one.

    An officer with a jurisdiction imports the part of the alert's area that lies within it: a warning for several
    regencies is relayed by each regency's officers for their own, and the areas left out are named in the notes.
    """
    alert = cap_parse(raw)
    if settings.CAP_REQUIRE_SIGNATURE and alert.signature.state != SignatureState.VERIFIED:
        if alert.signature.state == SignatureState.UNSIGNED:
            raise ServiceInvalid(
                _(
                    "This installation imports only CAP alerts signed by a trusted issuer (CAP_REQUIRE_SIGNATURE), "
                    "and it is not signed."
                )
            )
        raise ServiceInvalid(
            _(
                "This installation imports only CAP alerts signed by a trusted issuer (CAP_REQUIRE_SIGNATURE), and "
                "its signature is not verified: %(reason)s."
            )
            % {"reason": cap_signature_reason_label(alert.signature.reason)}
        )
    if alert.status not in ("Actual", "Exercise"):
        raise ServiceInvalid(
            _("CAP status %(status)s is not imported; only Actual and Exercise alerts are.")
            % {"status": repr(alert.status)}
        )
    if alert.msg_type == "Cancel":
        return _cap_cancel(alert, actor=actor, now=now)
    if alert.msg_type not in ("Alert", "Update"):
        raise ServiceInvalid(_("CAP msgType %(type)s carries no alert to import.") % {"type": repr(alert.msg_type)})
    if not alert.scope:
        # CAP requires one; without it nothing says its issuer meant it for every handset in the area.
        raise ServiceInvalid(_("The CAP alert names no scope; only Public alerts may be broadcast."))
    if alert.scope != "Public":
        # Its issuer meant it for responders or named addresses; a broadcast reaches every handset in the area.
        raise ServiceInvalid(
            _("CAP scope %(scope)s is not imported; only Public alerts may be broadcast.")
            % {"scope": repr(alert.scope)}
        )
    return _cap_create(alert, actor=actor, now=now or timezone.now())


@transaction.atomic
def _cap_create(alert: CapAlert, *, actor: User, now: datetime) -> CapImportResult:
    from campaigns.services import (
        MAX_AREA_CODES,
        campaign_create,
        campaign_replace_unverified_import,
        refused_characters,
    )
    from operators.models import BroadcastSettings

    info = cap_pick_info(alert)
    if info is None:
        raise ServiceInvalid(_("The CAP alert has no info block, so there is no message to send."))
    notes = []
    chosen = _block_for_jurisdiction(alert, info, actor)
    if chosen is not info:
        info = chosen
        notes.append(
            _(
                "The alert has several %(language)s info blocks; used the info block whose area reaches your "
                "jurisdiction."
            )
            % {"language": info.language}
        )
    if not _is_indonesian(info.language):
        notes.append(_("No Indonesian info block; used the first one (%(language)s).") % {"language": info.language})
    if alert.signature.state == SignatureState.VERIFIED:
        notes.append(
            _("The alert's XML signature is verified: signed by %(signer)s, a trusted issuer.")
            % {"signer": alert.signature.signer}
        )
    elif alert.signed:
        if alert.signature.signer:
            unverified = _("The alert carries an XML signature (signer: %(signer)s) that is not verified: %(reason)s.")
        else:
            unverified = _("The alert carries an XML signature that is not verified: %(reason)s.")
        reason = cap_signature_reason_label(alert.signature.reason)
        notes.append(unverified % {"signer": alert.signature.signer, "reason": reason})
    # A translation may leave out the area the other language's block gives; the alert still has one.
    located = next((block for block in [info, *alert.infos] if _has_area(block)), info)
    if located is not info:
        notes.append(
            _("The %(language)s info block names no area; used the area of the %(other)s one.")
            % {"language": info.language, "other": located.language}
        )
    codes = _geocode_codes(located)
    shape_notes: list[str] = []
    if codes:
        notes.append(_("Area from the alert's geocodes."))
    else:
        codes, shape_notes = _shape_codes(located)
        notes.extend(shape_notes)
        if codes:
            notes.append(_("Area from the known boundaries the alert's polygons and circles cover."))
    if not codes:
        # The shapes left out say why the alert has no area (a polygon crossing itself, a circle without a radius).
        raise ServiceInvalid(
            " ".join(
                [
                    _(
                        "The CAP alert has no usable area: no geocode matches a Kemendagri code, and no polygon or "
                        "circle covers a known boundary."
                    ),
                    *(note if note.endswith(".") else f"{note}." for note in shape_notes),
                ]
            )
        )
    codes, narrowing = _within_jurisdiction(codes, actor)
    notes.extend(_narrowed_notes(**narrowing))
    with translation.override("en"):  # the record reads alike whatever language its officer reads
        narrowed = _narrowed_notes(**narrowing)
    if len(codes) > MAX_AREA_CODES:
        # campaign_create refuses it too; said here for an alert, in the officer's language.
        too_many = _(
            "At most %(limit)s areas go into one campaign, and the CAP alert's geocodes name %(count)s; it is not "
            "imported. Ask its issuer for the alert with the larger areas that hold them."
        ) % {"limit": MAX_AREA_CODES, "count": len(codes)}
        raise ServiceInvalid(too_many, {"area_codes": too_many})
    replaced = _imported_before(alert, scope=target_scope(codes, None, author=actor), actor=actor)
    refused = refused_characters(info.instruction)
    if refused:
        # The instruction is not edited on the pages, so it is refused here rather than on submit.
        raise ServiceInvalid(
            _(
                "The CAP alert's instruction holds characters that reorder the text shown or that handsets do not "
                "show (%(characters)s), so the approver and the alert's readers could read different instructions; "
                "it is not imported."
            )
            % {"characters": refused}
        )
    max_segments = BroadcastSettings.load().max_import_segments
    text, cut = cap_fit_text(info, max_segments=max_segments)
    if not text:
        raise ServiceInvalid(_("The CAP alert has no headline, description or instruction to send."))
    if cut:
        lost = "; ".join(
            _("%(part)s lost %(words)s words") % {"part": c["part"], "words": c["dropped_words"]} for c in cut
        )
        notes.append(_("Text cut to fit %(segments)s SMS segments: %(cut)s.") % {"segments": max_segments, "cut": lost})
    urgent = info.urgency == "Immediate" or info.severity in ("Extreme", "Severe")
    starts_at, ends_at = _window(info, now)
    for earlier in replaced:
        campaign_replace_unverified_import(campaign=earlier, actor=actor, signer=alert.signature.signer)
        notes.append(
            _(
                "Replaced campaign %(campaign)s, imported from a copy of this alert whose signature was not "
                "verified; it is cancelled."
            )
            % {"campaign": earlier.pk}
        )
    try:
        campaign = campaign_create(
            author=actor,
            title=(info.headline or info.event or alert.identifier)[:200],
            text=text,
            sender=getattr(settings, "CAP_IMPORT_SMS_SENDER", "INFO"),
            mode=Mode.AREA_BROADCAST,
            area_codes=codes,
            priority=Priority.URGENT if urgent else Priority.NORMAL,
            starts_at=starts_at,
            ends_at=ends_at,
            exercise=alert.status == "Exercise",
            # Values outside CAP's lists are not kept: the export then defaults them, as for a composed campaign.
            cap_category=info.categories[0] if info.categories and info.categories[0] in CAP_CATEGORIES else "Other",
            cap_event=info.event[:200],
            cap_urgency=info.urgency if info.urgency in CAP_URGENCIES else "",
            cap_severity=info.severity if info.severity in CAP_SEVERITIES else "",
            cap_certainty=info.certainty if info.certainty in CAP_CERTAINTIES else "",
            instruction=info.instruction,
            cap_source_identifier=alert.identifier[:300],
            cap_source_sender=alert.sender[:300],
            cap_source_references=[[sender, identifier] for sender, identifier, _ in alert.references]
            if alert.msg_type == "Update"
            else [],
        )
    except IntegrityError as exc:
        # Another request imported the same message since the check above; the database keeps one.
        raise ServiceConflict(_("This CAP alert was imported meanwhile; it is not imported twice.")) from exc
    audit_record(
        actor=actor,
        action="campaign.cap_import",
        obj=campaign,
        to_state=campaign.status,
        details={
            "identifier": alert.identifier,
            "sender": alert.sender,
            "cut": cut,
            "version": alert.version,
            "signed": alert.signed,
            "signature": alert.signature.as_details(),
            "narrowed": narrowed,
            "replaced": [earlier.pk for earlier in replaced],
        },
    )
    return CapImportResult(action="created", campaign=campaign, cut=cut, notes=notes)


def _block_for_jurisdiction(alert: CapAlert, info: CapInfo, actor: User) -> CapInfo:
    """Return, of the info blocks in the language of `info` that name an area, the first whose area reaches the
    actor's jurisdiction: an issuer may write one block per regency, each with its own text. Else `info`."""
    jurisdiction = actor.jurisdiction_code
    blocks = [block for block in alert.infos if block.language.lower() == info.language.lower() and _has_area(block)]
    if not jurisdiction or len(blocks) < 2:
        return info
    for block in blocks:
        codes = _geocode_codes(block) or _shape_codes(block)[0]
        if any(area_code_within(code, jurisdiction) or area_code_within(jurisdiction, code) for code in codes):
            return block
    return info


def _within_jurisdiction(codes: list[str], actor: User) -> tuple[list[str], dict[str, Any]]:
    """Return the part of the alert's area codes within the actor's jurisdiction, and what was narrowed (the
    arguments of `_narrowed_notes`).

    A code below the jurisdiction is kept; a wider one that holds it (the province, for a regency's officer) becomes
    the jurisdiction itself; a code beside it is left out. Raises OutsideJurisdiction when nothing is left.
    """
    jurisdiction = actor.jurisdiction_code
    if not jurisdiction:
        return codes, {"wider": [], "beside": [], "where": ""}
    within = [code for code in codes if area_code_within(code, jurisdiction)]
    wider = [code for code in codes if code != jurisdiction and area_code_within(jurisdiction, code)]
    beside = [code for code in codes if code not in within and code not in wider]
    where = f"{jurisdiction} {actor.jurisdiction.name}"
    if not within and not wider:
        named = _area_names(beside)
        message = _(
            "The CAP alert's area lies outside your jurisdiction (%(jurisdiction)s): %(areas)s. It is imported by "
            "the officers of those areas."
        ) % {"jurisdiction": where, "areas": ", ".join(named)}
        raise OutsideJurisdiction(message, {"area_codes": message}, areas=named, jurisdiction=where)
    narrowing = {"wider": _area_names(wider), "beside": _area_names(beside), "where": where}
    return ([jurisdiction] if wider else within), narrowing


def _narrowed_notes(*, wider: list[str], beside: list[str], where: str) -> list[str]:
    """Return notes on the areas of the alert narrowed to the jurisdiction `where` and those left out of it."""
    notes = []
    if wider:
        notes.append(
            _("The alert's area %(areas)s was narrowed to your jurisdiction, %(jurisdiction)s.")
            % {"areas": ", ".join(wider), "jurisdiction": where}
        )
    if beside:
        notes.append(
            _("Left out, outside your jurisdiction (%(jurisdiction)s): %(areas)s.")
            % {"jurisdiction": where, "areas": ", ".join(beside)}
        )
    return notes


def _area_names(codes: list[str]) -> list[str]:
    """Return "code name" for each area code, in order."""
    names = dict(Area.objects.filter(code__in=codes).values_list("code", "name"))
    return [f"{code} {names.get(code, '')}".strip() for code in codes]


def _imported_before(alert: CapAlert, *, scope: str, actor: User) -> list[Campaign]:
    """Return the earlier imports of the alert (its sender and identifier) for an area including or within `scope`
    that this import replaces, or raise ServiceConflict.

    Posted again (a second upload, a feed relayed twice), an alert must not become a second campaign that could be
    approved and sent to the same handsets beside the first; imports for areas side by side may each have one. An
    alert verified as signed replaces earlier copies none of which was verified and none yet approved: an unsigned
    copy posted first under its issuer's sender and identifier must not keep the signed one out.
    """
    earlier = [
        campaign
        for campaign in Campaign.objects.filter(
            cap_source_sender=alert.sender[:300], cap_source_identifier=alert.identifier[:300]
        ).order_by("id")
        if area_code_within(campaign.area_scope, scope) or area_code_within(scope, campaign.area_scope)
    ]
    if not earlier:
        return []
    ids = [campaign.pk for campaign in earlier]
    if set(campaigns_visible(actor).filter(pk__in=ids).values_list("pk", flat=True)) != set(ids):
        # Another jurisdiction's campaign: neither its id nor its state is this officer's to learn.
        raise ServiceConflict(
            _("This CAP alert was already imported in another jurisdiction; it is not imported twice.")
        )
    unverified = all(campaign_cap_signature(campaign)["state"] != SignatureState.VERIFIED for campaign in earlier)
    if alert.signature.state != SignatureState.VERIFIED or not unverified:
        first = earlier[0]
        raise ServiceConflict(
            _("This CAP alert was already imported as campaign %(campaign)s (%(status)s); it is not imported twice.")
            % {"campaign": first.pk, "status": Campaign.Status(first.status).label}
        )
    approved = [campaign for campaign in earlier if campaign.status not in REPLACEABLE_STATUSES]
    if approved:
        raise ServiceConflict(
            _(
                "A copy of this CAP alert whose signature was not verified was imported as campaign %(campaign)s and "
                "is %(status)s. Compare it with this alert, verified as signed by %(signer)s: cancel it if they "
                "differ, then import this one again."
            )
            % {
                "campaign": approved[0].pk,
                "status": Campaign.Status(approved[0].status).label,
                "signer": alert.signature.signer,
            }
        )
    return earlier


def _window(info: CapInfo, now: datetime) -> tuple[datetime, datetime]:
    """Return a window from the alert's onset/effective and expires, at least REVIEW_LEAD away, 5 min to 24 h.

    An alert that has expired, or expires before such a window could follow the review, is refused: sent later,
    it would warn of what its issuer no longer warns of.
    """
    from operators.broadcasts import MIN_WINDOW

    for name in ("onset", "effective", "expires"):
        value = getattr(info, name)
        if value and not _is_cap_time(value):
            # Read as absent, it would start a warning for later at once, or send one that expired long ago.
            raise ServiceInvalid(
                _(
                    "The CAP alert's %(element)s %(value)s is not a CAP time: give the date, the time and the UTC "
                    "offset, as 2021-07-14T15:00:00+07:00. It is not imported."
                )
                % {"element": name, "value": repr(value)}
            )
    earliest = (now + REVIEW_LEAD).replace(second=0, microsecond=0)
    start = cap_datetime(info.onset) or cap_datetime(info.effective) or earliest
    start = max(start, earliest)
    end = cap_datetime(info.expires)
    if end is not None and end <= now:
        raise ServiceInvalid(
            _("The CAP alert expired at %(expires)s; an expired alert is not imported.") % {"expires": info.expires}
        )
    if end is not None and end - start < MIN_WINDOW:
        raise ServiceInvalid(
            _(
                "The CAP alert expires at %(expires)s, before a broadcast window of at least %(window)s minutes could "
                "start after %(review)s minutes for review; it is not imported."
            )
            % {"expires": info.expires, "window": MIN_WINDOW.seconds // 60, "review": REVIEW_LEAD.seconds // 60}
        )
    if end is None:
        end = start + DEFAULT_WINDOW
    return start, min(end, start + timedelta(hours=24))


@transaction.atomic
def _cap_cancel(alert: CapAlert, *, actor: User, now: datetime | None) -> CapImportResult:
    from campaigns.services import campaign_withdraw_by_issuer

    if not alert.references:
        raise ServiceInvalid(_("The CAP Cancel has no references naming the alert it cancels."))
    references = cap_superseded({(sender, identifier) for sender, identifier, _ in alert.references})
    query = campaigns_imported_from(references)
    # Only campaigns the importing officer may see: another jurisdiction's are not theirs to withdraw.
    query = query & campaigns_visible(actor)
    # An exercise withdraws only exercises, an actual Cancel only actual alerts: a drill never ends a warning.
    query = query.filter(exercise=alert.status == "Exercise")
    # A Cancel ends the messages it names and those they updated, each imported as its own campaign.
    campaigns = list(query.select_for_update().order_by("-id"))
    if not campaigns:
        raise ServiceInvalid(_("The CAP Cancel references no imported alert."))
    live = [campaign for campaign in campaigns if campaign.status not in Campaign.FINAL_STATUSES]
    if not live:
        raise ServiceConflict(
            _("The campaign imported from that alert is already %(status)s.")
            % {"status": Campaign.Status(campaigns[0].status).label}
        )
    # Whoever can post a document, or another trusted issuer, could otherwise end a warning its issuer's key vouched
    # for: only a Cancel verified as signed by that issuer withdraws it.
    cancel_signer = alert.signature.signer if alert.signature.state == SignatureState.VERIFIED else None
    for campaign in live:
        signature = campaign_cap_signature(campaign)
        if signature["state"] == SignatureState.VERIFIED and signature["signer"] != cancel_signer:
            if cancel_signer:
                refusal = _(
                    "Campaign %(campaign)s was imported from an alert verified as signed by %(signer)s, and this "
                    "Cancel is signed by %(cancel_signer)s, so it withdraws nothing. If its issuer confirms the "
                    "withdrawal, cancel the campaign on its page."
                )
            else:
                refusal = _(
                    "Campaign %(campaign)s was imported from an alert verified as signed by %(signer)s, and this "
                    "Cancel is not verified, so it withdraws nothing. If its issuer confirms the withdrawal, cancel "
                    "the campaign on its page."
                )
            raise ServiceInvalid(
                refusal % {"campaign": campaign.pk, "signer": signature["signer"], "cancel_signer": cancel_signer}
            )
    # Recorded in English, as the system's other reasons; shown in the reader's language (ui.audit_reason_label).
    reason = f"Withdrawn by the issuer (CAP Cancel {alert.identifier} from {alert.sender})."
    notes = [
        _("Withdrawn by the issuer (CAP Cancel %(identifier)s from %(sender)s).")
        % {"identifier": alert.identifier, "sender": alert.sender}
    ]
    # The feed is the authority: whichever officer imports the Cancel withdraws the alert it names.
    for campaign in live:
        campaign_withdraw_by_issuer(campaign=campaign, actor=actor, reason=reason, references=references, now=now)
    if len(live) > 1:
        notes.append(
            _("Also withdrew campaigns %(campaigns)s, which the Cancel also names.")
            % {"campaigns": ", ".join(str(c.pk) for c in live[1:])}
        )
    campaign = live[0]
    action = "rejected" if campaign.status == Campaign.Status.REJECTED else "cancelled"
    return CapImportResult(action=action, campaign=campaign, notes=notes)


def cap_superseded(references: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return the (sender, identifier) pairs named, and those of every message an imported update among them
    superseded, however far back: cancelling the latest update of an alert cancels the alert.
    """
    replaced: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for update, updated in _cap_update_links():
        replaced.setdefault(update, set()).update(updated)
    return sorted(set(references) | _reachable(set(references), replaced))


def cap_superseding(source: tuple[str, str]) -> set[tuple[str, str]]:
    """Return the (sender, identifier) pairs of every imported update that replaced the message `source`,
    directly or through a later update of an update."""
    replacing: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for update, updated in _cap_update_links():
        for pair in updated:
            replacing.setdefault(pair, set()).add(update)
    return _reachable({source}, replacing) - {source}


def campaigns_imported_from(pairs) -> QuerySet[Campaign]:
    """Return the campaigns imported from the CAP messages named by (sender, identifier) pairs."""
    query = Campaign.objects.none()
    for sender, identifier in pairs:
        query = query | Campaign.objects.filter(cap_source_sender=sender, cap_source_identifier=identifier)
    return query


def _cap_update_links() -> list[tuple[tuple[str, str], list[tuple[str, str]]]]:
    """Return each imported update's (sender, identifier) with the pairs it updated.

    Every update is read: the pairs are JSON lists, which SQLite cannot search. A regency imports few.
    """
    imported = Campaign.objects.exclude(cap_source_references=[]).values_list(
        "cap_source_sender", "cap_source_identifier", "cap_source_references"
    )
    return [((sender, identifier), [tuple(pair) for pair in updated]) for sender, identifier, updated in imported]


def _reachable(start: set, edges: dict) -> set:
    """Return every node reached from `start` along `edges` (a cycle of references ends the walk)."""
    found, todo = set(), list(start)
    while todo:
        for node in edges.get(todo.pop(), ()):
            if node not in found:
                found.add(node)
                todo.append(node)
    return found
