"""Audience preview and polygon targeting, against a hand-counted fixture."""

import math

import pytest
import shapely
import shapely.geometry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from operators.models import Operator
from smsblast import selectors
from smsblast.models import Subscriber
from smsblast.selectors import audience_preview, polygon_home_areas, subscribers_in_area
from tests.smsblast.factories import AreaFactory, SubscriberFactory


def box(west: float, south: float, east: float, north: float) -> dict:
    return {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
    }


@pytest.fixture
def fixture(db):
    """Kab. Blitar with bounded kecamatan 01 and 02 (01 with bounded desa), unbounded 03, and Kota Blitar.

    | home             | telkomsel (Rp 250)   | indosat (Rp 230)          | no operator |
    |------------------|----------------------|---------------------------|-------------|
    | 35.05            | 1                    |                           |             |
    | 35.05.01         | 3 (1 opted out)      | 2 (1 writes English)      |             |
    | 35.05.01.2001    | 1                    |                           |             |
    | 35.05.02         |                      | 2 (1 opted out)           | 1           |
    | 35.05.03         | 1                    |                           |             |
    | 35.72.01         | 2 (1 lives at a point inside the drawn polygon)               |
    | none             | 1 (lives at a point outside it)                               |
    """
    AreaFactory(code="35", name="Jawa Timur", boundary=box(111.0, -9.0, 114.0, -7.0))
    AreaFactory(code="35.05", name="Kabupaten Blitar", boundary=box(112.0, -8.5, 112.5, -8.0))
    AreaFactory(code="35.72", name="Kota Blitar", boundary=box(113.0, -8.5, 113.2, -8.3))
    AreaFactory(code="35.05.01", name="Wonodadi", boundary=box(112.0, -8.25, 112.25, -8.0))
    AreaFactory(code="35.05.02", name="Udanawu", boundary=box(112.25, -8.25, 112.5, -8.0))
    AreaFactory(code="35.05.03", name="Srengat")
    AreaFactory(code="35.05.01.2001", name="Kolomayan", boundary=box(112.0, -8.1, 112.1, -8.0))
    AreaFactory(code="35.05.01.2002", name="Wonodadi", boundary=box(112.1, -8.25, 112.25, -8.0))
    AreaFactory(code="35.72.01", name="Sukorejo")
    telkomsel = Operator.objects.create(name="Telkomsel", slug="telkomsel", prefixes=["62812"], tariff_per_segment=250)
    indosat = Operator.objects.create(name="Indosat", slug="indosat", prefixes=["62856"], tariff_per_segment=230)
    out = timezone.now()
    rows = [
        ("35.05", telkomsel, {}),
        ("35.05.01", telkomsel, {}),
        ("35.05.01", telkomsel, {}),
        ("35.05.01", telkomsel, {"opted_out_at": out}),
        ("35.05.01", indosat, {}),
        ("35.05.01", indosat, {"language": "en"}),
        ("35.05.01.2001", telkomsel, {}),
        ("35.05.02", indosat, {}),
        ("35.05.02", indosat, {"opted_out_at": out}),
        ("35.05.02", None, {}),
        ("35.05.03", telkomsel, {}),
        ("35.72.01", telkomsel, {"latitude": -8.1, "longitude": 112.1}),
        ("35.72.01", telkomsel, {}),
        (None, telkomsel, {"latitude": -7.5, "longitude": 112.1}),
    ]
    for area, operator, extra in rows:
        SubscriberFactory(area_id=area, operator=operator, **extra)


DRAWN = box(112.05, -8.2, 112.15, -8.05)  # inside kecamatan 01, across both its desa


def test_preview_counts_per_operator_and_kecamatan_with_opt_outs_segments_and_cost(fixture):
    preview = audience_preview(["35.05"], segments=2)

    # The number of no known operator is skipped by fan-out, so it is no recipient and costs nothing.
    assert (preview["recipients"], preview["opted_out"], preview["segments"], preview["cost"]) == (8, 2, 16, 3880)
    assert preview["skipped"] == {"opted_out": 2, "operator_inactive": 0, "no_operator": 1}
    assert preview["by_operator"] == [
        {
            "slug": "indosat",
            "name": "Indosat",
            "recipients": 3,
            "opted_out": 1,
            "skipped": 0,
            "skipped_reason": "",
            "segments": 6,
            "tariff_per_segment": 230,
            "cost": 1380,
        },
        {
            "slug": "telkomsel",
            "name": "Telkomsel",
            "recipients": 5,
            "opted_out": 1,
            "skipped": 0,
            "skipped_reason": "",
            "segments": 10,
            "tariff_per_segment": 250,
            "cost": 2500,
        },
        {
            "slug": None,
            "name": "Unknown operator",
            "recipients": 0,
            "opted_out": 0,
            "skipped": 1,
            "skipped_reason": "no_operator",
            "segments": 0,
            "tariff_per_segment": 0,
            "cost": 0,
        },
    ]
    assert preview["by_kecamatan"] == [
        {"code": "35.05.01", "name": "Wonodadi", "recipients": 5, "opted_out": 1, "skipped": 0},
        {"code": "35.05.02", "name": "Udanawu", "recipients": 1, "opted_out": 1, "skipped": 1},
        {"code": "35.05.03", "name": "Srengat", "recipients": 1, "opted_out": 0, "skipped": 0},
        {"code": None, "name": "", "recipients": 1, "opted_out": 0, "skipped": 0},  # homed at kabupaten level
    ]


