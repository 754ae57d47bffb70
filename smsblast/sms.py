"""SMS text rules of GSM 03.38: encoding, segment count and GSM-7 suggestions.

A message is GSM-7 when every character is in the default alphabet or its
extension table, and UCS-2 otherwise. GSM-7 fits 160 septets in a single SMS
and 153 per part when concatenated; an extension character takes two septets
(escape plus character) and its pair is never split across parts. UCS-2 fits
70 UTF-16 code units in a single SMS and 67 per part; a surrogate pair is
never split. Segments are counted by packing the actual parts, because a pair
that would straddle a part boundary moves whole to the next part and can add
a segment that plain division would miss.

This module has no Django import so that the web UI, the API and the send
pipeline can share it and its tests run without a database.
"""

import re
import unicodedata
from dataclasses import asdict, dataclass

GSM7 = "GSM7"
UCS2 = "UCS2"

MAX_SEGMENTS = 10

# The GSM 03.38 default alphabet in code order, 0x00-0x7F. 0x1B is left out:
# it is the escape to the extension table, not a character of its own.
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# Characters of the extension table that phones actually render; each is sent
# as escape plus character, so it costs two septets.
_GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
_GSM7 = _GSM7_BASIC | _GSM7_EXTENSION

_SINGLE_PART_UNITS = {GSM7: 160, UCS2: 70}
# A concatenated part gives up room to its User Data Header (6 octets).
_CONCATENATED_PART_UNITS = {GSM7: 153, UCS2: 67}

_ZERO_WIDTH = "\u200b\u200c\u200d\ufeff"
_UNICODE_SPACES = "\t\u00a0\u202f\u205f\u3000" + "".join(chr(c) for c in range(0x2000, 0x200B))
# Hints to break a word here (soft hyphen) or not (word joiner) that text from word processors and PDFs carries.
_BREAK_HINTS = "\u00ad\u2060"
_LINE_SEPARATORS = "\u2028\u2029"
# Embeddings, overrides and isolates, which a number copied from a phone's contacts carries; an SMS needs none
# and submission refuses them (see REORDERS below).
_DIRECTION_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# The left-to-right, right-to-left and Arabic letter marks: invisible, and only of use among right-to-left letters,
# which a GSM-7 text has none of.
_DIRECTION_MARKS = "\u200e\u200f\u061c"

