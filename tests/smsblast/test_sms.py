import json
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsblast import sms
from smsblast.sms import (
    MAX_SEGMENTS,
    Analysis,
    NonGsmChar,
    TextError,
    analyze,
    content_cost,
    is_gsm7,
    split_parts,
)

MASKER = (
    "Warga Kab. Blitar yang terhormat, mohon tetap memakai masker dan menjaga "
    "jarak saat beraktivitas di luar rumah. Info: 0342-801000."
)
# Two UCS-2 segments only because of the curly quotes.
VAKSIN_CURLY = (
    "Warga Kab. Blitar yang terhormat, vaksinasi \u201cbooster\u201d gratis Sabtu 14 Mei di Puskesmas Sananwetan."
)
VAKSIN_PLAIN = VAKSIN_CURLY.replace("\u201c", '"').replace("\u201d", '"')
EMOJI = "\U0001f600"  # outside the BMP: a surrogate pair in UTF-16


def gsm(n: int) -> str:
    """Return a GSM-7 text of n septets."""
    return "a" * n


def ucs2(n: int) -> str:
    """Return a UCS-2 text of n code units: one non-GSM character, then plain."""
    return "\u0101" + "a" * (n - 1)


def units_of(analysis: Analysis, part: str) -> int:
    """Return the septets or UTF-16 code units a part of an analysed text takes."""
    if analysis.encoding == "GSM7":
        return len(part) + sum(part.count(char) for char in "^{}\\[~]|\u20ac\f")
    return len(part.encode("utf-16-le")) // 2


@pytest.mark.parametrize(
    ("septets", "segments"),
    [
        (1, 1),
        (160, 1),
        (161, 2),
        (306, 2),
        (307, 3),
        *[(153 * n, n) for n in range(2, 11)],
        *[(153 * n + 1, n + 1) for n in range(2, 10)],
    ],
)
def test_gsm7_text_takes_one_segment_per_153_septets_beyond_160(septets, segments):
    analysis = analyze(gsm(septets))

    assert analysis.encoding == "GSM7"
    assert analysis.units == septets
    assert analysis.segments == segments
    assert len(analysis.parts) == segments


@pytest.mark.parametrize(
    ("code_units", "segments"),
    [
        (1, 1),
        (70, 1),
        (71, 2),
        (134, 2),
        (135, 3),
        *[(67 * n, n) for n in range(2, 11)],
        *[(67 * n + 1, n + 1) for n in range(2, 10)],
    ],
)
def test_ucs2_text_takes_one_segment_per_67_units_beyond_70(code_units, segments):
    analysis = analyze(ucs2(code_units))

    assert analysis.encoding == "UCS2"
    assert analysis.units == code_units
    assert analysis.segments == segments


@pytest.mark.parametrize(
    ("text", "segments"),
    [(gsm(1530), 10), (ucs2(670), 10)],
)
def test_text_of_exactly_ten_segments_is_accepted(text, segments):
    assert analyze(text).segments == segments == MAX_SEGMENTS


@pytest.mark.parametrize("text", [gsm(1531), ucs2(671)])
def test_text_of_eleven_segments_is_refused_with_the_count(text):
    with pytest.raises(TextError, match=r"^Text needs 11 segments; the maximum is 10\.$"):
        analyze(text)


def test_a_lower_segment_limit_is_enforced():
    with pytest.raises(TextError, match=r"^Text needs 2 segments; the maximum is 1\.$"):
        analyze(gsm(161), max_segments=1)


def test_a_segment_limit_below_one_is_a_programming_error():
    with pytest.raises(ValueError, match="max_segments"):
        analyze("Halo", max_segments=0)


@pytest.mark.parametrize(
    "text",
    ["", " ", "   \n\t ", "\u00a0", "\u200b", " \ufeff\u200d "],
)
def test_blank_text_is_refused(text):
    with pytest.raises(TextError, match=r"^Text is empty\.$"):
        analyze(text)


@pytest.mark.parametrize(
    "text",
    # Direction marks, break hints and direction controls alone show nothing on a phone either, and the suggestion
    # removes each of them: a text of only those is empty, not one to offer an empty suggestion of 0 parts for.
    ["\u200e", " \u200f\u061c ", "\u00ad\u2060", "\u202a\u202c", "\n\u2066\u200b\u2069\n"],
)
def test_a_text_of_invisible_characters_the_suggestion_removes_is_refused_as_empty(text):
    with pytest.raises(TextError, match=r"^Text is empty\.$") as refused:
        analyze(text)

    assert refused.value.reason == sms.EMPTY


