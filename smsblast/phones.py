"""Indonesian MSISDN rules: normalisation to E.164 and routing to an operator by prefix.

``phonenumbers`` (region ID) is the authority on what is a valid Indonesian
mobile number, but it costs about 30 µs a number, which dominates a subscriber
import. So ``normalize`` first tries the forms nearly every row takes (08…,
+628…, 628…, 00628… and a bare 8…): it strips separators, looks up the three
digits after the country code and checks the length. That table is built at
import by probing ``phonenumbers`` over every prefix and length, so the fast
path only accepts what ``phonenumbers`` accepts; everything else, every
refusal included, is left to ``phonenumbers``.

Both paths read their input the same way:

- spaces (also no-break spaces), dots, dashes, parentheses, zero-width characters and direction marks
  are ignored;
- a leading ``+`` or ``00`` introduces a country code;
- a leading ``62`` without ``+`` is the Indonesian country code, since a
  national number written with its trunk prefix starts with ``0``;
- any other character (letters, ``#``, ``/``, a ``+`` further in) makes the
  input invalid, where ``phonenumbers`` alone would read letters as keypad
  digits and drop an extension;
- a number written as a decimal ("81234567890.0", as a spreadsheet column of
  numbers saved by some tools) is invalid: read with its dot ignored it would
  gain a digit and become another person's number.

This module has no Django import so that subscriber imports, the API and the
send pipeline can share it and its tests run without a database.
"""

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumberFormat, PhoneNumberType, ValidationResult

REGION = "ID"
COUNTRY_CODE = 62


class Reason(StrEnum):
    """Why a raw number cannot be a recipient."""

    INVALID = "invalid"  # not a phone number, or outside every Indonesian numbering range
    NOT_MOBILE = "not_mobile"  # a valid Indonesian number that takes no SMS: landline, toll-free, premium
    NOT_INDONESIAN = "not_indonesian"  # a number of another country
    TOO_SHORT = "too_short"  # too few digits for an Indonesian mobile number
    TOO_LONG = "too_long"  # too many digits for an Indonesian mobile number


@dataclass(frozen=True, slots=True)
class Normalized:
    """The outcome of normalising one raw number: either its E.164 form or the reason it was refused."""

    e164: str | None
    reason: Reason | None

    @property
    def ok(self) -> bool:
        """Return whether the number is an Indonesian mobile number."""
        return self.reason is None


_REFUSED = {reason: Normalized(None, reason) for reason in Reason}

# Also invisible ones: zero-width characters and direction marks, which copying a number from a phone's
# contacts or a chat app leaves around it.
_INVISIBLE = "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\ufeff"
# What a number may be written with between its digits (smsblast.redaction masks a number written with them too).
SEPARATOR_CHARACTERS = string.whitespace + "\u00a0\u202f.-()\u2010\u2011\u2012\u2013\u2014\u2212" + _INVISIBLE
_SEPARATORS = str.maketrans(dict.fromkeys(SEPARATOR_CHARACTERS))

_PARSE_ERROR_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: Reason.INVALID,
    # Only digits reach phonenumbers, so "not a number" means too few of them.
    NumberParseException.NOT_A_NUMBER: Reason.TOO_SHORT,
    NumberParseException.TOO_SHORT_AFTER_IDD: Reason.TOO_SHORT,
    NumberParseException.TOO_SHORT_NSN: Reason.TOO_SHORT,
    NumberParseException.TOO_LONG: Reason.TOO_LONG,
}
_LENGTH_REASONS = {ValidationResult.TOO_SHORT: Reason.TOO_SHORT, ValidationResult.TOO_LONG: Reason.TOO_LONG}
_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
_MOBILE_METADATA = PhoneMetadata.metadata_for_region(REGION).mobile


# Digits with a single dot before a last ".0" or ".00" are a decimal number, not groups of digits
# ("0811.2345.00" is a grouping).
_DECIMAL_TAIL = re.compile(r"\+?\d+\.0{1,2}", re.ASCII)
# What may pad a number without being part of it (a no-break space is no more a digit than a space).
_PADDING = string.whitespace + "\u00a0\u202f" + _INVISIBLE


