"""The operator simulator over real HTTP on localhost."""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from operators import signing
from operators.simulator import OperatorBehaviour, OperatorConfig, SimulatorServer

KEY, SECRET, TOKEN = "key-tsel", "secret-tsel", "report-token-tsel"


class ReportReceiver:
    """A stand-in for our delivery-report endpoint that records what the simulator posts."""

    def __init__(self, fail_first: int = 0):
        self.posts: list[tuple[str, dict]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    status = 503
                else:
                    receiver.posts.append((self.headers["Authorization"], json.loads(body)))
                    status = 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/v1/operator/delivery-reports/"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def reports(self) -> list[dict]:
        return [report for _, document in self.posts for report in document["reports"]]

    def wait_for(self, count: int, timeout: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.reports()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.reports()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    server = ReportReceiver()
    yield server
    server.close()


@pytest.fixture
def simulator():
    operators = {
        "telkomsel": OperatorConfig(KEY, SECRET, TOKEN, OperatorBehaviour(report_delay_ms=50)),
        "xl": OperatorConfig("key-xl", "secret-xl", None),
    }
    with SimulatorServer(operators, port=0) as server:
        yield server


def batch_document(batch_id: str, *, size: int = 3, first: int = 0, segments: int = 1, callback_url: str = ""):
    return {
        "batch_id": batch_id,
        "campaign": {"id": 1, "title": "Vaksinasi"},
        "sender": "PEMKAB-BLITAR",  # the contract's example: 13 characters
        "text": "Vaksinasi gratis di puskesmas.",
        "encoding": "GSM7",
        "segments": segments,
        "priority": "normal",
        "expires_at": "2030-01-01T00:00:00Z",
        "callback_url": callback_url,
        "recipients": [{"message_id": str(i), "msisdn": f"+6281234{i:06d}"} for i in range(first, first + size)],
    }


def post_batch(base, document, *, slug="telkomsel", key=KEY, secret=SECRET, timestamp=None, idempotency_key=None):
    body = json.dumps(document).encode()
    timestamp = int(time.time()) if timestamp is None else timestamp
    return requests.post(
        f"{base}/{slug}/v1/batches",
        data=body,
        headers={
            "Authorization": f"Bearer {key}",
            "Idempotency-Key": idempotency_key or document["batch_id"],
            "X-Smsblast-Timestamp": str(timestamp),
            "X-Smsblast-Signature": signing.sign(secret, timestamp, body),
        },
        timeout=10,
    )


def control(simulator, slug="telkomsel", **changes):
    return requests.post(f"{simulator.url}/{slug}/control", json=changes, timeout=10)


def stats(simulator, slug="telkomsel"):
    return requests.get(f"{simulator.url}/stats", timeout=10).json()[slug]


def test_signed_batch_is_accepted_and_counted(simulator):
    batch_id = str(uuid.uuid4())
    response = post_batch(simulator.url, batch_document(batch_id, size=3, segments=2))
    assert response.status_code == 202
    assert response.json() == {"batch_id": batch_id, "accepted": 3, "rejected": []}
    counted = stats(simulator)
    assert (counted["batches"], counted["messages"], counted["segments"], counted["duplicates"]) == (1, 3, 6, 0)
    assert counted["segments_per_second"] == 6
    assert sum(second["segments"] for second in counted["per_second"]) == 6
    assert stats(simulator, "xl")["batches"] == 0


def test_wrong_api_key_is_refused_with_401_and_nothing_counted(simulator):
    response = post_batch(simulator.url, batch_document(str(uuid.uuid4())), key="wrong")
    assert response.status_code == 401
    assert stats(simulator)["batches"] == 0


def test_bad_or_stale_signature_is_refused_with_401(simulator):
    assert post_batch(simulator.url, batch_document(str(uuid.uuid4())), secret="wrong").status_code == 401
    stale = int(time.time()) - 3600
    assert post_batch(simulator.url, batch_document(str(uuid.uuid4())), timestamp=stale).status_code == 401
    # Another operator's credentials do not open this operator's endpoint.
    response = post_batch(simulator.url, batch_document(str(uuid.uuid4())), key="key-xl", secret="secret-xl")
    assert response.status_code == 401
    assert stats(simulator)["unauthorized"] == 3


def test_same_idempotency_key_returns_the_first_answer_and_counts_nothing_again(simulator):
    batch_id = str(uuid.uuid4())
    first = post_batch(simulator.url, batch_document(batch_id, size=5))
    again = post_batch(simulator.url, batch_document(batch_id, size=5))
    assert again.status_code == first.status_code == 202
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    counted = stats(simulator)
    assert (counted["batches"], counted["messages"], counted["duplicates"], counted["replays"]) == (1, 5, 0, 1)


def test_a_message_accepted_in_two_batches_counts_as_a_duplicate(simulator):
    post_batch(simulator.url, batch_document(str(uuid.uuid4()), size=4, first=0))
    post_batch(simulator.url, batch_document(str(uuid.uuid4()), size=4, first=2))
    counted = stats(simulator)
    assert counted["messages"] == 8
    assert counted["duplicates"] == 2


def test_a_message_carried_twice_in_one_batch_counts_as_a_duplicate(simulator):
    document = batch_document(str(uuid.uuid4()), size=3)
    document["recipients"].append(dict(document["recipients"][0]))
    assert post_batch(simulator.url, document).json()["accepted"] == 4
    counted = stats(simulator)
    assert (counted["messages"], counted["duplicates"]) == (4, 1)


@pytest.mark.parametrize("message_id", [{"id": 1}, [1], True, 1.5])
def test_a_recipient_whose_message_id_is_not_a_string_or_integer_is_rejected_with_a_reason(simulator, message_id):
    document = batch_document(str(uuid.uuid4()), size=2)
    document["recipients"].append({"message_id": message_id, "msisdn": "+6281234999999"})
    response = post_batch(simulator.url, document)
    assert response.status_code == 202
    assert response.json()["accepted"] == 2
    assert response.json()["rejected"] == [{"message_id": message_id, "reason": "invalid message_id"}]
    assert stats(simulator)["messages"] == 2


def test_invalid_numbers_are_rejected_inside_an_accepted_batch(simulator):
    document = batch_document(str(uuid.uuid4()), size=2)
    document["recipients"].append({"message_id": "bad", "msisdn": "0341-801234"})
    response = post_batch(simulator.url, document)
    assert response.status_code == 202
    assert response.json()["accepted"] == 2
    assert response.json()["rejected"] == [{"message_id": "bad", "reason": "invalid msisdn"}]


def test_malformed_batch_is_refused_with_400_and_a_reason(simulator):
    document = batch_document(str(uuid.uuid4()))
    del document["recipients"]
    response = post_batch(simulator.url, document)
    assert response.status_code == 400
    assert response.json()["error"] == "Missing field: recipients."
    mismatched = post_batch(simulator.url, batch_document(str(uuid.uuid4())), idempotency_key="other")
    assert mismatched.status_code == 400


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("encoding", "gsm7", 'encoding must be "GSM7" or "UCS2".'),
        ("priority", "high", 'priority must be "normal" or "urgent".'),
        ("campaign", {"id": "1", "title": "Vaksinasi"}, 'campaign must be {"id": integer, "title": string}.'),
        ("campaign", None, 'campaign must be {"id": integer, "title": string}.'),
        ("expires_at", "2030-01-01T00:00:00", "expires_at must be an ISO 8601 instant with a zone."),
        ("expires_at", "", "expires_at must be an ISO 8601 instant with a zone."),
        ("callback_url", None, "callback_url must be a string."),
        ("segments", True, "segments must be a positive integer."),
        ("text", "", "text must be a non-empty string."),
    ],
)
def test_a_batch_whose_fields_break_the_contract_is_refused_with_400_and_nothing_counted(
    simulator, field, value, reason
):
    document = batch_document(str(uuid.uuid4()))
    document[field] = value
    response = post_batch(simulator.url, document)
    assert response.status_code == 400
    assert response.json()["error"] == reason
    assert stats(simulator)["batches"] == 0


