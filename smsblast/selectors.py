"""Reads over areas and subscribers shared by campaigns and the send pipeline."""

import csv
import functools
import io
import re
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from operator import or_
from typing import Any

import shapely
from django.conf import settings
from django.db.models import BooleanField, Case, Count, ExpressionWrapper, IntegerField, Q, QuerySet, Value, When
from django.db.models.functions import Length, Lower, Substr
from django.db.models.lookups import In
from django.utils import timezone
from shapely.errors import ShapelyError
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.prepared import prep

from operators import areageom
from operators.models import Operator
from smsblast import sms
from smsblast.errors import ServiceInvalid
from smsblast.models import Area, AreaLevel, Role, Subscriber, SubscriberImport, User, area_subtree_q
from smsblast.phones import PrefixTable
from smsblast.text import search_key, spreadsheet_text


def subscribers_in_area(
    area_codes: Iterable[str],
    *,
    audience: dict | None = None,
    opted_in_only: bool = False,
    polygon: dict | None = None,
    id_range: tuple[int, int | None] | None = None,
) -> QuerySet[Subscriber]:
    """Return the subscribers whose home area is one of `area_codes` or lies below one.

    With a drawn `polygon` (GeoJSON), also those it reaches (see `polygon_q`). `id_range` (after, up_to) keeps
    the subscribers with after < id <= up_to (no upper bound when up_to is None); the polygon's coordinate
    test then reads that range only, so a fan-out chunk never holds the whole audience's coordinates.

    `audience` narrows them: {"languages": ["id", "jv"]} keeps those languages, whatever their case, and
    {"operators": ["telkomsel"]} those operators' numbers. Opted-out subscribers are
    included unless `opted_in_only`, so an estimate can count them apart.
    """
    # "area__code" is the foreign key's own column (code is Area's key), so this needs no join;
    # "area_id" would refuse the startswith lookup.
    where = area_subtree_q("area__code", list(area_codes or []))
    if polygon:
        where |= polygon_q(polygon, id_range=id_range)
    queryset = Subscriber.objects.filter(where)
    if id_range is not None:
        queryset = queryset.filter(_id_range_q(id_range))
    audience = audience or {}
    if audience.get("languages"):
        # Languages are matched regardless of case: a filter "Jawa" keeps subscribers stored as "jawa" or "JAWA".
        languages = sorted({language.lower() for language in audience["languages"]})
        queryset = queryset.alias(language_lower=Lower("language")).filter(language_lower__in=languages)
    if audience.get("operators"):
        queryset = queryset.filter(operator__slug__in=audience["operators"])
    if opted_in_only:
        queryset = queryset.filter(opted_out_at__isnull=True)
    return queryset


def subscriber_jurisdiction(user: User | None) -> str | None:
    """Return the code of the area whose subscribers and imports the user may read and change, None for all.

    An officer or approver with a jurisdiction is limited to it, as for campaigns. Admins, unlimited officers,
    the command line (no user) and operators, who relay their own subscribers' STOP and START, are not.
    """
    if user is None or not user.is_authenticated or not user.has_role(Role.OFFICER, Role.APPROVER):
        return None
    return user.jurisdiction_code


def subscribers_visible(user: User) -> QuerySet[Subscriber]:
    """Return the subscribers the user may see and change; every subscriber page and API path reads them here.

    Officers, approvers and admins see every subscriber; one with a jurisdiction only those homed in it or below
    (a subscriber of another region, or with no known home, answers as a number that is not registered).
    Anyone else sees none.
    """
    if user is None or not user.is_authenticated or not user.has_role(Role.OFFICER, Role.APPROVER, Role.ADMIN):
        return Subscriber.objects.none()
    jurisdiction = subscriber_jurisdiction(user)
    if jurisdiction is None:
        return Subscriber.objects.all()
    return Subscriber.objects.filter(area_subtree_q("area__code", [jurisdiction]))


def subscriber_imports_visible(user: User) -> QuerySet[SubscriberImport]:
    """Return the import jobs the user may see and resume: with a jurisdiction, those uploaded within it.

    A job carries its uploader's jurisdiction (`SubscriberImport.area_scope`, "" when not limited), so a
    province's officer sees its regencies' imports and nobody limited sees an unlimited one, which may list
    any region's numbers among its rejected rows.
    """
    if user is None or not user.is_authenticated or not user.has_role(Role.OFFICER, Role.APPROVER, Role.ADMIN):
        return SubscriberImport.objects.none()
    jurisdiction = subscriber_jurisdiction(user)
    if jurisdiction is None:
        return SubscriberImport.objects.all()
    return SubscriberImport.objects.filter(area_subtree_q("area_scope", [jurisdiction]))


