"""Broadcast-area geometry: the polygon an operator receives, and its CAP form.

Pure logic on GeoJSON (lng, lat) with shapely; no Django here. Distances are in degrees, which is
close enough to isotropic at Indonesia's latitudes (|lat| < 11°) for smoothing an area outward.
"""

import copy
import hashlib
import math
import pickle
import threading
from collections import OrderedDict

import numpy
import shapely
from shapely import make_valid
from shapely.errors import GEOSException
from shapely.geometry import MultiPolygon, Point, Polygon, shape
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient
from shapely.ops import unary_union

DEFAULT_VERTEX_LIMIT = 250
# Smallest outward buffer, about 100 m: operators' cell footprints are far coarser than this anyway.
MIN_BUFFER_DEGREES = 0.001
# Coordinates are rounded to about 1 cm; the buffer margin dwarfs the rounding.
COORDINATE_DECIMALS = 7
KM_PER_DEGREE = 111.32
# The most points a drawn or imported polygon is read from: the largest published province boundary has about 16,000.
MAX_DRAWN_POINTS = 20_000
# GEOS repairs a polygon that crosses itself in time growing faster than the square of its crossings: a scribble of
# 250 points took 11 s, one of 500 points two minutes. A drawn area crossing itself in more places is refused.
MAX_DRAWN_CROSSINGS = 100
# One request reads a drawn area in several places (jurisdiction, scope, time zone, audience, estimate), and a map
# client previews the same area again and again: the last few distinct ones are kept as read.
DRAWN_AREAS_KEPT = 16
_drawn_areas: OrderedDict = OrderedDict()
_drawn_areas_lock = threading.Lock()


class AreaError(ValueError):
    """The geometry cannot describe an area (empty, not a polygon, unreadable)."""


class AreaTooComplex(AreaError):
    """A drawn area with more points or crossings than are read (MAX_DRAWN_POINTS, MAX_DRAWN_CROSSINGS)."""


def geometry_from_geojson(obj: dict, *, drawn: bool = False) -> BaseGeometry:
    """Return the polygonal shapely geometry of a GeoJSON geometry, Feature or FeatureCollection.

    A `drawn` area (one a user sent) must be a Polygon or MultiPolygon within the limits of `drawn_checked`.
    """
    if drawn and not (isinstance(obj, dict) and obj.get("type") in ("Polygon", "MultiPolygon")):
        raise AreaError("A drawn area must be a GeoJSON Polygon or MultiPolygon.")
    if not isinstance(obj, dict) or "type" not in obj:
        raise AreaError("Not a GeoJSON object.")
    kind = obj["type"]
    if kind == "FeatureCollection":
        return union_of([feature for feature in obj.get("features") or []])
    if kind == "Feature":
        if not obj.get("geometry"):
            raise AreaError("A GeoJSON feature without a geometry.")
        return geometry_from_geojson(obj["geometry"])
    if kind == "GeometryCollection":
        return union_of(obj.get("geometries") or [])
    if kind not in ("Polygon", "MultiPolygon"):
        raise AreaError(f"An area must be a Polygon or MultiPolygon, not {kind}.")
    try:
        geom = shape(obj)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise AreaError(f"Unreadable {kind} coordinates.") from exc
    minx, miny, maxx, maxy = geom.bounds
    if not geom.is_empty and not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise AreaError(
            "GeoJSON positions are [longitude, latitude]: a longitude lies outside -180..180 or a latitude "
            "outside -90..90 (were they given in lat, lon order?)."
        )
    # Validity is checked once: for some valid outlines (a star of thousands of thin spikes) GEOS takes seconds.
    valid = drawn_checked(geom) if drawn else geom.is_valid
    return _polygonal(geom if valid else _repaired(geom))


def drawn_area_geometry(obj, *, checked: bool = True) -> BaseGeometry:
    """Return `geometry_from_geojson(obj, drawn=checked)`, reading each distinct drawn area once.

    An area is known by the SHA-256 of its content (pickled: a tenth of the time of JSON for 20,000 points), so one
    changed by a single point is read anew; the last DRAWN_AREAS_KEPT are kept. Each caller gets its own copy (about
    2 ms for 20,000 points): shapely prepares a geometry in place at its first point-in-polygon test or `prep`, and
    GEOS's prepared geometries are not safe to share between the web server's threads. An area refused is not
    kept: it is refused again. `checked=False` reads a campaign's stored polygon without the limits on what a user
    sends, as before; an area that passed them reads the same either way, so its checked reading serves both.
    """
    try:
        digest = hashlib.sha256(pickle.dumps(obj, protocol=5)).digest()
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
        return geometry_from_geojson(obj, drawn=checked)
    with _drawn_areas_lock:
        for key in [(True, digest)] if checked else [(False, digest), (True, digest)]:
            if key in _drawn_areas:
                _drawn_areas.move_to_end(key)
                return copy.copy(_drawn_areas[key])
    geometry = geometry_from_geojson(obj, drawn=checked)
    with _drawn_areas_lock:
        _drawn_areas[(checked, digest)] = geometry
        while len(_drawn_areas) > DRAWN_AREAS_KEPT:
            _drawn_areas.popitem(last=False)
    return copy.copy(geometry)


