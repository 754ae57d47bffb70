"""The operator API under hostile input: every malformed request gets a 4xx with a `detail`, and changes nothing."""

import json

import pytest
from django.test import Client

from campaigns.models import Delivery, DispatchBatch
from operators import services
from smsblast.models import AuditEvent, Subscriber
from tests.operators.scripted import ScriptedAdapter, fanned_out_world

pytestmark = pytest.mark.django_db

REPORTS_URL = "/api/v1/operator/delivery-reports/"
BATCHES_URL = "/api/v1/operator/batches/"
INBOUND_URL = "/api/v1/operator/inbound/"
REACH_URL = "/api/v1/operator/area-broadcast-reports/"
MINE = "<mine>"  # stands for one of the caller's own message ids


@pytest.fixture(autouse=True)
def dispatch_redis(settings, redis_client, redis_url, private_broker):
    settings.REDIS_URL = redis_url
    ScriptedAdapter.reset()


@pytest.fixture
def world(api_client_for):
    """A run fanned out to two operators (3 recipients each); tsel pulls its batch, each has its own client."""
    world = fanned_out_world(api_client_for)
    tsel = world["operators"]["tsel"]
    tsel.adapter = services.PULL_ADAPTER
    tsel.save(update_fields=["adapter"])
    for client in world["clients"].values():
        client.raise_request_exception = False
    (batch,) = DispatchBatch.objects.filter(operator=tsel)
    return {**world, "batch": batch}


def _snapshot():
    """Return what a refused request must leave as it was: every delivery, batch and audit event."""
    deliveries = sorted(Delivery.objects.values_list("pk", "status", "operator_ref", "error_code", "done_at", "reason"))
    batches = sorted(DispatchBatch.objects.values_list("pk", "status", "attempts", "accepted_count"))
    return deliveries, batches, AuditEvent.objects.count(), Subscriber.objects.count()


def _with_mine(value, mine):
    """Return `value` with every MINE replaced by the caller's own message id."""
    if value == MINE:
        return mine
    if isinstance(value, list):
        return [_with_mine(item, mine) for item in value]
    if isinstance(value, dict):
        return {key: _with_mine(item, mine) for key, item in value.items()}
    return value


def _report(**fields):
    return {"reports": [{"message_id": MINE, "status": "DELIVERED", **fields}]}


MALFORMED_REPORTS = {
    "body is null": None,
    "body is a number": 5,
    "body is a string": "reports",
    "body is a list of reports": [{"message_id": MINE, "status": "DELIVERED"}],
    "reports is null": {"reports": None},
    "reports is an object": {"reports": {"message_id": MINE, "status": "DELIVERED"}},
    "reports is a string": {"reports": "[]"},
    "a report is a list": {"reports": [[MINE, "DELIVERED"]]},
    "a report is null": {"reports": [None]},
    "a report is a string": {"reports": [MINE]},
    "status is a list": _report(status=["DELIVERED"]),
    "status is null": _report(status=None),
    "status is a number": _report(status=2),
    "status is unknown": _report(status="READ"),
    "status has a NUL": _report(status="DELIVERED\x00"),
    "message_id is null": {"reports": [{"message_id": None, "status": "DELIVERED"}]},
    "message_id is a list": {"reports": [{"message_id": [MINE], "status": "DELIVERED"}]},
    "message_id is an object": {"reports": [{"message_id": {"id": MINE}, "status": "DELIVERED"}]},
    "message_id is a boolean": {"reports": [{"message_id": True, "status": "DELIVERED"}]},
    "operator_ref is a list": _report(operator_ref=["T-1"]),
    "operator_ref is an object": _report(operator_ref={"ref": "T-1"}),
    "error_code is a list": _report(error_code=["ABSENT"]),
    "operator_ref has a NUL": _report(operator_ref="T\x001"),
    "error_code has a NUL": _report(error_code="\x00"),
    "done_at is a number": _report(done_at=1_625_600_000),
    "done_at is a list": _report(done_at=["2021-07-07T13:00:00+07:00"]),
    "done_at is naive": _report(done_at="2021-07-07T13:00:00"),
    "done_at is garbage": _report(done_at="kemarin"),
    "done_at is a date alone": _report(done_at="2021-07-07"),
    "done_at has an impossible month": _report(done_at="2021-13-01T00:00:00+07:00"),
    "done_at is before year 1 in UTC": _report(done_at="0001-01-01T00:00:00+14:00"),
    "done_at is past year 9999 in UTC": _report(done_at="9999-12-31T23:59:59-12:00"),
    "a bad report after a good one": {
        "reports": [{"message_id": MINE, "status": "DELIVERED"}, {"message_id": MINE, "status": "READ"}]
    },
    "10,001 reports": {"reports": [{"message_id": MINE, "status": "DELIVERED"}] * 10_001},
}


