"""Small text helpers with no Django import."""

import unicodedata


def search_key(name: str) -> str:
    """Return `name` lower-cased and without accents, for case- and accent-insensitive search."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold().strip()
