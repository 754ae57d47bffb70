"""The http_batch_v1 adapter against the real operator simulator over HTTP on localhost."""

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from operators import signing
from operators.gateways.base import OutboundBatch, OutboundMessage, Outcome, get_adapter, registered_names
from operators.gateways.http_batch_v1 import (
    MAX_RETRY_AFTER_SECONDS,
    HttpBatchV1Adapter,
    batch_body,
    batch_headers,
    retry_after_seconds,
)
from operators.simulator import OperatorConfig, SimulatorServer
from smsblast.devtools import free_port

KEY, SECRET = "key-isat", "secret-isat"


@pytest.fixture
def simulator():
    with SimulatorServer({"indosat": OperatorConfig(KEY, SECRET)}, port=0) as server:
        yield server


def control(simulator, **changes):
    simulator.operators["indosat"].control(changes)


def outbound(base_url: str, *, size: int = 3, first: int = 0, batch_id: str | None = None, **overrides):
    fields = {
        "batch_id": batch_id or str(uuid.uuid4()),
        "campaign_id": 7,
        "campaign_title": "Info vaksin",
        "sender": "PEMKAB-BLTR",
        "text": "Vaksinasi “gratis” hari ini",
        "encoding": "UCS2",
        "segments": 1,
        "priority": "urgent",
        "expires_at": "2030-01-01T00:00:00+00:00",
        "callback_url": "http://127.0.0.1:8000/api/v1/operator/delivery-reports/",
        "recipients": [OutboundMessage(str(i), f"+6285612{i:06d}") for i in range(first, first + size)],
        "base_url": base_url,
        "api_key": KEY,
        "signing_secret": SECRET,
    }
    fields.update(overrides)
    return OutboundBatch(**fields)


def sim_url(simulator):
    return f"{simulator.url}/indosat"


def test_adapter_is_registered_under_its_name():
    assert "http_batch_v1" in registered_names()
    assert isinstance(get_adapter("http_batch_v1"), HttpBatchV1Adapter)


def test_body_follows_the_batch_contract():
    batch = outbound("http://operator.example/api", size=2)
    document = json.loads(batch_body(batch))
    assert document == {
        "batch_id": batch.batch_id,
        "campaign": {"id": 7, "title": "Info vaksin"},
        "sender": "PEMKAB-BLTR",
        "text": "Vaksinasi “gratis” hari ini",
        "encoding": "UCS2",
        "segments": 1,
        "priority": "urgent",
        "expires_at": "2030-01-01T00:00:00+00:00",
        "callback_url": "http://127.0.0.1:8000/api/v1/operator/delivery-reports/",
        "recipients": [
            {"message_id": "0", "msisdn": "+6285612000000"},
            {"message_id": "1", "msisdn": "+6285612000001"},
        ],
    }


def test_headers_carry_key_idempotency_key_and_a_signature_of_the_exact_body():
    batch = outbound("http://operator.example/api")
    body = batch_body(batch)
    headers = batch_headers(batch, body, timestamp=1_700_000_000)
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["Idempotency-Key"] == batch.batch_id
    assert headers["X-Smsblast-Timestamp"] == "1700000000"
    assert signing.verify(SECRET, "1700000000", body, headers["X-Smsblast-Signature"], now=1_700_000_000)


def test_accepted_batch_reports_counts_and_rejected_messages(simulator):
    batch = outbound(sim_url(simulator), size=3)
    batch.recipients.append(OutboundMessage("bad", "+1555"))
    result = get_adapter("http_batch_v1").send_batch(batch)
    assert result.outcome == Outcome.ACCEPTED
    assert result.accepted == 3
    assert result.rejected == [("bad", "invalid msisdn")]
    assert result.status_code == 202


def test_resending_an_accepted_batch_is_answered_from_the_first_answer_without_counting_again(simulator):
    adapter = get_adapter("http_batch_v1")
    batch = outbound(sim_url(simulator), size=4)
    first, again = adapter.send_batch(batch), adapter.send_batch(batch)
    assert first == again
    counted = simulator.stats()["indosat"]
    assert (counted["batches"], counted["messages"], counted["duplicates"]) == (1, 4, 0)


def test_throttling_429_is_a_retry_with_the_operators_retry_after(simulator):
    control(simulator, throttle_sps=1500)
    adapter = get_adapter("http_batch_v1")
    results = [adapter.send_batch(outbound(sim_url(simulator), size=1000)) for _ in range(3)]
    throttled = [result for result in results if result.status_code == 429]
    assert throttled
    assert all(result.outcome == Outcome.RETRY and result.retry_after >= 1 for result in throttled)