def test_preview_counts_the_numbers_of_an_inactive_operator_as_skipped_not_as_recipients(fixture):
    Operator.objects.filter(slug="indosat").update(active=False)

    preview = audience_preview(["35.05"], segments=2)

    assert (preview["recipients"], preview["cost"]) == (5, 2500)
    assert preview["skipped"] == {"opted_out": 2, "operator_inactive": 3, "no_operator": 1}
    indosat = next(entry for entry in preview["by_operator"] if entry["slug"] == "indosat")
    assert (indosat["recipients"], indosat["skipped"], indosat["skipped_reason"], indosat["cost"]) == (
        0,
        3,
        "operator_inactive",
        0,
    )


def test_preview_is_one_aggregate_query_over_subscribers(fixture):
    with CaptureQueriesContext(connection) as queries:
        audience_preview(["35.05", "35.72"], segments=1)

    on_subscribers = [query["sql"] for query in queries if '"smsblast_subscriber"' in query["sql"]]
    assert len(on_subscribers) == 1
    assert "GROUP BY" in on_subscribers[0] and "COUNT" in on_subscribers[0]


def test_preview_applies_the_audience_filter(fixture):
    preview = audience_preview(["35.05"], audience={"languages": ["en"]})

    assert (preview["recipients"], [entry["slug"] for entry in preview["by_operator"]]) == (1, ["indosat"])


def test_polygon_home_areas_use_the_deepest_known_boundary(fixture):
    exact, subtree = polygon_home_areas(DRAWN)

    # Province, kabupaten and kecamatan 01 have finer boundaries below: only subscribers homed on them
    # exactly are theirs. Both desa of 01 are reached; kecamatan 03 has no boundary, so Blitar's counts.
    assert exact == {"35", "35.05", "35.05.01"}
    assert subtree == {"35.05.01.2001", "35.05.01.2002", "35.05.03"}


def test_polygon_preview_counts_home_boundaries_and_points_inside(fixture):
    preview = audience_preview([], polygon=DRAWN)

    assert (preview["recipients"], preview["opted_out"]) == (8, 1)
    assert {entry["slug"]: entry["recipients"] for entry in preview["by_operator"]} == {"telkomsel": 6, "indosat": 2}
    assert [(entry["code"], entry["recipients"]) for entry in preview["by_kecamatan"]] == [
        ("35.05.01", 5),
        ("35.05.03", 1),
        ("35.72.01", 1),  # outside the area, but lives at a point inside the polygon
        (None, 1),
    ]


def test_subscribers_in_area_takes_a_polygon_besides_codes(fixture):
    in_polygon = set(subscribers_in_area([], polygon=DRAWN, opted_in_only=True).values_list("area_id", flat=True))
    with_codes = subscribers_in_area(["35.05.02"], polygon=DRAWN, opted_in_only=True)

    assert in_polygon == {"35.05", "35.05.01", "35.05.01.2001", "35.05.03", "35.72.01"}
    assert with_codes.count() == 8 + 2


def test_a_drawn_polygon_changed_in_place_is_read_again(fixture):
    # A map client may move a corner of the area it previewed and send the same object again.
    drawn = box(120.0, -5.0, 120.1, -4.9)
    assert audience_preview([], polygon=drawn)["recipients"] == 0

    drawn["coordinates"] = DRAWN["coordinates"]

    assert audience_preview([], polygon=drawn)["recipients"] == 8


def test_a_subscriber_living_on_the_edge_or_a_corner_of_the_drawn_polygon_is_reached(fixture):
    drawn = box(120.0, -5.0, 120.2, -4.8)
    for latitude, longitude in ((-5.0, 120.1), (-4.9, 120.2), (-4.8, 120.0), (-4.9, 120.1), (-4.7, 120.1)):
        SubscriberFactory(latitude=latitude, longitude=longitude, operator=Operator.objects.get(slug="telkomsel"))

    assert audience_preview([], polygon=drawn)["recipients"] == 4