def drawn_checked(geom: BaseGeometry) -> bool:
    """Return whether a polygon a user drew or imported is valid, if it is cheap to read; raise AreaError saying why
    it is not.

    It has at most MAX_DRAWN_POINTS points and, if it crosses itself, at most MAX_DRAWN_CROSSINGS crossings.
    """
    points = shapely.get_num_coordinates(geom)
    if points > MAX_DRAWN_POINTS:
        raise AreaTooComplex(f"A drawn area has at most {MAX_DRAWN_POINTS:,} points; this one has {points:,}.")
    valid = geom.is_valid
    if not valid and _crossings_exceed(geom, MAX_DRAWN_CROSSINGS):
        raise AreaTooComplex(
            f"The area crosses itself in more than {MAX_DRAWN_CROSSINGS} places, too many to repair: "
            "draw its outline without crossing lines."
        )
    return valid


def _crossings_exceed(geom: BaseGeometry, limit: int) -> bool:
    """Return whether the rings' edges meet each other (neighbours along a ring aside) more than `limit` times.

    Edges are compared a few at a time against an index of all of them, stopping as soon as the count passes
    `limit`: a scribble meeting itself millions of times costs no more than one that just passes it.
    """
    rings = [shapely.remove_repeated_points(ring) for p in _polygons(geom) for ring in (p.exterior, *p.interiors)]
    starts, ends, ring_ids, positions = [], [], [], []
    for ring_id, ring in enumerate(rings):
        coords = numpy.asarray(ring.coords)[:, :2]
        starts.append(coords[:-1])
        ends.append(coords[1:])
        ring_ids.append(numpy.full(len(coords) - 1, ring_id))
        positions.append(numpy.arange(len(coords) - 1))
    if not starts:
        return False
    edges = shapely.linestrings(numpy.stack([numpy.concatenate(starts), numpy.concatenate(ends)], axis=1))
    ring_of, position = numpy.concatenate(ring_ids), numpy.concatenate(positions)
    ring_length = numpy.bincount(ring_of)[ring_of]
    tree = shapely.STRtree(edges)
    meetings = 0
    for first in range(0, len(edges), 16):
        chunk = numpy.arange(first, min(first + 16, len(edges)))
        mine, others = tree.query(edges[chunk], predicate="intersects")
        mine = chunk[mine]
        apart = numpy.abs(position[mine] - position[others])
        neighbours = (ring_of[mine] == ring_of[others]) & ((apart <= 1) | (apart == ring_length[mine] - 1))
        meetings += int(numpy.count_nonzero((others > mine) & ~neighbours))
        if meetings > limit:
            return True
    return False


def _repaired(geom: BaseGeometry) -> BaseGeometry:
    """Return a valid form of an invalid geometry.

    make_valid refuses some published boundaries (a ring that collapses to a line, as in Kota Mataram's);
    a zero-width buffer then repairs them, keeping the area.
    """
    try:
        return make_valid(geom)
    except GEOSException:
        pass
    try:
        return geom.buffer(0)
    except GEOSException as exc:
        raise AreaError(f"The {geom.geom_type} cannot be repaired: {exc}") from exc


def union_of(geometries) -> BaseGeometry:
    """Return the union of GeoJSON objects or shapely geometries as one polygonal geometry."""
    parts = [g if isinstance(g, BaseGeometry) else geometry_from_geojson(g) for g in geometries]
    parts = [p for p in parts if not p.is_empty]
    if not parts:
        raise AreaError("The area is empty.")
    return _polygonal(unary_union(parts))


def broadcast_area(geometries, vertex_limit: int = DEFAULT_VERTEX_LIMIT) -> dict:
    """Return a GeoJSON area that contains every geometry and has at most `vertex_limit` points.

    The union is buffered outward and simplified, widening both until the point budget holds while the
    result still contains the original (cell broadcast overshoots anyway; missing a corner of the area
    is the failure that matters). Holes are dropped for the same reason. If no smoothing fits, the
    convex hull is tried, and last the minimum rotated rectangle, which always fits in five points.
    """
    if vertex_limit < 5:
        raise AreaError("An operator vertex limit below 5 points cannot describe a closed polygon.")
    original = union_of(geometries if isinstance(geometries, list | tuple) else [geometries])
    filled = _without_holes(original)
    minx, miny, maxx, maxy = original.bounds
    extent = max(maxx - minx, maxy - miny, MIN_BUFFER_DEGREES)
    distance = max(MIN_BUFFER_DEGREES, extent * 0.002)
    while distance < extent:
        candidate = _smoothed(filled, distance)
        if _fits(candidate, original, vertex_limit):
            return to_geojson(candidate)
        distance *= 1.6
    hull = original.convex_hull
    for candidate in (hull, _smoothed(hull, extent * 0.01), _smoothed(hull, extent * 0.05)):
        if _fits(candidate, original, vertex_limit):
            return to_geojson(candidate)
    rectangle = original.minimum_rotated_rectangle.buffer(MIN_BUFFER_DEGREES, join_style="mitre")
    return to_geojson(rectangle)


