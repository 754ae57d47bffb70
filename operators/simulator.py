"""An operator simulator: the Operator Batch API v1 push contract for every demo operator in one process.

No Django import: `manage.py run_operator_simulator` feeds it operators from the database, while tests and
benchmarks build a `SimulatorServer` directly (in-process, or as a subprocess with
``python -m operators.simulator --config operators.json``).

Routes
  POST /{slug}/v1/batches   the batch contract (Bearer key, HMAC signature, Idempotency-Key)
  POST /{slug}/v1/area-broadcasts               an area broadcast (same headers as a batch); reach is
                                                reported to its callback_url while its window lasts
  POST /{slug}/v1/area-broadcasts/{id}/cancel   stop an area broadcast; its final reach is reported once
  POST /{slug}/control      change behaviour at runtime (JSON, see `OperatorBehaviour` and `outage_seconds`)
  GET  /stats               per operator: batches, messages, duplicates, segments_per_second, per_second ...
  POST /reset               forget counters, idempotency answers and seen message ids (behaviour is kept)
  GET  /healthz             200 once serving

Behaviour per operator
  latency_ms        added before every batch answer (at most an hour)
  error_rate        share of batches answered 500 (nothing is counted or remembered)
  throttle_sps      429 with Retry-After when a batch would push the current wall-clock second above this
                    many segments; a batch arriving in an empty second is always taken, so a batch larger
                    than the limit can still pass (at most one batch over, as a real operator's bucket would)
  outage_seconds    for this long, every batch request fails; outage_mode "503" answers 503 with Retry-After,
                    "refuse" closes the connection without an answer. One port serves every operator, so
                    "refuse" cannot stop listening for one of them; the client sees the same thing as a
                    refused connection: a connection error and no HTTP status. outage_seconds 0 lifts it.
  outage_retry_after  the Retry-After a 503 outage answers with; 0 (the default) gives the time it has left,
                    so an open-ended outage (a long outage_seconds, lifted later) can still invite retries
  delivered_ratio   share of accepted messages reported DELIVERED; the rest UNDELIVERED
  report_delay_ms   how long after acceptance the delivery reports are posted
  broadcast_arrivals_per_second   handsets an area broadcast reaches per second; 0 scales it from the
                    request's estimated_handsets over the window (else DEFAULT_ARRIVALS_PER_SECOND)
  reach_report_interval_ms        how often cumulative reach is reported while a broadcast runs
  Area broadcasts obey latency_ms, error_rate and outage_seconds like batches, so one operator can be told
  to fail for a while and recover.

Delivery reports go back in bulk: a pool of sender threads posts every due report for the same callback
URL in one request (up to 10,000), with the operator's API token, and retries with backoff while the
receiver is down or answers 5xx/429.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import hmac
import itertools
import json
import logging
import math
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from operators import signing

logger = logging.getLogger(__name__)

MAX_REPORTS_PER_REQUEST = 10_000
# The largest request body read (413 past it): a batch of 100,000 recipients takes about a tenth of it.
MAX_BODY_BYTES = 64 * 1024 * 1024
# The longest latency_ms taken: a thread cannot sleep for ever, and no client waits an hour for an answer.
MAX_LATENCY_MS = 3_600_000
# Every field of the batch body (Operator Batch API v1); a batch missing one is refused with 400.
BATCH_FIELDS = (
    "batch_id",
    "campaign",
    "sender",
    "text",
    "encoding",
    "segments",
    "priority",
    "expires_at",
    "callback_url",
    "recipients",
)
# Handsets per second an area broadcast reaches when neither the request nor /control says otherwise.
DEFAULT_ARRIVALS_PER_SECOND = 50.0
# More than any network reaches; keeps a huge estimate over a short window from overflowing the reach count.
MAX_ARRIVALS_PER_SECOND = 1e9
HISTORY_SECONDS = 300
# A refused request reads the operator's credentials again at most this often (a wrong key is not a query each).
CREDENTIALS_REREAD_SECONDS = 1.0


@dataclasses.dataclass
class OperatorBehaviour:
    """What an operator does with a batch; every field can be changed at runtime through /control."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    throttle_sps: int = 0  # 0: no throttling
    delivered_ratio: float = 0.95
    report_delay_ms: float = 200.0
    broadcast_arrivals_per_second: float = 0.0  # 0: scaled from the broadcast's estimate
    reach_report_interval_ms: float = 1000.0
    outage_retry_after: float = 0.0  # Retry-After of an outage's 503s; 0: the time the outage has left


