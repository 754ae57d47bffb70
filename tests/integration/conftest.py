"""Harness for end-to-end dispatch tests: real Celery worker processes, a real Redis, the simulator over HTTP.

Everything runs against the session's test database: the workers are subprocesses, so on SQLite the test
database must be a file (an in-memory database cannot be shared); `pytest_collection_modifyitems` below
switches it to a temporary file whenever integration tests are selected, before the database is created.
Delivery reports come back from the simulator to pytest-django's `live_server`.

The harness plays celery beat: while a test waits it calls `runs_start_due()`, `dispatch_reconcile()` and the
area-broadcast tick itself, so they run for real but on the test's clock instead of beat's; what they
enqueue goes through Redis to the worker processes.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from smsblast.devtools import free_port, spawn, start_celery_worker, start_simulator

OPERATOR_SLUGS = ("telkomsel", "indosat", "xl", "smartfren")
# Number prefixes (E.164 digits) routed to each test operator.
PREFIXES = {"telkomsel": "62812", "indosat": "62856", "xl": "62817", "smartfren": "62881"}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Use a file SQLite test database when integration tests will run (worker processes must share it)."""
    if not any(item.get_closest_marker("integration") for item in items):
        return
    from django.conf import settings
    from django.db import connections

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3" or database.get("TEST", {}).get("NAME"):
        return
    name = str(Path(tempfile.mkdtemp(prefix="smsblast-it-")) / "test.sqlite3")
    database.setdefault("TEST", {})["NAME"] = name
    connections["default"].settings_dict.setdefault("TEST", {})["NAME"] = name


