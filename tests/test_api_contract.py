"""The OpenAPI schema describes the API as it answers: every main endpoint called in each role, its successes and
its refusals (400, 401, 403, 404, 409, 413), each answer checked against the schema in every detail (status, media
type, field types, enums, formats, no undocumented field) and each request body against the body it documents."""

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from tests.conftest import client_for, make_user
from tests.schema_check import answer_errors, request_errors

pytestmark = pytest.mark.django_db

UNKNOWN_BATCH = "00000000-0000-0000-0000-000000000000"
# What DESIGN.md promises, as (method, path): the officer and approver API and the inbound operator API.
DESIGN_OPERATIONS = [
    ("get", "/api/v1/campaigns/"),
    ("post", "/api/v1/campaigns/"),
    ("get", "/api/v1/campaigns/{id}/"),
    *[
        ("post", f"/api/v1/campaigns/{{id}}/{action}/")
        for action in ("submit", "approve", "reject", "schedule", "cancel", "pause", "resume")
    ],
    ("get", "/api/v1/campaigns/{id}/deliveries/"),
    ("get", "/api/v1/campaigns/{id}/report.csv"),
    ("post", "/api/v1/sms/analyze/"),
    ("get", "/api/v1/areas/"),
    ("get", "/api/v1/subscribers/imports/"),
    ("post", "/api/v1/subscribers/imports/"),
    ("post", "/api/v1/operator/delivery-reports/"),
    ("get", "/api/v1/operator/batches/"),
    ("post", "/api/v1/operator/batches/{batch_id}/claim/"),
    ("post", "/api/v1/operator/batches/{batch_id}/ack/"),
    ("post", "/api/v1/operator/inbound/"),
]


class Contract:
    """Call the API and collect every way an answer or a request body departs from the schema."""

    def __init__(self, schema: dict):
        self.schema = schema
        self.problems: list[str] = []

    def call(self, client, method: str, path: str, status: int, *, url: str | None = None, body=None, **extra):
        """Send `body` (JSON unless `extra` names a format or content type) to `url` (the schema's `path` if None).

        A body the call expects to be taken (2xx) must also be one the schema documents.
        """
        if body is not None and extra.get("format") == "multipart":
            sent, media_type = dict.fromkeys(body, ""), "multipart/form-data"
        elif body is not None and "content_type" in extra:
            sent, media_type = "", extra["content_type"]
        else:
            sent, media_type = body, "application/json"
            extra.setdefault("format", "json")
        if body is not None and status < 300:
            self.problems += request_errors(self.schema, path, method, sent, media_type)
        arguments = () if body is None else (body,)
        response = getattr(client, method)(url or path, *arguments, **extra)
        assert response.status_code == status, (method, url or path, response.status_code, response.content[:500])
        self.problems += answer_errors(self.schema, path, method, response)
        return response


@pytest.fixture(autouse=True)
def pipeline(settings, redis_client, redis_url, private_broker, tmp_path):
    from tests.operators.area_scripted import ScriptedAreaAdapter
    from tests.operators.scripted import ScriptedAdapter

    settings.REDIS_URL = redis_url
    settings.MEDIA_ROOT = tmp_path
    ScriptedAdapter.reset()
    ScriptedAreaAdapter.reset()


@pytest.fixture
def schema(officer, api_client_for):
    return api_client_for(officer).get("/api/v1/schema/", {"format": "json"}).json()


@pytest.fixture
def contract(schema):
    return Contract(schema)


@pytest.fixture
def clients(officer, approver, admin_user, operator_user, api_client_for):
    return {
        "officer": api_client_for(officer),
        "approver": api_client_for(approver),
        "admin": api_client_for(admin_user),
        "operator": api_client_for(operator_user),
    }


def test_every_endpoint_design_promises_is_documented_with_token_and_session_auth(schema):
    schemes = schema["components"]["securitySchemes"]
    assert (schemes["bearerAuth"]["type"], schemes["bearerAuth"]["scheme"]) == ("http", "bearer")
    assert schemes["cookieAuth"] == {"type": "apiKey", "in": "cookie", "name": "sessionid"}
    for method, path in DESIGN_OPERATIONS:
        assert method in schema["paths"].get(path, {}), (method, path)
        assert schema["paths"][path][method]["security"] == [{"bearerAuth": []}, {"cookieAuth": []}], (method, path)