@dataclasses.dataclass
class OperatorConfig:
    """Credentials of one simulated operator and its behaviour at start."""

    api_key: str
    signing_secret: str
    # The token the operator uses to post delivery reports to us; None sends no reports.
    report_token: str | None = None
    behaviour: OperatorBehaviour = dataclasses.field(default_factory=OperatorBehaviour)
    # Applied at start as a /control body would be (outage_seconds and outage_mode too); ControlError if invalid.
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)


# Every setting a /control body (and --control at start) takes.
CONTROL_SETTINGS = (
    *(field.name for field in dataclasses.fields(OperatorBehaviour)),
    "outage_seconds",
    "outage_mode",
)


class ControlError(ValueError):
    """A /control body the simulator cannot apply."""


class RequestRefused(Exception):
    """A request refused before its body is read (unreadable or too large Content-Length)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _non_negative_number(value: Any) -> bool:
    """Return whether `value` is a finite number >= 0 (JSON as Python reads it also brings NaN and Infinity)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an integer too large for a float
        return False


def control_checked(changes: dict[str, Any]) -> dict[str, Any]:
    """Return the behaviour fields a /control body sets, as stored; raise ControlError naming what is wrong."""
    fields = {f.name for f in dataclasses.fields(OperatorBehaviour)}
    unknown = set(changes) - set(CONTROL_SETTINGS)
    if unknown:
        raise ControlError(f"Unknown settings: {', '.join(sorted(unknown))}.")
    if "outage_mode" in changes and changes["outage_mode"] not in ("503", "refuse"):
        raise ControlError('outage_mode must be "503" or "refuse".')
    updates = {}
    for name, value in changes.items():
        if name in fields:
            if not _non_negative_number(value):
                raise ControlError(f"{name} must be a non-negative number.")
            if name in ("error_rate", "delivered_ratio") and value > 1:
                raise ControlError(f"{name} must be between 0 and 1.")
            if name == "latency_ms" and value > MAX_LATENCY_MS:
                raise ControlError(f"latency_ms must be at most {MAX_LATENCY_MS}.")
            # Cut to an integer, 0.5 would turn throttling off and 1500.7 would throttle below what was asked.
            if name == "throttle_sps" and value != int(value):
                raise ControlError("throttle_sps must be a whole number of segments per second (0: off).")
            updates[name] = int(value) if name == "throttle_sps" else float(value)
    outage = changes.get("outage_seconds")
    if outage is not None and not _non_negative_number(outage):
        raise ControlError("outage_seconds must be a non-negative number.")
    return updates


