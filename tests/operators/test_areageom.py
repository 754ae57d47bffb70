"""The broadcast area contains the original, respects the vertex limit, and has a correct CAP form."""

import json
from functools import cache
from pathlib import Path

import pytest
from shapely.geometry import Polygon, shape

from operators.areageom import (
    MAX_DRAWN_POINTS,
    AreaError,
    AreaTooComplex,
    broadcast_area,
    cap_polygons,
    drawn_area_geometry,
    geometry_from_geojson,
    parse_cap_circle,
    parse_cap_polygon,
    point_count,
)

WILAYAH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wilayah"


@cache
def _features(name: str) -> dict:
    with open(WILAYAH / name) as handle:
        return {f["properties"]["kode"]: f["geometry"] for f in json.load(handle)["features"]}


def regency(code: str) -> dict:
    return _features("batas_kabupaten.geojson")[code]


def province(code: str) -> dict:
    return _features("batas_provinsi.geojson")[code]


def _assert_covers(result: dict, originals: list[dict], limit: int) -> None:
    assert point_count(result) <= limit
    covered = shape(result)
    for original in originals:
        assert covered.contains(shape(original))
    for polygon in result["coordinates"] if result["type"] == "MultiPolygon" else [result["coordinates"]]:
        for ring in polygon:
            assert ring[0] == ring[-1]


def test_kab_blitar_area_contains_the_regency_within_the_default_limit():
    blitar = regency("35.05")
    result = broadcast_area([blitar])
    _assert_covers(result, [blitar], 250)
    # Smoothing overshoots the boundary only a little for a compact regency.
    assert shape(result).area < shape(blitar).area * 1.2


@pytest.mark.parametrize("limit", [250, 60, 12])
def test_jawa_timur_with_its_islands_is_contained_within_tight_limits(limit):
    jatim = province("35")
    assert point_count(jatim) > 3000
    _assert_covers(broadcast_area([jatim], vertex_limit=limit), [jatim], limit)


def test_an_island_province_falls_back_to_a_hull_or_rectangle_when_the_limit_is_tiny():
    maluku_utara = province("82")
    result = broadcast_area([maluku_utara], vertex_limit=5)
    _assert_covers(result, [maluku_utara], 5)


def test_several_areas_are_united_into_one_covering_area():
    codes = ["35.05", "35.72", "35.06"]  # Kab. Blitar, Kota Blitar, Kab. Kediri
    geometries = [regency(code) for code in codes]
    result = broadcast_area(geometries, vertex_limit=100)
    _assert_covers(result, geometries, 100)


def test_holes_are_filled_so_the_area_inside_them_is_covered():
    ring = [[112.0, -8.0], [112.4, -8.0], [112.4, -8.4], [112.0, -8.4], [112.0, -8.0]]
    hole = [[112.1, -8.1], [112.1, -8.3], [112.3, -8.3], [112.3, -8.1], [112.1, -8.1]]
    result = broadcast_area([{"type": "Polygon", "coordinates": [ring, hole]}])
    assert result["type"] == "Polygon"
    assert len(result["coordinates"]) == 1
    assert shape(result).contains(Polygon(ring))


def test_a_limit_below_a_closed_polygon_is_refused():
    with pytest.raises(AreaError):
        broadcast_area([regency("35.05")], vertex_limit=4)


def test_non_polygon_geometry_is_refused():
    with pytest.raises(AreaError, match="Polygon or MultiPolygon"):
        geometry_from_geojson({"type": "Point", "coordinates": [112.0, -8.0]})


def test_cap_polygons_are_closed_lat_lon_pairs_one_per_part():
    area = broadcast_area([regency("35.05")])
    strings = cap_polygons(area)
    parts = len(area["coordinates"]) if area["type"] == "MultiPolygon" else 1
    assert len(strings) == parts
    for text in strings:
        pairs = text.split(" ")
        assert pairs[0] == pairs[-1]
        lat, lon = (float(v) for v in pairs[0].split(","))
        assert -9 < lat < -7.5 and 111.5 < lon < 113
    # Reading the CAP form back gives the same shape.
    back = parse_cap_polygon(strings[0])
    first = area["coordinates"][0] if area["type"] == "MultiPolygon" else area["coordinates"]
    assert back.symmetric_difference(Polygon(first[0])).area < 1e-9