@pytest.mark.parametrize("char", ["^", "{", "}", "\\", "[", "~", "]", "|", "\u20ac", "\f"])
def test_extension_character_costs_two_septets(char):
    analysis = analyze("a" + char)

    assert analysis.encoding == "GSM7"
    assert analysis.length == 2
    assert analysis.units == 3


def test_160_characters_with_one_extension_character_need_two_segments():
    analysis = analyze(gsm(159) + "\u20ac")

    assert analysis.length == 160
    assert analysis.units == 161
    assert analysis.segments == 2


def test_extension_character_straddling_a_part_boundary_moves_to_the_next_part():
    text = gsm(152) + "\u20ac" + gsm(10)

    analysis = analyze(text)

    assert analysis.segments == 2
    assert analysis.parts == [gsm(152), "\u20ac" + gsm(10)]
    assert analyze(analysis.parts[0]).units == 152


def test_extension_character_straddling_a_boundary_can_add_a_segment():
    # 306 septets would be two parts by division, but the "[" cannot sit
    # across the boundary after 152 septets, which pushes one "a" into a third.
    text = gsm(152) + "[" + gsm(152)

    analysis = analyze(text)

    assert analysis.units == 306
    assert analysis.segments == 3
    assert analysis.parts == [gsm(152), "[" + gsm(151), "a"]


def test_emoji_straddling_a_part_boundary_moves_to_the_next_part():
    text = gsm(66) + EMOJI + gsm(10)

    analysis = analyze(text)

    assert analysis.encoding == "UCS2"
    assert analysis.parts == [gsm(66), EMOJI + gsm(10)]


def test_emoji_straddling_a_boundary_can_add_a_segment():
    text = gsm(66) + EMOJI + gsm(66)

    analysis = analyze(text)

    assert analysis.units == 134
    assert analysis.segments == 3
    assert analysis.parts == [gsm(66), EMOJI + gsm(65), "a"]


@pytest.mark.parametrize(
    ("text", "per_segment", "remaining"),
    [
        (gsm(100), 160, 60),
        (gsm(160), 160, 0),
        (gsm(161), 153, 145),
        (gsm(306), 153, 0),
        (ucs2(50), 70, 20),
        (ucs2(71), 67, 63),
        (gsm(66) + EMOJI + gsm(10), 67, 55),
    ],
)
def test_remaining_counts_units_left_in_the_last_part(text, per_segment, remaining):
    analysis = analyze(text)

    assert analysis.per_segment == per_segment
    assert analysis.remaining == remaining


@pytest.mark.parametrize(
    "text",
    [
        MASKER,
        MASKER * 5,
        (gsm(152) + "[") * 4,
        (gsm(66) + EMOJI) * 5,
        VAKSIN_CURLY * 4,
        "\u20ac" * 400,
    ],
)
def test_parts_join_to_the_text_and_fit_their_part_size(text):
    analysis = analyze(text)

    assert "".join(analysis.parts) == text
    assert split_parts(text) == analysis.parts
    for part in analysis.parts:
        assert units_of(analysis, part) <= analysis.per_segment


def test_split_parts_of_empty_text_is_no_parts():
    assert split_parts("") == []


def test_indonesian_plain_text_is_one_gsm7_segment_without_suggestion():
    analysis = analyze(MASKER)

    assert analysis.encoding == "GSM7"
    assert analysis.segments == 1
    assert analysis.parts == [MASKER]
    assert analysis.non_gsm == []
    assert analysis.suggestion is None
    assert analysis.suggestion_encoding is None
    assert analysis.suggestion_segments is None


def test_curly_quotes_turn_text_ucs2_and_the_suggestion_fits_one_gsm7_segment():
    analysis = analyze(VAKSIN_CURLY)

    assert analysis.encoding == "UCS2"
    assert analysis.segments == 2
    assert analysis.non_gsm == [
        NonGsmChar("\u201c", 44, "LEFT DOUBLE QUOTATION MARK", '"'),
        NonGsmChar("\u201d", 52, "RIGHT DOUBLE QUOTATION MARK", '"'),
    ]
    assert VAKSIN_CURLY[44] == "\u201c"
    assert analysis.suggestion == VAKSIN_PLAIN
    assert analysis.suggestion_encoding == "GSM7"
    assert analysis.suggestion_segments == 1