def test_composing_deciding_and_scheduling_answer_as_documented_in_every_role(contract, clients):
    from tests.smsblast.factories import area_tree

    area_tree()
    officer, approver, admin, operator = (clients[role] for role in ("officer", "approver", "admin", "operator"))
    draft = {
        "title": "Covid-19 Blitar",
        "text": "Tetap “pakai masker”.",
        "sender": "PEMKAB-BLITAR",
        "area_codes": ["35.05"],
    }
    c = contract.call
    created = c(officer, "post", "/api/v1/campaigns/", 201, body={**draft, "schedule": {"kind": "now"}}).json()
    url = f"/api/v1/campaigns/{created['id']}/"
    detail = "/api/v1/campaigns/{id}/"
    c(admin, "post", "/api/v1/campaigns/", 201, body={"title": "Belum ada teks"})
    c(officer, "post", "/api/v1/campaigns/", 400, body={"title": 5})
    c(officer, "post", "/api/v1/campaigns/", 400, body={**draft, "area_codes": ["35.05.99.9999.1"]})
    for refused in (approver, operator):
        c(refused, "post", "/api/v1/campaigns/", 403, body=draft)
    for role in ("officer", "approver", "admin"):
        c(clients[role], "get", "/api/v1/campaigns/", 200, url="/api/v1/campaigns/?status=draft&q=blitar")
        c(clients[role], "get", detail, 200, url=url)
    c(officer, "get", "/api/v1/campaigns/", 400, url="/api/v1/campaigns/?status=sent")
    c(operator, "get", "/api/v1/campaigns/", 403)
    c(operator, "get", detail, 403, url=url)
    c(officer, "get", detail, 404, url="/api/v1/campaigns/999999/")
    c(officer, "patch", detail, 200, url=url, body={"title": "Covid-19 Kab. Blitar"})
    c(officer, "patch", detail, 400, url=url, body={"validity_minutes": 0})
    c(approver, "patch", detail, 403, url=url, body={"title": "x"})
    c(officer, "post", detail + "submit/", 200, url=url + "submit/")
    c(officer, "post", detail + "submit/", 409, url=url + "submit/")
    c(officer, "patch", detail, 409, url=url, body={"title": "x"})
    c(officer, "post", detail + "approve/", 403, url=url + "approve/", body={"content_hash": "0" * 64})
    c(approver, "post", detail + "approve/", 400, url=url + "approve/", body={"content_hash": "not a hash"})
    c(approver, "post", detail + "approve/", 409, url=url + "approve/", body={"content_hash": "0" * 64})
    content_hash = approver.get(url).json()["content_hash"]
    c(approver, "post", detail + "approve/", 200, url=url + "approve/", body={"content_hash": content_hash})
    c(officer, "post", detail + "pause/", 409, url=url + "pause/")
    c(officer, "post", detail + "resume/", 409, url=url + "resume/")
    c(officer, "post", detail + "schedule/", 400, url=url + "schedule/", body={"schedule": {"kind": "hourly"}})
    c(operator, "post", detail + "schedule/", 403, url=url + "schedule/", body={})
    c(officer, "post", detail + "schedule/", 200, url=url + "schedule/", body={})
    c(officer, "post", detail + "copy/", 201, url=url + "copy/")
    c(approver, "post", detail + "copy/", 403, url=url + "copy/")
    c(officer, "post", detail + "cancel/", 200, url=url + "cancel/", body={"reason": "Salah kirim."})
    c(officer, "post", detail + "cancel/", 409, url=url + "cancel/", body={})
    incomplete = c(officer, "post", "/api/v1/campaigns/", 201, body={"title": "Kosong"}).json()["id"]
    c(officer, "post", detail + "submit/", 400, url=f"/api/v1/campaigns/{incomplete}/submit/")
    pending = c(officer, "post", "/api/v1/campaigns/", 201, body=draft).json()["id"]
    officer.post(f"/api/v1/campaigns/{pending}/submit/")
    reject = f"/api/v1/campaigns/{pending}/reject/"
    c(approver, "post", detail + "reject/", 400, url=reject, body={})
    c(officer, "post", detail + "reject/", 403, url=reject, body={"reason": "Bukan wewenang."})
    c(approver, "post", detail + "reject/", 200, url=reject, body={"reason": "Teks kurang jelas."})
    c(approver, "post", detail + "reject/", 409, url=reject, body={"reason": "Lagi."})
    c(approver, "get", detail, 200, url=f"/api/v1/campaigns/{pending}/")
    assert contract.problems == []