class OperatorState:
    """Counters, idempotency answers and runtime behaviour of one simulated operator (thread-safe)."""

    def __init__(self, slug: str, config: OperatorConfig):
        self.slug = slug
        self.api_key = config.api_key
        self.signing_secret = config.signing_secret
        self.credentials_read_at = -math.inf  # when a refused request last had api_key and signing_secret read again
        self.report_token = config.report_token
        self.behaviour = dataclasses.replace(config.behaviour)
        self.outage_until = 0.0  # time.monotonic() until which batches fail
        self.outage_mode = "503"
        self.lock = threading.Lock()
        self._ref_counter = itertools.count(1)
        self.reset()
        try:
            self.control(config.settings)
        except ControlError as exc:
            raise ControlError(f"{slug}: {exc}") from None

    def reset(self) -> None:
        with self.lock:
            self.batches = 0
            self.messages = 0
            self.segments = 0
            self.duplicates = 0
            self.rejected = 0
            self.replays = 0
            self.errors = 0
            self.throttled = 0
            self.outage_answers = 0
            self.unauthorized = 0
            self.reports_sent = 0
            self.reports_failed = 0
            # Idempotency-Key -> (status, answer body) of the first successful answer.
            self.answers: dict[str, tuple[int, bytes]] = {}
            # message_id -> batch id that first carried it; another batch carrying it again is a duplicate.
            self.seen: dict[Any, str] = {}
            # Wall-clock second -> [segments, messages, batches] accepted in it.
            self.per_second: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
            # broadcast_id -> the running area broadcast (see SimulatorServer.accept_area_broadcast).
            self.broadcasts: dict[str, dict[str, Any]] = {}
            self.area_broadcasts = 0
            self.area_cancels = 0
            self.reach_reports_sent = 0

    def control(self, changes: dict[str, Any]) -> None:
        """Apply a /control body; raise ControlError naming what is wrong, changing nothing then."""
        updates = control_checked(changes)
        mode = changes.get("outage_mode", self.outage_mode)
        outage = changes.get("outage_seconds")
        with self.lock:
            self.behaviour = dataclasses.replace(self.behaviour, **updates)
            self.outage_mode = mode
            if outage is not None:
                self.outage_until = time.monotonic() + outage

    def in_outage(self) -> str | None:
        """Return the outage mode while an outage lasts, else None."""
        return self.outage_mode if time.monotonic() < self.outage_until else None

    def next_operator_ref(self) -> str:
        return f"{self.slug}-{next(self._ref_counter)}"

    def stats(self) -> dict[str, Any]:
        with self.lock:
            now_second = int(time.time())
            recent = sorted((s, v) for s, v in self.per_second.items() if s > now_second - HISTORY_SECONDS)
            outage_left = max(0.0, self.outage_until - time.monotonic())
            return {
                "batches": self.batches,
                "messages": self.messages,
                "segments": self.segments,
                "duplicates": self.duplicates,
                "rejected": self.rejected,
                "replays": self.replays,
                "errors": self.errors,
                "throttled": self.throttled,
                "outage_answers": self.outage_answers,
                "unauthorized": self.unauthorized,
                "reports_sent": self.reports_sent,
                "reports_failed": self.reports_failed,
                # The busiest one-second window of the recent history, in segments.
                "segments_per_second": max((v[0] for _, v in recent), default=0),
                "per_second": [
                    {"second": second, "segments": v[0], "messages": v[1], "batches": v[2]} for second, v in recent
                ],
                "behaviour": dataclasses.asdict(self.behaviour),
                "outage": {"mode": self.outage_mode, "seconds_left": round(outage_left, 3)},
                "area_broadcasts": self.area_broadcasts,
                "area_cancels": self.area_cancels,
                "reach_reports_sent": self.reach_reports_sent,
                "broadcasts": {
                    broadcast_id: {
                        "reached": entry["reached"],
                        "cancelled": entry["cancelled"],
                        "cancelled_at": entry["cancelled_at"],
                        "finished": entry["finished"],
                        "arrivals_per_second": entry["rate"],
                    }
                    for broadcast_id, entry in self.broadcasts.items()
                },
            }


@dataclasses.dataclass(order=True)
class _PendingReports:
    due: float
    seq: int
    callback_url: str = dataclasses.field(compare=False)
    state: OperatorState = dataclasses.field(compare=False)
    reports: list[dict[str, Any]] = dataclasses.field(compare=False)
    attempts: int = dataclasses.field(default=0, compare=False)


