"""Small text helpers with no Django import."""

import re
import unicodedata


def search_key(name: str) -> str:
    """Return `name` lower-cased and without accents, for case- and accent-insensitive search."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold().strip()


def label_matching(text: str, labels) -> str:
    """Return `text` as the first of `labels` whose pattern matches it whole words it, else `text` as it is.

    `labels` holds (compiled pattern, label) pairs: the pattern matches a message the system writes in English (in
    an audit record, a stored reason, a library without Django) and the label, usually a lazy translation with
    %(name)s placeholders, is filled from the pattern's named groups, in the user's language once translated.
    """
    for pattern, label in labels:
        if match := pattern.fullmatch(text or ""):
            return str(label) % match.groupdict()
    return text


# A spreadsheet evaluates a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


# Inside a value, where a spreadsheet may start another cell: Excel set for Indonesia (list separator ";") splits
# a CSV line at every ";", and ends the row at a line break unless the cell is quoted from its first character;
# LibreOffice's import and a paste split at tabs, which a tab-separated upload's rejected row holds unquoted.
_FORMULA_AFTER_CELL_BREAK = re.compile(r"(?<=[;\t\r\n])(?=[=+\-@\t])")
# In a file separated by semicolons a comma inside a cell is left unquoted, and a spreadsheet splitting at commas
# (Excel set for English) starts another cell there.
_FORMULA_AFTER_CELL_BREAK_OR_COMMA = re.compile(r"(?<=[,;\t\r\n])(?=[=+\-@\t])")

# The separators a CSV download may be asked for by its `sep` parameter: commas for programs and spreadsheets set
# for English, semicolons for Excel set for Indonesia (its list separator), which reads a comma file as one column.
CSV_SEPARATORS = {"comma": ",", "semicolon": ";"}


def spreadsheet_text(value: str, *, separator: str = ",") -> str:
    """Return text from outside (an operator, an uploaded file) so that a spreadsheet shows it, not evaluates it.

    `separator` is the one of the CSV file the text goes into.
    """
    if not value:
        return value
    breaks = _FORMULA_AFTER_CELL_BREAK if separator == "," else _FORMULA_AFTER_CELL_BREAK_OR_COMMA
    value = breaks.sub("'", value)
    return "'" + value if value.startswith(FORMULA_STARTS) else value