def test_a_sending_campaigns_progress_and_reports_answer_as_documented_in_every_role(contract, clients, api_client_for):
    from tests.operators.scripted import fanned_out_world

    world = fanned_out_world(api_client_for)
    url = f"/api/v1/campaigns/{world['run'].campaign_id}/"
    detail = "/api/v1/campaigns/{id}/"
    c = contract.call
    for role in ("officer", "approver", "admin"):
        client = clients[role]
        c(client, "get", detail, 200, url=url)
        c(client, "get", detail + "runs/", 200, url=url + "runs/")
        c(client, "get", detail + "deliveries/", 200, url=url + "deliveries/?status=submitted")
        c(client, "get", detail + "report.csv", 200, url=url + "report.csv")
        c(client, "get", detail + "audience/", 200, url=url + "audience/")
        c(client, "get", detail + "broadcast/", 200, url=url + "broadcast/")
        c(client, "get", detail + "cap.xml", 200, url=url + "cap.xml")
    for suffix in ("runs/", "deliveries/", "report.csv", "audience/", "broadcast/", "cap.xml"):
        c(clients["operator"], "get", detail + suffix, 403, url=url + suffix)
    officer = clients["officer"]
    c(officer, "get", detail + "deliveries/", 400, url=url + "deliveries/?status=sent")
    c(officer, "get", detail + "report.csv", 400, url=url + "report.csv?run=first")
    c(officer, "get", detail + "report.csv", 404, url=url + "report.csv?run=999999")
    c(clients["admin"], "post", detail + "pause/", 200, url=url + "pause/")
    c(clients["admin"], "post", detail + "pause/", 409, url=url + "pause/")
    c(clients["admin"], "post", detail + "resume/", 200, url=url + "resume/")
    assert contract.problems == []


def test_an_area_broadcast_and_its_reach_reports_answer_as_documented(contract, clients, officer, api_client_for):
    from campaigns.models import Campaign
    from operators import broadcasts
    from operators.models import AreaBroadcast
    from tests.operators.area_scripted import blitar_areas, broadcast_campaign
    from tests.operators.factories import OperatorFactory

    telkomsel = OperatorFactory(
        slug="telkomsel", adapter="scripted_area", base_url="http://sim/telkomsel", user=make_user("tsel", "operator")
    )
    blitar_areas()
    campaign = broadcast_campaign(author=officer)
    run = broadcasts.area_broadcast_run_start(campaign_id=campaign.pk, now=campaign.starts_at + timedelta(seconds=1))
    broadcast = broadcasts.area_broadcast_send(broadcast_id=AreaBroadcast.objects.get(run=run).pk)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    tsel = api_client_for(telkomsel.user)
    reports = "/api/v1/operator/area-broadcast-reports/"
    report = {"broadcast_id": str(broadcast.pk), "handsets_reached": 1234, "at": timezone.now().isoformat()}
    c = contract.call
    c(tsel, "post", reports, 200, body=report)
    c(tsel, "post", reports, 200, body={"reports": [{**report, "handsets_reached": 2000}]})
    c(tsel, "post", reports, 400, body={**report, "at": "2021-07-07T13:00:00"})
    c(tsel, "post", reports, 404, body={**report, "broadcast_id": UNKNOWN_BATCH})
    c(clients["officer"], "post", reports, 403, body=report)
    url, detail = f"/api/v1/campaigns/{campaign.pk}/", "/api/v1/campaigns/{id}/"
    for role in ("officer", "approver", "admin"):
        c(clients[role], "get", detail, 200, url=url)
        c(clients[role], "get", detail + "runs/", 200, url=url + "runs/")
        c(clients[role], "get", detail + "broadcast/", 200, url=url + "broadcast/")
        c(clients[role], "get", detail + "cap.xml", 200, url=url + "cap.xml")
        c(clients[role], "get", detail + "audience/", 409, url=url + "audience/")
        c(clients[role], "get", detail + "report.csv", 409, url=url + "report.csv")
    c(clients["officer"], "post", detail + "pause/", 409, url=url + "pause/")
    assert contract.problems == []


