"""The operator simulator under hostile input: every request gets an answer with an error, and it keeps serving."""

import json
import socket
import time
import uuid

import pytest
import requests

from operators import signing
from operators.simulator import MAX_BODY_BYTES, OperatorConfig, SimulatorServer

KEY, SECRET = "key-tsel", "secret-tsel"
NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def simulator():
    with SimulatorServer({"telkomsel": OperatorConfig(KEY, SECRET, None)}, port=0) as server:
        yield server


def _signed_headers(body: bytes, batch_id: str) -> dict:
    timestamp = int(time.time())
    return {
        "Authorization": f"Bearer {KEY}",
        "Idempotency-Key": batch_id,
        "X-Smsblast-Timestamp": str(timestamp),
        "X-Smsblast-Signature": signing.sign(SECRET, timestamp, body),
    }


def _raw(simulator, request: bytes) -> bytes:
    """Send a raw HTTP request and return the whole answer (the simulator closes the connection after it)."""
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_a_control_body_nested_too_deeply_is_refused_with_400(simulator):
    response = requests.post(f"{simulator.url}/telkomsel/control", data=NESTED, timeout=10)

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["error"]


@pytest.mark.parametrize("path", ["v1/batches", "v1/area-broadcasts"])
def test_a_signed_body_nested_too_deeply_is_refused_with_400_and_nothing_counted(simulator, path):
    batch_id = str(uuid.uuid4())

    response = requests.post(
        f"{simulator.url}/telkomsel/{path}", data=NESTED, headers=_signed_headers(NESTED, batch_id), timeout=10
    )

    assert response.status_code == 400
    assert response.json()["error"]
    assert simulator.stats()["telkomsel"]["batches"] == 0


def test_a_latency_no_thread_can_sleep_is_refused_and_batches_are_still_answered(simulator):
    refused = requests.post(f"{simulator.url}/telkomsel/control", json={"latency_ms": 1e300}, timeout=10)
    body = json.dumps({"batch_id": "b"}).encode()
    batch = requests.post(
        f"{simulator.url}/telkomsel/v1/batches", data=body, headers=_signed_headers(body, "b"), timeout=10
    )

    assert refused.status_code == 400
    assert "latency_ms" in refused.json()["error"]
    assert batch.status_code == 400  # answered (a field is missing), not dropped by a sleep that overflows


@pytest.mark.parametrize(
    ("content_length", "status"),
    [("abc", 400), ("-5", 400), ("1e3", 400), ("99999999999999999999", 413), (str(MAX_BODY_BYTES + 1), 413)],
)
@pytest.mark.parametrize("path", ["/telkomsel/control", "/telkomsel/v1/batches", "/reset", "/nobody/control"])
def test_an_unreadable_or_too_large_content_length_is_answered_and_the_simulator_keeps_serving(
    simulator, path, content_length, status
):
    answer = _raw(
        simulator, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {content_length}\r\n\r\n{{}}".encode()
    )

    assert answer.startswith(f"HTTP/1.1 {status} ".encode())
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert requests.get(f"{simulator.url}/healthz", timeout=10).status_code == 200