def test_non_breaking_space_and_em_dash_are_named():
    text = "Posyandu\u00a0Desa Kemloko \u2014 Senin pukul 08.00"

    analysis = analyze(text)

    assert [(item.char, item.name, item.replacement) for item in analysis.non_gsm] == [
        ("\u00a0", "NO-BREAK SPACE", " "),
        ("\u2014", "EM DASH", "-"),
    ]
    assert analysis.suggestion == "Posyandu Desa Kemloko - Senin pukul 08.00"


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        # Word and PDF text: a soft hyphen marks where a long word may break, a word joiner where it may not.
        ("Vaksinasi ulang\u00adan di Puskes\u00admas Sanan\u00adwetan", "Vaksinasi ulangan di Puskesmas Sananwetan"),
        ("Rp\u2060100.000", "Rp100.000"),
        # Line and paragraph separators, as some editors and phones paste line breaks.
        ("Jadwal vaksin:\u2028Senin 08.00\u2029Selasa 08.00", "Jadwal vaksin:\nSenin 08.00\nSelasa 08.00"),
        # Spaces of other widths: an ideographic space (full-width keyboards) and a medium mathematical space.
        ("Posyandu\u3000Desa Kemloko", "Posyandu Desa Kemloko"),
        ("Suhu\u205f38 derajat", "Suhu 38 derajat"),
    ],
)
def test_pasted_breaks_and_blanks_have_a_gsm7_replacement(text, suggestion):
    analysis = analyze(text)

    assert analysis.encoding == "UCS2"
    assert all(item.replacement is not None for item in analysis.non_gsm)
    assert (analysis.suggestion, analysis.suggestion_encoding, analysis.suggestion_segments) == (suggestion, "GSM7", 1)


@pytest.mark.parametrize(
    "text",
    [
        # A number copied from a phone's contacts comes wrapped in an embedding or an isolate.
        "Info hubungi \u202a+62 812-3456-7890\u202c",
        "Info hubungi \u2066+62 812-3456-7890\u2069",
        "Info hubungi \u202e+62 812-3456-7890\u202c",
    ],
)
def test_direction_controls_submission_refuses_are_removed_by_the_suggestion(text):
    analysis = analyze(text)

    assert all(item.replacement == "" for item in analysis.non_gsm)
    assert (analysis.suggestion, analysis.suggestion_encoding) == ("Info hubungi +62 812-3456-7890", "GSM7")
    assert [item for item in sms.hidden_characters(analysis.suggestion) if item.kind in sms.REFUSED_KINDS] == []


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        # Left-to-right and right-to-left marks, which phones and chat apps put around numbers and names.
        ("Info hubungi \u200e+62 812-3456-7890\u200e", "Info hubungi +62 812-3456-7890"),
        ("Info hubungi \u200f+62 812-3456-7890", "Info hubungi +62 812-3456-7890"),
        # The Arabic letter mark, as text copied from an Arabic keyboard carries it.
        ("Jadwal\u061c pengajian Senin", "Jadwal pengajian Senin"),
    ],
)
def test_direction_marks_are_removed_by_the_suggestion(text, suggestion):
    analysis = analyze(text)

    assert analysis.encoding == "UCS2"
    assert [item.replacement for item in analysis.non_gsm] == [""] * len(analysis.non_gsm)
    assert (analysis.suggestion, analysis.suggestion_encoding, analysis.suggestion_segments) == (suggestion, "GSM7", 1)


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("Vaksin untuk lansia usia \u2265 60 tahun", "Vaksin untuk lansia usia >= 60 tahun"),
        ("Anak usia \u2264 12 tahun belum divaksin", "Anak usia <= 12 tahun belum divaksin"),
        ("Minum obat 3\u00d7 sehari", "Minum obat 3x sehari"),
        ("Antre \u00b1 2 jam", "Antre +/- 2 jam"),
    ],
)
def test_symbols_health_notices_use_have_a_gsm7_replacement_that_reads_the_same(text, suggestion):
    analysis = analyze(text)

    assert analysis.encoding == "UCS2"
    assert (analysis.suggestion, analysis.suggestion_encoding) == (suggestion, "GSM7")


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        # The degree sign, and the ordinal indicator typed for it, as people write it without: "38oC".
        ("Demam di atas 38°C segera ke Puskesmas", "Demam di atas 38oC segera ke Puskesmas"),
        ("Suhu 37,5ºC", "Suhu 37,5oC"),
        # Apostrophes some keyboards and phones type as modifier letters, in words such as Jum'at and do'a.
        ("Sholat Jumʼat dan doʻa bersama", "Sholat Jum'at dan do'a bersama"),
        ("Tinggi 1,5ʹ atau 2ʺ", "Tinggi 1,5' atau 2\""),
        # Superscripts and fractions of sizes and doses, as they are typed.
        ("Lahan 100 m², tangki 2 m³", "Lahan 100 m2, tangki 2 m3"),
        ("Minum ½ tablet, lalu ¼ dan ¾ gelas air", "Minum 1/2 tablet, lalu 1/4 dan 3/4 gelas air"),
    ],
)
def test_degrees_modifier_apostrophes_superscripts_and_fractions_have_a_gsm7_replacement(text, suggestion):
    analysis = analyze(text)

    assert analysis.encoding == "UCS2"
    assert all(item.replacement is not None for item in analysis.non_gsm)
    assert (analysis.suggestion, analysis.suggestion_encoding) == (suggestion, "GSM7")