# ---------------------------------------------------------------------------------------------------------------
# Areas
# ---------------------------------------------------------------------------------------------------------------

# Search results list regencies and cities first: officers most often look for their own kabupaten/kota.
_SEARCH_LEVEL_RANK = {AreaLevel.KABUPATEN: 0, AreaLevel.PROVINSI: 1, AreaLevel.KECAMATAN: 2, AreaLevel.DESA: 3}


def _areas_listed() -> QuerySet[Area]:
    """Return areas without their boundary (often tens of kilobytes) but knowing whether they have one."""
    return Area.objects.defer("boundary").annotate(
        has_boundary=ExpressionWrapper(Q(boundary__isnull=False), output_field=BooleanField())
    )


def area_children(parent_code: str | None) -> list[Area]:
    """Return the areas directly below `parent_code` (the provinces when it is empty), by code."""
    if not parent_code:
        return list(_areas_listed().filter(parent__isnull=True).order_by("code"))
    return list(_areas_listed().filter(parent_id=parent_code).order_by("code"))


_KAB_ABBREVIATION = re.compile(r"^kab(?:\.\s*|\s+)")


def area_search_key(query: str) -> str:
    """Return a typed area name as the `search_name` it may be part of ("Kab. Blitar" -> "kabupaten blitar")."""
    # Names are stored in full ("Kabupaten Blitar") but usually written short ("Kab. Blitar").
    return _KAB_ABBREVIATION.sub("kabupaten ", search_key(query))


def area_search(query: str, *, limit: int = 20, within: str | None = None) -> list[Area]:
    """Return areas whose name contains `query`, case- and accent-insensitively; with `within`, only those below it.

    Kabupaten/kota first, then provinces, kecamatan and desa; within a level, names starting with the
    query come before names merely containing it. A query starting with a digit is the start of a Kemendagri
    code ("35.05"): the areas whose code starts with it, larger areas first, as the compose page finds them.
    """
    listed = _areas_listed()
    if within:
        # Desa names repeat across the country: a search under a regency finds its own.
        listed = listed.filter(code__startswith=f"{within}.")
    query = query.strip()
    if query[:1].isdigit():
        return list(listed.filter(code__startswith=query).order_by(Length("code"), "code")[:limit])
    key = area_search_key(query)
    if not key:
        return []
    rank = Case(
        *(When(level=level, then=Value(position)) for level, position in _SEARCH_LEVEL_RANK.items()),
        default=Value(9),
        output_field=IntegerField(),
    )
    starts = Case(When(search_name__startswith=key, then=Value(0)), default=Value(1), output_field=IntegerField())
    return list(
        listed.filter(search_name__contains=key)
        .annotate(level_rank=rank, starts_rank=starts)
        .order_by("level_rank", "starts_rank", "search_name", "code")[:limit]
    )


def operators_by_prefix() -> dict[str, int]:
    """Return the admin-editable routing table: every number prefix (E.164 digits) → its operator's id."""
    return {prefix: pk for pk, listed in Operator.objects.values_list("pk", "prefixes") for prefix in listed or []}


def msisdn_operator_id(e164: str) -> int | None:
    """Return the id of the operator a number belongs to: its subscriber's, else the one its prefix routes to."""
    known = Subscriber.objects.filter(msisdn=e164, operator__isnull=False).values_list("operator_id", flat=True).first()
    if known is not None:
        return known
    return PrefixTable(operators_by_prefix()).operator_for(e164)


def area_get(code: str) -> Area | None:
    """Return the area with this code, boundary included, or None."""
    return Area.objects.filter(code=code).select_related("parent").first()


def area_ancestors(area: Area) -> list[Area]:
    """Return the area's ancestors, province first (one query: the codes are the ancestry)."""
    parts = area.code.split(".")
    codes = [".".join(parts[:depth]) for depth in range(1, len(parts))]
    return list(Area.objects.filter(code__in=codes).only("code", "name", "level").order_by("code"))


