"""HMAC-SHA256 request signing for the Operator Batch API (no Django: shared by the adapter and the simulator).

The signed message is ``"{timestamp}." + raw body``; the header value is ``sha256=<hex>``. Binding the
timestamp into the MAC lets a receiver refuse replays older than a tolerance without keeping state.
"""

import hashlib
import hmac

SCHEME = "sha256="
MAX_TIMESTAMP_DIGITS = 20


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """Return the ``X-Smsblast-Signature`` value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SCHEME + mac.hexdigest()


def verify(
    secret: str,
    timestamp: int | str | None,
    body: bytes,
    signature: str | None,
    *,
    now: float,
    tolerance: int = 300,
) -> bool:
    """Return whether `signature` signs `body` at `timestamp` and the timestamp is within `tolerance` of `now`.

    The comparison is constant-time; a missing, stale or non-numeric timestamp (anything but ASCII digits, as
    the header is sent, at most 20 of them) is refused before any MAC is computed. The MAC covers the timestamp
    exactly as received, as an operator computes it: ``+1700000000`` or ``1_700_000_000`` is not the
    ``1700000000`` that was signed.
    """
    if not signature or timestamp is None:
        return False
    timestamp = str(timestamp)
    # Unix seconds have 10 digits for centuries; thousands of digits would not even convert to an int.
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > MAX_TIMESTAMP_DIGITS:
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode())