@pytest.mark.parametrize(
    ("char", "replacement"),
    [
        ("\u2018", "'"),
        ("\u2019", "'"),
        ("\u201a", "'"),
        ("\u201b", "'"),
        ("\u2032", "'"),
        ("\u2039", "'"),
        ("\u203a", "'"),
        ("\u201c", '"'),
        ("\u201d", '"'),
        ("\u201e", '"'),
        ("\u201f", '"'),
        ("\u2033", '"'),
        ("\u00ab", '"'),
        ("\u00bb", '"'),
        ("\u2013", "-"),
        ("\u2014", "-"),
        ("\u2012", "-"),
        ("\u2015", "-"),
        ("\u2212", "-"),
        ("\u2022", "-"),
        ("\u2026", "..."),
        ("\u00a0", " "),
        ("\u2000", " "),
        ("\u2007", " "),
        ("\u2009", " "),
        ("\u200a", " "),
        ("\u202f", " "),
        ("\t", " "),
        ("\u200b", ""),
        ("\u200c", ""),
        ("\u200d", ""),
        ("\ufeff", ""),
        ("\u00e1", "a"),
        ("\u00e2", "a"),
        ("\u00ea", "e"),
        ("\u00ed", "i"),
        ("\u00f3", "o"),
        ("\u00fa", "u"),
        ("\u00e7", "c"),
        ("\u00e3", "a"),
        ("\u00f5", "o"),
        ("\u00c8", "E"),
    ],
)
def test_look_alike_character_has_a_gsm7_replacement(char, replacement):
    analysis = analyze(f"Halo{char}warga")

    assert analysis.non_gsm[0].char == char
    assert analysis.non_gsm[0].position == 4
    assert analysis.non_gsm[0].replacement == replacement
    assert analysis.suggestion == f"Halo{replacement}warga"
    assert analysis.suggestion_encoding == "GSM7"


@pytest.mark.parametrize(
    ("text", "symbol"),
    [
        ("Usia \u2260 17 tahun", "\u2260"),  # not equal to: "=" says the opposite
        ("Suhu \u226e 38", "\u226e"),  # not less-than: "<" says the opposite
        ("Antrean \u226f 50 orang", "\u226f"),  # not greater-than
        ("Sudah vaksin\u037e", "\u037e"),  # the Greek question mark asks a question; ";" does not
    ],
)
def test_a_symbol_is_not_replaced_by_one_that_says_something_else(text, symbol):
    analysis = analyze(text)

    assert [(item.char, item.replacement) for item in analysis.non_gsm] == [(symbol, None)]
    assert analysis.suggestion is None