def area_subscriber_counts(codes: Iterable[str]) -> dict[str, int]:
    """Return, per area code, the subscribers living in it or below who have not opted out.

    Codes of one level have one length, so each level takes one grouped query on the code's prefix.
    """
    counts = dict.fromkeys(set(codes), 0)
    by_length: dict[int, list[str]] = {}
    for code in counts:
        by_length.setdefault(len(code), []).append(code)
    for length, same_level in by_length.items():
        rows = (
            Subscriber.objects.filter(area_subtree_q("area__code", same_level), opted_out_at__isnull=True)
            .annotate(prefix=Substr("area_id", 1, length))
            .values("prefix")
            .annotate(subscribers=Count("id"))
            .order_by()
        )
        for row in rows:
            if row["prefix"] in counts:
                counts[row["prefix"]] += row["subscribers"]
    return counts


# ---------------------------------------------------------------------------------------------------------------
# Polygon targeting
# ---------------------------------------------------------------------------------------------------------------

# Boundaries change only when `load_areas` runs; a worker re-reads them after this many seconds.
_BOUNDARY_TTL = 300.0
_boundary_cache: dict = {}


def _bounded_areas() -> dict[str, BaseGeometry]:
    """Return code -> shapely geometry of every area with a boundary (cached per process for a few minutes)."""
    count = Area.objects.filter(boundary__isnull=False).count()
    cached = _boundary_cache.get("areas")
    if cached is not None and _boundary_cache["count"] == count and time.monotonic() < _boundary_cache["until"]:
        return cached
    areas = {}
    for code, boundary in Area.objects.filter(boundary__isnull=False).values_list("code", "boundary").iterator(200):
        try:
            geometry = shape(boundary)
            areas[code] = geometry if geometry.is_valid else _repaired_boundary(geometry, boundary)
        except (ShapelyError, ValueError, TypeError, KeyError, AttributeError, areageom.AreaError):
            continue  # an unreadable boundary counts as unknown
    _boundary_cache.update(areas=areas, count=count, until=time.monotonic() + _BOUNDARY_TTL)
    return areas


def _repaired_boundary(geometry: BaseGeometry, boundary: dict) -> BaseGeometry:
    """Return a valid form of an invalid published boundary.

    Simplified boundaries sometimes cross themselves; a zero-width buffer repairs them about three times faster than
    make_valid, which matters when hundreds are read. It drops a ring written the wrong way round, though: Kab.
    Sorong's land is published as the "hole" of a speck, and the buffer kept the speck alone. When the buffer keeps
    less than half of the largest ring, the boundary is read as the estimate reads it (make_valid).
    """
    repaired = geometry.buffer(0)
    largest_ring = shapely.area(shapely.polygons(shapely.get_rings(shapely.get_parts(geometry)))).max(initial=0.0)
    if repaired.area >= 0.5 * largest_ring:
        return repaired
    return areageom.geometry_from_geojson(boundary)


def polygon_geometry(polygon: dict) -> BaseGeometry:
    """Return the shapely geometry of a drawn GeoJSON polygon, or raise ServiceInvalid."""
    try:
        geometry = areageom.drawn_area_geometry(polygon)
    except areageom.AreaTooComplex as exc:
        raise ServiceInvalid(str(exc), {"polygon": str(exc)}) from None
    except (areageom.AreaError, ShapelyError, ValueError, TypeError, KeyError) as exc:
        raise ServiceInvalid(f"The polygon is not a GeoJSON polygon: {exc}", {"polygon": str(exc)}) from None
    if geometry.is_empty or geometry.area == 0:
        raise ServiceInvalid("The polygon encloses no area.", {"polygon": "empty"})
    return geometry


def _readable_polygon(polygon: dict | None):
    """Return a drawn polygon's geometry, or None when none is drawn or it cannot be read."""
    if not polygon:
        return None
    try:
        return polygon_geometry(polygon)
    except ServiceInvalid:
        return None


def polygon_province(polygon: dict | None) -> str | None:
    """Return the code of the province holding most of a drawn polygon, or None if no known boundary meets it.

    Judged on the finest boundaries known (the same cached set as polygon targeting); an unreadable
    polygon has no province.
    """
    drawn = _readable_polygon(polygon)
    if drawn is None:
        return None
    bounded = _bounded_areas()
    # A province with a boundary holding the whole polygon holds the most of it, as no boundary outside it can;
    # measuring every overlap of a 20,000-point polygon with the few dozen desa it crosses took most of a second.
    holding = {code.split(".")[0] for code in _holders(drawn, bounded)}
    if len(holding) == 1:
        return holding.pop()
    prepared = prep(drawn)
    overlap: dict[str, float] = {}
    for code, geometry in bounded.items():
        if prepared.intersects(geometry):
            province = code.split(".")[0]
            try:
                share = drawn.intersection(geometry).area
            except ShapelyError:
                continue
            overlap[province] = max(overlap.get(province, 0.0), share)
    return max(overlap, key=overlap.__getitem__) if overlap else None


