"""The http_batch_v1 adapter's area-broadcast calls against the real simulator, and the simulator's reach reports."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from operators import signing
from operators.gateways.base import OutboundAreaBroadcast, Outcome, get_adapter
from operators.gateways.http_batch_v1 import area_broadcast_body, classify_area_broadcast
from operators.simulator import OperatorBehaviour, OperatorConfig, SimulatorServer

GEOMETRY = {"type": "Polygon", "coordinates": [[[112.0, -8.0], [112.4, -8.0], [112.4, -8.3], [112.0, -8.0]]]}


class _Receiver(BaseHTTPRequestHandler):
    """Collect what is posted to it (reach reports, or the adapter's requests) and answer 200."""

    def do_POST(self):  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append((self.path, dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def simulator():
    behaviour = OperatorBehaviour(broadcast_arrivals_per_second=0, reach_report_interval_ms=50)
    config = OperatorConfig(api_key="key-tsel", signing_secret="secret-tsel", report_token="tok", behaviour=behaviour)
    with SimulatorServer({"telkomsel": config}, port=0) as server:
        yield server


def _broadcast(base_url: str, callback_url: str, **changes) -> OutboundAreaBroadcast:
    now = datetime.now(UTC)
    fields = {
        "broadcast_id": "6f1c1d8e-0000-4000-8000-000000000001",
        "campaign_id": 7,
        "sender": "PEMKAB",
        "text": "Tetap pakai masker.",
        "encoding": "GSM7",
        "segments": 1,
        "area_codes": ["35.05"],
        "geometry": GEOMETRY,
        "starts_at": now.isoformat(),
        "ends_at": (now + timedelta(seconds=10)).isoformat(),
        "repeat_policy": "once_per_window",
        "callback_url": callback_url,
        "base_url": base_url,
        "api_key": "key-tsel",
        "signing_secret": "secret-tsel",
        "estimated_handsets": 10_000,
    }
    return OutboundAreaBroadcast(**{**fields, **changes})


def _wait(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_the_request_is_signed_and_carries_the_contract_fields(receiver):
    base_url = f"http://127.0.0.1:{receiver.server_port}/telkomsel"
    broadcast = _broadcast(base_url, "http://cb/")
    assert get_adapter("http_batch_v1").send_area_broadcast(broadcast).outcome == Outcome.ACCEPTED
    path, headers, body = receiver.received[0]
    assert path == "/telkomsel/v1/area-broadcasts"
    assert headers["Authorization"] == "Bearer key-tsel"
    assert headers["Idempotency-Key"] == broadcast.broadcast_id
    assert signing.verify(
        "secret-tsel", headers["X-Smsblast-Timestamp"], body, headers["X-Smsblast-Signature"], now=time.time()
    )
    document = json.loads(body)
    assert {"broadcast_id", "text", "encoding", "sender", "area", "starts_at", "ends_at", "callback_url"} <= set(
        document
    )
    assert document["area"] == {"codes": ["35.05"], "geometry": GEOMETRY}
    assert body == area_broadcast_body(broadcast)


def test_the_simulator_acknowledges_once_reports_growing_reach_and_honours_cancel(simulator, receiver):
    callback = f"http://127.0.0.1:{receiver.server_port}/reach/"
    broadcast = _broadcast(f"{simulator.url}/telkomsel", callback)
    adapter = get_adapter("http_batch_v1")
    first = adapter.send_area_broadcast(broadcast)
    again = adapter.send_area_broadcast(broadcast)
    assert first.outcome == again.outcome == Outcome.ACCEPTED
    assert first.operator_ref == again.operator_ref  # the same broadcast, not a second one
    assert simulator.stats()["telkomsel"]["area_broadcasts"] == 1

    _wait(lambda: len(receiver.received) >= 3)
    reports = [json.loads(body) for _, _, body in receiver.received]
    assert all(r["broadcast_id"] == broadcast.broadcast_id for r in reports)
    counts = [r["handsets_reached"] for r in reports]
    assert counts == sorted(counts) and counts[-1] > 0  # scaled from the estimate: about 1,000 a second
    assert receiver.received[0][1]["Authorization"] == "Bearer tok"

    cancel = adapter.cancel_area_broadcast(broadcast)
    assert cancel.outcome == Outcome.ACCEPTED
    entry = simulator.stats()["telkomsel"]["broadcasts"][broadcast.broadcast_id]
    assert entry["cancelled"] is True
    _wait(lambda: simulator.stats()["telkomsel"]["broadcasts"][broadcast.broadcast_id]["finished"])
    final = simulator.stats()["telkomsel"]["broadcasts"][broadcast.broadcast_id]["reached"]
    time.sleep(0.2)
    assert simulator.stats()["telkomsel"]["broadcasts"][broadcast.broadcast_id]["reached"] == final  # stopped
    assert json.loads(receiver.received[-1][2])["handsets_reached"] == final


def test_an_operator_told_to_fail_answers_retry_then_recovers(simulator):
    broadcast = _broadcast(f"{simulator.url}/telkomsel", "")
    adapter = get_adapter("http_batch_v1")
    simulator.operators["telkomsel"].control({"outage_seconds": 1.0})
    failed = adapter.send_area_broadcast(broadcast)
    assert (failed.outcome, failed.status_code, failed.retry_after) == (Outcome.RETRY, 503, 1.0)
    time.sleep(1.05)
    assert adapter.send_area_broadcast(broadcast).outcome == Outcome.ACCEPTED


def test_wrong_credentials_unknown_cancels_and_bad_windows_fail_for_good(simulator):
    adapter = get_adapter("http_batch_v1")
    forged = _broadcast(f"{simulator.url}/telkomsel", "", signing_secret="wrong")
    assert (adapter.send_area_broadcast(forged).outcome, adapter.send_area_broadcast(forged).status_code) == (
        Outcome.FAILED,
        401,
    )
    unknown = adapter.cancel_area_broadcast(_broadcast(f"{simulator.url}/telkomsel", ""))
    assert (unknown.outcome, unknown.status_code) == (Outcome.FAILED, 404)
    backwards = _broadcast(f"{simulator.url}/telkomsel", "", ends_at="2020-01-01T00:00:00+07:00")
    refused = adapter.send_area_broadcast(backwards)
    assert (refused.outcome, refused.status_code) == (Outcome.FAILED, 400)
    assert "ends_at" in refused.error


def test_a_broadcast_without_a_contract_encoding_is_refused_for_good(simulator):
    adapter = get_adapter("http_batch_v1")
    refused = adapter.send_area_broadcast(_broadcast(f"{simulator.url}/telkomsel", "", encoding="gsm"))
    assert (refused.outcome, refused.status_code) == (Outcome.FAILED, 400)
    assert refused.error == 'HTTP 400: encoding must be "GSM7" or "UCS2".'


def _answer(status: int, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, body
    return response


def test_an_operators_answer_holding_nul_characters_is_read_without_them():
    accepted = classify_area_broadcast(_answer(202, b'{"operator_ref": "CB-\\u00001"}'))
    assert (accepted.outcome, accepted.operator_ref) == (Outcome.ACCEPTED, "CB-1")
    refused = classify_area_broadcast(_answer(400, b'{"error": "bad\\u0000 area"}'))
    assert (refused.outcome, refused.error) == (Outcome.FAILED, "HTTP 400: bad area")
    garbled = classify_area_broadcast(_answer(503, b"down\x00"))
    assert garbled.error == "HTTP 503: down"


def test_an_acknowledgement_cut_off_mid_body_is_a_retry_not_a_failure():
    # The operator may be broadcasting already: failing would stop us from ever sending its cancel.
    class CutOff(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - the stdlib's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(202)
            self.send_header("Content-Length", "200")
            self.end_headers()
            self.wfile.write(b'{"operator_ref": "CB-')
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), CutOff)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = get_adapter("http_batch_v1").send_area_broadcast(_broadcast(url, f"{url}/reports"))
    finally:
        server.shutdown()
        server.server_close()
    assert result.outcome == Outcome.RETRY


def test_an_estimate_that_is_not_a_finite_number_is_refused_and_reach_reports_go_on(simulator, receiver):
    adapter = get_adapter("http_batch_v1")
    callback = f"http://127.0.0.1:{receiver.server_port}/reach/"
    endless = _broadcast(f"{simulator.url}/telkomsel", callback, estimated_handsets=float("inf"))
    refused = adapter.send_area_broadcast(endless)
    assert (refused.outcome, refused.status_code) == (Outcome.FAILED, 400)
    assert "estimated_handsets" in refused.error
    # A finite but huge estimate over half a second would be an infinite rate.
    now = datetime.now(UTC)
    huge = _broadcast(
        f"{simulator.url}/telkomsel",
        callback,
        broadcast_id="6f1c1d8e-0000-4000-8000-000000000003",
        estimated_handsets=1e308,
        starts_at=now.isoformat(),
        ends_at=(now + timedelta(seconds=0.5)).isoformat(),
    )
    assert adapter.send_area_broadcast(huge).outcome == Outcome.ACCEPTED
    sound = _broadcast(f"{simulator.url}/telkomsel", callback, broadcast_id="6f1c1d8e-0000-4000-8000-000000000002")
    assert adapter.send_area_broadcast(sound).outcome == Outcome.ACCEPTED
    _wait(lambda: any(json.loads(body)["broadcast_id"] == sound.broadcast_id for _, _, body in receiver.received))


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_any_2xx_answer_acknowledges_an_area_broadcast_as_it_accepts_a_batch(status):
    result = classify_area_broadcast(_answer(status, b"" if status == 204 else b'{"operator_ref": "CB-1"}'))
    assert result.outcome == Outcome.ACCEPTED
