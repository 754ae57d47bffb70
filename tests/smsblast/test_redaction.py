"""Subscribers' numbers masked in log lines, in every form a request's address or a message writes them."""

import logging

import pytest

from smsblast.redaction import NumbersMaskedFilter, mask_numbers


@pytest.mark.parametrize(
    ("written", "logged"),
    [
        ("/api/v1/subscribers/+6281234567890/opt-out/", "/api/v1/subscribers/+62812******90/opt-out/"),
        ("/api/v1/subscribers/%2B6281234567890/opt-in/", "/api/v1/subscribers/+62812******90/opt-in/"),
        ("/api/v1/subscribers/6281234567890/opt-in/", "/api/v1/subscribers/+62812******90/opt-in/"),
        ("GET /subscribers/?msisdn=0812+3456+7890 HTTP/1.1", "GET /subscribers/?msisdn=+62812******90 HTTP/1.1"),
        ("?msisdn=0812%203456%207890&page=2", "?msisdn=+62812******90&page=2"),
        ("?q=%2B62+812-3456-7890", "?q=+62812******90"),
        # Percent-encoded separators hold digits of their own, which are no digits of the number.
        ("?q=0812%203456%2078901", "?q=+62812*******01"),
        ("?q=%2B62%20812%203456%207890", "?q=+62812******90"),
        ("?q=%2B62+%28812%29+3456-7890", "?q=+62812******90"),
        ("(0812) 3456-7890 and 0812.3456.7891", "+62812******90 and +62812******91"),
        ("081234567890 200 1234", "+62812******90 200 1234"),
    ],
)
def test_a_mobile_number_keeps_only_its_operator_prefix_and_last_two_digits(written, logged):
    assert mask_numbers(written) == logged


@pytest.mark.parametrize(
    "text",
    [
        "/api/v1/subscribers/?q=0812345",  # part of a number, as searched
        "/api/v1/campaigns/12345/report.csv?run=987654321",
        "?starts_at=2021-01-01T10:00:00%2B07:00",
        "/api/v1/operator/batches/01234567-8901-2345-6789-012345678901/claim/",
        "[24/Nov/2026:01:18:04 +0000] 0215551234",  # a Jakarta landline takes no SMS
        "Mozilla/5.0 Chrome/120.0.6099.109",
    ],
)
def test_what_is_not_a_mobile_number_is_logged_as_it_is(text):
    assert mask_numbers(text) == text


def test_a_log_record_naming_a_number_is_masked_and_one_that_cannot_be_formatted_is_left_to_its_handler():
    record = logging.LogRecord(
        "django.request", logging.WARNING, __file__, 1, "%s: %s", ("Not Found", "/x/081234567890/"), None
    )
    assert NumbersMaskedFilter().filter(record)
    assert record.getMessage() == "Not Found: /x/+62812******90/"
    broken = logging.LogRecord("x", logging.WARNING, __file__, 1, "%s %s", ("one",), None)
    assert NumbersMaskedFilter().filter(broken)
    assert (broken.msg, broken.args) == ("%s %s", ("one",))


@pytest.mark.parametrize(
    ("written", "logged"),
    [
        # Copied from a document or a web page: non-breaking spaces, en dashes, a non-breaking hyphen, a tab.
        (
            "GET /subscribers/?msisdn=0812%C2%A03456%C2%A07890 HTTP/1.1",
            "GET /subscribers/?msisdn=+62812******90 HTTP/1.1",
        ),
        ("?msisdn=0812%E2%80%933456%E2%80%937890", "?msisdn=+62812******90"),
        ("?msisdn=0812%e2%80%913456%e2%80%917890&page=2", "?msisdn=+62812******90&page=2"),
        ("?msisdn=%E2%80%8B0812%09%E2%80%8B3456%097890", "?msisdn=%E2%80%8B+62812******90"),
        # Django's warnings name the path decoded.
        (
            "Bad Request: /api/v1/subscribers/0812\u00a03456\u20137890/opt-out/",
            "Bad Request: /api/v1/subscribers/+62812******90/opt-out/",
        ),
    ],
)
def test_a_number_written_with_the_separators_a_search_accepts_is_masked_too(written, logged):
    assert mask_numbers(written) == logged


@pytest.mark.parametrize(
    ("written", "logged"),
    [
        ("a 081234567890\t081234567891 b", "a +62812******90\t+62812******91 b"),
        ("081234567890\n081234567891", "+62812******90\n+62812******91"),
        ("081234567890%0A081234567891", "+62812******90%0A+62812******91"),
        ("msisdn\t081234567890\t200", "msisdn\t+62812******90\t200"),
    ],
)
def test_numbers_next_to_each_other_across_a_tab_or_a_line_break_are_each_masked(written, logged):
    assert mask_numbers(written) == logged


@pytest.mark.parametrize(
    "text",
    [
        "campaign 3f2a9c1e-8123-4567-89ab-cdef01234567 approved",
        "GET /campaigns/3F2A9C1E-0812-3456-7890-CDEF01234567/ HTTP/1.1",
        "batch f8181057-478b-45ef-bf20-c5c0c49c0c09 claimed",
    ],
)
def test_a_uuid_whose_digits_read_as_a_mobile_number_is_logged_as_it_is(text):
    assert mask_numbers(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "sent\n812\n345\n6789",  # counts one a line
        "batches 81\r\n2345\r\n6789",
        "?lines=812%0A3456%0A789",
    ],
)
def test_numbers_on_lines_of_their_own_are_not_read_as_one_mobile_number(text):
    assert mask_numbers(text) == text


def test_a_number_in_the_traceback_of_a_logged_error_is_masked_too(settings):
    """A database error names the row it refused ("Key (msisdn)=(+62…) already exists"): its traceback is logged."""
    import io
    import logging.config

    stream = io.StringIO()
    config = {**settings.LOGGING, "handlers": {**settings.LOGGING["handlers"]}}
    config["handlers"]["console"] = {**config["handlers"]["console"], "stream": stream}
    logging.config.dictConfig(config)
    try:
        try:
            raise ValueError("duplicate key value: Key (msisdn)=(+6281234567890) already exists.")
        except ValueError:
            logging.getLogger("django.request").exception("Internal Server Error: /api/v1/subscribers/")
    finally:
        logging.config.dictConfig(settings.LOGGING)
    written = stream.getvalue()
    assert "Internal Server Error" in written and "ValueError" in written
    assert "Key (msisdn)=(+62812******90) already exists." in written
    assert "6281234567890" not in written
