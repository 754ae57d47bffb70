"""The OpenAPI schema documents the operator API as it answers."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(officer, api_client_for):
    return api_client_for(officer).get("/api/v1/schema/", {"format": "json"}).json()


def _component(schema, ref_holder: dict) -> dict:
    return schema["components"]["schemas"][ref_holder["$ref"].rsplit("/", 1)[1]]


def _json_body(schema, path: str) -> dict:
    request = schema["paths"][path]["post"]["requestBody"]["content"]
    assert list(request) == ["application/json"]
    return request["application/json"]["schema"]


def _answer(schema, path: str, status: str = "200", method: str = "post") -> dict:
    return schema["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


def test_delivery_reports_are_documented_as_json_of_at_most_ten_thousand_with_their_refusals(schema):
    path = "/api/v1/operator/delivery-reports/"
    body = _component(schema, _json_body(schema, path))
    assert body["properties"]["reports"]["maxItems"] == 10_000
    report = _component(schema, body["properties"]["reports"]["items"])
    assert set(report["properties"]) == {"message_id", "status", "operator_ref", "error_code", "done_at"}
    assert {"DELIVERED", "UNDELIVERED", "EXPIRED", "REJECTED"} <= set(
        _component(schema, report["properties"]["status"])["enum"]
    )
    result = _component(schema, _answer(schema, path))
    rejected = _component(schema, result["properties"]["rejected"]["items"])
    assert set(rejected["properties"]) == {"message_id", "reason"}
    assert "400" in schema["paths"][path]["post"]["responses"]


def test_reach_reports_are_documented_as_one_report_or_a_list_with_what_was_recorded(schema):
    path = "/api/v1/operator/area-broadcast-reports/"
    forms = _component(schema, _json_body(schema, path))["oneOf"]
    names = {ref["$ref"].rsplit("/", 1)[1] for ref in forms}
    assert names == {"ReachReport", "ReachReports"}
    assert set(schema["components"]["schemas"]["ReachReport"]["properties"]) == {
        "broadcast_id",
        "handsets_reached",
        "at",
    }
    result = _component(schema, _answer(schema, path))
    assert set(result["properties"]) == {"accepted", "broadcasts"}
    recorded = _component(schema, result["properties"]["broadcasts"]["items"])
    assert set(recorded["properties"]) == {"broadcast_id", "handsets_reached", "state"}


def test_inbound_messages_document_what_was_done(schema):
    result = _component(schema, _answer(schema, "/api/v1/operator/inbound/"))
    assert set(result["properties"]) == {"msisdn", "action", "changed", "detail"}
    assert set(result["required"]) == {"msisdn", "action", "changed", "detail"}
    assert set(_component(schema, result["properties"]["action"])["enum"]) == {"opted_out", "opted_in", "ignored"}


def test_a_claimed_batch_documents_its_encoding_and_priority_as_the_values_they_take(schema):
    claimed = _component(schema, _answer(schema, "/api/v1/operator/batches/{batch_id}/claim/"))
    assert _component(schema, claimed["properties"]["encoding"])["enum"] == ["GSM7", "UCS2"]
    assert _component(schema, claimed["properties"]["priority"])["enum"] == ["normal", "urgent"]


def test_pull_mode_documents_its_conflicts_and_the_ack_body(schema):
    assert "409" in schema["paths"]["/api/v1/operator/batches/{batch_id}/claim/"]["post"]["responses"]
    ack = _component(schema, _json_body(schema, "/api/v1/operator/batches/{batch_id}/ack/"))
    assert set(_component(schema, ack["properties"]["rejected"]["items"])["properties"]) == {"message_id", "reason"}


@pytest.mark.parametrize("path", ["/api/v1/schema/", "/api/docs/"])
def test_the_api_map_is_refused_to_anonymous_callers(client, path):
    assert client.get(path).status_code in (401, 403)


def test_the_api_documentation_sends_an_anonymous_browser_to_log_in():
    from django.test import Client

    page = Client().get("/api/docs/")
    assert page.status_code == 401
    body = page.content.decode()
    assert "Masuk untuk membaca dokumentasi API" in body
    assert 'href="/login/?next=/api/docs/"' in body


def test_an_operator_reads_the_schema_with_its_token(operator_user, api_client_for):
    answer = api_client_for(operator_user).get("/api/v1/schema/", {"format": "json"})
    assert answer.status_code == 200
    assert "/api/v1/operator/delivery-reports/" in answer.json()["paths"]


def test_a_signed_in_officer_sees_the_swagger_page(officer):
    from tests.conftest import client_for

    page = client_for(officer).get("/api/docs/")
    assert page.status_code == 200 and b"swagger" in page.content.lower()


def test_the_broadcast_progress_is_documented_field_by_field(officer, api_client_for, schema):
    from datetime import timedelta

    from operators import broadcasts
    from operators.models import AreaBroadcast
    from tests.operators.area_scripted import ScriptedAreaAdapter, blitar_areas, broadcast_campaign
    from tests.operators.factories import OperatorFactory
    from tests.schema_check import answer_mismatches

    ScriptedAreaAdapter.reset()
    OperatorFactory(slug="telkomsel", adapter="scripted_area", base_url="http://sim/telkomsel")
    blitar_areas()
    campaign = broadcast_campaign()
    run = broadcasts.area_broadcast_run_start(campaign_id=campaign.pk, now=campaign.starts_at + timedelta(seconds=1))
    for row in AreaBroadcast.objects.filter(run=run):
        broadcasts.area_broadcast_send(broadcast_id=row.pk)
    answer = api_client_for(officer).get(f"/api/v1/campaigns/{campaign.pk}/broadcast/")
    assert answer.json()["runs"][0]["operators"][0]["log"]
    path = "/api/v1/campaigns/{id}/broadcast/"
    assert set(_component(schema, _answer(schema, path, method="get"))["properties"]) == {"estimate", "runs"}
    assert answer_mismatches(schema, path, "get", answer) == []


@pytest.fixture
def pulling_client(operator_user, api_client_for):
    from operators.services import PULL_ADAPTER
    from tests.operators.factories import OperatorFactory

    OperatorFactory(slug="tsel", adapter=PULL_ADAPTER, user=operator_user)
    return api_client_for(operator_user)


@pytest.mark.parametrize("action", ["claim", "ack"])
def test_claim_and_ack_document_an_unknown_batch_as_409_and_only_a_batch_id_that_is_no_uuid_as_404(
    schema, pulling_client, action
):
    responses = schema["paths"][f"/api/v1/operator/batches/{{batch_id}}/{action}/"]["post"]["responses"]

    unknown = pulling_client.post(f"/api/v1/operator/batches/00000000-0000-0000-0000-000000000000/{action}/")
    malformed = pulling_client.post(f"/api/v1/operator/batches/batch-1/{action}/")

    assert (unknown.status_code, malformed.status_code) == (409, 404)
    assert "unknown" in responses["409"]["description"]
    assert "not a UUID" in responses["404"]["description"]
    assert "No such object" not in responses["404"]["description"]


def test_the_ready_lists_state_is_documented_as_optional_with_its_default_and_values(schema, pulling_client):
    (state,) = [p for p in schema["paths"]["/api/v1/operator/batches/"]["get"]["parameters"] if p["name"] == "state"]

    assert not state.get("required", False)
    assert state["schema"]["default"] == "ready"
    assert state["schema"]["enum"] == ["ready"]
    assert pulling_client.get("/api/v1/operator/batches/").status_code == 200


def test_an_inbound_messages_received_at_is_documented_as_a_date_time(schema):
    content = schema["paths"]["/api/v1/operator/inbound/"]["post"]["requestBody"]["content"]
    body = _component(schema, content["application/json"]["schema"])
    # A time, or an empty string for none.
    forms = body["properties"]["received_at"]["oneOf"]
    assert {"type": "string", "format": "date-time", "maxLength": 40} in forms
    assert {"type": "string", "maxLength": 0} in forms


def test_the_generated_schema_passes_openapi_validation(tmp_path):
    import yaml
    from django.core.management import call_command

    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--file", str(target))

    assert "/api/v1/operator/batches/{batch_id}/claim/" in yaml.safe_load(target.read_text())["paths"]


def test_an_answer_while_the_database_cannot_answer_is_documented_with_its_retry_after(
    schema, api_client_for, operator_user, monkeypatch
):
    from django.db import OperationalError

    from operators.models import Operator
    from smsblast import services
    from tests.schema_check import answer_mismatches

    Operator.objects.create(name="Telkomsel", slug="telkomsel", prefixes=["62812"], user=operator_user)

    def unavailable(**kwargs):
        raise OperationalError("the database system is starting up")

    monkeypatch.setattr(services, "subscriber_opt_out", unavailable)
    path = "/api/v1/operator/inbound/"
    answer = api_client_for(operator_user).post(path, {"msisdn": "081234567890", "text": "STOP"}, format="json")

    assert answer.status_code == 503 and answer["Retry-After"] == "5"
    assert answer_mismatches(schema, path, "post", answer) == []
    documented = schema["paths"][path]["post"]["responses"]["503"]
    assert "Retry-After" in documented["headers"]


def test_reach_reports_are_documented_as_one_to_a_thousand_a_request(schema):
    reports = schema["components"]["schemas"]["ReachReports"]["properties"]["reports"]
    assert (reports["minItems"], reports["maxItems"]) == (1, 1_000)


def test_the_ready_batch_list_documents_its_page_size_and_its_bounds(schema):
    parameters = {
        parameter["name"]: parameter for parameter in schema["paths"]["/api/v1/operator/batches/"]["get"]["parameters"]
    }
    limit, offset = parameters["limit"], parameters["offset"]
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"], limit["schema"]["default"]) == (1, 10_000, 100)
    assert offset["schema"]["minimum"] == 0
    assert limit["description"] and offset["description"]


def test_every_operation_that_answers_a_list_is_named_as_one_and_every_name_is_unique(schema):
    operations = [op for path in schema["paths"].values() for op in path.values() if isinstance(op, dict)]
    names = [op["operationId"] for op in operations]
    assert len(names) == len(set(names))

    def answers_a_list(op: dict) -> bool:
        content = op["responses"].get("200", {}).get("content", {}).get("application/json")
        answer = content and content["schema"]
        answer = answer and (_component(schema, answer) if "$ref" in answer else answer)
        return bool(answer) and (answer.get("type") == "array" or "results" in answer.get("properties", {}))

    lists = [path.get("get") for path in schema["paths"].values() if path.get("get")]
    assert [op["operationId"] for op in lists if answers_a_list(op) and op["operationId"].endswith("_retrieve")] == []