@pytest.mark.parametrize("field", ["campaign", "encoding", "priority", "expires_at", "callback_url"])
def test_a_batch_missing_a_contract_field_is_refused_with_400(simulator, field):
    document = batch_document(str(uuid.uuid4()))
    del document[field]
    response = post_batch(simulator.url, document)
    assert response.status_code == 400
    assert response.json()["error"] == f"Missing field: {field}."


def test_error_rate_answers_500_and_a_retry_with_the_same_key_is_then_accepted_once(simulator):
    assert control(simulator, error_rate=1.0).status_code == 200
    batch_id = str(uuid.uuid4())
    assert post_batch(simulator.url, batch_document(batch_id)).status_code == 500
    assert stats(simulator)["batches"] == 0
    control(simulator, error_rate=0)
    assert post_batch(simulator.url, batch_document(batch_id)).status_code == 202
    counted = stats(simulator)
    assert (counted["batches"], counted["errors"], counted["duplicates"]) == (1, 1, 0)


@pytest.mark.parametrize("body", [b"latency_ms=5", b'{"latency_ms": 5', b"\xff\xfe"])
def test_control_refuses_a_body_that_is_not_json_saying_so(simulator, body):
    response = requests.post(f"{simulator.url}/telkomsel/control", data=body, timeout=10)

    assert response.status_code == 400
    assert response.json()["error"] == 'The body is not JSON; send settings as {"latency_ms": 300, ...}.'


