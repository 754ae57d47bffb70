"""The OpenAPI schema documents the audience endpoints as they answer."""

import pytest

from tests.smsblast.factories import SubscriberFactory

pytestmark = pytest.mark.django_db


def test_the_subscriber_list_is_documented_as_the_page_it_answers(officer, api_client_for):
    SubscriberFactory()
    client = api_client_for(officer)
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    answer = schema["paths"]["/api/v1/subscribers/"]["get"]["responses"]["200"]["content"]["application/json"]
    page = schema["components"]["schemas"][answer["schema"]["$ref"].rsplit("/", 1)[1]]

    body = client.get("/api/v1/subscribers/").json()

    assert page["type"] == "object" and set(page["properties"]) == set(body)
    assert page["properties"]["results"]["type"] == "array"


def test_a_subscriber_without_area_or_operator_is_documented_with_the_nulls_it_answers(officer, api_client_for):
    SubscriberFactory(area=None, operator=None)
    client = api_client_for(officer)
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()

    (row,) = client.get("/api/v1/subscribers/").json()["results"]

    fields = schema["components"]["schemas"]["Subscriber"]["properties"]
    for name in ("area", "area_name", "operator"):
        assert row[name] is None
        assert fields[name].get("nullable") is True, name
