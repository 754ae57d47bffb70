"""Reading subscriber CSV files: layout detection, streaming rows and checking each cell; no Django import.

A file is read line by line from disk, so its size never matters for memory. Accepted forms:

- UTF-8 with or without a byte-order mark, or UTF-16 with one (what Excel saves as "Unicode Text");
- comma, semicolon (spreadsheets set to Indonesian export those) or tab between fields, chosen by
  counting them in the header line;
- a header row naming the columns in Indonesian or English (see ``COLUMN_ALIASES``); only the number
  column is required. Lines above it that name none (a title, a date, Excel's "sep=;") are skipped.
"""

import csv
import functools
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from smsblast.text import search_key

# Number headers naming a telephone of any kind: lists often give an office or home line beside the mobile, so a
# column naming a mobile ("No. HP", "WhatsApp") is taken instead when there is one. Telpon and tlp are how
# telepon is often written; kontak is the number to reach.
_TELEPHONE_ALIASES = (
    "phone",
    "phone_number",
    "phone_no",
    "telephone",
    "telepon",
    "no_telepon",
    "nomor_telepon",
    "telp",
    "no_telp",
    "nomor_telp",
    "telpon",
    "no_telpon",
    "nomor_telpon",
    "tlp",
    "no_tlp",
    "nomor_tlp",
    "no_kontak",
    "nomor_kontak",
)
# Field -> header names meaning it, compared after `header_key` (lower case, "_" for spaces, dots, dashes and the
# marks a form puts after a header: "Nomor HP *", "No. HP:").
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "number": (
        "msisdn",
        "nomor",
        "no_hp",
        "hp",
        *_TELEPHONE_ALIASES,
        # Seluler (cellular) is a mobile, like HP, ponsel and WhatsApp.
        "nomor_hp",
        "mobile",
        "handphone",
        "no_handphone",
        "nomor_handphone",
        "ponsel",
        "nomor_ponsel",
        "no_ponsel",
        "wa",
        "no_wa",
        "nomor_wa",
        "whatsapp",
        "no_whatsapp",
        "nomor_whatsapp",
        "seluler",
        "no_seluler",
        "nomor_seluler",
        "telepon_seluler",
        "no_telepon_seluler",
        "nomor_telepon_seluler",
        "mobile_number",
        "mobile_phone",
    ),
    "area": (
        "kode_wilayah",
        "area_code",
        "kode",
        "wilayah",
        "area",
        "kode_wil",
        "kode_kemendagri",
        "kode_daerah",
        "kode_area",
        # Named by the level of the codes they hold.
        "kode_desa",
        "kode_kelurahan",
        "kode_desa_kelurahan",
        "kode_kecamatan",
        "kode_kabupaten",
        "kode_kab_kota",
        "kode_kota",
        "kode_provinsi",
    ),
    "name": ("nama", "name", "nama_lengkap", "full_name"),
    "language": ("bahasa", "language", "lang"),
    "latitude": ("latitude", "lat", "lintang"),
    "longitude": ("longitude", "lon", "lng", "long", "bujur"),
}
_FIELD_BY_HEADER = {alias: field for field, aliases in COLUMN_ALIASES.items() for alias in aliases}
# Headers that often name another column too ("Nomor" for the row counter, "Kode" for a member code): a column
# with a more specific header ("No. HP", "Kode Wilayah") is taken instead when there is one.
_GENERIC_HEADERS = frozenset({"nomor", "kode"})
_TELEPHONE_HEADERS = frozenset(_TELEPHONE_ALIASES)
# Area headers of a level above the village: a column of village codes beside one of them homes subscribers closer.
_AREA_ABOVE_VILLAGE_HEADERS = frozenset(
    {"kode_kecamatan", "kode_kabupaten", "kode_kab_kota", "kode_kota", "kode_provinsi"}
)
DELIMITERS = (",", ";", "\t")
_QUOTED = re.compile(r'"[^"]*"')
# A note in brackets after a header ("Nomor HP (aktif)") names nothing.
_HEADER_NOTE = re.compile(r"\([^)]*\)|\[[^\]]*\]")