def _is_decimal(raw: str) -> bool:
    return _DECIMAL_TAIL.fullmatch(raw.strip(_PADDING)) is not None


def _dialable(raw: str) -> str | None:
    """Return raw as digits, with a leading + when it carries a country code, or None if it is not a number."""
    if _is_decimal(raw):
        return None
    digits = raw.translate(_SEPARATORS)
    international = digits[:1] == "+"
    if international:
        digits = digits[1:]
    if not (digits.isascii() and digits.isdigit()):
        return None
    if international:
        return "+" + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    if digits.startswith(str(COUNTRY_CODE)):
        return "+" + digits
    return digits


def normalize_slow(raw: str) -> Normalized:
    """Return raw normalised to E.164 by phonenumbers alone, or the reason it is refused.

    This is the plain approach the fast path of ``normalize`` must agree with.
    """
    dialable = _dialable(raw)
    if dialable is None:
        return _REFUSED[Reason.INVALID]
    try:
        number = phonenumbers.parse(dialable, REGION)
    except NumberParseException as exc:
        return _REFUSED[_PARSE_ERROR_REASONS.get(exc.error_type, Reason.INVALID)]
    if number.country_code != COUNTRY_CODE:
        return _REFUSED[Reason.NOT_INDONESIAN]
    if phonenumbers.is_valid_number(number):
        if phonenumbers.number_type(number) in _MOBILE_TYPES:
            return Normalized(phonenumbers.format_number(number, PhoneNumberFormat.E164), None)
        return _REFUSED[Reason.NOT_MOBILE]
    # Lengths are judged against mobile numbers, the only ones a campaign can
    # reach: "0812 3456" has as many digits as some landlines but is a
    # mobile number missing digits.
    length = phonenumbers.is_possible_number_for_type_with_reason(number, PhoneNumberType.MOBILE)
    return _REFUSED[_LENGTH_REASONS.get(length, Reason.INVALID)]


def _fast_mobile_lengths() -> dict[str, frozenset[int]]:
    """Return, per three national digits, the lengths at which phonenumbers takes every number for a mobile one.

    A prefix and length are trusted only when ten probes, one for each next
    digit, all come back as mobile numbers, so a range that phonenumbers
    splits below three digits stays with phonenumbers.
    """
    lengths_by_prefix = {}
    # Indonesian mobile numbers all start with 8 after the country code.
    for prefix in (f"8{n:02d}" for n in range(100)):
        lengths = frozenset(
            length
            for length in _MOBILE_METADATA.possible_length
            if all(_is_mobile(prefix + digit * (length - len(prefix))) for digit in string.digits)
        )
        if lengths:
            lengths_by_prefix[prefix] = lengths
    return lengths_by_prefix


def _is_mobile(national_number: str) -> bool:
    # Built directly rather than parsed from "+62…", which gives the same
    # number at a third of the cost and keeps this import quick.
    number = phonenumbers.PhoneNumber(country_code=COUNTRY_CODE, national_number=int(national_number))
    return phonenumbers.number_type(number) in _MOBILE_TYPES


_FAST_MOBILE_LENGTHS = _fast_mobile_lengths()
# Country code or trunk prefix, then a national number that starts like a mobile one.
_COMMON_MOBILE_FORM = re.compile(r"(?:\+62|0062|62|0)?(8\d+)", re.ASCII)


def normalize(raw: str) -> Normalized:
    """Return raw normalised to E.164 ("+62812…"), or the reason it cannot be a recipient.

    The result is always the one ``normalize_slow`` gives; common mobile forms
    just get there without ``phonenumbers``.
    """
    common_form = _COMMON_MOBILE_FORM.fullmatch(raw.translate(_SEPARATORS))
    if common_form is not None and not _is_decimal(raw):
        national_number = common_form[1]
        if len(national_number) in _FAST_MOBILE_LENGTHS.get(national_number[:3], ()):
            return Normalized("+62" + national_number, None)
    return normalize_slow(raw)