def test_a_20000_point_polygon_over_thousands_of_homes_known_by_their_coordinates_reaches_those_in_or_on_it(fixture):
    # Homes are tested against the polygon itself, its edge included, in one pass (bench/drawn_area.py measures it):
    # the same homes as testing its inside and, apart, its outline.
    ring = [
        [120.1 + 0.1 * math.cos(2 * math.pi * i / 19_999), -4.9 + 0.1 * math.sin(2 * math.pi * i / 19_999)]
        for i in range(19_999)
    ]
    drawn = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    homes = [(-4.9 + (n % 200 - 100) / 1200, 120.1 + (n // 200 - 50) / 600) for n in range(20_000)]
    homes += [(ring[i][1], ring[i][0]) for i in range(0, 19_999, 1_000)]  # on its corners
    homes += [((ring[i][1] + ring[i + 1][1]) / 2, (ring[i][0] + ring[i + 1][0]) / 2) for i in range(5, 19_998, 1_000)]
    Subscriber.objects.bulk_create(
        (
            Subscriber(msisdn=f"+62813{n:08d}", latitude=latitude, longitude=longitude)
            for n, (latitude, longitude) in enumerate(homes)
        ),
        batch_size=5_000,
    )
    outline = shapely.geometry.shape(drawn)
    lats, lons = zip(*homes, strict=True)
    expected = shapely.contains_xy(outline, lons, lats) | shapely.intersects_xy(outline.boundary, lons, lats)

    preview = audience_preview([], polygon=drawn)

    assert 0 < expected.sum() < len(homes)
    assert preview["skipped"]["no_operator"] == expected.sum()  # these numbers have no operator


def test_a_polygon_outside_every_boundary_reaches_nobody(fixture):
    assert audience_preview([], polygon=box(120.0, -5.0, 120.1, -4.9))["recipients"] == 0


def test_a_polygons_province_is_the_one_holding_most_of_it(fixture):
    AreaFactory(code="94", name="Papua Tengah", boundary=box(135.0, -4.5, 137.0, -3.0))
    AreaFactory(code="94.01", name="Kabupaten Nabire", boundary=box(135.0, -4.0, 136.0, -3.0))

    assert selectors.polygon_province(box(135.2, -3.8, 135.6, -3.4)) == "94"
    assert selectors.polygon_province(DRAWN) == "35"
    # Mostly over Papua Tengah, a sliver over Jawa Timur's (fixture-sized) box.
    assert selectors.polygon_province(box(113.9, -8.0, 137.0, -3.5)) == "94"


@pytest.mark.parametrize(
    "polygon", [None, {}, box(120.0, -5.0, 120.1, -4.9), {"type": "Polygon", "coordinates": "nonsense"}]
)
def test_a_polygon_over_no_known_boundary_or_unreadable_has_no_province(fixture, polygon):
    assert selectors.polygon_province(polygon) is None


# --- API --------------------------------------------------------------------------------------------------------


def test_preview_endpoint_counts_segments_of_the_text(api_client_for, officer, fixture):
    response = api_client_for(officer).post(
        "/api/v1/audience/preview/", {"area_codes": ["35.05"], "text": "x" * 161}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["segments_per_message"], response.json()["segments"]) == (2, 16)
    assert response.json()["cost"] == 3880


@pytest.mark.parametrize(
    ("text", "claimed", "needed"),
    [
        ("x" * 161, 1, 2),  # GSM-7: 161 septets
        ("x" * 150 + "{}[]~|", 1, 2),  # extension characters take two septets each
        ("\u00e7" * 69 + "\U0001f637", 1, 2),  # UCS-2: a surrogate pair takes two code units
        ("Halo", 3, 1),
    ],
    ids=["gsm7", "gsm7-extension", "ucs2-surrogate-pair", "more-than-needed"],
)
def test_preview_endpoint_refuses_segments_the_text_does_not_need(
    api_client_for, officer, fixture, text, claimed, needed
):
    response = api_client_for(officer).post(
        "/api/v1/audience/preview/", {"area_codes": ["35.05"], "text": text, "segments": claimed}, format="json"
    )

    assert response.status_code == 400
    assert f"The text needs {needed} segment" in response.json()["detail"]
    assert "segments_per_message" not in response.json()


def test_preview_endpoint_figures_come_from_the_text_whatever_else_the_client_sends(api_client_for, officer, fixture):
    body = {
        "area_codes": ["35.05"],
        "text": "\u00e7" * 69 + "\U0001f637",
        "segments": 2,
        "segments_per_message": 1,
        "encoding": "GSM7",
        "cost": 0,
    }

    response = api_client_for(officer).post("/api/v1/audience/preview/", body, format="json")

    assert response.status_code == 200
    assert (response.json()["segments_per_message"], response.json()["segments"]) == (2, 16)
    assert response.json()["cost"] == 3880


def test_preview_endpoint_takes_a_polygon(api_client_for, approver, fixture):
    response = api_client_for(approver).post("/api/v1/audience/preview/", {"polygon": DRAWN}, format="json")

    assert (response.status_code, response.json()["recipients"]) == (200, 8)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Give area_codes"),
        ({"area_codes": ["99.99"]}, "Unknown area codes: 99.99"),
        ({"polygon": {"type": "Point", "coordinates": [112, -8]}}, "not a GeoJSON polygon"),
        ({"polygon": {"type": "Polygon", "coordinates": "nonsense"}}, "not a GeoJSON polygon"),
        ({"area_codes": ["35.05"], "segments": 11}, "segments"),
        # A message is at least one SMS part: none would show an audience reached for nothing.
        ({"area_codes": ["35.05"], "segments": 0}, "segments"),
        ({"area_codes": ["35.05"], "audience": {"languages": 5}}, "languages must be a list"),
        ({"area_codes": ["35.05"], "audience": {"operators": "telkomsel"}}, "operators must be a list"),
        ({"area_codes": ["35.05"], "audience": {"language": ["en"]}}, "Unknown audience filters: language"),
        ({"area_codes": ["35.05"], "audience": {"operators": ["telkomse"]}}, "Unknown operators: telkomse"),
        ({"area_codes": ["35.05"] * 501}, "area_codes"),
        ({"area_codes": ["35.05"], "text": "x" * (153 * 10 + 1)}, "Text needs 11 segments; the maximum is 10."),
        ({"area_codes": ["35.05"], "text": "\u200b \u200b"}, "Text is empty."),
    ],
)
def test_preview_endpoint_refuses_bad_input(api_client_for, officer, fixture, body, message):
    response = api_client_for(officer).post("/api/v1/audience/preview/", body, format="json")

    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_preview_of_five_hundred_areas_counts_everyone_below_them(api_client_for, officer, fixture):
    desa = [f"35.05.03.{2001 + n}" for n in range(499)]
    for code in desa:
        AreaFactory(code=code, name=f"Desa {code}")
    SubscriberFactory(area_id=desa[-1], operator=Operator.objects.get(slug="telkomsel"))

    response = api_client_for(officer).post(
        "/api/v1/audience/preview/", {"area_codes": ["35.05.01", *desa]}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["recipients"] == 5 + 1  # kecamatan 01 and its desa, and the last new desa


def test_preview_endpoint_is_for_staff_roles(api_client_for, operator_user, fixture):
    response = api_client_for(operator_user).post("/api/v1/audience/preview/", {"area_codes": ["35.05"]}, format="json")

    assert response.status_code == 403


def test_campaign_audience_endpoint_previews_a_draft_with_its_polygon(api_client_for, officer, approver, fixture):
    from campaigns.services import campaign_create

    campaign = campaign_create(
        author=officer,
        title="Vaksinasi",
        text="x" * 161,
        sender="BLITARKAB",
        area_codes=["35.05.02"],
        polygon=DRAWN,
    )
    response = api_client_for(approver).get(f"/api/v1/campaigns/{campaign.pk}/audience/")

    assert response.status_code == 200
    # 35.05.02 adds one: of its three, one opted out and one has no known operator.
    assert (response.json()["recipients"], response.json()["segments_per_message"]) == (8 + 1, 2)
    assert api_client_for(approver).get("/api/v1/campaigns/999999/audience/").status_code == 404


def test_a_published_boundary_whose_land_is_written_as_a_hole_of_a_speck_is_read_as_that_land(fixture):
    # Kab. Sorong's published boundary (96.01) is a MultiPolygon whose main part is a speck of a shell with the
    # regency's land written as its "hole". A zero-width buffer repaired it into the speck alone (0.01% of its
    # area): a polygon drawn over the land found no home area there and took Papua Barat Daya for another province.
    speck = [[131.0, -1.0], [131.001, -1.0], [131.001, -0.999], [131.0, -0.999], [131.0, -1.0]]
    land = [[131.1, -1.9], [132.0, -1.9], [132.0, -1.1], [131.1, -1.1], [131.1, -1.9]]
    islet = [[130.5, -1.0], [130.501, -1.0], [130.501, -0.999], [130.5, -0.999], [130.5, -1.0]]
    AreaFactory(code="96", name="Papua Barat Daya", boundary=box(130.0, -2.5, 133.0, -0.5))
    AreaFactory(
        code="96.01",
        name="Kabupaten Sorong",
        boundary={"type": "MultiPolygon", "coordinates": [[islet], [speck, land]]},
    )
    over_land = box(131.4, -1.6, 131.6, -1.4)

    assert selectors.polygon_covering_area(over_land) == "96.01"
    assert "96.01" in polygon_home_areas(over_land)[1]