# Languages a subscriber may be written to in; spreadsheets often spell them out.
_LANGUAGE_BY_WORD = {
    "id": "id",
    "ind": "id",
    "indonesia": "id",
    "indonesian": "id",
    "bahasa_indonesia": "id",
    "en": "en",
    "eng": "en",
    "english": "en",
    "inggris": "en",
    "bahasa_inggris": "en",
}

_AREA_DOTTED = re.compile(r"\d{2}(?:\.\d{2}(?:\.\d{2}(?:\.\d{4})?)?)?", re.ASCII)
# Undotted codes as a spreadsheet may hold them: 35, 3505, 350501, 3505012001.
_AREA_UNDOTTED = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(\d{4})?)?)?", re.ASCII)

# How many bytes are looked at to decide whether an upload is a CSV text at all.
SNIFF_BYTES = 64 * 1024
# Lines, blank ones aside, looked through for the header: a list kept in a spreadsheet often has a title, its
# source or date above it, which come along when it is saved as CSV.
HEADER_SEARCH_LINES = 10
# A quoted cell may hold line breaks, but one whose quote is never closed would swallow the rows after
# it; a record gets at most this many lines to close its quotes.
MAX_RECORD_LINES = 10
# No row of subscribers comes near this many characters; a longer line is malformed, and `lines_of` reads it in
# pieces so that a file of one huge line cannot take the worker's memory.
MAX_LINE_CHARS = 1 << 20


class Reject:
    """Why a row was refused, besides the phone-number reasons of smsblast.phones.Reason."""

    MISSING_NUMBER = "missing_number"  # the number cell is empty or the row is too short to have one
    # A number a spreadsheet wrote as it shows it, in scientific notation ("6.28123E+12"): its last digits are lost.
    SCIENTIFIC_NOTATION = "scientific_notation"
    UNKNOWN_AREA = "unknown_area"  # an area code that is not a Kemendagri code in the area table
    # A regency's code a spreadsheet read as a number, its last zero dropped ("35.10" saved as "35.1"): the fix is
    # in the spreadsheet, and guessing could home the subscriber in another regency.
    AREA_CODE_AS_NUMBER = "area_code_as_number"
    INVALID_LANGUAGE = "invalid_language"  # neither Indonesian nor English
    INVALID_COORDINATES = "invalid_coordinates"  # not numbers, or outside Indonesia's bounding box
    MALFORMED_ROW = "malformed_row"  # a quote never closed, a cell or line too long, a NUL or non-UTF-8 byte
    # Not refused but listed beside them: a number accepted on an earlier line of the same file (counted apart, as
    # duplicates, since that line imported it).
    DUPLICATE = "duplicate"
    # Only in an import by an officer limited to a jurisdiction:
    OUTSIDE_JURISDICTION = "outside_jurisdiction"  # the row's area lies outside the jurisdiction
    HOMED_OUTSIDE_JURISDICTION = "homed_outside_jurisdiction"  # the number is a subscriber homed outside it
    MISSING_AREA = "missing_area"  # a number not yet homed within it, and no area in the row


class FileRefused(ValueError):
    """The file cannot be imported at all; the message says why, for the person who uploaded it.

    `code` names the reason (empty, workbook, not_text, not_utf8, header_too_long, no_number_column, no_rows) so
    pages can say it in the user's language.
    """

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Layout:
    """How a file's rows are laid out: the delimiter and the column of each known field."""

    delimiter: str
    columns: dict[str, int]  # field -> 0-based column index
    header: list[str]
    encoding: str = "utf-8-sig"  # how to open the file: "utf-8-sig" or "utf-16" (which reads its byte-order mark)


def header_key(name: str) -> str:
    """Return a header cell as the key looked up in COLUMN_ALIASES ("No. HP" -> "no_hp")."""
    key = search_key(name.lstrip("\ufeff"))
    key = re.sub(r"[\s.\-/*:]+", "_", key)
    return key.strip("_")


