"""Time-based one-time codes as authenticator apps compute them (RFC 6238), with explicit times."""

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

from smsblast import totp

# RFC 6238 appendix B: the ASCII secret "12345678901234567890" (HMAC-SHA1); its 8-digit codes end in these 6.
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC_CODES = {59: "287082", 1111111109: "081804", 1234567890: "005924", 2000000000: "279037"}


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_codes_are_those_of_rfc_6238():
    assert {seconds: totp.code_at(RFC_SECRET, at(seconds)) for seconds in RFC_CODES} == RFC_CODES


def test_the_code_of_the_step_before_or_after_is_taken_and_none_further_off():
    secret = totp.secret_new()
    now = at(1_800_000_015)
    step = totp.time_step(now)

    def code(offset_steps: int) -> str:
        return totp.code_at(secret, now + timedelta(seconds=30 * offset_steps))

    assert [totp.matching_step(secret, code(offset), now) for offset in (-1, 0, 1)] == [step - 1, step, step + 1]
    assert [totp.matching_step(secret, code(offset), now) for offset in (-3, -2, 2, 3)] == [None] * 4


def test_a_code_typed_with_a_space_is_taken_and_anything_but_six_digits_is_not():
    secret = totp.secret_new()
    now = at(1_800_000_015)
    code = totp.code_at(secret, now)
    assert totp.matching_step(secret, f"{code[:3]} {code[3:]}", now) == totp.time_step(now)
    for typed in ("", code[:5], code + "0", "abcdef", "١٢٣٤٥٦"):
        assert totp.matching_step(secret, typed, now) is None


def test_the_secret_is_random_base32_of_160_bits_and_grouped_by_four_for_typing():
    secret = totp.secret_new()
    assert len(base64.b32decode(secret)) == 20
    assert secret != totp.secret_new()
    assert totp.secret_grouped("ABCDEFGHIJ") == "ABCD EFGH IJ"


def test_the_uri_and_the_qr_code_are_what_authenticator_apps_read():
    uri = totp.provisioning_uri(RFC_SECRET, account="chair", issuer="smsblast")
    parsed = urlparse(uri)
    assert (parsed.scheme, parsed.netloc) == ("otpauth", "totp")
    assert parse_qs(parsed.query) == {"secret": [RFC_SECRET], "issuer": ["smsblast"]}
    svg = totp.qr_svg(uri, label="QR <code>")
    assert svg.startswith("<svg ")
    assert 'role="img"' in svg
    assert 'aria-label="QR &lt;code&gt;"' in svg
    assert "<?xml" not in svg
    assert "http://" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")