def test_no_suggestion_changes_a_symbol_into_another_one():
    # Letters fall back to their base letter, and the listed look-alikes (quotes, dashes, spaces, the minus sign,
    # the ellipsis, comparison, times and degree signs) to theirs; no other mark or symbol has a GSM-7 stand-in that
    # means the same.
    look_alikes = set("\u2018\u2019\u201a\u201b\u2032\u2039\u203a`\u00b4\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb")
    look_alikes |= set("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2022\u2026")
    look_alikes |= set("\u2265\u2264\u00d7\u00b1")  # written out: >=, <=, x, +/-
    look_alikes |= set("\u00b0")  # the degree sign, written "o" as in 38oC
    changed = [
        f"U+{code:04X}"
        for code in range(0x10000)
        if not 0xD800 <= code <= 0xDFFF
        and unicodedata.category(chr(code))[0] in "PS"
        and chr(code) not in look_alikes
        and any(item.replacement for item in analyze("x" + chr(code)).non_gsm)
    ]

    assert changed == []


def test_a_decomposed_accent_is_named_and_composed_into_the_gsm7_letter():
    # "e" followed by COMBINING ACUTE ACCENT, as some keyboards and PDFs write "é": the text as written is UCS-2,
    # and the suggestion puts the precomposed "é" of GSM-7 in place of the letter and its mark.
    text = "Vaksin di Kafe\u0301 Melati"

    analysis = analyze(text)

    assert analysis.encoding == "UCS2"
    assert analysis.non_gsm == [NonGsmChar("\u0301", 14, "COMBINING ACUTE ACCENT", "\u00e9", start=13)]
    assert (analysis.suggestion, analysis.suggestion_encoding) == ("Vaksin di Kaf\u00e9 Melati", "GSM7")


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("Cafe\u0301", "Caf\u00e9"),
        ("E\u0301cole", "\u00c9cole"),
        ("e\u0300 u\u0308 n\u0303 A\u030a C\u0327", "\u00e8 \u00fc \u00f1 \u00c5 \u00c7"),
        # No GSM-7 letter for the pair: the mark goes and the base letter stays, as "\u00e1" becomes "a".
        ("Bala\u0301i", "Balai"),
        ("c\u0327", "c"),
        ("\u00e1\u0301", "a"),
        # Only the mark on the letter composes with it; a second mark goes.
        ("e\u0301\u0301", "\u00e9"),
        ("e\u0323\u0301", "e"),
        # An invisible character the suggestion removes between the letter and its mark stands in neither's way.
        ("Kafe\u200e\u0301", "Kaf\u00e9"),
        ("Bala\u200b\u0301i", "Balai"),
    ],
)
def test_a_decomposed_accent_has_a_gsm7_replacement(text, suggestion):
    analysis = analyze(text)

    assert analysis.encoding == "UCS2"
    assert all(item.replacement is not None for item in analysis.non_gsm)
    assert (analysis.suggestion, analysis.suggestion_encoding) == (suggestion, "GSM7")


@pytest.mark.parametrize("text", ["2 =\u0338 3", "1\ufe0f\u20e3", "\u0301 awal", "\u0e20\u0e34"])
def test_a_mark_on_no_letter_with_a_gsm7_form_is_not_dropped(text):
    # "=" with a long solidus overlay is "\u2260"; a keycap or a mark on nothing or on a Thai letter has no GSM-7 form.
    analysis = analyze(text)

    assert all(item.replacement is None for item in analysis.non_gsm)
    assert analysis.suggestion is None


@pytest.mark.parametrize("char", ["\u00e9", "\u00e0", "\u00fc", "\u00c7", "\u00d1", "\u00e8"])
def test_accented_letters_of_gsm7_are_kept(char):
    analysis = analyze(f"Caf{char}")

    assert analysis.encoding == "GSM7"
    assert analysis.suggestion is None


def test_character_without_replacement_keeps_the_suggestion_ucs2():
    text = "Terima kasih \u2013 selamat pagi " + EMOJI

    analysis = analyze(text)

    assert analysis.non_gsm[-1] == NonGsmChar(EMOJI, len(text) - 1, "GRINNING FACE", None)
    assert analysis.suggestion == "Terima kasih - selamat pagi " + EMOJI
    assert analysis.suggestion_encoding == "UCS2"


def test_text_with_no_replaceable_character_has_no_suggestion():
    analysis = analyze("Selamat pagi " + EMOJI)

    assert analysis.encoding == "UCS2"
    assert analysis.suggestion is None


