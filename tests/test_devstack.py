"""`make run`'s launcher: it refuses ports it cannot listen on before starting anything."""

import os
import socket
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_devstack(**env_vars: str) -> subprocess.CompletedProcess:
    # A Redis URL of its own: an attempt to start the stack would not start the embedded Redis server.
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0", **env_vars}
    return subprocess.run(
        [sys.executable, "-m", "config.devstack"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_run_stops_with_a_message_and_a_failure_status_when_the_web_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_devstack(WEB_PORT=str(port), SIMULATOR_PORT=str(free_port()))
    assert result.returncode != 0
    assert f"Port {port} (WEB_PORT) is already in use" in result.stderr
    assert "WEB_PORT=8001 SIMULATOR_PORT=9101 make run" in result.stderr
    assert "is starting at" not in result.stdout


def test_make_run_names_a_taken_simulator_port_and_a_port_that_is_not_a_number():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_devstack(WEB_PORT="eighty", SIMULATOR_PORT=str(port))
    assert result.returncode != 0
    assert "WEB_PORT=eighty is not a port number." in result.stderr
    assert f"Port {port} (SIMULATOR_PORT) is already in use" in result.stderr
    assert "is starting at" not in result.stdout
