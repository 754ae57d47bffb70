"""The web process's logs: subscribers' numbers in a request's address are masked, in the access log and Django's."""

import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from smsblast.devtools import free_port
from smsblast.phones import normalize

BASE_DIR = Path(__file__).resolve().parent.parent


def web_command(port: int) -> list[str]:
    """Return the Procfile's web command for `port`, gunicorn run by this interpreter."""
    line = next(line for line in (BASE_DIR / "Procfile").read_text().splitlines() if line.startswith("web:"))
    argv = shlex.split(line.removeprefix("web:").replace("${WEB_PORT:-8000}", str(port)))
    assert argv[0] == "gunicorn"
    return [sys.executable, "-m", "gunicorn", *argv[1:]]


def get(url: str) -> None:
    try:
        # The first request waits for a worker still loading Django, which takes seconds on a busy machine.
        urllib.request.urlopen(url, timeout=60)  # noqa: S310 - a local server of the test
    except urllib.error.HTTPError:
        pass  # refused without a log-in: logged all the same


def test_the_web_process_logs_no_subscribers_number_a_request_names(tmp_path):
    port = free_port()
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("DJANGO_")}
    env = {**inherited, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    log = tmp_path / "web.log"
    with log.open("w") as output:
        web = subprocess.Popen(web_command(port), cwd=BASE_DIR, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "Booting worker" not in log.read_text():
            assert web.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        get(f"{base}/api/v1/subscribers/+6281234567890/opt-out/")
        get(f"{base}/api/v1/subscribers/%2B6281234567891/opt-in/")
        get(f"{base}/subscribers/?msisdn=0812+3456+7892")
        get(f"{base}/api/v1/subscribers/?q=0812%203456%207893")
        # Pasted from a document: a non-breaking space and an en dash, which the search accepts.
        get(f"{base}/subscribers/?msisdn=0812%C2%A03456%E2%80%937894")
        while log.read_text().count('" 40') + log.read_text().count('" 30') < 5:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        web.terminate()
        web.wait(timeout=30)
    written = log.read_text()
    # The access log and Django's "Unauthorized: /api/v1/subscribers/…" both name each request.
    assert "/api/v1/subscribers/+62812******90/opt-out/" in written, written
    assert "Unauthorized: /api/v1/subscribers/+62812******90/opt-out/" in written, written
    assert "/subscribers/?msisdn=+62812******92" in written, written
    assert "/subscribers/?msisdn=+62812******94" in written, written
    for digits in ("81234567890", "81234567891", "3456+7892", "3456%207893", "3456%E2%80%937894"):
        assert digits not in written, written


def test_an_access_line_reads_for_numbers_only_the_values_it_writes(monkeypatch, tmp_path):
    # Every header and environment variable is an atom: reading each for numbers let a request of a hundred
    # long headers cost the worker seconds for a line that writes none of them.
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config

    from config.access_log import NumbersMaskedLogger
    from smsblast import redaction

    read = []
    monkeypatch.setattr(redaction, "normalize", lambda raw: read.append(raw) or normalize(raw))
    config = Config()
    config.set("accesslog", str(tmp_path / "access.log"))
    logger = NumbersMaskedLogger(config)
    headers = [(f"X-Note-{i}", "081234567890") for i in range(100)]
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/api/v1/subscribers/081234567891/opt-out/",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        **{f"HTTP_X_NOTE_{i}": "081234567890" for i in range(100)},
    }
    response = SimpleNamespace(status="401 Unauthorized", sent=0, headers=[])

    logger.access(response, SimpleNamespace(headers=headers), environ, timedelta(milliseconds=5))

    assert "/api/v1/subscribers/+62812******91/opt-out/" in (tmp_path / "access.log").read_text()
    assert len(read) == 1