def test_control_refuses_unknown_or_out_of_range_settings(simulator):
    assert control(simulator, colour="red").status_code == 400
    assert control(simulator, error_rate=2).status_code == 400
    assert control(simulator, outage_mode="sometimes", outage_seconds=5).status_code == 400
    assert control(simulator, "nobody", latency_ms=1).status_code == 404
    applied = control(simulator, latency_ms=5, delivered_ratio=0.5).json()
    assert applied["behaviour"]["latency_ms"] == 5
    assert applied["behaviour"]["delivered_ratio"] == 0.5


@pytest.mark.parametrize("throttle_sps", [0.5, 1500.7])
def test_control_refuses_a_throttle_that_is_not_a_whole_number_of_segments_and_keeps_the_one_set(
    simulator, throttle_sps
):
    control(simulator, throttle_sps=1500)

    response = control(simulator, throttle_sps=throttle_sps)

    assert response.status_code == 400
    assert "throttle_sps must be a whole number" in response.json()["error"]
    assert stats(simulator)["behaviour"]["throttle_sps"] == 1500


def test_control_takes_a_throttle_written_as_a_whole_float(simulator):
    assert control(simulator, throttle_sps=300.0).json()["behaviour"]["throttle_sps"] == 300


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("report_delay_ms", "NaN"),
        ("throttle_sps", "1e400"),
        ("latency_ms", "1" + "0" * 400),
        ("latency_ms", "Infinity"),
        ("outage_retry_after", "Infinity"),
        ("outage_seconds", "1e400"),
        ("delivered_ratio", "NaN"),
    ],
)
def test_control_refuses_a_number_that_is_not_finite_and_changes_nothing(simulator, setting, value):
    # JSON as Python writes and reads it: NaN, Infinity and 1e400 (infinite once parsed) are all accepted there.
    body = f'{{"latency_ms": 7, "{setting}": {value}}}'
    response = requests.post(f"{simulator.url}/telkomsel/control", data=body, timeout=10)
    assert response.status_code == 400
    assert setting in response.json()["error"]
    counted = requests.get(f"{simulator.url}/stats", timeout=10)
    json.loads(counted.text, parse_constant=lambda name: pytest.fail(f"/stats answered {name}"))
    assert counted.json()["telkomsel"]["behaviour"]["latency_ms"] == 0
    assert counted.json()["telkomsel"]["outage"]["seconds_left"] == 0


def test_reports_still_go_back_after_a_refused_report_delay(simulator, receiver):
    requests.post(f"{simulator.url}/telkomsel/control", data='{"report_delay_ms": NaN}', timeout=10)
    document = batch_document(str(uuid.uuid4()), size=5, callback_url=receiver.url)
    assert post_batch(simulator.url, document).status_code == 202
    assert len(receiver.wait_for(5)) == 5


def test_throttled_operator_answers_429_with_retry_after_and_no_second_exceeds_the_limit(simulator):
    control(simulator, throttle_sps=1500)
    # Three 1,000-segment batches sent back to back: at least two land in the same second.
    answers = [post_batch(simulator.url, batch_document(str(uuid.uuid4()), size=1000)) for _ in range(3)]
    throttled = [answer for answer in answers if answer.status_code == 429]
    assert throttled
    assert all(int(answer.headers["Retry-After"]) >= 1 for answer in throttled)
    counted = stats(simulator)
    assert counted["throttled"] == len(throttled)
    assert counted["segments_per_second"] == 1000
    assert all(second["segments"] <= 1000 for second in counted["per_second"])