def _header_rank(key: str) -> int:
    """Return how well a known header names its field, 0 best, so that the best column of a field is taken.

    1 for a telephone of any kind (a mobile column is better) or an area above the village (a village column
    is closer), 2 for a generic word ("Nomor", "Kode").
    """
    if key in _GENERIC_HEADERS:
        return 2
    return 1 if key in _TELEPHONE_HEADERS or key in _AREA_ABOVE_VILLAGE_HEADERS else 0


def _header_field(cell: str) -> tuple[str | None, str]:
    """Return (field, key) of a header cell; either side of a slash ("No. HP/WA", "Telp/HP") may name the field."""
    key = header_key(cell)
    if key in _FIELD_BY_HEADER:
        return _FIELD_BY_HEADER[key], key
    part_keys = [header_key(part) for part in _HEADER_NOTE.sub(" ", cell).split("/")]
    known = [part_key for part_key in part_keys if part_key in _FIELD_BY_HEADER]
    if known:
        part_key = min(known, key=_header_rank)  # "Telp/HP" names a mobile
        return _FIELD_BY_HEADER[part_key], part_key
    return None, key


def delimiters_of(header_line: str) -> list[str]:
    """Return the delimiters a header line may use, the most frequent first of comma, semicolon and tab.

    Comma when it holds none of them.
    """
    unquoted = _QUOTED.sub("", header_line)  # a comma inside a quoted name ("Nama, Gelar") separates nothing
    counts = {delimiter: unquoted.count(delimiter) for delimiter in DELIMITERS}
    return sorted((delimiter for delimiter in DELIMITERS if counts[delimiter]), key=lambda d: -counts[d]) or [","]


def _columns_of(header: list[str]) -> dict[str, int]:
    """Return the column of each field a header names: per field, the first of the surest header (_header_rank)."""
    ranked: dict[str, tuple[int, int]] = {}
    for index, cell in enumerate(header):
        field, key = _header_field(cell)
        if field is not None and (field not in ranked or _header_rank(key) < ranked[field][0]):
            ranked[field] = (_header_rank(key), index)
    return {field: index for field, (_rank, index) in ranked.items()}


def layout_of(header_line: str, *, encoding: str = "utf-8-sig") -> Layout:
    """Return the layout a header line describes, or refuse a header with no number column.

    Its delimiter is the most frequent one that gives a number column: a spreadsheet set to Indonesian separates
    by semicolons and leaves a comma in a header unquoted ("Nama, Gelar;No HP").
    """
    candidates = delimiters_of(header_line)
    for delimiter in candidates:
        header = next(csv.reader([header_line], delimiter=delimiter), [])
        columns = _columns_of(header)
        if "number" in columns:
            return Layout(delimiter=delimiter, columns=columns, header=header, encoding=encoding)
    header = next(csv.reader([header_line], delimiter=candidates[0]), [])
    names = ", ".join(COLUMN_ALIASES["number"][:5])
    shown = ", ".join(cell.strip() for cell in header if cell.strip())[:200] or "nothing"
    raise FileRefused(
        f"The file has no phone number column. Name one of: {names}. The header has: {shown}.", "no_number_column"
    )