class ReportSender:
    """Post delivery reports back in bulk from a small pool of threads once they are due."""

    def __init__(self, threads: int = 2, timeout: float = 30.0):
        self._heap: list[_PendingReports] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._timeout = timeout
        self._local = threading.local()
        self.pending = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"report-sender-{i}", daemon=True) for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def schedule(self, *, state: OperatorState, callback_url: str, reports: list[dict], delay: float) -> None:
        """Queue reports for posting after `delay`, in pieces no request may exceed (a batch can be larger)."""
        due = time.monotonic() + delay
        with self._cond:
            for start in range(0, len(reports), MAX_REPORTS_PER_REQUEST):
                piece = reports[start : start + MAX_REPORTS_PER_REQUEST]
                heapq.heappush(self._heap, _PendingReports(due, next(self._seq), callback_url, state, piece))
            self.pending += len(reports)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _take_due(self) -> list[_PendingReports] | None:
        """Wait for due reports and return every due item for the earliest item's callback (None: stopped)."""
        with self._cond:
            while True:
                if self._stopped:
                    return None
                if self._heap:
                    wait = self._heap[0].due - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            first = heapq.heappop(self._heap)
            taken, count, others = [first], len(first.reports), []
            now = time.monotonic()
            while self._heap and self._heap[0].due <= now and count < MAX_REPORTS_PER_REQUEST:
                item = heapq.heappop(self._heap)
                same_receiver = item.callback_url == first.callback_url and item.state is first.state
                if same_receiver and count + len(item.reports) <= MAX_REPORTS_PER_REQUEST:
                    taken.append(item)
                    count += len(item.reports)
                else:
                    others.append(item)
            for item in others:
                heapq.heappush(self._heap, item)
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take_due()
            if taken is None:
                return
            state, url = taken[0].state, taken[0].callback_url
            reports = [report for item in taken for report in item.reports]
            try:
                response = self._session().post(
                    url,
                    data=json.dumps({"reports": reports}, separators=(",", ":")),
                    headers={"Authorization": f"Bearer {state.report_token}", "Content-Type": "application/json"},
                    timeout=self._timeout,
                )
                status = response.status_code
            except requests.RequestException as exc:
                logger.warning("Delivery reports to %s failed: %s", url, exc)
                status = None
            if status is not None and status < 300:
                with state.lock:
                    state.reports_sent += len(reports)
                with self._cond:
                    self.pending -= len(reports)
                continue
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                # The receiver refused them for good (bad token, bad body): retrying cannot help.
                logger.error("Delivery reports to %s refused with %s: %s", url, status, response.text[:300])
                with state.lock:
                    state.reports_failed += len(reports)
                with self._cond:
                    self.pending -= len(reports)
                continue
            with self._cond:
                for item in taken:
                    item.attempts += 1
                    item.due = time.monotonic() + min(10.0, 0.2 * 2 ** (item.attempts - 1)) * (0.5 + random.random())
                    heapq.heappush(self._heap, item)
                self._cond.notify()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: pooled clients reuse connections
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        if self.server.simulator.verbose:
            super().log_message(format, *args)

    # --- plumbing -------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        """Return the request body; raise RequestRefused if its Content-Length is unreadable or too large."""
        header = self.headers.get("Content-Length") or "0"
        if not (header.isascii() and header.isdigit()):
            raise RequestRefused(400, "Content-Length must be a whole number of bytes.")
        length = int(header)
        if length > MAX_BODY_BYTES:
            raise RequestRefused(413, f"The body is larger than the {MAX_BODY_BYTES} bytes accepted.")
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, payload: bytes | dict, headers: dict[str, str] | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._answer(status, {"error": message}, headers)

    def _admit(self, state: OperatorState) -> bytes | None:
        """Apply outage, latency and authentication behaviour; return the body, or None if already answered."""
        outage = state.in_outage()
        if outage == "refuse":
            with state.lock:
                state.outage_answers += 1
            # No answer at all: the client sees the connection drop, as it would a refused connection.
            self.close_connection = True
            return None
        body = self._body()
        behaviour = state.behaviour
        if behaviour.latency_ms:
            time.sleep(behaviour.latency_ms / 1000)
        if outage == "503":
            with state.lock:
                state.outage_answers += 1
            retry_after = behaviour.outage_retry_after or state.outage_until - time.monotonic()
            self._error(503, "Operator in maintenance.", {"Retry-After": str(max(1, math.ceil(retry_after)))})
            return None
        key_ok, signed = self._authenticated(state, body)
        if not (key_ok and signed) and self.server.simulator.credentials_refreshed(state):
            # The admin replaced the operator's key or secret since they were read: check against the new ones.
            key_ok, signed = self._authenticated(state, body)
        if not (key_ok and signed):
            with state.lock:
                state.unauthorized += 1
            self._error(401, "Invalid API key." if not key_ok else "Invalid or stale signature.")
            return None
        return body

    def _authenticated(self, state: OperatorState, body: bytes) -> tuple[bool, bool]:
        """Return whether the request carries the operator's API key and a fresh signature of its body."""
        authorization = self.headers.get("Authorization", "")
        key_ok = hmac.compare_digest(authorization.encode(), f"Bearer {state.api_key}".encode())
        signed = signing.verify(
            state.signing_secret,
            self.headers.get("X-Smsblast-Timestamp"),
            body,
            self.headers.get("X-Smsblast-Signature"),
            now=time.time(),
        )
        return key_ok, signed

    def _simulated_error(self, state: OperatorState) -> bool:
        """Answer 500 at the configured error rate; return whether it did."""
        behaviour = state.behaviour
        if not (behaviour.error_rate and random.random() < behaviour.error_rate):
            return False
        with state.lock:
            state.errors += 1
        self._error(500, "Simulated internal error.")
        return True

    def _operator(self, slug: str) -> OperatorState | None:
        return self.server.simulator.operator(slug)

    # --- routes ---------------------------------------------------------------------------------------
    def do_GET(self):  # noqa: N802 - the stdlib's name
        if self.path == "/stats":
            self._answer(200, self.server.simulator.stats())
        elif self.path == "/healthz":
            self._answer(200, {"ok": True})
        else:
            self._error(404, "Not found.")

    def do_POST(self):  # noqa: N802 - the stdlib's name
        try:
            self._route_post()
        except RequestRefused as exc:
            # The body was not read: the connection cannot carry another request.
            self.close_connection = True
            self._error(exc.status, str(exc))

    def _route_post(self) -> None:
        parts = self.path.strip("/").split("/")
        if parts == ["reset"]:
            self._body()
            self.server.simulator.reset()
            self._answer(200, {"ok": True})
            return
        state = self._operator(parts[0]) if parts else None
        if state is None:
            self._body()
            self._error(404, "Unknown operator.")
        elif parts[1:] == ["v1", "batches"]:
            self._post_batch(state)
        elif parts[1:] == ["control"]:
            self._post_control(state)
        elif parts[1:] == ["v1", "area-broadcasts"]:
            self._post_area_broadcast(state)
        elif len(parts) == 5 and parts[1:3] == ["v1", "area-broadcasts"] and parts[4] == "cancel":
            self._post_area_broadcast_cancel(state, parts[3])
        else:
            self._body()
            self._error(404, "Not found.")

    def _post_control(self, state: OperatorState) -> None:
        try:
            body = self._body() or b"{}"
            try:
                changes = _json_loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ControlError('The body is not JSON; send settings as {"latency_ms": 300, ...}.') from None
            if not isinstance(changes, dict):
                raise ControlError("The body must be a JSON object.")
            state.control(changes)
        except (ValueError, ControlError) as exc:
            self._error(400, str(exc))
            return
        self._answer(200, state.stats())

    def _post_batch(self, state: OperatorState) -> None:
        body = self._admit(state)
        if body is None:
            return
        idempotency_key = self.headers.get("Idempotency-Key", "")
        if not idempotency_key:
            self._error(400, "Idempotency-Key header is required.")
            return
        with state.lock:
            first = state.answers.get(idempotency_key)
            if first is not None:
                state.replays += 1
        if first is not None:
            self._answer(first[0], first[1], {"Idempotent-Replayed": "true"})
            return

        try:
            batch = _parse_batch(body, idempotency_key)
        except ValueError as exc:
            self._error(400, str(exc))
            return
        if self._simulated_error(state):
            return
        self.server.simulator.accept(state, batch, idempotency_key, self)

    # --- area broadcasts --------------------------------------------------------------------------------
    def _area_request(self, state: OperatorState) -> bytes | None:
        """Apply outage, latency, authentication and error behaviour; return the body, or None if answered."""
        body = self._admit(state)
        if body is None or self._simulated_error(state):
            return None
        return body

    def _post_area_broadcast(self, state: OperatorState) -> None:
        body = self._area_request(state)
        if body is None:
            return
        idempotency_key = self.headers.get("Idempotency-Key", "")
        try:
            broadcast = _parse_area_broadcast(body, idempotency_key)
        except ValueError as exc:
            self._error(400, str(exc))
            return
        status, answer = self.server.simulator.accept_area_broadcast(state, broadcast)
        self._answer(status, answer)

    def _post_area_broadcast_cancel(self, state: OperatorState, broadcast_id: str) -> None:
        if self._area_request(state) is None:
            return
        status, answer = self.server.simulator.cancel_area_broadcast(state, broadcast_id)
        self._answer(status, answer)