def test_malformed_cap_polygons_and_circles_are_refused():
    with pytest.raises(AreaError):
        parse_cap_polygon("-8.1,112.1 -8.2,112.2")
    with pytest.raises(AreaError):
        parse_cap_polygon("north,east -8.2,112.2 -8.3,112.1 north,east")
    with pytest.raises(AreaError):
        parse_cap_circle("-8.1,112.1")
    for radius in ("inf", "nan", "-1"):
        with pytest.raises(AreaError):
            parse_cap_circle(f"-8.1,112.1 {radius}")


def test_cap_circle_has_its_radius_on_the_ground():
    circle = parse_cap_circle("-8.1,112.2 10")
    minx, miny, maxx, maxy = circle.bounds
    # 10 km is about 0.09 degrees of latitude either side of the centre.
    assert maxy - miny == pytest.approx(2 * 10 / 111.32, rel=0.01)
    assert maxx - minx > maxy - miny


def test_a_boundary_that_geos_cannot_repair_in_place_is_still_read_and_covered():
    # Kota Mataram's published boundary has a ring too short to be a polygon; make_valid refuses it.
    mataram = regency("52.71")
    assert geometry_from_geojson(mataram).area == pytest.approx(shape(mataram).buffer(0).area)
    _assert_covers(broadcast_area([mataram]), [shape(mataram).buffer(0).__geo_interface__], 250)


def test_positions_outside_longitude_and_latitude_ranges_are_refused():
    swapped = {"type": "Polygon", "coordinates": [[[-8.1, 112.1], [-8.1, 112.3], [-8.2, 112.3], [-8.1, 112.1]]]}
    with pytest.raises(AreaError, match="longitude, latitude"):
        geometry_from_geojson(swapped)


def test_a_drawn_area_read_without_the_limits_is_still_refused_when_a_user_sends_it():
    # A stored polygon is read without the limits on what a user sends; the reading kept must not let it pass them.
    ring = [[112.0 + 0.1 * i / MAX_DRAWN_POINTS, -8.0 - (i % 2) * 1e-4] for i in range(MAX_DRAWN_POINTS)]
    ring = [*ring, [112.1, -8.2], [112.0, -8.2], ring[0]]
    too_many = {"type": "Polygon", "coordinates": [ring]}

    assert drawn_area_geometry(too_many, checked=False).area > 0
    for _ in range(2):
        with pytest.raises(AreaTooComplex, match="at most 20,000 points"):
            drawn_area_geometry(too_many)
    assert drawn_area_geometry(too_many, checked=False).area > 0


def test_a_drawn_area_reads_as_geojson_reads_it_checked_or_not():
    square = {
        "type": "Polygon",
        "coordinates": [[[112.0, -8.0], [112.1, -8.0], [112.1, -8.1], [112.0, -8.1], [112.0, -8.0]]],
    }
    bow_tie = {
        "type": "Polygon",
        "coordinates": [[[112.1, -8.1], [112.3, -8.3], [112.3, -8.1], [112.1, -8.3], [112.1, -8.1]]],
    }

    for area in (square, bow_tie):
        assert drawn_area_geometry(area).equals(geometry_from_geojson(area, drawn=True))
        assert drawn_area_geometry(area, checked=False).equals(geometry_from_geojson(area))


def test_each_reader_of_a_drawn_area_gets_its_own_geometry_to_prepare():
    # GEOS prepares a geometry in place at its first point-in-polygon test, and prepared geometries are not safe to
    # share between the web server's threads: a kept reading is never handed to two of them.
    import shapely

    square = {
        "type": "Polygon",
        "coordinates": [[[112.0, -8.0], [112.1, -8.0], [112.1, -8.1], [112.0, -8.1], [112.0, -8.0]]],
    }
    first = drawn_area_geometry(square)
    assert shapely.contains_xy(first, 112.05, -8.05)

    again, unchecked = drawn_area_geometry(square), drawn_area_geometry(square, checked=False)

    assert again is not first and unchecked is not first and again is not unchecked
    assert not shapely.is_prepared(again) and not shapely.is_prepared(unchecked)
    assert again.equals_exact(first, 0) and unchecked.equals_exact(first, 0)