def inspect(path: Path) -> Layout:
    """Check that a file is a CSV text with a number column and at least one data row; return its layout."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\xd0\xcf\x11\xe0"):
        raise FileRefused(
            "This is a spreadsheet workbook, not a CSV file. Save it as CSV (UTF-8) and upload that.", "workbook"
        )
    encoding = "utf-8-sig"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
        # Looked at as UTF-8 from here on; a character cut in two at the end of the sample is dropped.
        text = head[: len(head) // 2 * 2].decode("utf-16", errors="replace")
        head = (text.rstrip("\ufffd") if len(head) == SNIFF_BYTES else text).encode("utf-8", errors="replace")
    if not head.strip(b"\xef\xbb\xbf \t\r\n"):
        raise FileRefused("The file is empty.", "empty")
    if b"\x00" in head:
        raise FileRefused("This is not a CSV text file.", "not_text")
    try:
        # A multi-byte character may be cut at the end of the sample; that is not an error.
        text = head.decode("utf-8-sig", errors="strict") if len(head) < SNIFF_BYTES else _decode_prefix(head)
    except UnicodeDecodeError:
        raise FileRefused("The file is not UTF-8 text. Save it as CSV (UTF-8) and upload that.", "not_utf8") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 and len(head) == SNIFF_BYTES:
        raise FileRefused(
            f"The file's first line is longer than {SNIFF_BYTES // 1024} KiB: it is not the header of a list of "
            "numbers. Check that the file is the subscriber list, saved as CSV.",
            "header_too_long",
        )
    header_at = next((index for index, line in enumerate(lines[:HEADER_SEARCH_LINES]) if _names_number_column(line)), 0)
    layout = layout_of(lines[header_at], encoding=encoding)  # with none, refused saying what the first line holds
    if len(lines) < header_at + 2:
        raise FileRefused("The file has a header but no rows.", "no_rows")
    return layout


def _names_number_column(line: str) -> bool:
    try:
        layout_of(line)
    except FileRefused:
        return False
    return True


Record = tuple[int, int, list[str] | None, str]


def header_and_rows(records: Iterator[Record]) -> tuple[Record | None, Iterator[Record]]:
    """Return the header record of `records` (None when all are blank) and the records after it.

    The header is the first record, among the first HEADER_SEARCH_LINES that are not blank, that names a number
    column or cannot be read (as `inspect` found it); the ones above it are no rows. Failing that, the first.
    """
    above: list[Record] = []
    for record in records:
        cells = record[2]
        if cells is not None and not any(cell.strip() for cell in cells):
            continue  # blank, or spaces and delimiters alone
        if cells is None or "number" in _columns_of(cells):
            return record, records
        above.append(record)
        if len(above) == HEADER_SEARCH_LINES:
            break
    if not above:
        return None, iter(())
    return above[0], itertools.chain(above[1:], records)


def lines_of(handle) -> Iterator[str]:
    """Yield the lines of a text file; a line over MAX_LINE_CHARS is skipped in pieces and yielded cut short.

    The cut line is one character longer than MAX_LINE_CHARS, which `records` reports as malformed.
    """
    limit = MAX_LINE_CHARS
    while line := handle.readline(limit):
        if len(line) == limit and not line.endswith(("\n", "\r")):
            while (rest := handle.readline(limit)) and not rest.endswith(("\n", "\r")):
                pass
            line += "\n"
        yield line


class _Feed:
    """The lines of one record, handed to a csv reader that keeps its state between records."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if not self.lines:
            raise StopIteration
        return self.lines.pop(0)


def records(lines: Iterable[str], delimiter: str) -> Iterator[tuple[int, int, list[str] | None, str]]:
    """Yield (first line, last line, cells, raw text) per record; cells are None (and the raw given) when malformed.

    A record ends on its first line unless a quote opened on it is closed on one of the next
    MAX_RECORD_LINES - 1 lines. A quote never closed, a cell over the csv size limit, a line over
    MAX_LINE_CHARS or a NUL character makes that line alone a malformed record, and reading goes on
    with the next line, so one bad line never hides the rows after it. A record is reported at its
    first line, where its number is; its last line is where reading can resume after it.
    """
    source = iter(lines)
    backlog: list[str] = []  # lines to read again, last first
    feed = _Feed()
    reader = csv.reader(feed, delimiter=delimiter, strict=True)
    line = 0
    while True:
        first = backlog.pop() if backlog else next(source, None)
        if first is None:
            return
        taken = [first]
        quotes = first.count('"')
        while quotes % 2 and len(taken) < MAX_RECORD_LINES:
            more = backlog.pop() if backlog else next(source, None)
            if more is None:
                break
            taken.append(more)
            quotes += more.count('"')
        if quotes % 2:  # never closed: only the first line is this record
            backlog.extend(reversed(taken[1:]))
            taken = taken[:1]
        feed.lines = list(taken)
        try:
            # NUL cannot be stored; U+FFFD stands for a byte that was not UTF-8 (the file is read with
            # errors="replace"), so the row's text would be stored garbled.
            damaged = any("\x00" in text or "\ufffd" in text or len(text) > MAX_LINE_CHARS for text in taken)
            cells = None if damaged else next(reader, [])
        except csv.Error:
            cells = None
        if cells is None:
            feed.lines = []
            backlog.extend(reversed(taken[1:]))
            taken = taken[:1]
        elif feed.lines:  # the record ended before the lines taken for it did
            backlog.extend(reversed(feed.lines))
            taken = taken[: len(taken) - len(feed.lines)]
            feed.lines = []
        first = line + 1
        line += len(taken)
        # The raw text of a malformed record is kept for the person who fixes the file; NUL cannot be stored.
        raw = "" if cells is not None else "".join(taken).rstrip("\r\n").replace("\x00", "\ufffd")
        yield first, line, cells, raw