def database_url() -> str:
    """Return a DATABASE_URL for the test database the session is using (after it was created)."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        name = str(db["NAME"])
        if "memory" in name or not name.startswith("/"):
            raise RuntimeError("Integration tests need a file SQLite test database; set SQLITE_TEST_NAME.")
        return f"sqlite:///{name}"
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{credentials}@{host}:{port}/{db['NAME']}"


class Stack:
    """The processes of one test: Celery workers and the operator simulator; stopped at teardown."""

    def __init__(self, *, workdir: Path, env: dict[str, str]):
        self.workdir = workdir
        self.env = env
        self.workers: dict[str, subprocess.Popen] = {}
        self.simulator: subprocess.Popen | None = None
        self.simulator_url = ""

    # --- simulator --------------------------------------------------------------------------------
    def start_simulator(self, operators: dict[str, dict]) -> str:
        """Start the simulator for `{slug: {api_key, signing_secret, report_token, behaviour...}}`; return its URL."""
        config = self.workdir / "simulator.json"
        config.write_text(json.dumps(operators))
        port = free_port()
        self.simulator_url = f"http://127.0.0.1:{port}"
        self._serve_simulator()
        return self.simulator_url

    def _serve_simulator(self) -> None:
        port = int(self.simulator_url.rsplit(":", 1)[1])
        log = self.workdir / "simulator.log"
        self.simulator = start_simulator(config=self.workdir / "simulator.json", port=port, env=self.env, log=log)
        self._wait(lambda: self._healthy(), 20, "the simulator did not start")

    def kill_simulator(self) -> None:
        """SIGKILL the simulator: what it remembered (idempotency answers, reports not posted yet) is gone."""
        os.killpg(self.simulator.pid, signal.SIGKILL)
        self.simulator.wait(timeout=10)
        self.simulator = None

    def restart_simulator(self) -> None:
        """Start the simulator again on its port, remembering nothing."""
        self._serve_simulator()

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.simulator_url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False

    def stats(self) -> dict:
        return requests.get(f"{self.simulator_url}/stats", timeout=10).json()

    def control(self, slug: str, **changes) -> None:
        response = requests.post(f"{self.simulator_url}/{slug}/control", json=changes, timeout=10)
        response.raise_for_status()

    # --- workers ----------------------------------------------------------------------------------
    def start_workers(self, *names: str, concurrency: int = 2, queues: list[str] | None = None) -> None:
        """Start `celery worker` processes, by default on the default, control and every test operator's queue;
        wait until they are ready."""
        queues = queues or ["default", "control", *(f"dispatch.{slug}" for slug in OPERATOR_SLUGS)]
        waits = [self._start_worker(name, concurrency=concurrency, queues=queues) for name in names]
        for wait in waits:
            wait()

    def start_run_worker(self, name: str, *, env: dict[str, str] | None = None) -> None:
        """Start `manage.py run_worker` (every queue it finds, as the Procfile's worker) and wait until it is ready."""
        argv = [sys.executable, "manage.py", "run_worker", "--concurrency", "2", "--hostname", f"{name}@%h"]
        argv += ["--", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        log_path = self.workdir / f"worker-{name}.log"
        self.workers[name] = spawn(argv, env={**self.env, **(env or {})}, log=log_path)

        def ready() -> bool:
            if self.workers[name].poll() is not None:
                raise RuntimeError(f"worker {name} exited:\n{self.logs()}")
            return " ready." in log_path.read_text()

        self._wait(ready, 60, f"worker {name} did not become ready")

    def start_beat(self) -> None:
        """Start a real `celery beat` with the project's schedule (most tests play beat themselves: drive)."""
        schedule = self.workdir / "beat-schedule"
        argv = [sys.executable, "-m", "celery", "-A", "config", "beat", "-s", str(schedule), "--loglevel", "INFO"]
        self.workers["beat"] = spawn(argv, env=self.env, log=self.workdir / "beat.log")

    def _start_worker(self, name: str, *, concurrency: int, queues: list[str]) -> Callable[[], None]:
        log_path = self.workdir / f"worker-{name}.log"
        start = log_path.stat().st_size if log_path.exists() else 0
        self.workers[name] = start_celery_worker(
            name,
            queues=queues,
            env=self.env,
            log=log_path,
            pool="prefork",
            concurrency=concurrency,
            append=True,
        )

        def ready() -> bool:
            if self.workers[name].poll() is not None:
                raise RuntimeError(f"worker {name} exited:\n{self.logs()}")
            with open(log_path) as text:
                text.seek(start)
                return " ready." in text.read()

        return lambda: self._wait(ready, 60, f"worker {name} did not become ready")

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker and its pool processes at once, as a crashed machine would."""
        proc = self.workers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.simulator]:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers.values(), self.simulator]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.workers.clear()
        self.simulator = None

    def logs(self, tail: int = 4000) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text()[-tail:]}")
        return "\n".join(parts)

    # --- waiting ----------------------------------------------------------------------------------
    @staticmethod
    def _wait(predicate: Callable[[], bool], timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(message)
            time.sleep(0.05)

    def drive(self, until: Callable[[], bool], *, timeout: float, every: float = 0.5, reconcile: bool = True) -> None:
        """Play celery beat (start due runs, reconcile, the area-broadcast tick) until `until()` holds.

        Fail with the logs after `timeout`. `reconcile=False` leaves the reconciler out, to show what happens
        without it.
        """
        from campaigns.dispatch import dispatch_reconcile, runs_start_due
        from operators.broadcast_tasks import area_broadcasts_tick

        deadline = time.monotonic() + timeout
        while True:
            runs_start_due()
            if reconcile:
                dispatch_reconcile()
            # The task's body, as a worker would run it for beat: it enqueues the due sends and cancels.
            area_broadcasts_tick()
            if until():
                return
            if time.monotonic() > deadline:
                pytest.fail(f"Gave up after {timeout} s.\n{self.logs()}")
            time.sleep(every)


def _point_celery_at(broker_url: str | None) -> None:
    """Send this process's tasks to `broker_url`; with None only drop the pools built so far.

    The pools are always dropped: `app.conf` reads Django's settings live, so it may already show the new URL
    while a pool built earlier still holds a connection to the old one. The next send builds a fresh pool.
    """
    from config.celery import app

    if broker_url is not None:
        app.conf.broker_url = broker_url
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def stack(transactional_db, live_server, redis_client, redis_url, settings, tmp_path):
    """Return a Stack wired to the test database, the session's Redis and the live server."""
    settings.REDIS_URL = redis_url
    settings.CELERY_BROKER_URL = redis_url
    settings.PUBLIC_BASE_URL = live_server.url
    # The reconciler re-drives expired leases and lost tasks after seconds, not minutes.
    settings.DISPATCH_LEASE_SECONDS = 5
    settings.DISPATCH_REDRIVE_AFTER_SECONDS = 3
    # Area-broadcast retries back off from a fifth of a second (an operator's Retry-After still wins).
    settings.AREA_BROADCAST_RETRY_BASE_SECONDS = 0.2
    from config.celery import app

    broker_before = app.conf.broker_url
    _point_celery_at(redis_url)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "PUBLIC_BASE_URL": live_server.url,
        "DISPATCH_LEASE_SECONDS": "5",
        "DISPATCH_REDRIVE_AFTER_SECONDS": "3",
        "AREA_BROADCAST_RETRY_BASE_SECONDS": "0.2",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    processes = Stack(workdir=tmp_path, env=env)
    yield processes
    processes.stop()
    # Later tests send to the broker they had, not to this test's Redis, which may be gone by then.
    _point_celery_at(broker_before)
