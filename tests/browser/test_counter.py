"""The page's segment counter (static/js/sms-counter.js) agrees with smsblast.sms.analyze, run in Chromium."""

import random
import unicodedata
from pathlib import Path

import pytest

from smsblast.sms import TextError, analyze, hidden_characters

pytestmark = pytest.mark.browser

COUNTER_JS = Path(__file__).resolve().parent.parent.parent / "static" / "js" / "sms-counter.js"
EMOJI = "\U0001f637"  # face with medical mask: a surrogate pair in UTF-16

# The boundary table of the text rules: 160/161, 153·n, 70/71, 67·n, an escape pair and an emoji straddling a part.
BOUNDARY_TEXTS = [
    "a" * 160,
    "a" * 161,
    "a" * 153 * 2,
    "a" * (153 * 2 + 1),
    "a" * 153 * 3,
    "a" * (153 * 3 + 1),
    "a" * 153 * 10,
    "a" * 159 + "€",
    "a" * 158 + "€",
    "a" * 152 + "€" + "a" * 10,
    "a" * 153 + "[" + "a" * 10,
    "é" * 70,
    "é" * 69 + "ç",
    "ç" * 70,
    "ç" * 71,
    "ç" * 67 * 2,
    "ç" * (67 * 2 + 1),
    "ç" * 67 * 5,
    "ç" * 69 + EMOJI,
    "ç" * 68 + EMOJI,
    "ç" * 66 + EMOJI + "ç" * 10,
    EMOJI * 35,
    EMOJI * 36,
    "Tetap “pakai masker” – jaga jarak… ",
    "Harga\u00a0Rp 10.000\u200b",
    "\f^{}\\[~]|€",
    "line one\nline two\r\n",
    "Ångström ñ ü ß Ø Δ ¿¡",
    "Ả",
    "\t indented",
    # Characters not seen as they are sent (smsblast.sms.hidden_characters): each kind, and what is not one.
    "Transfer Rp 1\u202e0001 ke blit\u0430rkab.go.id\u200b ",
    "Hubungi \u20660812\u2069 sekarang\x07\x1b",
    "  \u00a0Vaksin\u2028gratis\ufeff\f",
    "Nomor \u0661\u0662 \uff21\U0001d41a \u0391\u0392 \u0391BC \u0251",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467 \u2764\ufe0f 1\ufe0f\u20e3 a\ufe0f \u200d",
    "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f \U000e0067",
    "\u3164\u2800",
    # Direction marks around a number or in a name: the suggestion drops them, and they are marked as invisible.
    "Info hubungi \u200e+62 812-3456-7890\u200e, \u200fImam\u200f, Jadwal\u061c Senin",
    "\u200b\u200b",
    # Decomposed accents: composed into a GSM-7 letter, or dropped from a letter, or kept on what is no letter.
    "Kafe\u0301 E\u0301cole Bala\u0301i c\u0327 \u00e1\u0301 e\u0301\u0301 e\u0323\u0301 =\u0338 \u0301 \u0e20\u0e34",
    # A direction mark or a zero-width space between a letter and its accent, which the suggestion removes.
    "Kafe\u200e\u0301 Bala\u200b\u0301i",
    # Degrees, modifier apostrophes, superscripts and fractions, each with its GSM-7 replacement.
    "Suhu 38\u00b0C 37\u00baC Jum\u02bcat do\u02bba 1\u02b9 2\u02ba m\u00b2 m\u00b3 \u00bd \u00bc \u00be",
]

RANDOM_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ 0123456789 .,!?-'\"\n"
    "€[]{}^~|\\"
    "éèàÄÖÑÜäöñüÇØøÅåΔΦΓΛΩΠΨΣΘΞÆæß"
    "“”‘’–—…\u00a0\u200b"
    "çãõáíóúâêôšž"
    "中文ภาษาไทย"
    "\U0001f637\U0001f489\U0001f1ee\U0001f1e9"
)

FIELDS = ("encoding", "length", "units", "segments", "per_segment", "remaining", "suggestion", "suggestion_segments")


def server_view(text: str) -> dict:
    try:
        result = analyze(text).as_dict()
    except TextError:
        return {"error": True, "hidden": hidden_view(hidden_characters(text))}
    view = {field: result[field] for field in FIELDS}
    view["parts"] = result["parts"]
    view["non_gsm"] = [
        (item["position"], item["start"], item["char"], item["replacement"]) for item in result["non_gsm"]
    ]
    view["hidden"] = hidden_view(hidden_characters(text))
    return view