def _parse_area_broadcast(body: bytes, idempotency_key: str) -> dict[str, Any]:
    """Return the decoded area broadcast; raise ValueError with the reason a real operator would give (400)."""
    try:
        broadcast = _json_loads(body)
    except ValueError:
        raise ValueError("The body is not JSON.") from None
    if not isinstance(broadcast, dict):
        raise ValueError("The body must be a JSON object.")
    for name in ("broadcast_id", "text", "sender", "area", "starts_at", "ends_at"):
        if not broadcast.get(name):
            raise ValueError(f"Missing field: {name}.")
    if str(broadcast["broadcast_id"]) != idempotency_key:
        raise ValueError("Idempotency-Key must equal broadcast_id.")
    if broadcast.get("encoding") not in ("GSM7", "UCS2"):
        raise ValueError('encoding must be "GSM7" or "UCS2".')
    if not isinstance(broadcast.get("callback_url"), str):
        raise ValueError("callback_url must be a string.")
    estimate = broadcast.get("estimated_handsets")
    if estimate is not None and not _non_negative_number(estimate):
        raise ValueError("estimated_handsets must be a non-negative number.")
    area = broadcast["area"]
    if not isinstance(area, dict) or not (area.get("codes") or area.get("geometry")):
        raise ValueError("area needs codes or a geometry.")
    try:
        starts = _parse_instant(broadcast["starts_at"])
        ends = _parse_instant(broadcast["ends_at"])
    except ValueError:
        raise ValueError("starts_at and ends_at must be ISO 8601 instants with a zone.") from None
    if ends <= starts:
        raise ValueError("ends_at must be after starts_at.")
    broadcast["_starts"], broadcast["_ends"] = starts, ends
    return broadcast