def test_outage_503_answers_with_retry_after_until_it_is_lifted(simulator):
    control(simulator, outage_seconds=60, outage_mode="503")
    response = post_batch(simulator.url, batch_document(str(uuid.uuid4())))
    assert response.status_code == 503
    assert 58 <= int(response.headers["Retry-After"]) <= 60  # the time the outage has left
    # Other operators are not affected.
    other = post_batch(simulator.url, batch_document(str(uuid.uuid4())), slug="xl", key="key-xl", secret="secret-xl")
    assert other.status_code == 202
    control(simulator, outage_seconds=0)
    assert post_batch(simulator.url, batch_document(str(uuid.uuid4()))).status_code == 202


def test_outage_retry_after_can_be_set_for_an_open_ended_outage(simulator):
    control(simulator, outage_seconds=600, outage_mode="503", outage_retry_after=2)
    response = post_batch(simulator.url, batch_document(str(uuid.uuid4())))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert control(simulator, outage_retry_after=-1).status_code == 400


def test_outage_refuse_drops_the_connection_without_an_answer(simulator):
    control(simulator, outage_seconds=60, outage_mode="refuse")
    with pytest.raises(requests.ConnectionError):
        post_batch(simulator.url, batch_document(str(uuid.uuid4())))
    counted = stats(simulator)
    assert counted["outage_answers"] == 1
    assert counted["batches"] == 0


def test_delivery_reports_are_posted_back_in_bulk_with_the_operator_token(simulator, receiver):
    control(simulator, delivered_ratio=1.0)
    for first in (0, 1000):
        document = batch_document(str(uuid.uuid4()), size=1000, first=first, callback_url=receiver.url)
        assert post_batch(simulator.url, document).status_code == 202
    reports = receiver.wait_for(2000)
    assert sorted(int(report["message_id"]) for report in reports) == list(range(2000))
    assert {report["status"] for report in reports} == {"DELIVERED"}
    assert {authorization for authorization, _ in receiver.posts} == {f"Bearer {TOKEN}"}
    # Bulk: each request carries at least a whole batch's reports.
    assert all(len(document["reports"]) >= 1000 for _, document in receiver.posts)
    assert all(report["operator_ref"] and report["done_at"] for report in reports)
    # The sender counts a post once its answer is back, which may be a moment after the receiver has it.
    deadline = time.monotonic() + 10
    while stats(simulator)["reports_sent"] < 2000 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stats(simulator)["reports_sent"] == 2000


def test_reports_of_a_batch_larger_than_ten_thousand_go_back_in_requests_of_at_most_ten_thousand(simulator, receiver):
    document = batch_document(str(uuid.uuid4()), size=10_001, callback_url=receiver.url)
    assert post_batch(simulator.url, document).status_code == 202
    reports = receiver.wait_for(10_001)
    assert sorted(int(report["message_id"]) for report in reports) == list(range(10_001))
    assert max(len(document["reports"]) for _, document in receiver.posts) <= 10_000


def test_undelivered_mix_follows_delivered_ratio(simulator, receiver):
    control(simulator, delivered_ratio=0.0)
    post_batch(simulator.url, batch_document(str(uuid.uuid4()), size=10, callback_url=receiver.url))
    reports = receiver.wait_for(10)
    assert {report["status"] for report in reports} == {"UNDELIVERED"}
    assert all(report["error_code"] for report in reports)


def test_reports_are_retried_until_the_receiver_takes_them(simulator):
    flaky = ReportReceiver(fail_first=2)
    try:
        post_batch(simulator.url, batch_document(str(uuid.uuid4()), size=10, callback_url=flaky.url))
        reports = flaky.wait_for(10)
        assert len(reports) == 10
        assert flaky.fail_first == 0
    finally:
        flaky.close()


def test_operator_without_report_token_sends_no_reports(simulator, receiver):
    document = batch_document(str(uuid.uuid4()), size=5, callback_url=receiver.url)
    assert post_batch(simulator.url, document, slug="xl", key="key-xl", secret="secret-xl").status_code == 202
    assert simulator.reports.pending == 0
    assert receiver.posts == []


def test_reset_forgets_counters_and_idempotency_answers(simulator):
    batch_id = str(uuid.uuid4())
    post_batch(simulator.url, batch_document(batch_id))
    assert requests.post(f"{simulator.url}/reset", timeout=10).status_code == 200
    assert stats(simulator)["batches"] == 0
    post_batch(simulator.url, batch_document(batch_id))
    assert stats(simulator)["replays"] == 0
