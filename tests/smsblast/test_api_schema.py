"""The OpenAPI schema documents the audience endpoints as they answer."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.schema_check import answer_mismatches
from tests.smsblast.factories import SubscriberFactory, area_tree

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


@pytest.fixture
def schema(officer, api_client_for):
    return api_client_for(officer).get("/api/v1/schema/", {"format": "json"}).json()


def test_text_analysis_answers_are_documented_field_by_field(officer, api_client_for, schema):
    client = api_client_for(officer)
    path = "/api/v1/sms/analyze/"
    for body in (
        {"text": "Pakai masker “sekarang”."},
        {"text": "Halo"},
        {"text": 5},
        {"text": "Halo", "sender": "PEMKAB-BLITAR"},
    ):
        assert answer_mismatches(schema, path, "post", client.post(path, body, format="json")) == []


def test_area_answers_are_documented_field_by_field(officer, api_client_for, schema):
    area_tree()
    client = api_client_for(officer)
    for url in ("/api/v1/areas/", "/api/v1/areas/?parent=35.05", "/api/v1/areas/?q=blit"):
        assert answer_mismatches(schema, "/api/v1/areas/", "get", client.get(url)) == []
    for code in ("35", "35.05.01", "99"):
        answer = client.get(f"/api/v1/areas/{code}/")
        assert answer_mismatches(schema, "/api/v1/areas/{code}/", "get", answer) == []


def test_audience_previews_are_documented_field_by_field(officer, api_client_for, schema):
    from tests.campaigns.factories import CampaignFactory
    from tests.operators.factories import OperatorFactory

    area_tree()
    SubscriberFactory(area_id="35.05.01", operator=OperatorFactory())
    SubscriberFactory(area_id="35.05.02")
    client = api_client_for(officer)
    answer = client.post("/api/v1/audience/preview/", {"area_codes": ["35.05"], "text": "Halo"}, format="json")
    assert answer_mismatches(schema, "/api/v1/audience/preview/", "post", answer) == []
    campaign = CampaignFactory()
    answer = client.get(f"/api/v1/campaigns/{campaign.pk}/audience/")
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/audience/", "get", answer) == []


def test_opt_out_and_opt_in_answers_are_documented_with_what_changed(officer, api_client_for, schema):
    subscriber = SubscriberFactory()
    client = api_client_for(officer)
    for action in ("opt-out", "opt-in"):
        answer = client.post(f"/api/v1/subscribers/{subscriber.msisdn}/{action}/")
        assert answer.status_code == 200
        assert answer_mismatches(schema, f"/api/v1/subscribers/{{msisdn}}/{action}/", "post", answer) == []


def test_a_number_that_is_no_mobile_number_is_refused_to_opt_out_or_in_as_documented(officer, api_client_for, schema):
    client = api_client_for(officer)
    for action in ("opt-out", "opt-in"):
        answer = client.post(f"/api/v1/subscribers/021-555-1234/{action}/")
        assert answer.status_code == 400 and "not an Indonesian mobile number" in answer.json()["detail"]
        assert answer_mismatches(schema, f"/api/v1/subscribers/{{msisdn}}/{action}/", "post", answer) == []


def test_children_of_an_unknown_area_answer_a_documented_404(officer, api_client_for, schema):
    area_tree()
    answer = api_client_for(officer).get("/api/v1/areas/", {"parent": "35.99"})
    assert answer.status_code == 404 and "35.99" in answer.json()["detail"]
    assert answer_mismatches(schema, "/api/v1/areas/", "get", answer) == []


def test_the_upload_of_an_import_is_documented_as_a_form_that_requires_its_file(schema):
    form = schema["paths"]["/api/v1/subscribers/imports/"]["post"]["requestBody"]["content"]
    assert list(form) == ["multipart/form-data"]
    assert form["multipart/form-data"]["schema"]["required"] == ["file"]


def test_import_answers_are_documented_field_by_field(officer, api_client_for, schema, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    client = api_client_for(officer)
    upload = SimpleUploadedFile("people.csv", b"msisdn,area\n081234567890,35.05.01\n", content_type="text/csv")
    created = client.post("/api/v1/subscribers/imports/", {"file": upload}, format="multipart")
    assert created.status_code == 202
    assert answer_mismatches(schema, "/api/v1/subscribers/imports/", "post", created) == []
    job = created.json()["id"]
    listed = client.get("/api/v1/subscribers/imports/")
    assert answer_mismatches(schema, "/api/v1/subscribers/imports/", "get", listed) == []
    detail = client.get(f"/api/v1/subscribers/imports/{job}/")
    assert answer_mismatches(schema, "/api/v1/subscribers/imports/{id}/", "get", detail) == []
    resumed = client.post(f"/api/v1/subscribers/imports/{job}/resume/")
    assert resumed.status_code == 409
    assert answer_mismatches(schema, "/api/v1/subscribers/imports/{id}/resume/", "post", resumed) == []


@pytest.mark.parametrize(
    ("user", "path"),
    [
        ("officer", "/api/v1/sms/analyze/"),
        ("officer", "/api/v1/campaigns/"),
        ("operator_user", "/api/v1/operator/inbound/"),
    ],
)
def test_a_body_of_a_type_the_api_does_not_read_answers_a_documented_415(request, api_client_for, schema, user, path):
    client = api_client_for(request.getfixturevalue(user))
    answer = client.post(path, "text=STOP", content_type="text/plain")
    assert answer.status_code == 415 and answer.json()["detail"]
    assert answer_mismatches(schema, path, "post", answer) == []


def test_every_operation_documents_its_error_answers_as_a_detail(schema):
    operations = [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "patch")
    ]
    for path, method, operation in operations:
        expected = {"401", "403"}
        if "{" in path:
            expected |= {"404"}
        if "requestBody" in operation:
            expected |= {"400", "413"}
        if method in ("post", "patch") and "{" in path:
            expected |= {"409"}
        responses = operation["responses"]
        assert expected <= set(responses), (method, path, sorted(expected - set(responses)))
        for status, response in responses.items():
            if int(status) >= 400:
                error = response["content"]["application/json"]["schema"]
                assert error == {"$ref": "#/components/schemas/Error"}, (method, path, status)
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["detail"] and error["properties"]["detail"]["type"] == "string"
