"""Keywords of mobile-originated messages that opt a number out of or back into campaigns; no Django import.

The first word decides, in any case, with any surrounding spaces and whatever follows it, so "stop",
" UNREG INFO " and "Berhenti." all opt out. A message whose first word is none of the keywords
("STOPPING", "apa ini?") changes nothing.
"""

import re
from enum import StrEnum


class Intent(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"


KEYWORDS: dict[str, Intent] = {
    "STOP": Intent.OPT_OUT,
    "BERHENTI": Intent.OPT_OUT,
    "UNREG": Intent.OPT_OUT,
    "START": Intent.OPT_IN,
    "REG": Intent.OPT_IN,
}

_FIRST_WORD = re.compile(r"[^\W_]+")


def intent_of(text: str | None) -> Intent | None:
    """Return what a mobile-originated message asks for, or None when it is not a keyword message."""
    first_word = _FIRST_WORD.match((text or "").strip())
    if first_word is None:
        return None
    return KEYWORDS.get(first_word.group().upper())