def test_suggestion_may_exceed_the_segment_limit_and_reports_its_count():
    # An ellipsis costs one UCS-2 unit but three characters once replaced,
    # and the emoji keeps the suggestion UCS-2: 602 units grow to 1802.
    text = EMOJI + "\u2026" * 600

    analysis = analyze(text)

    assert analysis.segments == 9
    assert analysis.suggestion_encoding == "UCS2"
    assert analysis.suggestion_segments == 27


def test_as_dict_is_json_serializable():
    analysis = analyze(VAKSIN_CURLY)

    data = json.loads(json.dumps(analysis.as_dict()))

    assert data["encoding"] == "UCS2"
    assert data["segments"] == 2
    assert data["parts"] == analysis.parts
    assert data["suggestion_segments"] == 1
    assert data["non_gsm"][0] == {
        "char": "\u201c",
        "position": 44,
        "name": "LEFT DOUBLE QUOTATION MARK",
        "replacement": '"',
        "start": 44,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        (MASKER, True),
        ("@\u00a3$\u00a5\u00e8\u00e9\u00f9\u00ec\u00f2\u00c7\n\u00d8\u00f8\r\u00c5\u00e5", True),
        ("\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\u00c6\u00e6\u00df\u00c9", True),
        ("\u00a4\u00a1\u00c4\u00d6\u00d1\u00dc\u00a7\u00bf\u00e4\u00f6\u00f1\u00fc\u00e0", True),
        ("^{}\\[~]|\u20ac\f", True),
        ("`", False),
        ("\x1b", False),
        ("\u00e7", False),
        ("\u03b1", False),
        ("\u2019", False),
        (EMOJI, False),
    ],
)
def test_is_gsm7_follows_the_03_38_alphabet(text, expected):
    assert is_gsm7(text) is expected


@pytest.mark.parametrize(
    ("segments", "recipients", "tariff", "cost"),
    [(1, 1, 350, 350), (2, 1000, 350, 700_000), (0, 5, 350, 0)],
)
def test_content_cost_is_segments_times_recipients_times_tariff(segments, recipients, tariff, cost):
    assert content_cost(segments, recipients, tariff) == cost


def test_negative_content_cost_inputs_are_refused():
    with pytest.raises(ValueError):
        content_cost(-1, 10, 350)


# --- characters a reader cannot see as they are ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Vaksin\u200bgratis", [("U+200B", sms.INVISIBLE)]),
        ("Rp 1 \u202e0001", [("U+202E", sms.REORDERS)]),
        ("Rp \u20661000\u2069", [("U+2066", sms.REORDERS), ("U+2069", sms.REORDERS)]),
        ("Bayar\x07 sekarang", [("U+0007", sms.CONTROL)]),
        ("kunjungi blit\u0430rkab.go.id", [("U+0430", sms.LOOK_ALIKE)]),  # a Cyrillic "а"
        ("hubungi \u0661\u0662", [("U+0661", sms.LOOK_ALIKE), ("U+0662", sms.LOOK_ALIKE)]),  # Arabic-Indic digits
        ("\uff48\uff54", [("U+FF48", sms.LOOK_ALIKE), ("U+FF54", sms.LOOK_ALIKE)]),  # fullwidth "ht"
        ("a\u2060b\ufeffc\u00add", [("U+2060", sms.INVISIBLE), ("U+FEFF", sms.INVISIBLE), ("U+00AD", sms.INVISIBLE)]),
        ("baris\u2028baru", [("U+2028", sms.INVISIBLE)]),
        ("a\u200db", [("U+200D", sms.INVISIBLE)]),
        (" Halo  \n", [("U+0020", sms.EDGE_BLANK), ("U+0020", sms.EDGE_BLANK), ("U+0020", sms.EDGE_BLANK),
                      ("U+000A", sms.EDGE_BLANK)]),
    ],
)  # fmt: skip
def test_characters_not_seen_as_they_are_sent_are_named_by_kind(text, expected):
    assert [(item.code_point, item.kind) for item in sms.hidden_characters(text)] == expected