@pytest.mark.parametrize("body", MALFORMED_REPORTS.values(), ids=MALFORMED_REPORTS.keys())
def test_a_malformed_report_request_is_refused_with_a_detail_and_applies_nothing(world, body):
    before = _snapshot()

    response = world["clients"]["tsel"].post(
        REPORTS_URL, json.dumps(_with_mine(body, world["ids"]["tsel"][0])), content_type="application/json"
    )

    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert _snapshot() == before


RAW_BODIES = {
    "not UTF-8": (b'{"reports": [{"message_id": "1", "status": "DELIVERED\xff"}]}', "application/json", 400),
    "UTF-8 with a byte order mark and junk": (b"\xef\xbb\xbf{", "application/json", 400),
    "truncated": (b'{"reports": [', "application/json", 400),
    "NaN": (b'{"reports": [{"message_id": NaN, "status": "DELIVERED"}]}', "application/json", 400),
    "an integer of 5,000 digits": (b'{"reports": [{"message_id": ' + b"9" * 5000 + b"}]}", "application/json", 400),
    "nested 100,000 deep": (b'{"reports": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json", 400),
    "gzip bytes sent as JSON": (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", "application/json", 400),
    "a form": (b"reports=1", "application/x-www-form-urlencoded", 415),
    "multipart": (b"--b\r\n\r\n--b--\r\n", "multipart/form-data; boundary=b", 415),
    "plain text": (b'{"reports": []}', "text/plain", 415),
    "XML": (b"<reports/>", "application/xml", 415),
}


@pytest.mark.parametrize(("body", "content_type", "expected"), RAW_BODIES.values(), ids=RAW_BODIES.keys())
def test_a_report_body_that_is_not_usable_json_is_refused_with_a_detail(world, body, content_type, expected):
    before = _snapshot()

    response = world["clients"]["tsel"].post(REPORTS_URL, body, content_type=content_type)

    assert response.status_code == expected, response.content
    assert response.json()["detail"]
    assert _snapshot() == before


def test_a_gzip_body_is_not_decompressed_so_a_bomb_costs_nothing(world):
    import gzip

    bomb = gzip.compress(b" " * 10_000_000)  # ten megabytes of spaces in about ten kilobytes
    before = _snapshot()

    response = world["clients"]["tsel"].post(
        REPORTS_URL, bomb, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert _snapshot() == before


def test_reports_on_other_operators_and_unknown_ids_are_rejected_one_by_one_and_change_nothing_of_theirs(world):
    theirs = world["ids"]["isat"]
    odd = [*theirs, "0", "-1", "1e3", "\u0661", "\u202e1", "1\x00", "9" * 400, 10**30]
    before = sorted(Delivery.objects.filter(operator=world["operators"]["isat"]).values_list("pk", "status"))

    response = world["clients"]["tsel"].post(
        REPORTS_URL, {"reports": [{"message_id": odd_id, "status": "DELIVERED"} for odd_id in odd]}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["applied"] == 0
    assert sorted(item["message_id"] for item in response.json()["rejected"]) == sorted(str(odd_id) for odd_id in odd)
    assert sorted(Delivery.objects.filter(operator=world["operators"]["isat"]).values_list("pk", "status")) == before


def test_a_rejected_message_id_comes_back_as_the_operator_wrote_it(world):
    theirs = world["ids"]["isat"][0]
    sent = ["0000321", f"00{theirs}", theirs, 321]

    response = world["clients"]["tsel"].post(
        REPORTS_URL,
        {"reports": [{"message_id": message_id, "status": "DELIVERED"} for message_id in sent]},
        format="json",
    )

    assert response.status_code == 200
    assert sorted(item["message_id"] for item in response.json()["rejected"]) == sorted(
        ["0000321", f"00{theirs}", theirs, "321"]
    )


def test_a_long_operator_ref_and_error_code_are_cut_to_their_columns(world):
    mine = world["ids"]["tsel"][0]
    assert world["clients"]["tsel"].post(f"/api/v1/operator/batches/{world['batch'].pk}/claim/").status_code == 200
    body = {"reports": [{"message_id": mine, "status": "UNDELIVERED", "operator_ref": "R" * 1_000_000,
                         "error_code": "\u202e" * 1000}]}  # fmt: skip

    response = world["clients"]["tsel"].post(REPORTS_URL, body, format="json")

    assert response.status_code == 200
    delivery = Delivery.objects.get(pk=mine)
    assert (delivery.status, delivery.operator_ref, delivery.error_code) == ("undelivered", "R" * 100, "\u202e" * 40)


AUTHORIZATION = {
    "missing": None,
    "empty": "",
    "scheme only": "Bearer",
    "scheme and a space": "Bearer ",
    "two tokens": "Bearer one two",
    "unknown token": "Bearer not-a-token",
    "a NUL": "Bearer abc\x00def",
    "Latin-1 bytes": "Bearer \xe9\xe8",
    "a megabyte of token": "Bearer " + "a" * 1_000_000,
    "Basic credentials": "Basic b3BlcmF0b3I6cGFzc3dvcmQ=",
}


@pytest.mark.parametrize("header", AUTHORIZATION.values(), ids=AUTHORIZATION.keys())
@pytest.mark.parametrize(
    ("method", "path"),
    [("post", REPORTS_URL), ("get", BATCHES_URL + "?state=ready"), ("post", INBOUND_URL), ("post", REACH_URL)],
)
def test_a_missing_or_malformed_authorization_is_refused_with_401_and_a_detail(world, header, method, path):
    client = Client(raise_request_exception=False)
    extra = {} if header is None else {"HTTP_AUTHORIZATION": header}
    before = _snapshot()

    if method == "get":
        response = client.get(path, **extra)
    else:
        response = client.post(path, "{}", content_type="application/json", **extra)

    assert response.status_code == 401
    assert response.json()["detail"]
    assert _snapshot() == before


def test_a_revoked_token_is_refused_even_with_a_well_formed_request(world):
    from smsblast.authentication import api_token_revoke
    from smsblast.models import ApiToken

    for token in ApiToken.objects.filter(user=world["operators"]["tsel"].user):
        api_token_revoke(token=token, actor=None)

    response = world["clients"]["tsel"].post(REPORTS_URL, {"reports": []}, format="json")

    assert response.status_code == 401
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "query",
    [
        "state=sent",
        "state=ready&state=sent",
        "state=%00",
        "state=ready&limit=-1&offset=-1",
        "state=ready&limit=1000000000",
        "state=ready&offset=99999999999999999999999",
        "state=ready&limit=1e3&offset=abc",
        "state=ready&ordering=-operator__api_key",
        "state=ready&operator=isat",
    ],
)
def test_the_ready_list_never_fails_and_lists_only_the_callers_batches(world, query):
    response = world["clients"]["tsel"].get(f"{BATCHES_URL}?{query}")

    assert response.status_code in (200, 400), response.content
    if response.status_code == 400:
        assert response.json()["detail"]
    else:
        assert {row["batch_id"] for row in response.json()["results"]} <= {str(world["batch"].pk)}


@pytest.mark.parametrize(
    ("batch_id", "expected"),
    [("not-a-uuid", 404), ("00000000-0000-0000-0000-000000000000", 409), ("%ED%A0%80", 404), ("theirs", 409)],
)
def test_claiming_a_batch_that_is_not_the_callers_is_refused_with_a_detail(world, batch_id, expected):
    if batch_id == "theirs":
        batch_id = str(DispatchBatch.objects.get(operator=world["operators"]["isat"]).pk)
    before = _snapshot()

    response = world["clients"]["tsel"].post(f"{BATCHES_URL}{batch_id}/claim/")

    assert response.status_code == expected
    assert response.json()["detail"]
    assert _snapshot() == before


MALFORMED_ACKS = {
    "a list": [],
    "a string": "accepted",
    "null": None,
    "accepted as a string": {"accepted": "3"},
    "accepted as a float": {"accepted": 1.5},
    "accepted as a boolean": {"accepted": True},
    "accepted negative": {"accepted": -1},
    "accepted past the batch": {"accepted": 10**30},
    "rejected as a string": {"rejected": "all"},
    "rejected as an object": {"rejected": {"message_id": MINE}},
    "rejected holding a number": {"rejected": [1]},
    "rejected holding a list": {"rejected": [[MINE, "barred"]]},
    "accepting a message it refuses": {"accepted": 3, "rejected": [{"message_id": MINE, "reason": "barred"}]},
    "a refused message_id as a list": {"rejected": [{"message_id": [MINE], "reason": "barred"}]},
    "a refusal's reason as an object": {"rejected": [{"message_id": MINE, "reason": {"code": 1}}]},
    "a refusal's reason as a boolean": {"rejected": [{"message_id": MINE, "reason": True}]},
}


@pytest.mark.parametrize("body", MALFORMED_ACKS.values(), ids=MALFORMED_ACKS.keys())
def test_a_malformed_ack_is_refused_with_a_detail_and_the_batch_stays_claimed(world, body):
    client, batch = world["clients"]["tsel"], world["batch"]
    assert client.post(f"{BATCHES_URL}{batch.pk}/claim/").status_code == 200
    before = _snapshot()

    response = client.post(
        f"{BATCHES_URL}{batch.pk}/ack/",
        json.dumps(_with_mine(body, world["ids"]["tsel"][0])),
        content_type="application/json",
    )

    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert _snapshot() == before


def test_an_ack_of_another_operators_batch_is_refused_and_changes_nothing(world):
    theirs = DispatchBatch.objects.get(operator=world["operators"]["isat"])
    before = _snapshot()

    response = world["clients"]["tsel"].post(f"{BATCHES_URL}{theirs.pk}/ack/", {"accepted": 3}, format="json")

    assert response.status_code == 409
    assert response.json()["detail"]
    assert _snapshot() == before


def test_an_ack_refusing_forty_thousand_ids_not_in_the_batch_accepts_the_batch_once(world):
    client, batch = world["clients"]["tsel"], world["batch"]
    assert client.post(f"{BATCHES_URL}{batch.pk}/claim/").status_code == 200
    mine = world["ids"]["tsel"][0]
    rejected = [{"message_id": str(10_000_000 + n), "reason": "barred"} for n in range(40_000)]

    rejected.append({"message_id": mine, "reason": "barred"})
    response = client.post(f"{BATCHES_URL}{batch.pk}/ack/", {"rejected": rejected}, format="json")

    assert response.status_code == 200
    batch.refresh_from_db()
    assert (batch.status, batch.accepted_count) == ("accepted", 2)
    assert Delivery.objects.get(pk=mine).status == "rejected"


MALFORMED_INBOUND = {
    "a list": [],
    "msisdn missing": {"text": "STOP"},
    "msisdn a list": {"msisdn": ["081234567890"], "text": "STOP"},
    "msisdn an object": {"msisdn": {"n": "081234567890"}, "text": "STOP"},
    "msisdn a lone surrogate": {"msisdn": "\ud800", "text": "STOP"},
    "msisdn Arabic-Indic digits": {"msisdn": "\u0660\u0668\u0661\u0662" * 3, "text": "STOP"},
    "msisdn a landline": {"msisdn": "0215551234", "text": "STOP"},
    "msisdn a megabyte": {"msisdn": "0812" * 250_000, "text": "STOP"},
    "text with a NUL": {"msisdn": "081234567890", "text": "STOP\x00"},
    "text a lone surrogate": {"msisdn": "081234567890", "text": "STOP\udc00"},
    "text of a megabyte": {"msisdn": "081234567890", "text": "STOP " * 200_000},
    "received_at naive": {"msisdn": "081234567890", "text": "STOP", "received_at": "2021-07-07T13:00:00"},
    "received_at garbage": {"msisdn": "081234567890", "text": "STOP", "received_at": "tadi"},
    "received_at a number": {"msisdn": "081234567890", "text": "STOP", "received_at": 1_625_600_000},
    "received_at past year 9999": {"msisdn": "081234567890", "text": "STOP", "received_at": "9999-12-31T23:59-12:00"},
}


@pytest.mark.parametrize("body", MALFORMED_INBOUND.values(), ids=MALFORMED_INBOUND.keys())
def test_a_malformed_inbound_message_is_refused_with_a_detail_and_opts_nobody_out(world, body):
    before = _snapshot()

    response = world["clients"]["tsel"].post(INBOUND_URL, json.dumps(body), content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert _snapshot() == before


@pytest.mark.parametrize(
    "received_at", ["tadi", 1_625_600_000, "2021-07-07T13:00:00", "2021-13-01T00:00:00+07:00", ["x"], "9" * 41]
)
def test_an_inbound_message_whose_received_at_is_not_a_time_is_refused_naming_the_field(world, received_at):
    body = {"msisdn": "081234567890", "text": "STOP", "received_at": received_at}

    response = world["clients"]["tsel"].post(INBOUND_URL, body, format="json")

    assert response.status_code == 400
    assert "received_at" in response.json()["errors"] and "received_at" in response.json()["detail"]


MALFORMED_REACH = {
    "a list": [],
    "reports null": {"reports": None},
    "reports empty": {"reports": []},
    "reports an object": {"reports": {"broadcast_id": "x"}},
    "1,001 reports": {"reports": [{"broadcast_id": "x", "handsets_reached": 1, "at": "x"}] * 1001},
    "broadcast_id a lone surrogate": {"broadcast_id": "\ud800", "handsets_reached": 1, "at": "2021-07-07T13:00Z"},
    "broadcast_id a list": {"broadcast_id": ["x"], "handsets_reached": 1, "at": "2021-07-07T13:00Z"},
    "handsets_reached negative": {
        "broadcast_id": "00000000-0000-0000-0000-000000000000",
        "handsets_reached": -1,
        "at": "2021-07-07T13:00Z",
    },
    "handsets_reached past the column": {
        "broadcast_id": "00000000-0000-0000-0000-000000000000",
        "handsets_reached": 2**31,
        "at": "2021-07-07T13:00Z",
    },
    "handsets_reached a string": {
        "broadcast_id": "00000000-0000-0000-0000-000000000000",
        "handsets_reached": "many",
        "at": "2021-07-07T13:00Z",
    },
    "at garbage": {"broadcast_id": "00000000-0000-0000-0000-000000000000", "handsets_reached": 1, "at": "tadi"},
    # Taken as the server's local time, a time without its offset would be recorded hours off.
    "at without its offset": {
        "broadcast_id": "00000000-0000-0000-0000-000000000000",
        "handsets_reached": 1,
        "at": "2021-07-07T13:00:00",
    },
    "at past year 9999": {
        "broadcast_id": "00000000-0000-0000-0000-000000000000",
        "handsets_reached": 1,
        "at": "9999-12-31T23:59-12:00",
    },
}


@pytest.mark.parametrize("body", MALFORMED_REACH.values(), ids=MALFORMED_REACH.keys())
def test_a_malformed_reach_report_is_refused_with_a_detail(world, body):
    before = _snapshot()

    response = world["clients"]["tsel"].post(REACH_URL, json.dumps(body), content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert _snapshot() == before
