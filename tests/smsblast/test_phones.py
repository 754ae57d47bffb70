import random
import string

import phonenumbers
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from smsblast.phones import (
    OPERATORS,
    Normalized,
    PrefixTable,
    Reason,
    _operator_for_carrier,
    carrier_prefixes,
    normalize,
    normalize_slow,
)

TELKOMSEL_E164 = "+6281234567890"


@pytest.fixture(scope="module")
def seeded_prefixes():
    return carrier_prefixes()


@pytest.fixture
def without_phonenumbers(monkeypatch):
    """Make any use of phonenumbers.parse fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("phonenumbers.parse was called")

    monkeypatch.setattr(phonenumbers, "parse", refuse)


COMMON_FORMS = [
    "081234567890",
    "0812 3456 7890",
    "0812-3456-7890",
    "0812.3456.7890",
    "(0812) 3456-7890",
    " 0812 3456 7890 ",
    "0812\u00a03456\u00a07890",
    "0812\u20133456\u20137890",
    "+6281234567890",
    "+62 812-3456-7890",
    "+62 (812) 3456 7890",
    "+62.812.3456.7890",
    "6281234567890",
    "62 812 3456 7890",
    "62-812-3456-7890",
    "81234567890",
    "812 3456 7890",
    "812-3456-7890",
    "006281234567890",
    "0062 812 3456 7890",
    "00 62 812-3456-7890",
    # Copied from a phone's contacts or a chat app: direction marks and zero-width characters around the digits.
    "\u202a+62 812\u20113456\u20117890\u202c",
    "\u200e0812-3456-7890",
    "\u200b081234567890\ufeff",
]


@pytest.mark.parametrize("raw", COMMON_FORMS)
def test_every_common_form_of_a_mobile_number_normalises_to_e164(raw):
    assert normalize(raw) == Normalized(TELKOMSEL_E164, None)
    assert normalize(raw).ok


@pytest.mark.parametrize("raw", COMMON_FORMS)
def test_common_forms_of_a_mobile_number_are_normalised_without_phonenumbers(raw, without_phonenumbers):
    assert normalize(raw).e164 == TELKOMSEL_E164


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("0811 234 567", "+62811234567"),
        ("0813-1234-5678", "+6281312345678"),
        ("0857 1234 56789", "+62857123456789"),
        ("0881-2345-6789", "+6288123456789"),
        ("+62 896 1234 5678", "+6289612345678"),
        ("0831 2345 678", "+628312345678"),
    ],
)
def test_mobile_numbers_of_each_length_and_operator_keep_every_digit(raw, e164):
    assert normalize(raw) == Normalized(e164, None)


def test_a_dotted_number_whose_last_group_is_zeros_is_not_a_decimal():
    assert normalize("0811.2345.00") == Normalized("+62811234500", None)


def test_trunk_zero_written_after_the_country_code_is_dropped():
    assert normalize("+62 (0)812 3456 7890") == Normalized(TELKOMSEL_E164, None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # Landlines, toll-free and premium numbers are valid but take no SMS.
        ("021-5551234", Reason.NOT_MOBILE),
        ("0341 123456", Reason.NOT_MOBILE),
        ("(022) 4201234", Reason.NOT_MOBILE),
        ("+62 21 5551234", Reason.NOT_MOBILE),
        ("62 341 123456", Reason.NOT_MOBILE),
        ("0800 1234 567", Reason.NOT_MOBILE),
        ("0809 123 4567", Reason.NOT_MOBILE),
        # Another country's number, however it is written.
        ("+65 9123 4567", Reason.NOT_INDONESIAN),
        ("+1 212 555 0100", Reason.NOT_INDONESIAN),
        ("+60 12-345 6789", Reason.NOT_INDONESIAN),
        ("0065 9123 4567", Reason.NOT_INDONESIAN),
        # Too few digits for a mobile number.
        ("0812", Reason.TOO_SHORT),
        ("0812 345", Reason.TOO_SHORT),
        ("0812 3456", Reason.TOO_SHORT),
        ("+62 812", Reason.TOO_SHORT),
        ("62 812 345", Reason.TOO_SHORT),
        ("812", Reason.TOO_SHORT),
        ("8", Reason.TOO_SHORT),
        ("+62", Reason.TOO_SHORT),
        # Too many digits for a mobile number.
        ("0812 3456 7890 12", Reason.TOO_LONG),
        ("+62 812 3456 7890 1234", Reason.TOO_LONG),
        ("0812" + "3" * 30, Reason.TOO_LONG),
        # Not a number at all, or outside every Indonesian range.
        ("", Reason.INVALID),
        ("   ", Reason.INVALID),
        ("+", Reason.INVALID),
        ("tidak ada", Reason.INVALID),
        ("0812-CALL-ME", Reason.INVALID),
        ("0812 3456 789O", Reason.INVALID),
        ("0812 3456 7890 ext 12", Reason.INVALID),
        ("0812#34567890", Reason.INVALID),
        ("0812/3456/7890", Reason.INVALID),
        ("0812 +3456 7890", Reason.INVALID),
        # A number saved as a decimal would gain a digit with its dot ignored.
        ("81234567890.0", Reason.INVALID),
        ("6281234567890.0", Reason.INVALID),
        ("081234567890.00 ", Reason.INVALID),
        ("\u00a081234567890.0", Reason.INVALID),
        ("6281234567890.0\u202f", Reason.INVALID),
        ("\u200b81234567890.0\u202c", Reason.INVALID),
        ("\uff10\uff18\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19", Reason.INVALID),
        ("0841 2345 6789", Reason.INVALID),
        ("+62 841 2345 6789", Reason.INVALID),
        ("+999 1234 5678", Reason.INVALID),
    ],
)
def test_a_number_that_cannot_be_a_recipient_is_refused_with_its_reason(raw, reason):
    assert normalize(raw) == Normalized(None, reason)
    assert not normalize(raw).ok


def test_reasons_are_stored_as_their_plain_values():
    assert [str(reason) for reason in Reason] == ["invalid", "not_mobile", "not_indonesian", "too_short", "too_long"]


LANDLINE_AREA_CODES = ["21", "22", "24", "31", "341", "361", "411", "61", "651", "778", "911"]
OTHER_COUNTRY_CODES = ["1", "44", "60", "61", "65", "86", "999"]
RAW_FORMS = ["0{n}", "+62{n}", "62{n}", "0062{n}", "{n}", "+62(0){n}", "+{cc}{n}", "00{cc}{n}"]
RAW_FORM_WEIGHTS = [5, 4, 3, 2, 3, 1, 1, 1]
SEPARATORS = [" ", " ", "-", ".", " - ", "\u00a0"]  # spaces the most often
CORRUPTIONS = ["O", "l", "x", "#", "/", "+", "*"]


def written_like_people_do(number: str, rng: random.Random) -> str:
    """Return number with separators, brackets, padding and now and then a stray character."""
    chars = list(number)
    if rng.random() < 0.05:
        chars[rng.randrange(len(chars))] = rng.choice(CORRUPTIONS)
    text = "".join(char + (rng.choice(SEPARATORS) if rng.random() < 0.2 else "") for char in chars)
    if rng.random() < 0.1:
        split = rng.randrange(1, len(text) + 1)
        text = f"({text[:split]}) {text[split:]}"
    if rng.random() < 0.1:
        text = f"  {text} "
    return text


def generated_raw_numbers(count: int, seed: int) -> list[str]:
    """Return raw numbers in every accepted form, most of them mobile, many of them refused."""
    rng = random.Random(seed)
    raw_numbers = []
    for _ in range(count):
        head = rng.choices(
            [f"8{rng.randrange(100):02d}", rng.choice(LANDLINE_AREA_CODES), str(rng.randrange(100, 1000))],
            weights=[7, 2, 1],
        )[0]
        # Mostly the lengths mobile numbers have, then anything from far too short to far too long.
        subscriber_length = rng.randrange(6, 10) if rng.random() < 0.7 else rng.randrange(0, 13)
        national_number = head + "".join(rng.choices(string.digits, k=subscriber_length))
        raw = rng.choices(RAW_FORMS, weights=RAW_FORM_WEIGHTS)[0].format(
            n=national_number, cc=rng.choice(OTHER_COUNTRY_CODES)
        )
        raw_numbers.append(written_like_people_do(raw, rng))
    return raw_numbers


def test_the_fast_path_agrees_with_phonenumbers_on_thousands_of_mixed_numbers():
    raw_numbers = generated_raw_numbers(5000, seed=20200413)

    disagreements = [(raw, normalize(raw), normalize_slow(raw)) for raw in raw_numbers]
    disagreements = [(raw, fast, slow) for raw, fast, slow in disagreements if fast != slow]

    assert disagreements == []
    outcomes = {normalize(raw).reason for raw in raw_numbers}
    assert outcomes == {None, *Reason}, "the sample should hold accepted numbers and every refusal"


def test_the_fast_path_agrees_with_phonenumbers_at_every_mobile_prefix_and_length():
    for head in range(800, 900):
        for length in range(3, 15):
            national_number = (str(head) + "1234567890" * 2)[:length]
            for raw in (
                f"0{national_number}",
                f"+62{national_number}",
                f"62{national_number}",
                f"0062{national_number}",
                national_number,
            ):
                assert normalize(raw) == normalize_slow(raw), raw


@pytest.mark.parametrize(
    ("prefix", "operator"),
    [
        *[(prefix, "telkomsel") for prefix in ["62811", "62812", "62813", "62821", "62822", "62852", "62853"]],
        *[(prefix, "indosat") for prefix in ["62814", "62815", "62816", "62855", "62856", "62857", "62858"]],
        *[(prefix, "xl") for prefix in ["62817", "62818", "62819", "62859", "62877", "62878"]],
        *[(prefix, "xl") for prefix in ["62831", "62832", "62833", "62838"]],  # AXIS
        *[(prefix, "smartfren") for prefix in ["62881", "62882", "62883", "62887", "62888", "62889"]],
        *[(prefix, "indosat") for prefix in ["62895", "62896", "62897", "62898", "62899"]],  # Tri
    ],
)
def test_seeded_prefixes_route_to_the_operator_phonenumbers_names(seeded_prefixes, prefix, operator):
    assert seeded_prefixes[prefix] == operator


def test_seeded_prefixes_cover_the_four_operators_and_nothing_else(seeded_prefixes):
    assert set(seeded_prefixes.values()) == set(OPERATORS)


def test_seeded_prefixes_leave_out_ranges_without_a_known_carrier(seeded_prefixes):
    assert "62810" not in seeded_prefixes
    assert "62820" not in seeded_prefixes
    assert not any(prefix.startswith("6284") for prefix in seeded_prefixes)


def test_every_seeded_prefix_is_a_mobile_range_the_fast_path_handles(seeded_prefixes, without_phonenumbers):
    for prefix in seeded_prefixes:
        e164 = f"+{prefix}".ljust(14, "5")
        assert normalize(e164) == Normalized(e164, None)


@pytest.mark.parametrize(
    ("carrier_name", "operator"),
    [
        ("Telkomsel", "telkomsel"),
        ("Indosat Ooredoo Hutchison", "indosat"),
        ("Indosat Ooredoo", "indosat"),
        ("IM3", "indosat"),
        ("3", "indosat"),
        ("Tri", "indosat"),
        ("Hutchison 3", "indosat"),
        ("XL", "xl"),
        ("XL Axiata", "xl"),
        ("AXIS", "xl"),
        ("Smartfren", "smartfren"),
        ("", None),
        ("Ceria", None),
        ("Esia", None),
    ],
)
def test_carrier_names_map_to_the_operator_that_runs_them_today(carrier_name, operator):
    assert _operator_for_carrier(carrier_name) == operator


def test_the_longest_matching_prefix_wins():
    table = PrefixTable({"62": "national", "6281": "eighty-one", "62811": "telkomsel"})

    assert table.operator_for("+62811234567") == "telkomsel"
    assert table.operator_for("+62812345678") == "eighty-one"
    assert table.operator_for("+62215551234") == "national"


def test_a_number_matching_no_prefix_has_no_operator():
    table = PrefixTable({"62811": "telkomsel"})

    assert table.operator_for("+6591234567") is None
    assert table.operator_for("+6281") is None
    assert PrefixTable({}).operator_for("+62811234567") is None


def test_a_prefix_table_takes_operator_keys_of_any_kind():
    table = PrefixTable({"62811": 1, "62817": 3})

    assert table.operator_for("+62817123456") == 3
    assert len(table) == 2


@pytest.mark.parametrize("prefix", ["+62811", "", "62 811", "62-811"])
def test_a_prefix_table_refuses_prefixes_that_are_not_e164_digits(prefix):
    with pytest.raises(ValueError, match="E.164 digits"):
        PrefixTable({prefix: "telkomsel"})


def test_normalised_numbers_route_through_the_seeded_table(seeded_prefixes):
    table = PrefixTable(seeded_prefixes)

    assert table.operator_for(normalize("0812 3456 7890").e164) == "telkomsel"
    assert table.operator_for(normalize("0857-1234-5678").e164) == "indosat"
    assert table.operator_for(normalize("+62 878 1234 5678").e164) == "xl"
    assert table.operator_for(normalize("0888 1234 5678").e164) == "smartfren"
    assert table.operator_for(normalize("0898 1234 5678").e164) == "indosat"


def phonenumbers_alone(raw: str) -> str | None:
    """Return what phonenumbers itself makes of a raw string: its E.164 if an Indonesian mobile number, else None."""
    try:
        number = phonenumbers.parse(raw, "ID")
    except phonenumbers.NumberParseException:
        return None
    mobile = phonenumbers.number_type(number) in {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    }
    if number.country_code == 62 and phonenumbers.is_valid_number(number) and mobile:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def test_forms_phonenumbers_reads_alike_give_exactly_what_phonenumbers_gives_on_the_raw_text():
    # Trunk 0, +62 with or without a trunk 0, another country, or no prefix at all; separators phonenumbers skips
    # too. (A bare 62 and a 00 prefix are read as a country code on purpose, so they are left out here.)
    rng = random.Random(20210615)
    forms = ["0{n}", "+62{n}", "+62 (0){n}", "+62 0{n}", "({n})", "+{n}"]
    mismatches = []
    for _ in range(20_000):
        head = rng.choice(["8" + rng.choice(string.digits), rng.choice("12345679") + rng.choice(string.digits)])
        national_number = head + "".join(rng.choices(string.digits, k=rng.randint(0, 14)))
        written = rng.choice(forms).format(n=national_number)
        if written.lstrip("(").startswith("62"):
            continue  # a bare 62
        raw = "".join(
            char + (rng.choice([" ", "-", ".", "\u00a0", " - "]) if char.isdigit() and rng.random() < 0.2 else "")
            for char in written
        )
        if normalize(raw).e164 != phonenumbers_alone(raw):
            mismatches.append((raw, normalize(raw), phonenumbers_alone(raw)))
    assert mismatches == []


# --- every written form against phonenumbers itself, drawn by hypothesis -----------------------------------------


def mobile_e164_by_phonenumbers(national_number: str) -> str | None:
    """Return what phonenumbers makes of an Indonesian national number: its E.164 if a mobile number, else None."""
    try:
        number = phonenumbers.parse(f"+62{national_number}")
    except phonenumbers.NumberParseException:
        return None
    mobile = phonenumbers.number_type(number) in {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    }
    if phonenumbers.is_valid_number(number) and mobile:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


# A national number (without its trunk 0): mostly mobile ranges at every length, then landline and unused ranges.
_NATIONAL_NUMBERS = st.one_of(
    st.builds(lambda head, rest: head + rest, st.sampled_from(["8"]), st.text("0123456789", min_size=2, max_size=13)),
    st.builds(
        lambda head, rest: head + rest,
        st.sampled_from(["811", "812", "813", "821", "822", "838", "855", "857", "878", "881", "895", "899"]),
        st.text("0123456789", min_size=5, max_size=10),
    ),
    st.builds(
        lambda head, rest: head + rest,
        st.sampled_from(["21", "22", "24", "31", "341", "361", "61", "778", "800", "809", "840", "1", "9"]),
        st.text("0123456789", min_size=3, max_size=10),
    ),
)
_FORMS = ["0{n}", "+62{n}", "62{n}", "0062{n}", "{n}", "+62 (0){n}", "+62 0{n}"]
_SEPARATORS = ["", "", "", " ", "-", ".", " - ", "\u00a0", "\u202f", "\u2011", "\u200b"]


@st.composite
def written_numbers(draw) -> tuple[str, str]:
    """Return (raw, national number): the number in one of the forms people write, with separators and brackets."""
    national_number = draw(_NATIONAL_NUMBERS)
    form = draw(st.sampled_from(_FORMS))
    # Written bare, a number starting 62 reads as one with its country code, and one starting 0 as a trunk 0.
    assume(not (form == "{n}" and national_number.startswith(("0", "62"))))
    written = form.format(n=national_number)
    chars = []
    for char in written:
        chars.append(char)
        if char.isdigit():
            chars.append(draw(st.sampled_from(_SEPARATORS)))
    raw = "".join(chars)
    if draw(st.booleans()):
        split = draw(st.integers(1, len(raw)))
        raw = f"({raw[:split]}) {raw[split:]}"
    return draw(st.sampled_from(["", " ", "\u200e"])) + raw + draw(
        st.sampled_from(["", " ", "\ufeff"])
    ), national_number


@settings(max_examples=1500)
@given(written=written_numbers())
def test_every_written_form_normalises_to_what_phonenumbers_makes_of_the_digits(written):
    raw, national_number = written

    expected = mobile_e164_by_phonenumbers(national_number)

    assert normalize(raw).e164 == expected
    assert normalize(raw).ok == (expected is not None)
    if expected is None:
        assert normalize(raw).reason in set(Reason)


@settings(max_examples=1500)
@given(
    raw=st.one_of(
        st.text("0123456789", max_size=18),
        st.builds(
            lambda head, rest: head + rest,
            st.sampled_from(["0", "+62", "62", "0062", "00", "+", "8", "08", "628", "+628", "00628", "620", "6208"]),
            st.text("0123456789 -.()+\u00a0\u200bx", max_size=16),
        ),
        st.text("0123456789 -.()+\u00a0", max_size=20),
    )
)
def test_the_fast_path_always_agrees_with_phonenumbers(raw):
    assert normalize(raw) == normalize_slow(raw)


@settings(max_examples=300)
@given(
    table=st.dictionaries(
        st.text("0126789", min_size=1, max_size=6).map(lambda digits: "62" + digits), st.integers(1, 5)
    ),
    number=st.text("0126789", min_size=6, max_size=11).map(lambda digits: "+62" + digits),
)
def test_a_number_routes_to_the_operator_of_its_longest_matching_prefix(table, number):
    matching = [prefix for prefix in table if number[1:].startswith(prefix)]
    expected = table[max(matching, key=len)] if matching else None

    assert PrefixTable(table).operator_for(number) == expected