def polygon_covering_area(polygon: dict | None) -> str | None:
    """Return the code of the deepest area whose known boundary holds the whole drawn polygon, or None.

    Judged on the same cached boundaries as polygon targeting; an unreadable polygon is held by none.
    """
    drawn = _readable_polygon(polygon)
    if drawn is None:
        return None
    holders = _holders(drawn, _bounded_areas())
    return max(holders, key=lambda code: (code.count("."), code)) if holders else None


def _holders(drawn: BaseGeometry, bounded: dict[str, BaseGeometry]) -> list[str]:
    """Return the codes of the areas whose known boundary holds the whole of `drawn`."""
    min_lon, min_lat, max_lon, max_lat = drawn.bounds
    holders = []
    for code, geometry in bounded.items():
        left, bottom, right, top = geometry.bounds
        if left <= min_lon and bottom <= min_lat and right >= max_lon and top >= max_lat and geometry.covers(drawn):
            holders.append(code)
    return holders


def polygon_home_areas(polygon: dict) -> tuple[set[str], set[str]]:
    """Return (exact codes, subtree codes) of the home areas a drawn polygon reaches.

    A subscriber's home boundary is that of the deepest area at or above its home area whose boundary
    is known (a desa of Kab. Blitar, a kecamatan of the example regencies, otherwise its kabupaten).
    The subscriber is reached when that boundary intersects the polygon. So a reached area stands for
    its whole subtree unless finer boundaries are known below it: then only the subscribers homed on
    the area itself (exact) and in its children without a boundary (subtree) are its own, and its
    bounded children are judged by their own boundaries.
    """
    drawn = polygon_geometry(polygon)
    prepared = prep(drawn)
    bounded = _bounded_areas()
    reached = {code for code, geometry in bounded.items() if prepared.intersects(geometry)}
    # Codes with a known boundary somewhere below them.
    refined = {".".join(code.split(".")[:depth]) for code in bounded for depth in range(1, code.count(".") + 1)}
    exact: set[str] = set()
    subtree: set[str] = set()
    pending = set()
    for code in reached:
        if code in refined:
            pending.add(code)
        else:
            subtree.add(code)
    while pending:
        exact |= pending
        children = Area.objects.filter(parent_id__in=pending).values_list("code", flat=True)
        pending = set()
        for child in children:
            if child in bounded:
                continue  # judged by its own boundary
            if child in refined:
                pending.add(child)
            else:
                subtree.add(child)
    return exact, subtree


def _id_range_q(id_range: tuple[int, int | None]) -> Q:
    after, up_to = id_range
    return Q(pk__gt=after) if up_to is None else Q(pk__gt=after, pk__lte=up_to)


def polygon_subscriber_ids(polygon: dict, *, id_range: tuple[int, int | None] | None = None) -> list[int]:
    """Return the ids of subscribers whose home coordinates lie inside a drawn polygon (within `id_range`).

    The database narrows them to the polygon's bounding box; shapely tests each remaining point.
    """
    drawn = polygon_geometry(polygon)
    min_lon, min_lat, max_lon, max_lat = drawn.bounds
    candidates = Subscriber.objects.filter(
        latitude__gte=min_lat, latitude__lte=max_lat, longitude__gte=min_lon, longitude__lte=max_lon
    )
    if id_range is not None:
        candidates = candidates.filter(_id_range_q(id_range))
    rows = list(candidates.values_list("id", "latitude", "longitude"))
    if not rows:
        return []
    ids, lats, lons = zip(*rows, strict=True)
    # Inside or on its edge. The polygon is prepared (indexed) at the first point; testing its edges apart as a line
    # compared each home with every edge, a second for 5,000 homes and a 20,000-point polygon.
    inside = shapely.intersects_xy(drawn, lons, lats)
    return [subscriber_id for subscriber_id, hit in zip(ids, inside, strict=True) if hit]


