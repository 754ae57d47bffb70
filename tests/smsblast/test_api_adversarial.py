"""The audience API under hostile input: a 4xx with a `detail` for every malformed request, never a 500."""

import json
import math
import random

import pytest

from smsblast.models import AuditEvent, Role, Subscriber
from tests.smsblast.factories import UserFactory, area_tree

pytestmark = pytest.mark.django_db

LONE_SURROGATE = "\ud800"


@pytest.fixture
def officer_client(api_client_for):
    area_tree("35.05", kecamatan=2)
    client = api_client_for(UserFactory(username="officer", role=Role.OFFICER))
    client.raise_request_exception = False
    return client


@pytest.mark.parametrize(
    "audience",
    [{"languages": [LONE_SURROGATE]}, {"operators": ["tsel", LONE_SURROGATE]}],
    ids=["language", "operator"],
)
def test_an_audience_preview_filter_holding_a_lone_surrogate_is_refused_with_a_detail(officer_client, audience):
    body = json.dumps({"area_codes": ["35.05"], "audience": audience})

    response = officer_client.post("/api/v1/audience/preview/", body, content_type="application/json")

    assert response.status_code == 400, response.content
    assert "surrogate" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"area_codes": "35.05"},
        {"area_codes": [["35.05"]]},
        {"area_codes": ["35.05"] * 501},
        {"area_codes": ["35.05"], "audience": []},
        {"area_codes": ["35.05"], "audience": {"languages": "id"}},
        {"area_codes": ["35.05"], "audience": {"languages": ["\x00"]}},
        {"area_codes": ["35.05"], "segments": "satu"},
        {"area_codes": ["35.05"], "text": "x" * 6000},
        {"polygon": "Blitar"},
        {"polygon": {"type": "Polygon", "coordinates": [[["a", "b"]]]}},
        {"polygon": {"type": "Polygon", "coordinates": [[[1e308, 1e308], [-1e308, 0], [0, -1e308], [1e308, 1e308]]]}},
    ],
)
def test_a_malformed_audience_preview_is_refused_with_a_detail(officer_client, body):
    response = officer_client.post("/api/v1/audience/preview/", json.dumps(body), content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["detail"]


def _scribble(points: int) -> list[list[float]]:
    """Return a closed ring through `points` points scattered over Kab. Blitar, crossing itself at every turn."""
    rng = random.Random(7)
    ring = [[rng.uniform(112.0, 112.5), rng.uniform(-8.5, -8.0)] for _ in range(points)]
    return [*ring, ring[0]]


def _circle(points: int) -> list[list[float]]:
    ring = [
        [112.25 + 0.1 * math.cos(2 * math.pi * i / points), -8.2 + 0.1 * math.sin(2 * math.pi * i / points)]
        for i in range(points)
    ]
    return [*ring, ring[0]]


@pytest.mark.parametrize(
    ("polygon", "message"),
    [
        # Repairing a scribble of a few hundred points held the request for minutes and gigabytes.
        ({"type": "Polygon", "coordinates": [_scribble(150)]}, "crosses itself in more than 100 places"),
        ({"type": "MultiPolygon", "coordinates": [[_scribble(40)], [_scribble(40)]]}, "crosses itself"),
        ({"type": "Polygon", "coordinates": [_circle(20_000)]}, "at most 20,000 points; this one has 20,001"),
        (
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [_circle(8)]}}] * 5_000,
            },
            "GeoJSON Polygon or MultiPolygon",
        ),
    ],
    ids=["scribble", "scribbles", "points", "features"],
)
def test_a_drawn_polygon_too_costly_to_read_is_refused_with_a_detail(officer_client, polygon, message):
    for url, body in (
        ("/api/v1/audience/preview/", {"polygon": polygon}),
        ("/api/v1/campaigns/", {"title": "Banjir", "text": "Waspada banjir.", "polygon": polygon}),
    ):
        response = officer_client.post(url, json.dumps(body), content_type="application/json")

        assert response.status_code == 400, response.content
        assert message in response.json()["detail"]


def test_a_drawn_polygon_crossing_itself_a_few_times_is_still_read(officer_client):
    bow_tie = [[112.1, -8.1], [112.3, -8.3], [112.3, -8.1], [112.1, -8.3], [112.1, -8.1]]
    circle = _circle(19_999)
    circle[10], circle[11] = circle[11], circle[10]
    for ring in (bow_tie, circle):
        body = {"polygon": {"type": "Polygon", "coordinates": [ring]}}

        response = officer_client.post("/api/v1/audience/preview/", json.dumps(body), content_type="application/json")

        assert response.status_code == 200, response.content


def test_a_drawn_polygon_crossing_itself_previewed_again_and_again_is_repaired_once(officer_client, monkeypatch):
    # A map client previews the area at every change of the form: each preview read and repaired the 20,000 points
    # twice, 10 previews more than 20 readings.
    from collections import OrderedDict

    from operators import areageom

    circle = _circle(19_999)
    circle[10], circle[11] = circle[11], circle[10]
    body = json.dumps({"polygon": {"type": "Polygon", "coordinates": [circle]}})
    repairs = []
    repair = areageom._repaired

    def counted(geom):
        repairs.append(geom)
        return repair(geom)

    monkeypatch.setattr(areageom, "_repaired", counted)
    monkeypatch.setattr(areageom, "_drawn_areas", OrderedDict())

    url = "/api/v1/audience/preview/"
    answers = [officer_client.post(url, body, content_type="application/json") for _ in range(10)]

    assert [answer.status_code for answer in answers] == [200] * 10, answers[0].content
    assert len({json.dumps(answer.json(), sort_keys=True) for answer in answers}) == 1
    assert len(repairs) == 1


@pytest.mark.parametrize("query", ["a" * 60_000, "a%20" * 30_000, "_" * 60_000], ids=["letters", "words", "wildcards"])
def test_an_area_search_longer_than_any_name_is_refused_with_a_detail(officer_client, query):
    response = officer_client.get(f"/api/v1/areas/?q={query}")

    assert response.status_code == 400, response.content
    assert "100 characters" in response.json()["detail"]


def test_a_number_search_longer_than_any_number_is_refused_with_a_detail(officer_client):
    response = officer_client.get("/api/v1/subscribers/?q=" + "8" * 100_000)

    assert response.status_code == 400, response.content
    assert "15 digits" in response.json()["detail"]


@pytest.mark.parametrize("msisdn", ["%FF", "%ED%A0%80", "0812" * 1000, "%EF%BC%90812345678"])
def test_a_manual_opt_out_of_something_that_is_no_number_is_refused_and_records_nothing(officer_client, msisdn):
    events = AuditEvent.objects.count()

    response = officer_client.post(f"/api/v1/subscribers/{msisdn}/opt-out/")

    assert response.status_code == 400
    assert response.json()["detail"]
    assert (Subscriber.objects.count(), AuditEvent.objects.count()) == (0, events)