def _smoothed(geom: BaseGeometry, distance: float) -> BaseGeometry:
    # A Douglas-Peucker tolerance below the buffer distance moves the boundary less than the margin,
    # so the simplified shape still holds the original; _fits checks it anyway.
    # Buffering each part and then uniting is far faster than buffering a many-island MultiPolygon.
    grown = _without_holes(shapely.union_all(shapely.buffer(_polygons(geom), distance, quad_segs=2)))
    return _polygonal(grown.simplify(distance * 0.7, preserve_topology=True))


def _fits(candidate: BaseGeometry, original: BaseGeometry, vertex_limit: int) -> bool:
    rounded = shape(to_geojson(candidate))
    return point_count(rounded) <= vertex_limit and rounded.contains(original)


def _without_holes(geom: BaseGeometry) -> BaseGeometry:
    polygons = [Polygon(p.exterior) for p in _polygons(geom)]
    return _polygonal(unary_union(polygons))


def _polygons(geom: BaseGeometry) -> list[Polygon]:
    if isinstance(geom, Polygon):
        return [geom] if not geom.is_empty else []
    if isinstance(geom, MultiPolygon):
        return [p for p in geom.geoms if not p.is_empty]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _polygons(g)]
    return []


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Keep the polygon parts of a geometry (unions and repairs may yield stray lines or points)."""
    polygons = _polygons(geom)
    if not polygons:
        raise AreaError("The area has no polygon.")
    return polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)


def point_count(geom: BaseGeometry | dict) -> int:
    """Return the number of coordinate points of all rings, closing points included."""
    if isinstance(geom, dict):
        geom = geometry_from_geojson(geom)
    return sum(len(p.exterior.coords) + sum(len(r.coords) for r in p.interiors) for p in _polygons(geom))


def to_geojson(geom: BaseGeometry) -> dict:
    """Return GeoJSON for a polygonal geometry: counter-clockwise closed exteriors, rounded coordinates."""
    polygons = [orient(p, 1.0) for p in _polygons(geom)]
    rings = [[_rounded_ring(p.exterior.coords)] + [_rounded_ring(r.coords) for r in p.interiors] for p in polygons]
    if len(rings) == 1:
        return {"type": "Polygon", "coordinates": rings[0]}
    return {"type": "MultiPolygon", "coordinates": rings}


def _rounded_ring(coords) -> list[list[float]]:
    ring = [[round(x, COORDINATE_DECIMALS), round(y, COORDINATE_DECIMALS)] for x, y, *_ in coords]
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return ring


def cap_polygons(area: dict | BaseGeometry) -> list[str]:
    """Return one CAP polygon string per part: closed exterior ring as space-separated "lat,lon" pairs."""
    geom = area if isinstance(area, BaseGeometry) else geometry_from_geojson(area)
    strings = []
    for polygon in _polygons(geom):
        ring = _rounded_ring(orient(polygon, 1.0).exterior.coords)
        strings.append(" ".join(f"{_number(lat)},{_number(lon)}" for lon, lat in ring))
    return strings


def _number(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def parse_cap_polygon(text: str) -> Polygon:
    """Return the polygon of a CAP `polygon` string ("lat,lon lat,lon ..."); raise AreaError if malformed."""
    try:
        points = [tuple(float(v) for v in pair.split(",")) for pair in text.split()]
    except ValueError as exc:
        raise AreaError(f"Unreadable CAP polygon {text[:60]!r}.") from exc
    if len(points) < 4 or any(len(p) != 2 for p in points):
        raise AreaError("A CAP polygon needs at least four lat,lon pairs.")
    if any(not (-90 <= lat <= 90 and -180 <= lon <= 180) for lat, lon in points):
        raise AreaError("A CAP polygon point lies outside latitude/longitude range.")
    polygon = Polygon([(lon, lat) for lat, lon in points])
    valid = drawn_checked(polygon)
    repaired = polygon if valid else _polygonal(_repaired(polygon))
    if repaired.is_empty or repaired.area == 0:
        raise AreaError("A CAP polygon encloses no area.")
    return repaired


def parse_cap_circle(text: str) -> Polygon:
    """Return a polygon approximating a CAP `circle` ("lat,lon radius_km")."""
    try:
        centre, radius = text.split()
        lat, lon = (float(v) for v in centre.split(","))
        radius_km = float(radius)
    except ValueError as exc:
        raise AreaError(f"Unreadable CAP circle {text[:60]!r}.") from exc
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not 0 <= radius_km < math.inf:
        raise AreaError("A CAP circle lies outside latitude/longitude range or has no finite, positive radius.")
    # A zero radius means a point; give it a footprint so it can still intersect an area.
    radius_deg = max(radius_km, 0.1) / KM_PER_DEGREE
    # Stretch longitude so the circle stays round on the ground away from the equator.
    stretch = 1 / max(math.cos(math.radians(lat)), 0.01)
    circle = Point(0, 0).buffer(radius_deg, quad_segs=16)
    return Polygon([(lon + x * stretch, lat + y) for x, y in circle.exterior.coords])
