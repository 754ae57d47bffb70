"""Subscribers' numbers masked in what the processes log: personal data stays in the database, not in log files.

A number reaches a log line through a request's address (`/api/v1/subscribers/{msisdn}/opt-out/`, the subscriber
search `?msisdn=0812…`, a page's referer), in any of its usual forms and URL-encoded. `mask_numbers` finds each
Indonesian mobile number in a text and keeps only its operator prefix and last two digits ("+62812******90"), enough
to tell two apart in an investigation. `NumbersMaskedFilter` applies it to log records (settings.LOGGING), and
`config.access_log` to gunicorn's access log.

No Django import: gunicorn loads this before any application.
"""

import logging
import re
from urllib.parse import quote, unquote_plus

from smsblast.phones import SEPARATOR_CHARACTERS, normalize

# Every other separator a number is accepted with (a tab, a non-breaking space or an en dash left by pasting it
# from a document), as written or URL-encoded in UTF-8 ("%C2%A0", "%E2%80%93"). Not a line break: numbers on lines
# of their own in a message are counts, not the parts of one number.
_LINE_BREAKS = set("\n\r\x0b\x0c")
_OTHER_SEPARATORS = "|".join(
    f"{re.escape(ch)}|(?i:{re.escape(quote(ch))})"
    for ch in sorted(set(SEPARATOR_CHARACTERS) - set(" .-()") - _LINE_BREAKS)
)
# A run of digits, separators between them as a number is written or URL-encoded (a space as "+" or "%20", a
# "+62" as "%2B62"), with its leading plus or parenthesis.
_SEPARATOR = rf"(?:[ .\-+()]|%2[0BbDdEe89]|{_OTHER_SEPARATORS})"
_CANDIDATE = re.compile(rf"(?:\+|%2[Bb])?(?:\(|%28)?\d(?:{_SEPARATOR}{{0,3}}\d)+", re.ASCII)
# The fewest and most digits an Indonesian mobile number is written with ("812345678" to "0062812345678901").
_MIN_DIGITS, _MAX_DIGITS = 9, 16
# Kept of the E.164 form at its start ("+62" and the operator's three digits) and at its end.
_KEPT_HEAD, _KEPT_TAIL = 6, 2


def mask_number(e164: str) -> str:
    """Return an E.164 number with all but its operator prefix and last two digits starred."""
    hidden = len(e164) - _KEPT_HEAD - _KEPT_TAIL
    return e164[:_KEPT_HEAD] + "*" * hidden + e164[-_KEPT_TAIL:]


# Where a run written with spaces may hold a number and what follows it ("081234567890 200").
_SPACES = re.compile(r"((?: |\+|%20)+)")
# Where a run may hold two numbers, one after another on a line or on the next ("081234567890\t081234567891").
_OTHER = re.compile(rf"((?:{_OTHER_SEPARATORS})+)")


def _masked_piece(written: str) -> str:
    # A "+" between digits is a URL-encoded space; a leading one, or "%2B", the country code's.
    plus = "+" if written.startswith("+") else ""
    decoded = plus + unquote_plus(written[len(plus) :])
    # Counted once decoded: the digits of an escape ("%20", "%2B") are none of the number's.
    digits = sum(ch.isdigit() for ch in decoded)
    if not _MIN_DIGITS <= digits <= _MAX_DIGITS:
        return written
    number = normalize(decoded)
    return mask_number(number.e164) if number.ok else written


def _masked(written: str, splitters: tuple[re.Pattern, ...] = (_OTHER, _SPACES)) -> str:
    """Mask `written` as one number, else each piece it splits into at the next kind of separator."""
    masked = _masked_piece(written)
    if masked != written or not splitters:
        return masked
    first, *rest = splitters
    return "".join(_masked(piece, tuple(rest)) for piece in first.split(written))


# A UUID (a campaign's, a batch's) is no number, even where its groups of digits read as one ("…-8123-4567-89ab-…").
_UUID = re.compile(r"([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})")


def mask_numbers(text: str) -> str:
    """Return `text` with every Indonesian mobile number in it, as written or URL-encoded, masked."""
    # The split keeps each UUID at an odd index, left as it is.
    pieces = _UUID.split(text)
    return "".join(piece if index % 2 else _CANDIDATE.sub(_masked_match, piece) for index, piece in enumerate(pieces))


def _masked_match(match: re.Match) -> str:
    return _masked(match[0])


class NumbersMaskedFilter(logging.Filter):
    """Mask subscribers' numbers in a log record's message (a request's path in "Not Found: /api/v1/…") and in the
    traceback it carries (a database error naming the row it refused: "Key (msisdn)=(+62…) already exists")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not record.exc_text:
            # Formatted here, as the handler's formatter would, which then uses this text instead.
            record.exc_text = _TRACEBACK_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_numbers(record.exc_text)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call is the handler's to report, as without this filter
            return True
        masked = mask_numbers(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_TRACEBACK_FORMATTER = logging.Formatter()