def test_server_errors_are_retried_and_the_retry_with_the_same_batch_id_lands_once(simulator):
    adapter = get_adapter("http_batch_v1")
    batch = outbound(sim_url(simulator), size=5)
    control(simulator, error_rate=1.0)
    failed = adapter.send_batch(batch)
    assert (failed.outcome, failed.status_code) == (Outcome.RETRY, 500)
    control(simulator, error_rate=0.0)
    assert adapter.send_batch(batch).outcome == Outcome.ACCEPTED
    counted = simulator.stats()["indosat"]
    assert (counted["messages"], counted["duplicates"]) == (5, 0)


def test_outage_503_is_a_retry_honouring_retry_after(simulator):
    control(simulator, outage_seconds=30, outage_mode="503")
    result = get_adapter("http_batch_v1").send_batch(outbound(sim_url(simulator)))
    assert (result.outcome, result.status_code) == (Outcome.RETRY, 503)
    assert 1 <= result.retry_after <= 30


def test_refused_connection_during_outage_is_a_retry(simulator):
    control(simulator, outage_seconds=30, outage_mode="refuse")
    result = get_adapter("http_batch_v1").send_batch(outbound(sim_url(simulator)))
    assert result.outcome == Outcome.RETRY
    assert result.status_code is None
    assert "ConnectionError" in result.error


def test_nothing_listening_is_a_retry():
    result = get_adapter("http_batch_v1").send_batch(outbound(f"http://127.0.0.1:{free_port()}/indosat"))
    assert result.outcome == Outcome.RETRY
    assert "ConnectionError" in result.error


def test_read_timeout_is_a_retry(simulator):
    control(simulator, latency_ms=500)
    result = HttpBatchV1Adapter(read_timeout=0.1).send_batch(outbound(sim_url(simulator)))
    assert result.outcome == Outcome.RETRY
    assert "Timeout" in result.error


def test_wrong_credentials_fail_for_good_with_the_operators_reason(simulator):
    result = get_adapter("http_batch_v1").send_batch(outbound(sim_url(simulator), api_key="stolen"))
    assert (result.outcome, result.status_code) == (Outcome.FAILED, 401)
    assert result.error == "HTTP 401: Invalid API key."
    signed_wrong = get_adapter("http_batch_v1").send_batch(outbound(sim_url(simulator), signing_secret="old"))
    assert signed_wrong.error == "HTTP 401: Invalid or stale signature."


def test_a_batch_the_operator_refuses_as_invalid_fails_for_good(simulator):
    result = get_adapter("http_batch_v1").send_batch(outbound(sim_url(simulator), segments=0))
    assert (result.outcome, result.status_code) == (Outcome.FAILED, 400)
    assert result.error == "HTTP 400: segments must be a positive integer."


def test_unusable_base_url_fails_for_good():
    result = get_adapter("http_batch_v1").send_batch(outbound("operator.example/no-scheme"))
    assert result.outcome == Outcome.FAILED