def _decode_prefix(head: bytes) -> str:
    for cut in range(4):
        try:
            return head[: len(head) - cut].decode("utf-8-sig")
        except UnicodeDecodeError:
            continue
    raise UnicodeDecodeError("utf-8", head, 0, len(head), "invalid UTF-8")


# Excel shows a number of twelve digits or more in scientific notation and saves it as shown, with a decimal comma
# when set to Indonesian ("6,28123E+12"), keeping six digits of thirteen.
_SCIENTIFIC_NOTATION = re.compile(r"[+-]?\d+(?:[.,]\d*)?[eE][+-]?\d+", re.ASCII)


def is_scientific_notation(raw: str) -> bool:
    """Return whether a number cell holds a number in scientific notation ("6.28123E+12"), not the number's digits."""
    return _SCIENTIFIC_NOTATION.fullmatch(raw.strip()) is not None


def area_code_of(raw: str) -> str | None:
    """Return a cell as a dotted Kemendagri code ("3505012001" -> "35.05.01.2001"), or None if it is not one."""
    value = raw.strip()
    if _AREA_DOTTED.fullmatch(value):
        return value
    undotted = _AREA_UNDOTTED.fullmatch(value)
    if undotted is not None:
        return ".".join(part for part in undotted.groups() if part is not None)
    return None


# What Excel set to English makes of a regency's code ending in zero: "35.10" is the number 35.1.
_AREA_CODE_AS_NUMBER = re.compile(r"\d{2}\.\d", re.ASCII)


def is_area_code_as_number(raw: str) -> bool:
    """Return whether an area cell holds a regency's code read as a number, its last zero dropped ("35.1")."""
    return _AREA_CODE_AS_NUMBER.fullmatch(raw.strip()) is not None


@functools.lru_cache(maxsize=1024)
def language_of(raw: str) -> str | None:
    """Return a language cell as "id" or "en", or None when it names another language."""
    return _LANGUAGE_BY_WORD.get(header_key(raw))


# Indonesia lies within these; a point outside is a typing error (often swapped latitude and longitude).
_LAT_RANGE = (-11.5, 6.5)
_LON_RANGE = (94.5, 141.5)


def coordinates_of(latitude: str, longitude: str) -> tuple[float, float] | None:
    """Return (latitude, longitude) of two cells (a decimal comma is accepted), or None when not in Indonesia."""
    try:
        lat = float(latitude.strip().replace(",", "."))
        lon = float(longitude.strip().replace(",", "."))
    except ValueError:
        return None
    if _LAT_RANGE[0] <= lat <= _LAT_RANGE[1] and _LON_RANGE[0] <= lon <= _LON_RANGE[1]:
        return lat, lon
    return None


def count_lines(path: Path) -> int:
    """Return the number of lines in a file, read in blocks (an estimate of its rows before reading).

    Lines end in LF or CRLF, or in CR alone in a file saved with old Mac line endings (which has no LF).
    """
    newlines = returns = 0
    last = b""
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            newlines += block.count(b"\n")
            returns += block.count(b"\r")
            last = block
    count, end = (newlines, b"\n") if newlines else (returns, b"\r")
    if last and not last.rstrip(b"\x00").endswith(end):
        count += 1
    return count
