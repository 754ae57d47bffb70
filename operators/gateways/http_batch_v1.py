"""The Operator Batch API v1 push adapter: one signed JSON POST per batch, answers classified for the send task.

Classification (Operator Batch API v1):
  202 (any 2xx) with a readable answer  ACCEPTED (accepted count and rejected messages)
  2xx naming another batch_id           RETRY: the answer is about some other batch and says nothing of
                                        this one; the retry reuses this batch's Idempotency-Key
  429                                   RETRY, retry_after from Retry-After (seconds or an HTTP date)
  408, 5xx, timeout, connection error   RETRY (Retry-After honoured when a 503 sends one)
  any other 4xx, 3xx, a bad base_url    FAILED, with the operator's reason kept (a redirect: where it points)
  2xx whose body cannot be read         RETRY: the operator may well have taken the batch, so failing it
                                        would mark deliveries failed that are being sent; a retry reuses
                                        the Idempotency-Key, so the operator answers its first answer again
                                        and sends nothing twice, and the retry budget still bounds it.
  an answer cut off, or not complete    RETRY, for the same reason; the whole answer must arrive within
  within the read timeout               the read timeout (not only each byte), so a trickling operator
                                        cannot hold a worker past the batch's lease. Bodies past
                                        `answer_limit` are cut there.
"""

import json
import os
import threading
import time
import uuid
from email.utils import parsedate_to_datetime

import requests
import urllib3
from requests.adapters import HTTPAdapter

from operators import signing
from operators.gateways.base import (
    AreaBroadcastResult,
    BatchResult,
    GatewayAdapter,
    OutboundAreaBroadcast,
    OutboundBatch,
    Outcome,
    operator_text,
    register,
)

# Connections kept per operator host; a worker process sends at most its concurrency at once, the rest is slack.
POOL_SIZE = int(os.environ.get("SMSBLAST_HTTP_POOL_SIZE", "16"))
CONNECT_TIMEOUT = float(os.environ.get("SMSBLAST_HTTP_CONNECT_TIMEOUT", "3.05"))
# An operator validating 1,000 recipients answers in well under this; longer means it is in trouble.
READ_TIMEOUT = float(os.environ.get("SMSBLAST_HTTP_READ_TIMEOUT", "30"))
MAX_ERROR_CHARS = 500
# The most of an answer read: room for every message of the batch refused with a reason, and then some. A
# larger body (a misrouted download) is cut there rather than held in the worker's memory.
ANSWER_BASE_BYTES = 2**20
ANSWER_BYTES_PER_RECIPIENT = 1024
# The longest Retry-After honoured: a larger one (or a date far ahead) would overflow the retry time, and
# the send task would raise with the batch still in flight. A day outlasts any message's usefulness.
MAX_RETRY_AFTER_SECONDS = 24 * 3600.0

_session: requests.Session | None = None
_session_pid: int | None = None
_session_lock = threading.Lock()


def http_session() -> requests.Session:
    """Return this process's pooled session (a new one after a fork: sockets must not be shared)."""
    global _session, _session_pid
    pid = os.getpid()
    if _session is None or _session_pid != pid:
        with _session_lock:
            if _session is None or _session_pid != pid:
                session = requests.Session()
                adapter = HTTPAdapter(pool_connections=8, pool_maxsize=POOL_SIZE, max_retries=0)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                session.headers["User-Agent"] = "smsblast/1 (+batch-api-v1)"
                _session, _session_pid = session, pid
    return _session