def browser_view(result: dict) -> dict:
    if result["error"]:
        return {"error": True, "hidden": hidden_view(result["hidden"])}
    view = {field: result[field] for field in FIELDS}
    view["parts"] = result["parts"]
    view["non_gsm"] = [
        (item["position"], item["start"], item["char"], item["replacement"]) for item in result["non_gsm"]
    ]
    view["hidden"] = hidden_view(result["hidden"])
    return view


def hidden_view(hidden: list) -> list:
    """Return (position, code point, kind) of each hidden character, from the server's or the page's list."""
    rows = [vars(item) if hasattr(item, "kind") else item for item in hidden]
    return [(row["position"], row["code_point"], row["kind"]) for row in rows]


def random_texts(count: int, seed: int = 20210701) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        length = rng.choice([rng.randint(1, 80), rng.randint(60, 200), rng.randint(140, 700), rng.randint(600, 1600)])
        # Mostly plain text, with a few characters from the troublesome end of the alphabet.
        plain = rng.random() < 0.5
        chars = []
        for _ in range(length):
            if plain or rng.random() < 0.9:
                chars.append(rng.choice(RANDOM_ALPHABET[:60]))
            else:
                chars.append(rng.choice(RANDOM_ALPHABET))
        texts.append("".join(chars))
    return texts


@pytest.fixture
def counter_page(new_page):
    page = new_page()
    page.set_content("<!doctype html><html><body></body></html>")
    page.add_script_tag(path=str(COUNTER_JS))
    return page


def test_counter_agrees_with_the_server_on_the_boundary_table(counter_page):
    results = counter_page.evaluate("texts => texts.map(t => SmsCounter.analyze(t))", BOUNDARY_TEXTS)
    for text, result in zip(BOUNDARY_TEXTS, results, strict=True):
        assert browser_view(result) == server_view(text), repr(text)


def test_counter_agrees_with_the_server_on_random_texts(counter_page):
    texts = random_texts(600)
    results = counter_page.evaluate("texts => texts.map(t => SmsCounter.analyze(t))", texts)
    disagreements = [
        text for text, result in zip(texts, results, strict=True) if browser_view(result) != server_view(text)
    ]
    assert not disagreements, disagreements[:3]


COMPOSE_OUTPUTS = "".join(
    f'<b data-sms-out="{name}"></b>'
    for name in (
        "chars",
        "encoding",
        "segments",
        "remaining",
        "suggestion-segments",
        "suggestion-gsm",
        "suggestion-ucs2",
    )
) + (
    '<p data-sms-out="error"></p><ul data-sms-out="nongsm"></ul>'
    '<div data-sms-out="hidden-box"><ul data-sms-out="hidden"></ul></div>'
    '<div data-sms-out="suggestion-box"><button data-sms-accept>Pakai saran</button></div>'
    '<div data-sms-out="preview"></div>'
)


@pytest.mark.parametrize("accept", ["[data-sms-out=nongsm] button", "[data-sms-accept]"])
def test_a_decomposed_accent_becomes_the_gsm7_letter_in_one_click(counter_page, accept):
    counter_page.evaluate(
        """outputs => {
            document.body.innerHTML = '<div data-sms-counter><textarea data-sms-input></textarea>' + outputs + '</div>';
            const input = document.querySelector("[data-sms-input]");
            input.value = "Posyandu Kafe\u0301 Melati";
            SmsCounter.bind(document.querySelector("[data-sms-counter]"));
        }""",
        COMPOSE_OUTPUTS,
    )
    assert counter_page.text_content("[data-sms-out=encoding]") == "UCS-2"

    counter_page.click(accept)

    assert counter_page.input_value("[data-sms-input]") == "Posyandu Kaf\u00e9 Melati"
    assert counter_page.text_content("[data-sms-out=encoding]") == "GSM-7"


@pytest.mark.parametrize("accept", ["[data-sms-out=nongsm] button", "[data-sms-accept]"])
def test_a_direction_mark_is_removed_in_one_click(counter_page, accept):
    counter_page.evaluate(
        """outputs => {
            document.body.innerHTML = '<div data-sms-counter><textarea data-sms-input></textarea>' + outputs + '</div>';
            const input = document.querySelector("[data-sms-input]");
            input.value = "Info hubungi \u200e0812-3456-7890";
            SmsCounter.bind(document.querySelector("[data-sms-counter]"));
        }""",
        COMPOSE_OUTPUTS,
    )
    assert counter_page.text_content("[data-sms-out=encoding]") == "UCS-2"

    counter_page.click(accept)

    assert counter_page.input_value("[data-sms-input]") == "Info hubungi 0812-3456-7890"
    assert counter_page.text_content("[data-sms-out=encoding]") == "GSM-7"