def test_the_operator_api_answers_as_documented(contract, clients, api_client_for):
    from campaigns.models import DispatchBatch
    from operators import services
    from tests.operators.scripted import fanned_out_world

    world = fanned_out_world(api_client_for)
    tsel, ids = world["clients"]["tsel"], world["ids"]["tsel"]
    (batch,) = DispatchBatch.objects.filter(operator=world["operators"]["isat"])
    world["operators"]["isat"].adapter = services.PULL_ADAPTER
    world["operators"]["isat"].save()
    isat = world["clients"]["isat"]
    c = contract.call
    reports = "/api/v1/operator/delivery-reports/"
    done_at = "2021-07-07T13:00:00+07:00"
    delivered = {
        "message_id": ids[0],
        "status": "DELIVERED",
        "operator_ref": "T-1",
        "error_code": "",
        "done_at": done_at,
    }
    c(tsel, "post", reports, 200, body={"reports": [delivered, {"message_id": "1", "status": "EXPIRED"}]})
    c(tsel, "post", reports, 400, body={"reports": [{"message_id": ids[1], "status": "SENT"}]})
    c(tsel, "post", reports, 400, body={"reports": "all delivered"})
    for refused in ("officer", "approver", "admin", "operator"):
        c(clients[refused], "post", reports, 403, body={"reports": [delivered]})
    c(APIClient(), "post", reports, 401, body={"reports": [delivered]})
    listing, claim, ack = (
        "/api/v1/operator/batches/",
        "/api/v1/operator/batches/{batch_id}/claim/",
        "/api/v1/operator/batches/{batch_id}/ack/",
    )
    c(isat, "get", listing, 200, url=listing + "?state=ready")
    c(isat, "get", listing, 400, url=listing + "?state=done")
    c(clients["officer"], "get", listing, 403)
    claimed = c(isat, "post", claim, 200, url=f"/api/v1/operator/batches/{batch.pk}/claim/").json()
    c(isat, "post", claim, 200, url=f"/api/v1/operator/batches/{batch.pk}/claim/")
    c(isat, "post", claim, 409, url=f"/api/v1/operator/batches/{UNKNOWN_BATCH}/claim/")
    c(isat, "post", claim, 404, url="/api/v1/operator/batches/batch-1/claim/")
    acked = f"/api/v1/operator/batches/{batch.pk}/ack/"
    c(isat, "post", ack, 400, url=acked, body={"accepted": 99})
    refusal = {"message_id": claimed["recipients"][0]["message_id"], "reason": "blacklisted"}
    c(isat, "post", ack, 200, url=acked, body={"accepted": 2, "rejected": [refusal]})
    c(isat, "post", ack, 200, url=acked, body={"accepted": 2, "rejected": [refusal]})
    c(isat, "post", ack, 409, url=f"/api/v1/operator/batches/{UNKNOWN_BATCH}/ack/", body={})
    inbound = "/api/v1/operator/inbound/"
    number = world["run"].deliveries.filter(operator=world["operators"]["tsel"]).first().msisdn
    c(tsel, "post", inbound, 200, body={"msisdn": number, "text": "STOP", "received_at": done_at})
    c(tsel, "post", inbound, 200, body={"msisdn": number, "text": "Terima kasih"})
    c(isat, "post", inbound, 403, body={"msisdn": number, "text": "REG"})
    c(tsel, "post", inbound, 400, body={"msisdn": "021 555 1234", "text": "STOP"})
    c(clients["officer"], "post", inbound, 403, body={"msisdn": number, "text": "STOP"})
    assert contract.problems == []


def test_the_audience_api_answers_as_documented_in_every_role(contract, clients):
    from tests.operators.factories import OperatorFactory
    from tests.smsblast.factories import SubscriberFactory, area_tree

    area_tree()
    SubscriberFactory(msisdn="+6281200000001", area_id="35.05.01", operator=OperatorFactory(slug="telkomsel"))
    c = contract.call
    for role in ("officer", "approver", "admin"):
        client = clients[role]
        c(client, "get", "/api/v1/areas/", 200, url="/api/v1/areas/?parent=35.05")
        c(client, "get", "/api/v1/areas/", 200, url="/api/v1/areas/?q=blit")
        c(client, "get", "/api/v1/areas/{code}/", 200, url="/api/v1/areas/35.05.01/")
        c(client, "post", "/api/v1/sms/analyze/", 200, body={"text": "Pakai “masker”", "sender": "PEMKAB-BLITAR"})
        c(client, "post", "/api/v1/audience/preview/", 200, body={"area_codes": ["35.05"], "text": "Halo"})
    for role in ("officer", "admin"):
        c(clients[role], "get", "/api/v1/subscribers/", 200, url="/api/v1/subscribers/?q=0812")
    officer = clients["officer"]
    c(officer, "get", "/api/v1/areas/", 404, url="/api/v1/areas/?parent=35.99")
    c(officer, "get", "/api/v1/areas/", 400, url="/api/v1/areas/?q=blit&limit=many")
    c(officer, "get", "/api/v1/areas/{code}/", 404, url="/api/v1/areas/35.99/")
    c(officer, "get", "/api/v1/subscribers/", 400, url="/api/v1/subscribers/?q=nomor")
    c(officer, "post", "/api/v1/sms/analyze/", 400, body={"text": "x" * 1531})
    c(officer, "post", "/api/v1/audience/preview/", 400, body={"area_codes": ["35.99"]})
    opt_out, opt_in = "/api/v1/subscribers/{msisdn}/opt-out/", "/api/v1/subscribers/{msisdn}/opt-in/"
    c(officer, "post", opt_out, 200, url="/api/v1/subscribers/+6281200000001/opt-out/")
    c(officer, "post", opt_in, 200, url="/api/v1/subscribers/+6281200000001/opt-in/")
    c(officer, "post", opt_in, 404, url="/api/v1/subscribers/+6281200000002/opt-in/")
    c(officer, "post", opt_out, 400, url="/api/v1/subscribers/0215551234/opt-out/")
    c(clients["approver"], "post", opt_out, 403, url="/api/v1/subscribers/+6281200000001/opt-out/")
    for refused in ("approver", "operator"):
        c(clients[refused], "get", "/api/v1/subscribers/", 403)
        c(clients[refused], "get", "/api/v1/subscribers/imports/", 403)
    c(clients["operator"], "post", "/api/v1/sms/analyze/", 403, body={"text": "Halo"})
    assert contract.problems == []