def batch_body(batch: OutboundBatch) -> bytes:
    """Return the JSON body of `batch`, encoded once (the signature covers these exact bytes)."""
    document = {
        "batch_id": batch.batch_id,
        "campaign": {"id": batch.campaign_id, "title": batch.campaign_title},
        "sender": batch.sender,
        "text": batch.text,
        "encoding": batch.encoding,
        "segments": batch.segments,
        "priority": batch.priority,
        "expires_at": batch.expires_at,
        "callback_url": batch.callback_url,
        "recipients": [{"message_id": m.message_id, "msisdn": m.msisdn} for m in batch.recipients],
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def batch_headers(batch: OutboundBatch, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """Return the headers that authenticate and sign `body`."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Authorization": f"Bearer {batch.api_key}",
        "Content-Type": "application/json",
        "Idempotency-Key": batch.batch_id,
        "X-Smsblast-Timestamp": str(timestamp),
        "X-Smsblast-Signature": signing.sign(batch.signing_secret, timestamp, body),
    }


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Return the wait a Retry-After header asks for (delta seconds or an HTTP date, at most a day), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - (time.time() if now is None else now)), MAX_RETRY_AFTER_SECONDS)


def answer_limit(batch: OutboundBatch) -> int:
    """Return how many bytes of the operator's answer to `batch` are read at most."""
    return ANSWER_BASE_BYTES + ANSWER_BYTES_PER_RECIPIENT * len(batch.recipients)


def answer_read(response: requests.Response, *, started: float, timeout: float, limit: int) -> None:
    """Read the body of a streamed answer into `response` within `timeout` seconds of `started`, at most `limit` bytes.

    The read timeout alone bounds each wait for a byte, not the answer: an operator trickling its answer a byte
    at a time would hold the worker (and the batch's lease) for ever. Past the deadline this raises
    requests.ReadTimeout; a connection lost mid-answer raises requests.ConnectionError. A body over `limit` is
    cut there and the connection dropped.
    """
    deadline = started + timeout
    chunks, size = [], 0
    while size < limit:
        if time.monotonic() > deadline:
            response.close()
            raise requests.ReadTimeout(f"Read timed out: the answer took longer than {timeout:g} s.")
        try:
            chunk = response.raw.read1(min(65536, limit - size), decode_content=True)
        except urllib3.exceptions.ReadTimeoutError as exc:
            response.close()
            raise requests.ReadTimeout(str(exc)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            response.close()
            raise requests.ConnectionError(f"The answer was cut off: {exc}") from exc
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    else:
        response.close()  # cut: the rest is never read, so the connection cannot be reused
    response._content = b"".join(chunks)
    response._content_consumed = True
    response.close()  # every byte read: the connection goes back to the pool


def _reason(response: requests.Response) -> str:
    """Return the operator's stated reason for refusing, else the start of its body; a redirect names its target."""
    location = response.headers.get("Location")
    if 300 <= response.status_code < 400 and location:
        # Never followed (the signed batch would go where nobody configured): the admin mends the base URL instead.
        return (
            f"HTTP {response.status_code}: redirected to {operator_text(location)[:120]}; "
            "set the operator's base URL to where it answers now"
        )[:MAX_ERROR_CHARS]
    try:
        document = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict):
        for key in ("error", "detail", "message", "reason"):
            if isinstance(document.get(key), str) and document[key]:
                return f"HTTP {response.status_code}: {operator_text(document[key])}"[:MAX_ERROR_CHARS]
    text = operator_text(response.text).strip() or response.reason or ""
    return f"HTTP {response.status_code}: {text}"[:MAX_ERROR_CHARS]


def _names_another_batch(answered, batch_id: str | None) -> bool:
    """Return whether the batch_id of an answer names a batch other than `batch_id` (an absent one names none)."""
    if answered is None or batch_id is None:
        return False
    try:
        return uuid.UUID(str(answered)) != uuid.UUID(batch_id)
    except ValueError:
        return str(answered) != batch_id


def _accepted(response: requests.Response, batch_id: str | None) -> BatchResult:
    try:
        document = response.json()
        if not isinstance(document, dict):
            raise TypeError
        answered = document.get("batch_id")
        accepted = document["accepted"]
        rejected_rows = document.get("rejected") or []
        if not isinstance(accepted, int) or not isinstance(rejected_rows, list):
            raise TypeError
        # A null reason is no reason, not the word "None".
        rejected = [(str(row["message_id"]), str(row.get("reason") or "")) for row in rejected_rows]
    except (ValueError, TypeError, KeyError):
        return BatchResult(
            outcome=Outcome.RETRY,
            error=f"HTTP {response.status_code} with an unreadable answer: {response.text[:200]}",
            status_code=response.status_code,
        )
    if _names_another_batch(answered, batch_id):
        return BatchResult(
            outcome=Outcome.RETRY,
            error=f"HTTP {response.status_code} answered for batch {operator_text(answered)[:100]}, not this one",
            status_code=response.status_code,
        )
    return BatchResult(outcome=Outcome.ACCEPTED, accepted=accepted, rejected=rejected, status_code=response.status_code)


@register
class HttpBatchV1Adapter(GatewayAdapter):
    """POST each batch to ``{base_url}/v1/batches`` with Bearer key, Idempotency-Key and HMAC signature."""

    name = "http_batch_v1"
    uses_base_url = True

    def __init__(self, *, connect_timeout: float | None = None, read_timeout: float | None = None):
        self.timeout = (
            CONNECT_TIMEOUT if connect_timeout is None else connect_timeout,
            READ_TIMEOUT if read_timeout is None else read_timeout,
        )

    def send_batch(self, batch: OutboundBatch) -> BatchResult:
        body = batch_body(batch)
        url = f"{batch.base_url.rstrip('/')}/v1/batches"
        started = time.monotonic()
        try:
            response = http_session().post(
                url,
                data=body,
                headers=batch_headers(batch, body),
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            return BatchResult(outcome=Outcome.RETRY, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        except requests.RequestException as exc:
            # A malformed base_url and the like: no retry can fix the configuration.
            return BatchResult(outcome=Outcome.FAILED, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        try:
            answer_read(response, started=started, timeout=self.timeout[1], limit=answer_limit(batch))
        except (requests.Timeout, requests.ConnectionError) as exc:
            # The request reached the operator, which may have taken the batch: a retry reuses the
            # Idempotency-Key, while failing would mark messages failed that it may be sending.
            return BatchResult(outcome=Outcome.RETRY, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        return classify(response, batch_id=batch.batch_id)

    def send_area_broadcast(self, broadcast: OutboundAreaBroadcast) -> AreaBroadcastResult:
        """POST the broadcast to ``{base_url}/v1/area-broadcasts``; its id is the Idempotency-Key."""
        url = f"{broadcast.base_url.rstrip('/')}/v1/area-broadcasts"
        return self._post_area_broadcast(url, broadcast, area_broadcast_body(broadcast), broadcast.broadcast_id)

    def cancel_area_broadcast(self, broadcast: OutboundAreaBroadcast) -> AreaBroadcastResult:
        """POST ``{base_url}/v1/area-broadcasts/{id}/cancel``; repeating it is harmless."""
        url = f"{broadcast.base_url.rstrip('/')}/v1/area-broadcasts/{broadcast.broadcast_id}/cancel"
        body = json.dumps({"broadcast_id": broadcast.broadcast_id}, separators=(",", ":")).encode()
        return self._post_area_broadcast(url, broadcast, body, f"cancel-{broadcast.broadcast_id}")

    def _post_area_broadcast(
        self, url: str, broadcast: OutboundAreaBroadcast, body: bytes, idempotency_key: str
    ) -> AreaBroadcastResult:
        started = time.monotonic()
        try:
            response = http_session().post(
                url,
                data=body,
                headers=area_broadcast_headers(broadcast, body, idempotency_key=idempotency_key),
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            return AreaBroadcastResult(outcome=Outcome.RETRY, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        except requests.RequestException as exc:
            return AreaBroadcastResult(outcome=Outcome.FAILED, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        try:
            answer_read(response, started=started, timeout=self.timeout[1], limit=ANSWER_BASE_BYTES)
        except (requests.Timeout, requests.ConnectionError) as exc:
            # As for a batch: the operator may have taken it, and the repeat is idempotent.
            return AreaBroadcastResult(outcome=Outcome.RETRY, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        return classify_area_broadcast(response)


def area_broadcast_headers(
    broadcast: OutboundAreaBroadcast, body: bytes, *, idempotency_key: str, timestamp: int | None = None
) -> dict[str, str]:
    """Return the same authentication and signature headers a batch carries."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Authorization": f"Bearer {broadcast.api_key}",
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key,
        "X-Smsblast-Timestamp": str(timestamp),
        "X-Smsblast-Signature": signing.sign(broadcast.signing_secret, timestamp, body),
    }


def area_broadcast_body(broadcast: OutboundAreaBroadcast) -> bytes:
    """Return the JSON body of an area broadcast (see `operators.simulator`), encoded once for signing."""
    document = {
        "broadcast_id": broadcast.broadcast_id,
        "text": broadcast.text,
        "encoding": broadcast.encoding,
        "sender": broadcast.sender,
        "area": {"codes": broadcast.area_codes, "geometry": broadcast.geometry},
        "starts_at": broadcast.starts_at,
        "ends_at": broadcast.ends_at,
        "callback_url": broadcast.callback_url,
        # Beyond the contract, as hints: the repeat policy and our reach estimate for this operator.
        "repeat_policy": broadcast.repeat_policy,
        "estimated_handsets": broadcast.estimated_handsets,
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def classify_area_broadcast(response: requests.Response) -> AreaBroadcastResult:
    """Turn an operator's answer to an area broadcast (or its cancel) into an AreaBroadcastResult."""
    status = response.status_code
    # As for a batch, any 2xx says the operator took it: failing it would leave a broadcast running unwatched.
    if 200 <= status < 300:
        try:
            document = response.json()
        except ValueError:
            document = {}
        reference = (document.get("operator_ref") or document.get("id") or "") if isinstance(document, dict) else ""
        return AreaBroadcastResult(
            outcome=Outcome.ACCEPTED, status_code=status, operator_ref=operator_text(reference)[:100]
        )
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    if status == 429 or status == 408 or status >= 500:
        return AreaBroadcastResult(
            outcome=Outcome.RETRY, retry_after=retry_after, error=_reason(response), status_code=status
        )
    return AreaBroadcastResult(outcome=Outcome.FAILED, error=_reason(response), status_code=status)


def classify(response: requests.Response, *, batch_id: str | None = None) -> BatchResult:
    """Turn an operator's HTTP answer to batch `batch_id` into a BatchResult."""
    status = response.status_code
    if 200 <= status < 300:
        # 202 is the contract's answer; any 2xx says the operator took the batch, never that it refused it.
        return _accepted(response, batch_id)
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    if status == 429 or status == 408 or status >= 500:
        return BatchResult(outcome=Outcome.RETRY, retry_after=retry_after, error=_reason(response), status_code=status)
    return BatchResult(outcome=Outcome.FAILED, error=_reason(response), status_code=status)