def test_a_direction_override_reorders_neither_the_phone_preview_nor_the_list_of_characters(counter_page):
    counter_page.add_style_tag(path=str(COUNTER_JS.parent.parent / "css" / "app.css"))
    counter_page.evaluate(
        """outputs => {
            document.body.innerHTML = '<div data-sms-counter><textarea data-sms-input></textarea>' + outputs + '</div>';
            document.querySelector("[data-sms-input]").value = "Transfer Rp 1\u202e0001 ke bank";
            SmsCounter.bind(document.querySelector("[data-sms-counter]"));
        }""",
        COMPOSE_OUTPUTS,
    )
    # Where each character is drawn: the text as sent reads in the order it is typed, and so does the list.
    lefts = counter_page.evaluate(
        """() => {
            const left = node => {
                const range = document.createRange();
                range.selectNodeContents(node);
                return range.getBoundingClientRect().left;
            };
            const drawn = [...document.querySelector(".bubble").childNodes].filter(node => node.textContent.trim());
            const item = document.querySelector("[data-sms-out=nongsm] li");
            return {
                sent: drawn.slice(drawn.findIndex(node => node.nodeName === "MARK") + 1).map(left),
                listed: [item.querySelector("mark"), item.querySelector("span"), item.querySelector("button")].map(
                    element => element.getBoundingClientRect().left
                ),
                code: item.querySelector("span").innerText,
            };
        }"""
    )

    assert len(lefts["sent"]) == len("0001kebank")
    assert lefts["sent"] == sorted(lefts["sent"])
    assert lefts["listed"] == sorted(lefts["listed"])
    assert lefts["code"] == "U+202E"


def test_counter_refuses_what_the_server_refuses(counter_page):
    for text in [
        "",
        "   ",
        "\u200b\u200b",
        "\u200e",
        " \u00ad\u202a\u202c ",
        "a" * (153 * 10 + 1),
        "ç" * (67 * 10 + 1),
    ]:
        result = counter_page.evaluate("t => SmsCounter.analyze(t)", text)
        assert result["error"], repr(text)
        with pytest.raises(TextError):
            analyze(text)


def test_counter_agrees_with_the_server_on_every_character_of_the_basic_multilingual_plane(counter_page):
    # Each character alone (blank or not) and after a letter (encoding, units, replacement, suggestion).
    characters = [chr(code) for code in range(0x10000) if not 0xD800 <= code <= 0xDFFF]
    results = counter_page.evaluate(
        """chars => chars.map(c => {
            const alone = SmsCounter.analyze(c), after = SmsCounter.analyze("x" + c);
            return [alone.error === "empty", after.encoding, after.units,
                    after.non_gsm.map(item => item.replacement), after.suggestion];
        })""",
        characters,
    )
    disagreements = []
    for char, result in zip(characters, results, strict=True):
        try:
            analyze(char)
            blank = False
        except TextError:
            blank = True
        after = analyze("x" + char)
        expected = [blank, after.encoding, after.units, [item.replacement for item in after.non_gsm], after.suggestion]
        if result != expected:
            disagreements.append((f"U+{ord(char):04X}", result, expected))
    assert not disagreements, disagreements[:5]


def test_counter_marks_the_characters_the_server_marks_for_every_character_it_knows(counter_page):
    # Each character alone, after a Latin letter and inside a Latin word; the server's Unicode data sets the range.
    characters = [
        chr(code)
        for code in range(0x110000)
        if not 0xD800 <= code <= 0xDFFF and unicodedata.category(chr(code)) not in ("Cn", "Co")
    ]
    results = counter_page.evaluate(
        """chars => chars.map(c => [c, "x" + c, "ab" + c + "cd"].map(
            t => SmsCounter.analyze(t).hidden.map(item => [item.position, item.code_point, item.kind])))""",
        characters,
    )
    disagreements = []
    for char, result in zip(characters, results, strict=True):
        expected = [hidden_view(hidden_characters(text)) for text in (char, "x" + char, "ab" + char + "cd")]
        if [[tuple(row) for row in rows] for rows in result] != expected:
            disagreements.append((f"U+{ord(char):04X}", result, expected))
    assert not disagreements, (len(disagreements), disagreements[:5])