def test_subscriber_imports_answer_as_documented(contract, clients):
    from tests.smsblast.factories import area_tree

    area_tree()
    officer, imports = clients["officer"], "/api/v1/subscribers/imports/"
    c = contract.call
    rows = b"msisdn,area\n081234567890,35.05.01\nbukan nomor,35.05.01\n"
    upload = SimpleUploadedFile("warga.csv", rows, content_type="text/csv")
    job = c(officer, "post", imports, 202, body={"file": upload}, format="multipart").json()
    c(officer, "post", imports, 400, body={}, format="multipart")
    c(clients["approver"], "post", imports, 403, body={}, format="multipart")
    c(officer, "get", imports, 200)
    c(clients["admin"], "get", imports, 200)
    c(officer, "get", imports + "{id}/", 200, url=f"{imports}{job['id']}/")
    c(officer, "get", imports + "{id}/", 404, url=f"{imports}999999/")
    # A worker reads its rows: until it has, nothing is rejected yet.
    c(officer, "get", imports + "{id}/rejected.csv", 404, url=f"{imports}{job['id']}/rejected.csv")
    c(officer, "get", imports + "{id}/rejected.csv", 404, url=f"{imports}999999/rejected.csv")
    c(officer, "post", imports + "{id}/resume/", 409, url=f"{imports}{job['id']}/resume/")
    assert contract.problems == []


def test_cap_imports_answer_as_documented(contract, clients):
    from tests.campaigns.test_cap import CANCEL, GEOCODES
    from tests.operators.area_scripted import blitar_areas
    from tests.operators.factories import OperatorFactory

    blitar_areas()
    OperatorFactory(slug="telkomsel")
    officer, cap = clients["officer"], "/api/v1/cap/"
    alert = GEOCODES.format(description="Mulai 3 Juli 2021.").encode()
    c = contract.call
    c(officer, "post", cap, 201, body={"file": SimpleUploadedFile("a.xml", alert)}, format="multipart")
    c(officer, "post", cap, 409, body=alert, content_type="application/cap+xml")
    c(officer, "post", cap, 200, body=CANCEL.encode(), content_type="application/cap+xml")
    c(officer, "post", cap, 400, body=b"<alert/>", content_type="application/cap+xml")
    c(officer, "post", cap, 400, body={}, format="multipart")
    c(officer, "post", cap, 413, body=b"<" * (2 * 1024 * 1024), content_type="application/cap+xml")
    c(clients["approver"], "post", cap, 403, body=alert, content_type="application/cap+xml")
    assert contract.problems == []


def test_refusals_before_any_view_answer_as_documented(contract, officer, api_client_for, settings):
    c = contract.call
    c(APIClient(), "get", "/api/v1/campaigns/", 401)
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    c(stranger, "post", "/api/v1/sms/analyze/", 401, body={"text": "Halo"})
    # A signed-in page session must send its CSRF token to write.
    session = client_for(officer)
    session.handler.enforce_csrf_checks = True
    c(session, "post", "/api/v1/sms/analyze/", 403, body={"text": "Halo"}, content_type="application/json")
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    c(api_client_for(officer), "post", "/api/v1/sms/analyze/", 413, body={"text": "x" * 2000})
    assert contract.problems == []
