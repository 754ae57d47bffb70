"""HMAC-SHA256 request signing for the Operator Batch API (no Django: shared by the adapter and the simulator).

The signed message is ``"{timestamp}." + raw body``; the header value is ``sha256=<hex>``. Binding the
timestamp into the MAC lets a receiver refuse replays older than a tolerance without keeping state.
"""

import hashlib
import hmac

SCHEME = "sha256="


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

    The comparison is constant-time; a missing, non-numeric or stale timestamp is refused before any MAC is
    computed.
    """
    if not signature or timestamp is None:
        return False
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now - sent_at) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent_at, body).encode(), signature.encode())
