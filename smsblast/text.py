"""Small text helpers with no Django import."""

import unicodedata


def search_key(name: str) -> str:
    """Return `name` lower-cased and without accents, for case- and accent-insensitive search."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold().strip()


# A spreadsheet evaluates a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: str) -> str:
    """Return text from outside (an operator, an uploaded file) so that a spreadsheet shows it, not evaluates it."""
    return "'" + value if value and value.startswith(FORMULA_STARTS) else value