@pytest.mark.parametrize(
    "text",
    [
        "Tetap pakai masker.\nJaga jarak.",
        "Harga\u00a0Rp 10.000",  # a no-break space is a space
        "Keluarga \U0001f468\u200d\U0001f469\u200d\U0001f467 sehat \u2764\ufe0f",  # joiner and selector of emoji
        "\U0001f3f3\ufe0f\u200d\U0001f308",
        "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",  # a flag's tags
        "Москва и Δ",  # another script on its own, not among Latin letters
        "kolom\tkedua",
        "café ı",
    ],
)
def test_text_people_write_has_nothing_hidden(text):
    assert sms.hidden_characters(text) == []


def test_a_domain_in_letters_outside_ascii_is_named_with_the_ascii_form_it_opens_as():
    text = "Daftar di https://blit\u0430rkab.go.id/vaksin atau m\u00fcnchen.de, info covid19.go.id. Jam 10.00 WIB."
    assert [(host.written, host.ascii) for host in sms.international_hosts(text)] == [
        ("blit\u0430rkab.go.id", "xn--blitrkab-46g.go.id"),
        ("m\u00fcnchen.de", "xn--mnchen-3ya.de"),
    ]
    assert sms.international_hosts("Info covid19.go.id, Rp 10.000, S.Pd.") == []


def test_every_look_alike_letter_of_the_longest_word_the_api_takes_is_named():
    # One word of 5,000 letters, a Latin one first: each other letter is marked as a look-alike in a Latin word.
    text = "a" + "\u0430" * 4999
    hidden = sms.hidden_characters(text)
    assert len(hidden) == 4999
    assert {item.position for item in hidden} == set(range(1, 5000))


# --- the text rules against an encoder written from GSM 03.38 and UTF-16 ------------------------------------------
#
# The oracle below encodes a text as a handset's modem would, septet by septet (the 03.38 default alphabet by code,
# the extension table behind the 0x1B escape) or as UTF-16 code units, and cuts the user data into parts of 160/153
# septets or 70/67 units without ending a part on an escape or a high surrogate. It shares no code with smsblast.sms.

_ORACLE_DEFAULT_ALPHABET = dict(
    enumerate(
        "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
        "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
    )
)
_ORACLE_ESCAPE = 0x1B
_ORACLE_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
}
_ORACLE_EXTENSION[0x65] = "\u20ac"
_ORACLE_SEPTET_OF = {char: code for code, char in _ORACLE_DEFAULT_ALPHABET.items() if code != _ORACLE_ESCAPE}
_ORACLE_EXTENSION_SEPTET_OF = {char: code for code, char in _ORACLE_EXTENSION.items()}


def oracle_septets(text: str) -> list[int] | None:
    """Return the septets of text in GSM-7, or None when a character has no septet."""
    septets = []
    for char in text:
        if char in _ORACLE_SEPTET_OF:
            septets.append(_ORACLE_SEPTET_OF[char])
        elif char in _ORACLE_EXTENSION_SEPTET_OF:
            septets += [_ORACLE_ESCAPE, _ORACLE_EXTENSION_SEPTET_OF[char]]
        else:
            return None
    return septets


def oracle_units(text: str, encoding: str) -> int:
    """Return the septets (GSM7) or UTF-16 code units (UCS2) text takes."""
    return len(oracle_septets(text)) if encoding == "GSM7" else len(text.encode("utf-16-be")) // 2


def oracle_cut(units: list[int], *, single: int, per_part: int, holds_back) -> list[list[int]]:
    """Cut units into parts: all in one when they fit, else parts of per_part that never end on a held-back unit."""
    if len(units) <= single:
        return [units]
    parts, start = [], 0
    while start < len(units):
        end = min(start + per_part, len(units))
        if end < len(units) and holds_back(units, end - 1):
            end -= 1
        parts.append(units[start:end])
        start = end
    return parts


def oracle(text: str) -> tuple[str, int, list[int]]:
    """Return the encoding, the units and the units of each part of text as a modem would send it."""
    septets = oracle_septets(text)
    if septets is not None:
        # No extension septet is 0x1B, so a part ending on 0x1B would split an escape pair.
        parts = oracle_cut(septets, single=160, per_part=153, holds_back=lambda units, i: units[i] == _ORACLE_ESCAPE)
        return "GSM7", len(septets), [len(part) for part in parts]
    encoded = text.encode("utf-16-be")
    code_units = [int.from_bytes(encoded[i : i + 2], "big") for i in range(0, len(encoded), 2)]
    parts = oracle_cut(code_units, single=70, per_part=67, holds_back=lambda units, i: 0xD800 <= units[i] <= 0xDBFF)
    return "UCS2", len(code_units), [len(part) for part in parts]