def _json_loads(body: bytes) -> Any:
    """Return the decoded JSON body; raise ValueError if it is not JSON or is nested too deeply to decode."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("The JSON document is nested too deeply.") from None


def _parse_instant(value: Any) -> float:
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("naive time")
    return moment.timestamp()


def _parse_batch(body: bytes, idempotency_key: str) -> dict[str, Any]:
    """Return the decoded batch; raise ValueError with the reason a real operator would give (400)."""
    try:
        batch = _json_loads(body)
    except ValueError:
        raise ValueError("The body is not JSON.") from None
    if not isinstance(batch, dict):
        raise ValueError("The body must be a JSON object.")
    for name in BATCH_FIELDS:
        if name not in batch:
            raise ValueError(f"Missing field: {name}.")
    if str(batch["batch_id"]) != idempotency_key:
        raise ValueError("Idempotency-Key must equal batch_id.")
    recipients = batch["recipients"]
    if not isinstance(recipients, list) or not recipients:
        raise ValueError("recipients must be a non-empty list.")
    if not isinstance(batch["segments"], int) or isinstance(batch["segments"], bool) or batch["segments"] < 1:
        raise ValueError("segments must be a positive integer.")
    campaign = batch["campaign"]
    if not (
        isinstance(campaign, dict)
        and isinstance(campaign.get("id"), int)
        and not isinstance(campaign["id"], bool)
        and isinstance(campaign.get("title"), str)
    ):
        raise ValueError('campaign must be {"id": integer, "title": string}.')
    for name in ("text", "sender"):
        if not isinstance(batch[name], str) or not batch[name]:
            raise ValueError(f"{name} must be a non-empty string.")
    if batch["encoding"] not in ("GSM7", "UCS2"):
        raise ValueError('encoding must be "GSM7" or "UCS2".')
    if batch["priority"] not in ("normal", "urgent"):
        raise ValueError('priority must be "normal" or "urgent".')
    try:
        _parse_instant(batch["expires_at"])
    except ValueError:
        raise ValueError("expires_at must be an ISO 8601 instant with a zone.") from None
    if not isinstance(batch["callback_url"], str):
        raise ValueError("callback_url must be a string.")
    return batch


def _valid_msisdn(msisdn: Any) -> bool:
    return isinstance(msisdn, str) and msisdn.startswith("+62") and msisdn[1:].isdigit() and 9 <= len(msisdn) <= 16


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    simulator: SimulatorServer


class SimulatorServer:
    """Serve every configured operator on one port; `start()` runs it in a background thread."""

    def __init__(
        self,
        operators: dict[str, OperatorConfig],
        *,
        host: str = "127.0.0.1",
        port: int = 9100,
        report_threads: int = 2,
        verbose: bool = False,
        operator_lookup: Callable[[str], OperatorConfig | None] | None = None,
        credentials_lookup: Callable[[str], tuple[str, str] | None] | None = None,
    ):
        self.operators = {slug: OperatorState(slug, config) for slug, config in operators.items()}
        # Asked for a slug not served yet (an operator added while serving); None when it knows no such operator.
        self._operator_lookup = operator_lookup
        # Asked for an operator's current (api key, signing secret) when a request does not match those held.
        self._credentials_lookup = credentials_lookup
        self._operators_lock = threading.Lock()
        self.verbose = verbose
        self.reports = ReportSender(threads=report_threads)
        self._reach_stop = threading.Event()
        self._reach_thread = threading.Thread(target=self._report_reach, name="reach-reporter", daemon=True)
        self._reach_thread.start()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.simulator = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._httpd.server_address[0]}:{self.port}"

    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="operator-simulator", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C), then stop sending delivery reports."""
        try:
            self._httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.reports.stop()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self.reports.stop()
        self._reach_stop.set()
        self._reach_thread.join(timeout=5)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def operator(self, slug: str) -> OperatorState | None:
        """Return the simulated operator `slug`, looked up once when not served yet; None if unknown."""
        state = self.operators.get(slug)
        if state is not None or self._operator_lookup is None:
            return state
        config = self._operator_lookup(slug)
        if config is None:
            return None
        with self._operators_lock:
            if slug not in self.operators:
                self.operators[slug] = OperatorState(slug, config)
            return self.operators[slug]

    def credentials_refreshed(self, state: OperatorState) -> bool:
        """Read the operator's credentials again, at most once a second; return whether they changed."""
        if self._credentials_lookup is None:
            return False
        now = time.monotonic()
        with state.lock:
            if now - state.credentials_read_at < CREDENTIALS_REREAD_SECONDS:
                return False
            state.credentials_read_at = now
        current = self._credentials_lookup(state.slug)
        if current is None or current == (state.api_key, state.signing_secret):
            return False
        with state.lock:
            state.api_key, state.signing_secret = current
        return True

    def stats(self) -> dict[str, Any]:
        return {slug: state.stats() for slug, state in list(self.operators.items())}

    def reset(self) -> None:
        for state in list(self.operators.values()):
            state.reset()

    def accept(self, state: OperatorState, batch: dict[str, Any], idempotency_key: str, handler: _Handler) -> None:
        """Take a verified batch (or throttle it) and answer; remember the answer for its Idempotency-Key."""
        segments_each = batch["segments"]
        accepted_ids, rejected = [], []
        for recipient in batch["recipients"]:
            message_id = recipient.get("message_id") if isinstance(recipient, dict) else None
            if message_id is None:
                rejected.append({"message_id": None, "reason": "missing message_id"})
            elif not isinstance(message_id, str | int) or isinstance(message_id, bool):
                rejected.append({"message_id": message_id, "reason": "invalid message_id"})
            elif not _valid_msisdn(recipient.get("msisdn")):
                rejected.append({"message_id": message_id, "reason": "invalid msisdn"})
            else:
                accepted_ids.append(message_id)
        segments = segments_each * len(accepted_ids)
        batch_id = idempotency_key
        with state.lock:
            if idempotency_key in state.answers:  # a concurrent twin got here first
                status, body = state.answers[idempotency_key]
                state.replays += 1
                replay = True
            else:
                replay = False
                now = time.time()
                second = int(now)
                limit = state.behaviour.throttle_sps
                window = state.per_second.get(second)
                if limit and window is not None and window[0] and window[0] + segments > limit:
                    state.throttled += 1
                    retry_after = str(max(1, math.ceil(second + 1 - now)))
                    throttled = True
                else:
                    throttled = False
                    seen, in_batch = state.seen, set()
                    for message_id in accepted_ids:
                        first_batch = seen.setdefault(message_id, batch_id)
                        if first_batch != batch_id or message_id in in_batch:
                            state.duplicates += 1
                        in_batch.add(message_id)
                    state.batches += 1
                    state.messages += len(accepted_ids)
                    state.segments += segments
                    state.rejected += len(rejected)
                    counts = state.per_second[second]
                    counts[0] += segments
                    counts[1] += len(accepted_ids)
                    counts[2] += 1
                    if second % 10 == 0:
                        for old in [s for s in state.per_second if s < second - HISTORY_SECONDS]:
                            del state.per_second[old]
                    status = 202
                    body = json.dumps(
                        {"batch_id": batch_id, "accepted": len(accepted_ids), "rejected": rejected},
                        separators=(",", ":"),
                    ).encode()
                    state.answers[idempotency_key] = (status, body)
        if replay:
            handler._answer(status, body, {"Idempotent-Replayed": "true"})
            return
        if throttled:
            handler._error(429, f"Above {limit} segments per second.", {"Retry-After": retry_after})
            return
        callback_url = batch.get("callback_url")
        if state.report_token and callback_url and accepted_ids:
            self.reports.schedule(
                state=state,
                callback_url=callback_url,
                reports=_reports_for(state, accepted_ids),
                delay=state.behaviour.report_delay_ms / 1000,
            )
        handler._answer(status, body)

    def accept_area_broadcast(self, state: OperatorState, broadcast: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Start (or, for a repeated broadcast_id, acknowledge again) an area broadcast."""
        broadcast_id = str(broadcast["broadcast_id"])
        window = broadcast["_ends"] - broadcast["_starts"]
        with state.lock:
            entry = state.broadcasts.get(broadcast_id)
            if entry is None:
                rate = state.behaviour.broadcast_arrivals_per_second
                estimate = broadcast.get("estimated_handsets")
                if not rate:
                    scaled = isinstance(estimate, int | float) and estimate > 0
                    rate = estimate / window if scaled else DEFAULT_ARRIVALS_PER_SECOND
                rate = min(rate, MAX_ARRIVALS_PER_SECOND)
                entry = state.broadcasts[broadcast_id] = {
                    "operator_ref": state.next_operator_ref(),
                    "callback_url": broadcast.get("callback_url") or "",
                    "starts": max(broadcast["_starts"], time.time()),
                    "ends": broadcast["_ends"],
                    "rate": rate,
                    "reached": 0,
                    "reported": -1,
                    "next_report": 0.0,
                    "cancelled": False,
                    "cancelled_at": None,
                    "finished": False,
                }
                state.area_broadcasts += 1
            else:
                state.replays += 1
        return 202, {"broadcast_id": broadcast_id, "operator_ref": entry["operator_ref"], "accepted": True}

    def cancel_area_broadcast(self, state: OperatorState, broadcast_id: str) -> tuple[int, dict[str, Any]]:
        """Stop an area broadcast; cancelling twice answers the same."""
        with state.lock:
            entry = state.broadcasts.get(broadcast_id)
            if entry is None:
                return 404, {"error": "Unknown area broadcast."}
            if not entry["cancelled"]:
                entry["cancelled"] = True
                entry["cancelled_at"] = time.time()
                entry["next_report"] = 0.0  # report the final reach at once
                state.area_cancels += 1
            return 200, {"broadcast_id": broadcast_id, "cancelled": True, "handsets_reached": entry["reached"]}

    def _report_reach(self) -> None:
        """Post each running broadcast's cumulative reach to its callback, then once more when it stops."""
        session = requests.Session()
        while not self._reach_stop.wait(0.05):
            now = time.time()
            for state in list(self.operators.values()):
                due = []
                with state.lock:
                    interval = state.behaviour.reach_report_interval_ms / 1000
                    for broadcast_id, entry in state.broadcasts.items():
                        if entry["finished"] or now < entry["next_report"]:
                            continue
                        stop_at = entry["cancelled_at"] if entry["cancelled"] else entry["ends"]
                        elapsed = max(0.0, min(now, stop_at) - entry["starts"])
                        entry["reached"] = max(entry["reached"], int(entry["rate"] * elapsed))
                        entry["next_report"] = now + interval
                        if entry["reached"] != entry["reported"] or now >= stop_at:
                            due.append((broadcast_id, entry, entry["reached"], now >= stop_at))
                for broadcast_id, entry, reached, final in due:
                    if not (state.report_token and entry["callback_url"]):
                        entry["finished"] = final
                        continue
                    at = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
                    try:
                        response = session.post(
                            entry["callback_url"],
                            json={"broadcast_id": broadcast_id, "handsets_reached": reached, "at": at},
                            headers={"Authorization": f"Bearer {state.report_token}"},
                            timeout=10,
                        )
                        ok = response.status_code < 300
                    except requests.RequestException as exc:
                        logger.warning("Reach report to %s failed: %s", entry["callback_url"], exc)
                        ok = False
                    with state.lock:
                        if ok:
                            entry["reported"] = reached
                            entry["finished"] = final
                            state.reach_reports_sent += 1


def _reports_for(state: OperatorState, message_ids: list[Any]) -> list[dict[str, Any]]:
    ratio = state.behaviour.delivered_ratio
    done_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    reports = []
    for message_id in message_ids:
        delivered = random.random() < ratio
        reports.append(
            {
                "message_id": message_id,
                "status": "DELIVERED" if delivered else "UNDELIVERED",
                "operator_ref": state.next_operator_ref(),
                "error_code": "" if delivered else "ABSENT_SUBSCRIBER",
                "done_at": done_at,
            }
        )
    return reports


def config_from_json(data: dict[str, Any]) -> dict[str, OperatorConfig]:
    """Build operator configs from ``{slug: {api_key, signing_secret, report_token?, behaviour fields...}}``."""
    behaviour_fields = {f.name for f in dataclasses.fields(OperatorBehaviour)}
    configs = {}
    for slug, entry in data.items():
        behaviour = OperatorBehaviour(**{k: v for k, v in entry.items() if k in behaviour_fields})
        configs[slug] = OperatorConfig(
            api_key=entry["api_key"],
            signing_secret=entry["signing_secret"],
            report_token=entry.get("report_token"),
            behaviour=behaviour,
        )
    return configs


def main(argv: list[str] | None = None) -> None:
    """Serve operators read from a JSON file; print the URL once listening (for tests and benchmarks)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON file: {slug: {api_key, signing_secret, ...}}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument("--report-threads", type=int, default=2)
    args = parser.parse_args(argv)
    with open(args.config) as config_file:
        operators = config_from_json(json.load(config_file))
    server = SimulatorServer(operators, host=args.host, port=args.port, report_threads=args.report_threads)
    print(f"operator simulator listening on {server.url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
