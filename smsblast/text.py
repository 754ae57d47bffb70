"""Small text helpers with no Django import."""

import re
import unicodedata


def search_key(name: str) -> str:
    """Return `name` lower-cased and without accents, for case- and accent-insensitive search."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold().strip()


# A spreadsheet evaluates a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


# Inside a value, where a spreadsheet may start another cell: Excel set for Indonesia (list separator ";") splits
# a CSV line at every ";", and ends the row at a line break unless the cell is quoted from its first character;
# LibreOffice's import and a paste split at tabs, which a tab-separated upload's rejected row holds unquoted.
_FORMULA_AFTER_CELL_BREAK = re.compile(r"(?<=[;\t\r\n])(?=[=+\-@\t])")


def spreadsheet_text(value: str) -> str:
    """Return text from outside (an operator, an uploaded file) so that a spreadsheet shows it, not evaluates it."""
    if not value:
        return value
    value = _FORMULA_AFTER_CELL_BREAK.sub("'", value)
    return "'" + value if value.startswith(FORMULA_STARTS) else value
