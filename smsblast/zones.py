"""Indonesia's three time zones by Kemendagri province code; no Django import.

WIB (UTC+7) covers Sumatra, Java, West and Central Kalimantan; WITA (UTC+8) Bali, Nusa Tenggara, South, East
and North Kalimantan and Sulawesi; WIT (UTC+9) Maluku and Papua. A code's province is its first segment.
"""

WIB = ("Asia/Jakarta", "WIB")
WITA = ("Asia/Makassar", "WITA")
WIT = ("Asia/Jayapura", "WIT")

_WITA_PROVINCES = frozenset({"51", "52", "53", "63", "64", "65", "71", "72", "73", "74", "75", "76"})


def zone_for_code(code: str | None) -> tuple[str, str]:
    """Return the IANA zone name and its Indonesian label (WIB, WITA, WIT) for an area code.

    An empty or unknown code falls back to WIB, the zone of the capital.
    """
    province = (code or "").split(".")[0]
    if province in _WITA_PROVINCES:
        return WITA
    if province[:1] in {"8", "9"}:
        return WIT
    return WIB