# Look-alikes that word processors and chat apps put into otherwise plain
# Indonesian text, each of which alone would turn the message into UCS-2.
_REPLACEMENTS = {
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u2039\u203a`\u00b4", "'"),
    # Apostrophes and primes some keyboards and phones type as modifier letters ("Jum\u02bcat", "do\u02bba").
    **dict.fromkeys("\u02bc\u02bb\u02b9", "'"),
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb\u02ba", '"'),
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2022", "-"),
    "\u2026": "...",
    # Symbols of health notices ("lansia \u2265 60 tahun", "3\u00d7 sehari"), written as people type them without.
    "\u2265": ">=",
    "\u2264": "<=",
    "\u00d7": "x",
    "\u00b1": "+/-",
    # The degree sign, and the ordinal indicator often typed for it, as people write it without ("38oC").
    **dict.fromkeys("\u00b0\u00ba", "o"),
    # Sizes and doses ("100 m\u00b2", "\u00bd tablet").
    "\u00b2": "2",
    "\u00b3": "3",
    "\u00bd": "1/2",
    "\u00bc": "1/4",
    "\u00be": "3/4",
    **dict.fromkeys(_UNICODE_SPACES, " "),
    **dict.fromkeys(_ZERO_WIDTH, ""),
    **dict.fromkeys(_BREAK_HINTS, ""),
    **dict.fromkeys(_LINE_SEPARATORS, "\n"),
    **dict.fromkeys(_DIRECTION_CONTROLS, ""),
    **dict.fromkeys(_DIRECTION_MARKS, ""),
}
# The invisible characters the suggestion removes (zero-width, break hints, direction controls and marks).
_BLANK_REMOVALS = str.maketrans(dict.fromkeys(char for char, replacement in _REPLACEMENTS.items() if not replacement))

# Control characters have no Unicode name; these are the ones likely to be
# pasted into a text.
_CONTROL_NAMES = {
    "\t": "CHARACTER TABULATION",
    "\x0b": "LINE TABULATION",
    "\x1b": "ESCAPE",
}


# Why a text cannot be sent, as TextError.reason gives it (and the page's counter names it).
EMPTY = "empty"
TOO_LONG = "too_long"


class TextError(ValueError):
    """Text that cannot be sent as a campaign SMS; the message says why and ``reason`` is EMPTY or TOO_LONG."""

    def __init__(self, message: str, *, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class NonGsmChar:
    """A character outside GSM-7 and what the suggestion puts in its place.

    ``position`` is the index in the Python string. ``replacement`` is the
    GSM-7 text that stands in for the character ("" when it is removed), or
    None when there is none. It stands in for the text from ``start`` up to
    and including the character: ``start`` is ``position``, except for a
    combining mark that composes with the letter before it into a GSM-7
    letter ("e" and U+0301 become "é"), where it is the letter's position.
    """

    char: str
    position: int
    name: str
    replacement: str | None
    start: int = -1

    def __post_init__(self):
        if self.start < 0:
            object.__setattr__(self, "start", self.position)


@dataclass(frozen=True)
class Analysis:
    """Encoding, size and parts of an SMS text, with a GSM-7 suggestion.

    ``units`` are septets for GSM-7 and UTF-16 code units for UCS-2.
    ``per_segment`` is the part size in force: the single-SMS size when the
    text fits one part, the concatenated size otherwise. ``remaining`` is the
    number of units left in the last part before another part is needed.
    ``suggestion`` is the text with every known GSM-7 replacement applied, or
    None when no replacement applies; it may still be UCS-2 if characters
    without a replacement remain, which ``suggestion_encoding`` tells.
    """

    encoding: str
    length: int
    units: int
    segments: int
    per_segment: int
    remaining: int
    non_gsm: list[NonGsmChar]
    suggestion: str | None
    suggestion_encoding: str | None
    suggestion_segments: int | None
    parts: list[str]

    def as_dict(self) -> dict:
        """Return the analysis as a JSON-ready dict."""
        return asdict(self)


def is_gsm7(text: str) -> bool:
    """Return whether every character of the text is in GSM-7 (basic or extension)."""
    return all(char in _GSM7 for char in text)


def split_parts(text: str) -> list[str]:
    """Return the text split into the parts that would be sent, in order."""
    return _pack(text, _encoding_of(text))


def analyze(text: str, *, max_segments: int = MAX_SEGMENTS) -> Analysis:
    """Return the encoding, size, parts and GSM-7 suggestion of an SMS text.

    Raise TextError when the text is blank or needs more than
    ``max_segments`` segments.
    """
    if max_segments < 1:
        raise ValueError(f"max_segments must be at least 1, not {max_segments}.")
    # The invisible characters the suggestion removes count as blank: a text of only those shows
    # nothing on the phone.
    if not text.translate(_BLANK_REMOVALS).strip():
        raise TextError("Text is empty.", reason=EMPTY)

    encoding = _encoding_of(text)
    parts = _pack(text, encoding)
    segments = len(parts)
    if segments > max_segments:
        raise TextError(f"Text needs {segments} segments; the maximum is {max_segments}.", reason=TOO_LONG)
    if segments == 1:
        per_segment = _SINGLE_PART_UNITS[encoding]
    else:
        per_segment = _CONCATENATED_PART_UNITS[encoding]

    non_gsm = [_non_gsm_char(text, position) for position, char in enumerate(text) if char not in _GSM7]
    suggestion = suggestion_encoding = suggestion_segments = None
    if any(item.replacement is not None for item in non_gsm):
        characters = list(text)
        for item in non_gsm:
            if item.replacement is not None:
                # The letter a mark composes with is GSM-7, and what stands between them is removed, so no other
                # replacement puts anything there.
                characters[item.start : item.position] = [""] * (item.position - item.start)
                characters[item.position] = item.replacement
        suggestion = "".join(characters)
        suggestion_encoding = _encoding_of(suggestion)
        suggestion_segments = len(_pack(suggestion, suggestion_encoding))

    return Analysis(
        encoding=encoding,
        length=len(text),
        units=_units(text, encoding),
        segments=segments,
        per_segment=per_segment,
        remaining=per_segment - _units(parts[-1], encoding),
        non_gsm=non_gsm,
        suggestion=suggestion,
        suggestion_encoding=suggestion_encoding,
        suggestion_segments=suggestion_segments,
        parts=parts,
    )


def content_cost(segments: int, recipients: int, tariff: int) -> int:
    """Return the content cost in rupiah at ``tariff`` rupiah per segment sent."""
    if segments < 0 or recipients < 0 or tariff < 0:
        raise ValueError("Segments, recipients and tariff must not be negative.")
    return segments * recipients * tariff


def _encoding_of(text: str) -> str:
    return GSM7 if is_gsm7(text) else UCS2


def _unit_cost(char: str, encoding: str) -> int:
    if encoding == GSM7:
        return 2 if char in _GSM7_EXTENSION else 1
    # Outside the Basic Multilingual Plane, UTF-16 needs a surrogate pair.
    return 2 if ord(char) > 0xFFFF else 1


def _units(text: str, encoding: str) -> int:
    return sum(_unit_cost(char, encoding) for char in text)


def _pack(text: str, encoding: str) -> list[str]:
    """Split the text greedily into parts, never splitting a character's units."""
    if not text:
        return []
    if _units(text, encoding) <= _SINGLE_PART_UNITS[encoding]:
        return [text]
    part_size = _CONCATENATED_PART_UNITS[encoding]
    parts = []
    start = used = 0
    for position, char in enumerate(text):
        cost = _unit_cost(char, encoding)
        if used + cost > part_size:
            parts.append(text[start:position])
            start, used = position, 0
        used += cost
    parts.append(text[start:])
    return parts


def _char_name(char: str) -> str:
    return unicodedata.name(char, "") or _CONTROL_NAMES.get(char) or f"U+{ord(char):04X}"


def _non_gsm_char(text: str, position: int) -> NonGsmChar:
    char = text[position]
    start, replacement = position, _gsm7_replacement(char)
    if replacement is None and _is_diacritic_mark(char):
        start, replacement = _mark_replacement(text, position)
    return NonGsmChar(char=char, position=position, name=_char_name(char), replacement=replacement, start=start)


# The combining diacritical marks of letters (U+0300-U+036F, and the extended and supplement blocks as far as
# Unicode 14 fills them), named by range rather than by category alone so that the page's counter, whose browser
# may know marks added since, gives the same answer. The marks for symbols (U+20D0-U+20FF) are not among them.
_DIACRITIC_RANGES = ((0x0300, 0x036F), (0x1AB0, 0x1ACE), (0x1DC0, 0x1DFF))


def _is_diacritic_mark(char: str) -> bool:
    code = ord(char)
    return unicodedata.category(char) == "Mn" and any(low <= code <= high for low, high in _DIACRITIC_RANGES)


def _mark_replacement(text: str, position: int) -> tuple[int, str | None]:
    """Return where the replacement of a combining mark starts, and the replacement.

    Keyboards and PDFs write "é" as "e" and U+0301. A mark right after a GSM-7 letter composes with it into the
    GSM-7 letter when there is one; otherwise the mark goes and the letter stays, as a precomposed letter outside
    GSM-7 falls back to its base letter. A mark on no letter, or on one without a GSM-7 form, has no replacement:
    on a symbol it can be what it says ("=" and U+0338 are "≠"). An invisible character the suggestion removes
    (a direction mark, a zero-width space) is looked past, since the suggestion puts the mark on the letter.
    """
    base_at = position - 1
    while base_at >= 0 and (_is_diacritic_mark(text[base_at]) or _REPLACEMENTS.get(text[base_at]) == ""):
        base_at -= 1
    if base_at < 0 or not unicodedata.category(text[base_at]).startswith("L"):
        return position, None
    base = text[base_at]
    if base in _GSM7:
        composed = unicodedata.normalize("NFC", base + text[position])
        on_the_letter = not any(_is_diacritic_mark(char) for char in text[base_at + 1 : position])
        if on_the_letter and len(composed) == 1 and composed in _GSM7:
            return base_at, composed
        return position, ""
    return position, "" if _gsm7_replacement(base) is not None else None


def _gsm7_replacement(char: str) -> str | None:
    if char in _REPLACEMENTS:
        return _REPLACEMENTS[char]
    # An accented Latin letter outside GSM-7 (á, ç, ã) falls back to its base
    # letter; the accented letters GSM-7 has (é, à) never reach this point.
    # Only a letter: a symbol's mark can be what it says ("≠" is "=" struck
    # through) and one that decomposes to another symbol may not mean it
    # (the Greek question mark is ";").
    if not unicodedata.category(char).startswith("L"):
        return None
    base = "".join(part for part in unicodedata.normalize("NFD", char) if not unicodedata.combining(part))
    if base and base != char and is_gsm7(base):
        return base
    return None


# --- characters a reader of the text cannot see as they are ---------------------------------
#
# An approver approves the text a page shows, and handsets show the same characters their own way: whatever a
# page draws as nothing, or as another character, lets an author make the approver read a different text, number
# or link than the one handsets show. Each such character is named by its kind, so the pages can mark it in
# place and say why, and submission can refuse the kinds that have no use in an SMS.

# Embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) reorder the text shown around them, and a
# browser and each handset apply them differently: "1 ‮0001" may read 1000 or 0001. An SMS, even one in a
# right-to-left script, needs none of them (handsets order such text themselves), so submission refuses them.
REORDERS = "reorders"
# C0 and C1 control characters other than the line breaks, tab and form feed GSM 03.38 knows: handsets show
# nothing or a box, and no text typed or pasted for people holds them, so submission refuses them too.
CONTROL = "control"
# Zero-width and other format characters, and characters that draw a blank: sent and counted, shown by nothing,
# and able to split a word, number or link so that it is no longer recognised. Pasted text often carries them,
# the suggestion removes the common ones, and the direction marks (U+200E, U+200F, U+061C) have a use in
# right-to-left text, so they are marked rather than refused.
INVISIBLE = "invisible"
# A letter or digit of another script, or a styled form of an ASCII one, that looks like a common Latin letter or
# digit: "blitаrkab.go.id" with a Cyrillic "а" is another domain.
LOOK_ALIKE = "look_alike"
# Blanks at the start or end of the text: not seen, yet sent and counted.
EDGE_BLANK = "edge_blank"

# The kinds submission refuses; the others are marked where the text is shown.
REFUSED_KINDS = (REORDERS, CONTROL)

_BIDI_CONTROLS = frozenset(_DIRECTION_CONTROLS)
# Control characters that are text: line feed, carriage return, tab and form feed (a GSM-7 extension).
_TEXT_CONTROLS = frozenset("\n\r\t\f")
# Not format characters, yet they draw nothing: Hangul fillers, the braille blank, the combining grapheme joiner
# and the Mongolian vowel separator.
_BLANK_GLYPHS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u180e")
_ZERO_WIDTH_JOINER = "\u200d"
_WORD_RE = re.compile(r"[^\W_]+")
_ASCII_LETTER_RE = re.compile(r"[A-Za-z]")
_BLACK_FLAG = "\U0001f3f4"


@dataclass(frozen=True)
class HiddenChar:
    """A character of the text that a reader cannot see as it is, and why (its ``kind``).

    ``position`` is the index in the Python string; ``code_point`` is written "U+202E".
    """

    char: str
    position: int
    code_point: str
    name: str
    kind: str


def hidden_characters(text: str) -> list[HiddenChar]:
    """Return the characters of the text that a page would show as nothing or as another character, in order.

    A zero-width joiner inside an emoji sequence, a variation selector after an emoji and the tags of a flag are
    part of the emoji a handset draws, and a no-break space is a space: none of them is returned.
    """
    stripped = text.strip()
    lead = len(text) - len(text.lstrip())
    trail = len(stripped) + lead if stripped else 0
    # Each word is looked at once, so that a long text costs time in proportion to its length.
    in_latin_word = [False] * len(text)
    for word in _WORD_RE.finditer(text):
        if _ASCII_LETTER_RE.search(word.group()):
            in_latin_word[word.start() : word.end()] = [True] * (word.end() - word.start())
    hidden = []
    for position, char in enumerate(text):
        kind = _hidden_kind(text, position, in_latin_word=in_latin_word[position])
        if kind is None and (position < lead or position >= trail):
            kind = EDGE_BLANK
        if kind is not None:
            code_point = f"U+{ord(char):04X}"
            name = _char_name(char)
            if name == code_point:  # a control character without a name of its own
                name = "CONTROL CHARACTER" if kind == CONTROL else "UNNAMED CHARACTER"
            hidden.append(HiddenChar(char=char, position=position, code_point=code_point, name=name, kind=kind))
    return hidden


def _hidden_kind(text: str, position: int, *, in_latin_word: bool) -> str | None:
    char = text[position]
    if char in _BIDI_CONTROLS:
        return REORDERS
    category = unicodedata.category(char)
    if category == "Cc":
        return None if char in _TEXT_CONTROLS - {"\f"} else (INVISIBLE if char == "\f" else CONTROL)
    if char == _ZERO_WIDTH_JOINER and _joins_emoji(text, position):
        return None
    if 0xE0020 <= ord(char) <= 0xE007F and _in_flag_tags(text, position):
        return None
    if 0xFE00 <= ord(char) <= 0xFE0F or 0xE0100 <= ord(char) <= 0xE01EF:
        before = text[position - 1] if position else ""
        return None if before and (_is_pictographic(before) or before in "0123456789#*") else INVISIBLE
    if category in ("Cf", "Zl", "Zp") or char in _BLANK_GLYPHS:
        return INVISIBLE
    if category[0] in "LN" and not char.isascii() and _looks_like_ascii(char, in_latin_word=in_latin_word):
        return LOOK_ALIKE
    return None


def _looks_like_ascii(char: str, *, in_latin_word: bool) -> bool:
    if unicodedata.category(char) == "Nd":
        # A digit of another script (Arabic-Indic "١") reads as a digit but is not the one a number needs.
        return True
    folded = unicodedata.normalize("NFKC", char)
    if folded != char and folded.isascii() and folded.isalnum():
        # Fullwidth, mathematical and other styled forms of ASCII letters and digits.
        return True
    name = _char_name(char)
    if name.startswith(("LATIN ", "U+")):
        return False
    # A letter of another script among Latin letters of the same word: "Vаksin" with a Cyrillic "а".
    return in_latin_word


def _is_pictographic(char: str) -> bool:
    code = ord(char)
    return (
        code >= 0x1F000
        or 0x2190 <= code <= 0x21FF
        or 0x2300 <= code <= 0x27BF
        or 0x2B00 <= code <= 0x2BFF
        or char in "\u00a9\u00ae\u203c\u2049\u2122\u2139"
    )


def _joins_emoji(text: str, position: int) -> bool:
    """Return whether a zero-width joiner stands between two emoji ("👨‍👩‍👧", "🏳️‍🌈")."""
    before = position - 1
    while before >= 0 and (0xFE00 <= ord(text[before]) <= 0xFE0F or 0x1F3FB <= ord(text[before]) <= 0x1F3FF):
        before -= 1
    after = position + 1
    return before >= 0 and after < len(text) and _is_pictographic(text[before]) and _is_pictographic(text[after])


def _in_flag_tags(text: str, position: int) -> bool:
    """Return whether a tag character belongs to a flag sequence (black flag, tags, cancel tag)."""
    start = position
    while start > 0 and 0xE0020 <= ord(text[start - 1]) <= 0xE007F:
        start -= 1
    return start > 0 and text[start - 1] == _BLACK_FLAG


# A host name as a text writes a link, in letters of any script: "blitarkab.go.id", "https://covid19.go.id/vaksin".
_HOST_RE = re.compile(r"(?<![\w@.-])(?:https?://)?((?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,})(?![\w-])")


@dataclass(frozen=True)
class LinkHost:
    """A host name of the text written with letters outside ASCII, and the ASCII form (punycode) it resolves as."""

    written: str
    ascii: str


def international_hosts(text: str) -> list[LinkHost]:
    """Return each host name the text writes with letters outside ASCII, once, with the form it resolves as.

    Such a host can look like an ASCII one ("blitаrkab.go.id" with a Cyrillic "а" is xn--blitrkab-46g.go.id),
    so a reader needs the form that is told apart.
    """
    hosts = []
    for match in _HOST_RE.finditer(text):
        written = match.group(1)
        if written.isascii():
            continue
        try:
            ascii_form = written.encode("idna").decode("ascii")
        except UnicodeError:  # a label IDNA 2003 refuses: its punycode still tells it apart
            ascii_form = ".".join(
                label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
                for label in written.split(".")
            )
        host = LinkHost(written=written, ascii=ascii_form.lower())
        if host not in hosts:
            hosts.append(host)
    return hosts
