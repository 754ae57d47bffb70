"""The campaign API under hostile input: a 4xx with a `detail` for every malformed request, and nothing written."""

import json

import pytest

from campaigns.models import Campaign
from smsblast.models import AuditEvent, Role
from tests.campaigns.test_api import DRAFT_BODY
from tests.smsblast.factories import UserFactory, area_tree

pytestmark = pytest.mark.django_db

LONE_SURROGATE = "\ud800"  # what the JSON escape \ud800 decodes to: no UTF-8 form
KECAMATAN = {"type": "Polygon", "coordinates": [[[112.1, -8.1], [112.3, -8.1], [112.3, -8.0], [112.1, -8.1]]]}


@pytest.fixture
def author(api_client_for):
    area_tree("35.05", kecamatan=2)
    client = api_client_for(UserFactory(username="author", role=Role.OFFICER))
    client.raise_request_exception = False
    return client


def _written():
    return sorted(Campaign.objects.values_list("pk", "status", "mode", "priority", "polygon", "audience")), (
        AuditEvent.objects.count()
    )


# Each once as its own value and once inside a JSON value the campaign stores as it is.
SURROGATE_FIELDS = {
    "mode": LONE_SURROGATE,
    "priority": LONE_SURROGATE,
    "repeat_policy": LONE_SURROGATE,
    "polygon": {**KECAMATAN, "name": LONE_SURROGATE},
    "audience_filter": {"languages": [LONE_SURROGATE]},
}


@pytest.mark.parametrize(("field", "value"), SURROGATE_FIELDS.items(), ids=SURROGATE_FIELDS.keys())
@pytest.mark.parametrize("mode", ["targeted", "area_broadcast"])
def test_a_lone_surrogate_in_a_new_campaign_is_refused_with_a_detail_and_nothing_is_created(author, field, value, mode):
    before = _written()
    body = {**DRAFT_BODY, "mode": mode, field: value}

    response = author.post("/api/v1/campaigns/", json.dumps(body), content_type="application/json")

    assert response.status_code == 400, response.content
    assert field.split("_")[0] in response.json()["detail"]
    assert _written() == before


@pytest.mark.parametrize(("field", "value"), SURROGATE_FIELDS.items(), ids=SURROGATE_FIELDS.keys())
def test_a_lone_surrogate_in_an_edit_is_refused_with_a_detail_and_the_campaign_stays_as_it_was(author, field, value):
    campaign_id = author.post("/api/v1/campaigns/", DRAFT_BODY, format="json").json()["id"]
    before = _written()

    response = author.patch(
        f"/api/v1/campaigns/{campaign_id}/", json.dumps({field: value}), content_type="application/json"
    )

    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert _written() == before


def test_a_refusal_quoting_a_lone_surrogate_answers_it_as_its_json_escape(author):
    response = author.post(
        "/api/v1/campaigns/", json.dumps({**DRAFT_BODY, "mode": LONE_SURROGATE}), content_type="application/json"
    )

    assert response.status_code == 400
    assert b"\\ud800" in response.content
    assert LONE_SURROGATE in response.json()["detail"]


@pytest.mark.parametrize(
    "query",
    [
        "status=%ED%A0%80",
        "mode=%FF",
        "author=-1",
        "author=99999999999999999999",
        "author=%EF%BC%91",
        "q=" + "a" * 101,
        "q=%25%25_%5C",
        "ordering=-author__password",
        "limit=-1&offset=-1",
        "limit=1000000000&offset=99999999999999999999999",
        "status=draft&status=nope",
    ],
)
def test_campaign_list_query_abuse_answers_a_page_or_a_400_with_a_detail(author, query):
    response = author.get(f"/api/v1/campaigns/?{query}")

    assert response.status_code in (200, 400), response.content
    if response.status_code == 400:
        assert response.json()["detail"]
    else:
        assert "password" not in response.content.decode()