def area_subtrees_q(codes: Iterable[str]) -> Q:
    """Return a filter on Subscriber for homes in or below any of many codes.

    Codes of one level have one length, so "in or below" is "the home code starts with it": one
    hashed IN list per level instead of two conditions per code, which stays fast for hundreds of codes.
    """
    by_length: dict[int, list[str]] = {}
    for code in codes:
        by_length.setdefault(len(code), []).append(code)
    query = Q(pk__in=[])
    for length, same_level in sorted(by_length.items()):
        query |= Q(In(Substr("area_id", 1, length), sorted(same_level)))
    return query


def polygon_q(polygon: dict, *, id_range: tuple[int, int | None] | None = None) -> Q:
    """Return a filter on Subscriber for a drawn polygon: home boundary intersecting it, or coordinates inside.

    The coordinates tested are those of the subscribers in `id_range`, all of them without one.
    """
    exact, subtree = polygon_home_areas(polygon)
    query = Q(pk__in=polygon_subscriber_ids(polygon, id_range=id_range)) | area_subtrees_q(subtree)
    if exact:
        query |= Q(area__code__in=sorted(exact))
    return query


# ---------------------------------------------------------------------------------------------------------------
# Audience preview
# ---------------------------------------------------------------------------------------------------------------

KECAMATAN_CODE_LENGTH = len("35.05.01")


def audience_preview(
    area_codes: Iterable[str], polygon: dict | None = None, audience: dict | None = None, segments: int = 1
) -> dict[str, Any]:
    """Return who a targeted send would reach: per operator and per kecamatan, those left out apart, and its cost.

    One aggregate query over the subscribers, grouped by operator and by the first eight characters of
    the home area code (its kecamatan), counts everyone and, conditionally, those opted out; the
    small grouped result is then folded here. A subscriber homed above kecamatan level, or known only
    by coordinates, is counted under kecamatan null. Recipients are those a run's fan-out would send to: the
    numbers of an inactive operator or of no known operator are skipped there, so they are counted as skipped
    (`operator_inactive`, `no_operator`), as opted-out numbers are (`opted_out`), and cost nothing.
    """
    segments = max(int(segments or 0), 0)
    rows = list(
        subscribers_in_area(area_codes, audience=audience, polygon=polygon)
        .annotate(kecamatan=Substr("area_id", 1, KECAMATAN_CODE_LENGTH))
        .values("operator_id", "kecamatan")
        .annotate(everyone=Count("id"), opted_out=Count("id", filter=Q(opted_out_at__isnull=False)))
        .order_by()
    )
    operators = {op.pk: op for op in Operator.objects.filter(pk__in={row["operator_id"] for row in rows})}
    per_operator: dict[int | None, dict[str, int]] = {}
    per_kecamatan: dict[str | None, dict[str, int]] = {}
    for row in rows:
        kecamatan = row["kecamatan"] if row["kecamatan"] and len(row["kecamatan"]) == KECAMATAN_CODE_LENGTH else None
        operator_id = row["operator_id"] if row["operator_id"] in operators else None
        reachable = operator_id is not None and operators[operator_id].active
        for bucket in (
            per_operator.setdefault(operator_id, {"recipients": 0, "opted_out": 0, "skipped": 0}),
            per_kecamatan.setdefault(kecamatan, {"recipients": 0, "opted_out": 0, "skipped": 0}),
        ):
            bucket["recipients" if reachable else "skipped"] += row["everyone"] - row["opted_out"]
            bucket["opted_out"] += row["opted_out"]
    names = dict(Area.objects.filter(code__in=[code for code in per_kecamatan if code]).values_list("code", "name"))

    by_operator = []
    for operator_id, counts in per_operator.items():
        operator = operators.get(operator_id)
        tariff = operator.tariff_per_segment if operator else 0
        if operator is None:
            skipped_reason = "no_operator"
        else:
            skipped_reason = "" if operator.active else "operator_inactive"
        by_operator.append(
            {
                "slug": operator.slug if operator else None,
                "name": operator.name if operator else "Unknown operator",
                "recipients": counts["recipients"],
                "opted_out": counts["opted_out"],
                # Not opted out, yet not sent to: its operator is inactive or unknown (the reason says which).
                "skipped": counts["skipped"],
                "skipped_reason": skipped_reason,
                "segments": segments * counts["recipients"],
                "tariff_per_segment": tariff,
                "cost": sms.content_cost(segments, counts["recipients"], tariff),
            }
        )
    by_operator.sort(key=lambda entry: (entry["slug"] is None, entry["name"]))
    by_kecamatan = sorted(
        (
            {"code": code, "name": names.get(code, "") if code else "", **counts}
            for code, counts in per_kecamatan.items()
        ),
        key=lambda entry: (entry["code"] is None, entry["code"] or ""),
    )
    recipients = sum(entry["recipients"] for entry in by_operator)
    return {
        "recipients": recipients,
        "opted_out": sum(entry["opted_out"] for entry in by_operator),
        "skipped": _skipped_by_reason(by_operator),
        "segments_per_message": segments,
        "segments": segments * recipients,
        "cost": sum(entry["cost"] for entry in by_operator),
        "by_operator": by_operator,
        "by_kecamatan": by_kecamatan,
    }