class Misbehaving:
    """A server that answers every POST with a status and headers, then writes its body as `write(wfile)` says."""

    def __init__(self, status: int, headers: dict[str, str], write):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    write(self.wfile)
                except OSError:
                    pass  # the client hung up, as it should
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class FixedAnswer(Misbehaving):
    """A server that answers every POST with one canned status, headers and body."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None):
        super().__init__(status, {**(headers or {}), "Content-Length": str(len(body))}, lambda wfile: wfile.write(body))


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (202, b"<html>proxy error</html>", Outcome.RETRY),
        (200, b'{"batch_id": "x"}', Outcome.RETRY),
        (202, b'{"batch_id": "%(id)s", "accepted": 2, "rejected": []}', Outcome.ACCEPTED),
        (201, b'{"batch_id": "%(id)s", "accepted": 2, "rejected": []}', Outcome.ACCEPTED),
        (202, b'{"accepted": 2, "rejected": []}', Outcome.ACCEPTED),
        (202, b"[2]", Outcome.RETRY),
        # An answer about another batch says nothing about this one; the retry reuses this batch's key.
        (202, b'{"batch_id": "9b2e61c4-7d1f-4c6e-9a55-3f0f2b8d7e10", "accepted": 2, "rejected": []}', Outcome.RETRY),
        (204, b"", Outcome.RETRY),
        (408, b"", Outcome.RETRY),
        (502, b"bad gateway", Outcome.RETRY),
        (404, b'{"detail": "no such route"}', Outcome.FAILED),
        (422, b"", Outcome.FAILED),
        (301, b"", Outcome.FAILED),
    ],
)
def test_answers_are_classified_by_status_and_body(status, body, outcome):
    batch_id = str(uuid.uuid4())
    body = body.replace(b"%(id)s", batch_id.encode())
    with FixedAnswer(status, body, {"Location": "http://elsewhere.example/"}) as server:
        result = get_adapter("http_batch_v1").send_batch(outbound(server.url, batch_id=batch_id))
    assert result.outcome == outcome
    assert result.status_code == status
    if outcome != Outcome.ACCEPTED:
        assert result.error.startswith(f"HTTP {status}")


def test_retry_after_as_an_http_date_is_honoured():
    when = datetime.now(UTC) + timedelta(seconds=120)
    with FixedAnswer(429, b"{}", {"Retry-After": format_datetime(when, usegmt=True)}) as server:
        result = get_adapter("http_batch_v1").send_batch(outbound(server.url))
    assert result.outcome == Outcome.RETRY
    assert 100 <= result.retry_after <= 120


def test_retry_after_parsing():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=time.time()) == 0.0


@pytest.mark.parametrize("value", ["9" * 400, "100000000000000000000", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_retry_after_too_far_ahead_is_capped_so_the_retry_time_can_be_recorded(value):
    wait = retry_after_seconds(value)
    assert wait == MAX_RETRY_AFTER_SECONDS
    assert datetime.now(UTC) + timedelta(seconds=wait)  # representable: no OverflowError


def test_an_accepting_answer_cut_off_mid_body_is_a_retry_not_a_failure():
    # The operator may have taken the batch: failing it would mark deliveries failed that it is sending.
    def write(wfile):
        wfile.write(b'{"batch_id": "x", "acc')
        wfile.flush()

    with Misbehaving(202, {"Content-Length": "200", "Content-Type": "application/json"}, write) as server:
        result = get_adapter("http_batch_v1").send_batch(outbound(server.url))
    assert result.outcome == Outcome.RETRY


def test_an_answer_trickling_in_past_the_read_timeout_is_a_retry():
    # One byte at a time, each well within the read timeout, for far longer than the whole timeout.
    def write(wfile):
        for _ in range(400):
            wfile.write(b" ")
            wfile.flush()
            time.sleep(0.05)

    with Misbehaving(202, {"Content-Length": "100000", "Content-Type": "application/json"}, write) as server:
        result = HttpBatchV1Adapter(read_timeout=1).send_batch(outbound(server.url))
    assert result.outcome == Outcome.RETRY
    assert "Timeout" in result.error


def test_a_huge_answer_is_read_only_up_to_a_limit():
    sent = []

    def write(wfile):
        chunk = b"x" * 65536
        for _ in range(1024):  # 64 MiB at most
            wfile.write(chunk)
            sent.append(len(chunk))

    with Misbehaving(502, {"Content-Length": str(2**36)}, write) as server:
        result = get_adapter("http_batch_v1").send_batch(outbound(server.url))
    assert result.outcome == Outcome.RETRY
    assert result.error.startswith("HTTP 502: xxx")
    # The worker stopped reading after a few MiB (what was sent includes the sockets' buffers).
    assert sum(sent) < 32 * 2**20


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirected_batch_fails_naming_where_the_operator_moved_so_its_base_url_can_be_mended(status):
    # A proxy moving plain HTTP to HTTPS, or an endpoint moved: following it would resend the signed batch to an
    # address nobody configured, so the batch fails, and the reason says where to point the operator instead.
    with FixedAnswer(status, b"", {"Location": "https://sms.operator.example/v1/batches"}) as server:
        result = get_adapter("http_batch_v1").send_batch(outbound(server.url))
    assert result.outcome == Outcome.FAILED
    assert "https://sms.operator.example/v1/batches" in result.error
    assert "base URL" in result.error


def test_a_refusal_answered_with_a_null_reason_carries_no_reason_rather_than_none():
    batch_id = str(uuid.uuid4())
    body = b'{"batch_id": "%s", "accepted": 1, "rejected": [{"message_id": "2", "reason": null}]}' % batch_id.encode()
    with FixedAnswer(202, body) as server:
        result = get_adapter("http_batch_v1").send_batch(outbound(server.url, batch_id=batch_id))
    assert result.rejected == [("2", "")]
