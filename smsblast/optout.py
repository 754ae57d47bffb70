"""Keywords of mobile-originated messages that opt a number out of or back into campaigns; no Django import.

The first word decides, in any case, with any surrounding spaces and whatever follows it, so "stop",
" UNREG INFO " and "Berhenti." all opt out; so does a word in quotes, brackets or a chat app's bold ('"STOP"',
"*STOP*"), as an instruction to reply may show it, or after an invisible character a keyboard left. A message whose
first word is none of the keywords ("STOPPING", "#STOP", "apa ini?") changes nothing.
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
# What may stand before the first word without being part of it: quotes, brackets and bold marks around it, and
# invisible characters (zero-width ones, direction marks, a byte-order mark).
_BEFORE_WORD = "\"'`“”‘’„‚«»‹›([{*" + "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\ufeff"


def intent_of(text: str | None) -> Intent | None:
    """Return what a mobile-originated message asks for, or None when it is not a keyword message."""
    first_word = _FIRST_WORD.match((text or "").strip().lstrip(_BEFORE_WORD).strip())
    if first_word is None:
        return None
    return KEYWORDS.get(first_word.group().upper())