OperatorKey = TypeVar("OperatorKey")


class PrefixTable(Generic[OperatorKey]):
    """Routes an E.164 number to the operator of its longest matching prefix.

    Prefixes are E.164 digits without the plus ("62811"). A lookup tries each
    prefix length in use, longest first, so it costs at most one dict lookup
    per digit of the longest prefix however large the table is.
    """

    def __init__(self, operators_by_prefix: Mapping[str, OperatorKey]) -> None:
        for prefix in operators_by_prefix:
            if not (prefix.isascii() and prefix.isdigit()):
                raise ValueError(f"A prefix is E.164 digits without the plus, not {prefix!r}")
        self._operators_by_prefix = dict(operators_by_prefix)
        self._prefix_lengths = sorted({len(prefix) for prefix in operators_by_prefix}, reverse=True)

    def __len__(self) -> int:
        return len(self._operators_by_prefix)

    def operator_for(self, e164: str) -> OperatorKey | None:
        """Return the operator of the longest prefix of e164, or None when no prefix matches."""
        digits = e164.removeprefix("+")
        for length in self._prefix_lengths:
            if length <= len(digits):
                operator = self._operators_by_prefix.get(digits[:length])
                if operator is not None:
                    return operator
        return None


OPERATORS = ("telkomsel", "indosat", "xl", "smartfren")

# Words of the carrier names phonenumbers reports, and brands they may use.
_OPERATOR_BY_CARRIER_WORD = {
    "telkomsel": "telkomsel",
    "indosat": "indosat",
    "im3": "indosat",
    # Hutchison 3 Indonesia ("3", Tri) merged into Indosat Ooredoo Hutchison in 2022.
    "hutchison": "indosat",
    "tri": "indosat",
    "three": "indosat",
    "3": "indosat",
    # AXIS has been a brand of XL Axiata since 2014.
    "xl": "xl",
    "axiata": "xl",
    "axis": "xl",
    "smartfren": "smartfren",
}
_WORD = re.compile(r"[a-z0-9]+")


def _operator_for_carrier(carrier_name: str) -> str | None:
    """Return the operator key of a carrier name from phonenumbers, or None when it is none of the four."""
    for word in _WORD.findall(carrier_name.casefold()):
        if word in _OPERATOR_BY_CARRIER_WORD:
            return _OPERATOR_BY_CARRIER_WORD[word]
    return None


def operator_key_for(name: str) -> str | None:
    """Return which of ``OPERATORS`` an operator's name or slug stands for ("XL Axiata" -> "xl"), or None."""
    return _operator_for_carrier(name)


def carrier_prefixes() -> dict[str, str]:
    """Return the operator of each Indonesian mobile prefix that phonenumbers knows the carrier of.

    Keys are E.164 digits without the plus ("62811"), values are operator keys
    (see ``OPERATORS``). Each three-digit mobile prefix is sampled once per
    next digit: when all ten samples name the same operator the prefix is
    kept whole, otherwise it is split into its ten four-digit prefixes.
    Prefixes of another or an unknown carrier are left out. This seeds the
    admin-editable operator prefix table.
    """
    # The carrier data covers every country; only seeding needs it.
    from phonenumbers import carrier

    operators_by_prefix = {}
    for national_prefix, lengths in _FAST_MOBILE_LENGTHS.items():
        sample_length = max(lengths)
        by_prefix: dict[str, str | None] = {}
        for digit in string.digits:
            sample = phonenumbers.parse(f"+{COUNTRY_CODE}{(national_prefix + digit).ljust(sample_length, '0')}")
            by_prefix[national_prefix + digit] = _operator_for_carrier(carrier.name_for_number(sample, "en"))
        if len(set(by_prefix.values())) == 1:
            by_prefix = {national_prefix: by_prefix[national_prefix + "0"]}
        for prefix, operator in by_prefix.items():
            if operator is not None:
                operators_by_prefix[f"{COUNTRY_CODE}{prefix}"] = operator
    return operators_by_prefix
