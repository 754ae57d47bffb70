import hashlib
import hmac

from operators.signing import sign, verify

SECRET = "s3cret"
BODY = b'{"batch_id":"b1","recipients":[]}'


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, BODY) == f"sha256={expected}"


def test_fresh_signature_verifies():
    signature = sign(SECRET, 1700000000, BODY)
    assert verify(SECRET, "1700000000", BODY, signature, now=1700000010)


def test_tampered_body_is_refused():
    signature = sign(SECRET, 1700000000, BODY)
    assert not verify(SECRET, 1700000000, BODY + b" ", signature, now=1700000000)


def test_wrong_secret_is_refused():
    signature = sign("other", 1700000000, BODY)
    assert not verify(SECRET, 1700000000, BODY, signature, now=1700000000)


def test_signature_for_another_timestamp_is_refused():
    signature = sign(SECRET, 1700000000, BODY)
    assert not verify(SECRET, 1700000001, BODY, signature, now=1700000000)


def test_stale_or_future_timestamp_is_refused_even_with_a_valid_mac():
    signature = sign(SECRET, 1700000000, BODY)
    assert not verify(SECRET, 1700000000, BODY, signature, now=1700000301)
    assert not verify(SECRET, 1700000000, BODY, signature, now=1699999699)
    assert verify(SECRET, 1700000000, BODY, signature, now=1700000300)


def test_missing_or_garbled_headers_are_refused():
    signature = sign(SECRET, 1700000000, BODY)
    assert not verify(SECRET, None, BODY, signature, now=1700000000)
    assert not verify(SECRET, "yesterday", BODY, signature, now=1700000000)
    assert not verify(SECRET, 1700000000, BODY, None, now=1700000000)
    assert not verify(SECRET, 1700000000, BODY, "sha256=00", now=1700000000)


def test_a_timestamp_other_than_the_plain_digits_that_were_signed_is_refused():
    signature = sign(SECRET, 1700000000, BODY)
    for sent in ("+1700000000", " 1700000000", "1700000000\n", "1_700_000_000", "\uff11700000000", "-1700000000"):
        assert not verify(SECRET, sent, BODY, signature, now=1700000000), sent


def test_a_timestamp_of_thousands_of_digits_is_refused_not_an_error():
    signature = sign(SECRET, 1700000000, BODY)
    assert not verify(SECRET, "1" * 5000, BODY, signature, now=1700000000)
    assert not verify(SECRET, "0" * 4990 + "1700000000", BODY, signature, now=1700000000)