def _skipped_by_reason(by_operator: list[dict]) -> dict[str, int]:
    """Return how many numbers a run would skip, by the reason fan-out records (opted out first)."""
    skipped = {"opted_out": 0, "operator_inactive": 0, "no_operator": 0}
    for entry in by_operator:
        skipped["opted_out"] += entry["opted_out"]
        if entry["skipped_reason"]:
            skipped[entry["skipped_reason"]] += entry["skipped"]
    return skipped


def subscriber_imports_stalled_q() -> Q:
    """Match pending or running imports silent for SUBSCRIBER_IMPORT_STALE_SECONDS: task lost or worker killed."""
    cutoff = timezone.now() - timedelta(seconds=settings.SUBSCRIBER_IMPORT_STALE_SECONDS)
    return Q(state__in=[SubscriberImport.State.PENDING, SubscriberImport.State.RUNNING], heartbeat_at__lt=cutoff)


def subscriber_import_is_stalled(job: SubscriberImport) -> bool:
    """Whether an import is pending or running yet has shown no sign of life for a while (it may be resumed)."""
    return SubscriberImport.objects.filter(subscriber_imports_stalled_q(), pk=job.pk).exists()


class _Echo:
    """A file-like object whose write returns the line, for streaming csv.writer output."""

    def write(self, value: str) -> str:
        return value


def subscriber_import_rejected_lines(handle, *, separator: str) -> Iterator[bytes]:
    """Yield an import's rejected file (`handle`, opened in binary) again as CSV separated by `separator`.

    The file is read record by record as the import wrote it (line, reason, raw; csv.writer's quoting), not by a
    csv reader, whose field size limit a malformed row's raw line may pass. A record the import is still writing,
    at the end of the file, is left out. The byte-order mark comes first, as in the file.
    """
    writer = csv.writer(_Echo(), delimiter=separator)
    record = ""
    prefix = "\ufeff"
    with io.TextIOWrapper(handle, encoding="utf-8-sig", newline="") as text:
        for physical_line in text:
            record += physical_line
            # A quoted cell holds its quotes doubled: the record is whole once its quotes pair up at a line end.
            if record.count('"') % 2 or not record.endswith("\r\n"):
                continue
            line, _, rest = record.removesuffix("\r\n").partition(",")
            reason, _, raw = rest.partition(",")  # the line and the reason are ours, without commas or quotes
            if raw.startswith('"'):
                raw = raw[1:-1].replace('""', '"')
            record = ""
            yield (prefix + writer.writerow([line, reason, spreadsheet_text(raw, separator=separator)])).encode()
            prefix = ""


def number_search_digits(query: str) -> tuple[str, ...]:
    """Return the digits a typed (partial) number is looked for by: "0812 34" -> ("6281234",), "0123" -> ("0123",).

    A mobile number's beginning as dialled at home ("0812…") is looked for in E.164; one without its 0 ("812…") either
    so or as typed, since it may as well be the last digits of a number; any other digits ("0123") as typed.
    """
    digits = "".join(ch for ch in query if ch.isdigit())
    if query.strip().startswith("+") or digits.startswith("62"):
        return (digits,)
    if digits.startswith("08"):
        return ("62" + digits[1:],)
    if digits.startswith("8"):
        return ("62" + digits, digits)
    return (digits,)


def number_search_q(forms: tuple[str, ...]) -> Q:
    """Return the filter of the numbers holding any of these digits (see `number_search_digits`)."""
    return functools.reduce(or_, (Q(msisdn__contains=digits) for digits in forms))