def test_the_oracle_alphabet_is_the_128_codes_of_03_38():
    assert len(_ORACLE_DEFAULT_ALPHABET) == 128
    assert len(set(_ORACLE_DEFAULT_ALPHABET.values())) == 128
    assert _ORACLE_DEFAULT_ALPHABET[0x24] == "¤" and _ORACLE_DEFAULT_ALPHABET[0x60] == "¿"


# Zero-width characters, direction marks and controls, soft hyphen and word joiner.
_SHOWN_AS_NOTHING = (
    "\u200b\u200c\u200d\ufeff\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u00ad\u2060"
)
_GSM_TEXT = st.text(st.sampled_from(sorted(_ORACLE_SEPTET_OF)), max_size=1600)
_TEXT_WITH_EXTENSION = st.text(
    st.sampled_from(sorted(_ORACLE_SEPTET_OF)) | st.sampled_from(sorted(_ORACLE_EXTENSION_SEPTET_OF)), max_size=800
)
_ANY_TEXT = st.text(
    st.sampled_from(sorted(_ORACLE_SEPTET_OF))
    | st.sampled_from(sorted(_ORACLE_EXTENSION_SEPTET_OF))
    | st.sampled_from(["\u201c", "\u201d", "\u2019", "\u2013", "\u2014", "\u00a0", "\u2026", "ç", "中"])
    | st.sampled_from(["\U0001f600", "\U0001f489", "\U0001f1ee", "\U00020000"])
    | st.characters(codec="utf-8"),
    max_size=700,
)


@st.composite
def _runs_up_to_part_boundaries(draw) -> str:
    """Return runs of plain letters, each ended by a two-unit character, so pairs land on and near part boundaries.

    Often padded to fill its last part exactly, had no pair moved: then one moved pair needs a part more.
    """
    encoding = draw(st.sampled_from(["GSM7", "UCS2"]))
    filler, pair_chars, per_part = (
        ("a", "€[]{}^~|\\\f", 153) if encoding == "GSM7" else ("ç", "\U0001f600\U0001f489", 67)
    )
    runs = draw(
        st.lists(
            st.tuples(
                st.one_of(st.integers(0, per_part), st.sampled_from([per_part - 2, per_part - 1, per_part])),
                st.sampled_from(pair_chars),
            ),
            min_size=1,
            max_size=10,
        )
    )
    text = "".join(filler * length + char for length, char in runs)
    if draw(st.booleans()):
        text += filler * (-oracle_units(text, encoding) % per_part)
    return text


@settings(max_examples=400)
@given(text=_GSM_TEXT | _TEXT_WITH_EXTENSION | _ANY_TEXT | _runs_up_to_part_boundaries())
def test_encoding_units_and_segments_are_those_a_gsm_modem_sends(text):
    encoding, units, part_units = oracle(text)
    segments = len(part_units)
    try:
        analysis = analyze(text)
    except TextError:
        # Refused only when too long, or when nothing in it would show on a phone.
        assert segments > MAX_SEGMENTS or all(char.isspace() or char in _SHOWN_AS_NOTHING for char in text)
        return

    assert (analysis.encoding, analysis.units, analysis.segments) == (encoding, units, segments)
    assert "".join(analysis.parts) == text
    assert [oracle_units(part, encoding) for part in analysis.parts] == part_units
    assert analysis.remaining == analysis.per_segment - part_units[-1]
    if segments == 1:
        assert analysis.per_segment == (160 if encoding == "GSM7" else 70)
    else:
        assert analysis.per_segment == (153 if encoding == "GSM7" else 67)


def test_every_replacement_offered_is_gsm7_so_a_text_whose_characters_all_have_one_becomes_gsm7():
    offered = {}
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        for item in analyze("x" + chr(code)).non_gsm:
            if item.replacement is not None:
                offered[chr(code)] = item.replacement

    assert {char: text for char, text in offered.items() if oracle_septets(text) is None} == {}
    # The characters the text rules name among them.
    assert set("\u2018\u2019\u201c\u201d\u2013\u2014\u00a0\u2026") <= set(offered)
    everything = "".join(offered)
    assert analyze(everything, max_segments=100).suggestion_encoding == "GSM7"
