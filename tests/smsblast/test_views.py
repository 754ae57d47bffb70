"""Subscriber and operator pages through the Django test client."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone, translation

from campaigns.models import DispatchBatch
from smsblast import services
from smsblast.models import AuditEvent, Role, Subscriber, SubscriberImport
from tests.campaigns.factories import DispatchBatchFactory
from tests.conftest import client_for
from tests.operators.factories import OperatorFactory
from tests.smsblast.factories import AreaFactory, SubscriberFactory, UserFactory, area_tree

pytestmark = pytest.mark.django_db


@pytest.fixture
def officer_user():
    return UserFactory(username="ofc", role=Role.OFFICER)


def test_upload_creates_an_import_whose_page_polls_until_done_and_lists_rejected_rows(officer_user, tmp_path, settings):
    from smsblast.services import subscriber_import_run

    settings.MEDIA_ROOT = tmp_path
    area_tree("35.05", kecamatan=1)
    csv = "msisdn,kode_wilayah\n0812-3456-7890,35.05.01\n021-555-1234,35.05.01\n0856 1111 2222,35.05.01\n"
    upload = SimpleUploadedFile("warga.csv", csv.encode(), content_type="text/csv")
    client = client_for(officer_user)
    response = client.post(reverse("subscribers"), {"form": "import", "file": upload})
    job = SubscriberImport.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("subscriber_import", args=[job.pk])
    body = client.get(response["Location"]).content.decode()
    assert 'hx-trigger="every 2s"' in body

    subscriber_import_run(subscriber_import=job)
    body = client.get(reverse("subscriber_import", args=[job.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "every 2s" not in body
    assert 'aria-valuenow="100"' in body
    assert "021-555-1234" in body
    assert Subscriber.objects.count() == 2


def test_import_page_says_how_many_rejected_rows_it_shows_and_links_the_download_of_all(
    officer_user, tmp_path, settings
):
    from smsblast.services import subscriber_import_create, subscriber_import_run

    settings.MEDIA_ROOT = tmp_path
    area_tree("35.05", kecamatan=1)
    rows = "".join(f"021-555-{n:04d},35.05.01\n" for n in range(150))
    job = subscriber_import_create(
        uploaded_file=SimpleUploadedFile("warga.csv", f"msisdn,kode_wilayah\n{rows}".encode()), user=officer_user
    )
    subscriber_import_run(subscriber_import=job)
    client = client_for(officer_user)
    body = client.get(reverse("subscriber_import", args=[job.pk])).content.decode()
    assert "Di sini tampil 100 pertama dari 150." in body
    link = f'href="/api/v1/subscribers/imports/{job.pk}/rejected.csv"'
    assert link in body
    download = client.get(f"/api/v1/subscribers/imports/{job.pk}/rejected.csv")
    assert b"".join(download.streaming_content).decode().count("not_mobile") == 150


def _one_line_import(officer_user, tmp_path, settings):
    """Upload a one-line CSV from the subscribers page; return the officer's client and the import job."""
    settings.MEDIA_ROOT = tmp_path
    area_tree("35.05", kecamatan=1)
    upload = SimpleUploadedFile("warga.csv", b"msisdn\n0812-3456-7890\n", content_type="text/csv")
    client = client_for(officer_user)
    client.post(reverse("subscribers"), {"form": "import", "file": upload})
    return client, SubscriberImport.objects.get()


def test_a_failed_import_page_explains_in_the_users_language_and_offers_to_resume(officer_user, tmp_path, settings):
    client, job = _one_line_import(officer_user, tmp_path, settings)
    SubscriberImport.objects.filter(pk=job.pk).update(state="failed", error=services.IMPORT_FAILED_FILE, lines_done=1)

    body = client.get(reverse("subscriber_import", args=[job.pk])).content.decode()
    assert "Impor berhenti setelah baris 1." in body  # Indonesian by default
    assert "Server tidak dapat membaca berkas atau menulis daftar baris yang ditolak" in body  # what failed
    assert reverse("subscriber_import_resume", args=[job.pk]) in body

    response = client.post(reverse("subscriber_import_resume", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.state == "pending"
    body = client.get(response["Location"]).content.decode()
    assert "Impor dilanjutkan setelah baris 1." in body
    assert "Lanjutkan impor" not in body  # nothing left to resume


def test_an_import_whose_worker_died_offers_to_resume_once_it_shows_no_sign_of_life(officer_user, tmp_path, settings):
    client, job = _one_line_import(officer_user, tmp_path, settings)
    SubscriberImport.objects.filter(pk=job.pk).update(state="running")
    page = reverse("subscriber_import", args=[job.pk])
    assert reverse("subscriber_import_resume", args=[job.pk]) not in client.get(page).content.decode()

    silent_since = timezone.now() - timedelta(seconds=settings.SUBSCRIBER_IMPORT_STALE_SECONDS + 1)
    SubscriberImport.objects.filter(pk=job.pk).update(heartbeat_at=silent_since)
    body = client.get(page).content.decode()
    assert "Impor ini tidak menunjukkan kemajuan selama beberapa menit" in body
    assert reverse("subscriber_import_resume", args=[job.pk]) in body

    response = client.post(reverse("subscriber_import_resume", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.state == "pending"


def test_resuming_an_import_that_did_not_fail_is_refused_in_the_users_language(officer_user, tmp_path, settings):
    client, job = _one_line_import(officer_user, tmp_path, settings)
    SubscriberImport.objects.filter(pk=job.pk).update(state="completed")

    response = client.post(reverse("subscriber_import_resume", args=[job.pk]))

    assert response.status_code == 302
    body = client.get(response["Location"]).content.decode()
    assert "Hanya impor yang gagal atau dihentikan yang dapat dilanjutkan" in body
    assert "Only a failed or stopped import" not in body
    assert "Completed" not in body  # the state too is in the user's language


def test_resuming_a_stalled_import_whose_file_is_gone_says_to_upload_it_again(officer_user, tmp_path, settings):
    client, job = _one_line_import(officer_user, tmp_path, settings)
    silent_since = timezone.now() - timedelta(seconds=settings.SUBSCRIBER_IMPORT_STALE_SECONDS + 1)
    SubscriberImport.objects.filter(pk=job.pk).update(state="running", heartbeat_at=silent_since)
    Path(job.file_path).unlink()

    response = client.post(reverse("subscriber_import_resume", args=[job.pk]))

    body = client.get(response["Location"]).content.decode()
    with translation.override("id"):
        assert translation.gettext("The file of this import is no longer kept; upload it again.") in body
    job.refresh_from_db()
    assert job.state == "running"


def test_an_upload_that_is_not_a_csv_is_refused_with_a_message(officer_user, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    upload = SimpleUploadedFile("foto.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00", content_type="image/png")
    response = client_for(officer_user).post(reverse("subscribers"), {"form": "import", "file": upload})
    assert response.status_code == 200
    assert "Ini bukan berkas teks CSV." in response.content.decode()
    assert not SubscriberImport.objects.exists()


@pytest.mark.parametrize(
    ("content", "indonesian"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00rest-of-a-workbook", "Ini buku kerja spreadsheet, bukan berkas CSV."),
        (
            b"nama,kode_wilayah\nSiti,35.05\n",
            "Berkas tidak punya kolom nomor telepon. Beri judul salah satu dari: msisdn, nomor, no_hp, hp, phone.",
        ),
        (b"msisdn,nama\n", "Berkas hanya berisi baris judul, tanpa data."),
    ],
    ids=["xlsx", "no-number-column", "header-only"],
)
def test_a_refused_upload_says_why_in_indonesian_alone(officer_user, tmp_path, settings, content, indonesian):
    settings.MEDIA_ROOT = tmp_path
    upload = SimpleUploadedFile("warga.xlsx", content, content_type="application/octet-stream")
    response = client_for(officer_user).post(reverse("subscribers"), {"form": "import", "file": upload})
    errors = response.context["import_form"].errors["file"]
    assert errors == [indonesian + " " + "Simpan sebagai CSV (UTF-8) dengan kolom nomor, lalu unggah lagi."]
    assert not SubscriberImport.objects.exists()


def test_manual_opt_out_and_search_by_number(officer_user):
    client = client_for(officer_user)
    response = client.post(reverse("subscribers"), {"form": "optout", "msisdn": "0812-3456-7890"}, follow=True)
    assert response.status_code == 200
    assert Subscriber.objects.get(msisdn="+6281234567890").opted_out_at is not None
    body = client.get(reverse("subscribers"), {"msisdn": "+62 812 3456 7890"}).content.decode()
    assert "+6281234567890" in body
    response = client.post(reverse("subscribers"), {"form": "optout", "msisdn": "021-555-1234"})
    assert "bukan nomor seluler Indonesia" in response.content.decode()


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("0342 801000", "bukan nomor seluler (telepon rumah, bebas pulsa atau premium)"),
        ("0812 3456", "digit terlalu sedikit untuk nomor seluler"),
        ("0812 3456 7890 123", "digit terlalu banyak untuk nomor seluler"),
        ("+65 9123 4567", "nomor negara lain"),
        ("0812-CALL-ME", "bukan nomor telepon yang sah"),
    ],
)
def test_a_number_typed_to_opt_out_or_search_that_is_refused_says_why(officer_user, typed, reason):
    client = client_for(officer_user)

    opt_out = client.post(reverse("subscribers"), {"form": "optout", "msisdn": typed})
    search = client.get(reverse("subscribers"), {"msisdn": typed})

    refusal = f"Ini bukan nomor seluler Indonesia: {reason}. Contoh: 0812 3456 7890."
    assert opt_out.context["optout_form"].errors["msisdn"] == [refusal]
    assert search.context["search_form"].errors["msisdn"] == [refusal]
    assert not Subscriber.objects.exists()


def test_opting_out_a_number_already_opted_out_says_so_and_keeps_when_it_opted_out(officer_user):
    client = client_for(officer_user)
    client.post(reverse("subscribers"), {"form": "optout", "msisdn": "0812-3456-7890"})
    first = Subscriber.objects.get(msisdn="+6281234567890").opted_out_at
    response = client.post(reverse("subscribers"), {"form": "optout", "msisdn": "+62 812 3456 7890"}, follow=True)
    assert "Nomor ini sudah berhenti berlangganan." in response.content.decode()
    assert Subscriber.objects.get(msisdn="+6281234567890").opted_out_at == first


def test_an_officer_limited_to_a_jurisdiction_counts_finds_and_opts_out_only_the_subscribers_homed_within_it():
    area_tree("35.05", kecamatan=1)
    AreaFactory(code="33", name="Jawa Tengah")
    AreaFactory(code="33.16", name="Kabupaten Blora")
    SubscriberFactory(msisdn="+6281234567890", area_id="35.05.01")
    SubscriberFactory(msisdn="+6281234567891", area_id="33.16")
    SubscriberFactory.create_batch(2, area_id="35.05", opted_out_at=timezone.now())
    client = client_for(UserFactory(username="blora", role=Role.OFFICER, jurisdiction_id="33.16"), "en")

    page = client.get(reverse("subscribers"), {"msisdn": "0812-3456-7890"})
    body = page.content.decode()
    assert (page.context["total"], page.context["opted_out"]) == (1, 0)
    assert "Only the subscribers homed in Kabupaten Blora are counted, found and changed here." in body
    assert "data-found" not in body and "This number is not registered in your jurisdiction." in body
    response = client.post(reverse("subscribers"), {"form": "optout", "msisdn": "0812-3456-7890"})
    assert response.context["optout_form"].errors["msisdn"] == ["This number is not registered in your jurisdiction."]
    assert Subscriber.objects.get(msisdn="+6281234567890").opted_out_at is None

    assert "data-found" in client.get(reverse("subscribers"), {"msisdn": "0812-3456-7891"}).content.decode()
    client.post(reverse("subscribers"), {"form": "optout", "msisdn": "0812-3456-7891"})
    assert Subscriber.objects.get(msisdn="+6281234567891").opted_out_at is not None


def test_a_number_opted_out_by_hand_is_opted_back_in_from_its_search_result(officer_user):
    client = client_for(officer_user)
    client.post(reverse("subscribers"), {"form": "optout", "msisdn": "0812-3456-7890"})
    found = client.get(reverse("subscribers"), {"msisdn": "0812 3456 7890"}).content.decode()
    assert 'value="optin"' in found

    response = client.post(reverse("subscribers"), {"form": "optin", "msisdn": "+6281234567890"}, follow=True)

    assert Subscriber.objects.get(msisdn="+6281234567890").opted_out_at is None
    body = response.content.decode()
    assert "Nomor ini kembali menerima kampanye." in body
    assert "data-found" in body and 'value="optin"' not in body  # the number is shown again, subscribed
    event = AuditEvent.objects.get(action="subscriber.opt_in")
    assert (event.actor, event.from_state, event.to_state, event.details["source"]) == (
        officer_user,
        "opted_out",
        "subscribed",
        "web",
    )


def test_a_number_that_opted_out_by_sms_stays_out_and_the_page_says_only_its_start_brings_it_back(officer_user):
    services.subscriber_opt_out(msisdn="+6281234567890", actor=None, source="sms")
    client = client_for(officer_user)

    response = client.post(reverse("subscribers"), {"form": "optin", "msisdn": "+6281234567890"}, follow=True)

    assert Subscriber.objects.get(msisdn="+6281234567890").opted_out_at is not None
    assert "START atau REG" in response.content.decode()
    assert not AuditEvent.objects.filter(action="subscriber.opt_in").exists()


def test_approver_may_not_open_the_subscribers_page():
    approver = UserFactory(username="apr", role=Role.APPROVER)
    assert client_for(approver).get(reverse("subscribers")).status_code == 403


def test_operators_page_is_for_admins_only_and_derives_each_state(officer_user):
    assert client_for(officer_user).get(reverse("operators")).status_code == 403
    admin = UserFactory(username="adm", role=Role.ADMIN)
    healthy = OperatorFactory(name="Telkomsel", slug="telkomsel")
    throttled = OperatorFactory(name="Indosat", slug="indosat")
    broken = OperatorFactory(name="Smartfren", slug="smartfren")
    OperatorFactory(name="XL", slug="xl")
    now = timezone.now()
    DispatchBatchFactory(
        operator=healthy, status=DispatchBatch.Status.ACCEPTED, segments=600, accepted_count=600, accepted_at=now
    )
    DispatchBatchFactory(operator=throttled, status=DispatchBatch.Status.RETRY_WAIT, last_error="HTTP 429 Too Many")
    for _ in range(5):
        DispatchBatchFactory(operator=broken, status=DispatchBatch.Status.FAILED, last_error="HTTP 401 bad key")
    response = client_for(admin, "en").get(reverse("operators"))
    assert response.status_code == 200
    rows = {row["operator"].slug: row for row in response.context["rows"]}
    assert rows["telkomsel"]["state"] == "healthy"
    assert rows["telkomsel"]["segments_per_second"] == 2.0  # 600 parts over the 5-minute window
    assert rows["indosat"]["state"] == "throttled"
    assert rows["smartfren"]["state"] == "circuit_open"
    assert rows["xl"]["state"] == "idle"
    assert "HTTP 401 bad key" in response.content.decode()


@pytest.mark.parametrize(
    "error",
    [
        "HTTP 503: SMSC is migrating to a separate cluster",  # "rate" inside other words
        "HTTP 500: message 84291 could not be generated",  # "429" inside another number
    ],
)
def test_operators_page_calls_an_operator_failing_whose_error_only_contains_the_letters_of_a_throttle(error):
    admin = UserFactory(username="adm", role=Role.ADMIN)
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel")
    DispatchBatchFactory(operator=operator, status=DispatchBatch.Status.RETRY_WAIT, last_error=error)

    response = client_for(admin, "en").get(reverse("operators"))

    (row,) = response.context["rows"]
    assert row["state"] == "failing"


def test_operators_page_does_not_count_a_cancelled_campaign_as_the_operators_last_error():
    admin = UserFactory(username="adm", role=Role.ADMIN)
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel")
    DispatchBatchFactory(operator=operator, status=DispatchBatch.Status.FAILED, last_error="HTTP 401 bad key")
    DispatchBatchFactory(
        operator=operator, status=DispatchBatch.Status.CANCELLED, last_error="The campaign was cancelled."
    )
    body = client_for(admin, "en").get(reverse("operators")).content.decode()
    assert "HTTP 401 bad key" in body
    assert "The campaign was cancelled." not in body


@pytest.mark.parametrize(("language", "limit", "tariff"), [("id", "12.500", "Rp 1.250"), ("en", "12,500", "Rp 1,250")])
def test_operators_page_groups_thousands_the_way_the_users_language_does(language, limit, tariff):
    admin = UserFactory(username="adm", role=Role.ADMIN)
    OperatorFactory(name="Telkomsel", slug="telkomsel", segments_per_second=12500, tariff_per_segment=1250)
    body = client_for(admin, language).get(reverse("operators")).content.decode()
    assert f'<td class="num">{limit}</td>' in body
    assert f'<td class="num">{tariff}</td>' in body


@pytest.mark.parametrize(
    ("language", "landline", "unknown_area"),
    [
        (
            "id",
            "bukan nomor seluler (telepon rumah, bebas pulsa atau premium)",
            "kode wilayah tidak dikenal, atau nama yang dipakai beberapa wilayah",
        ),
        (
            "en",
            "not a mobile number (landline, toll-free or premium)",
            "unknown area code, or an area name several areas bear",
        ),
    ],
)
def test_import_page_gives_the_reason_of_each_rejected_row_in_the_users_language(
    officer_user, tmp_path, settings, language, landline, unknown_area
):
    from smsblast.services import subscriber_import_run

    settings.MEDIA_ROOT = tmp_path
    area_tree("35.05", kecamatan=1)
    csv = "msisdn,kode_wilayah\n021-555-1234,35.05.01\n0812-3456-7890,99.99\n"
    upload = SimpleUploadedFile("warga.csv", csv.encode(), content_type="text/csv")
    client = client_for(officer_user, language)
    client.post(reverse("subscribers"), {"form": "import", "file": upload})
    job = SubscriberImport.objects.get()
    subscriber_import_run(subscriber_import=job)
    body = client.get(reverse("subscriber_import", args=[job.pk])).content.decode()
    assert f"<td>{landline}</td>" in body
    assert f"<td>{unknown_area}</td>" in body


@pytest.mark.parametrize(("language", "label"), [("id", "sedang berjalan"), ("en", "running")])
def test_a_running_import_shows_its_state_in_the_users_language(officer_user, language, label):
    job = SubscriberImport.objects.create(
        file_path="/nonexistent.csv", original_name="warga.csv", state=SubscriberImport.State.RUNNING
    )
    body = client_for(officer_user, language).get(reverse("subscriber_import", args=[job.pk])).content.decode()
    assert f"<b>{label}</b>" in body


def test_an_operator_signed_in_on_the_web_is_pointed_to_the_api_not_back_to_a_page_it_cannot_open(operator_user):
    from tests.conftest import client_for

    page = client_for(operator_user).get("/")
    body = page.content.decode()
    assert page.status_code == 403
    assert "Akun operator hanya memakai API." in body and 'href="/api/docs/"' in body
    assert "Kembali ke dasbor" not in body


def test_the_search_and_opt_out_number_fields_each_have_their_own_label(officer_user):
    body = client_for(officer_user).get(reverse("subscribers")).content.decode()
    ids = re.findall(r'<input[^>]* id="([^"]+)"', body)
    assert len(ids) == len(set(ids))
    for field_id in ids:
        if 'type="hidden"' not in body.split(f'id="{field_id}"')[0].rsplit("<input", 1)[-1]:
            assert f'for="{field_id}"' in body


def test_operators_page_reads_each_operators_recent_batches_through_an_index_not_its_whole_history():
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from tests.concurrency import skip_unless_postgresql

    skip_unless_postgresql()
    admin = UserFactory(username="adm", role=Role.ADMIN)
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel")
    DispatchBatchFactory(operator=operator, status=DispatchBatch.Status.FAILED, last_error="HTTP 401 bad key")
    DispatchBatchFactory(operator=operator, status=DispatchBatch.Status.ACCEPTED, accepted_at=timezone.now())
    with CaptureQueriesContext(connection) as captured:
        assert client_for(admin, "en").get(reverse("operators")).status_code == 200
    reads = [query["sql"] for query in captured if 'FROM "campaigns_dispatchbatch"' in query["sql"]]
    assert len(reads) == 5
    unbounded = []
    with transaction.atomic(), connection.cursor() as cursor:
        # A table this small is read whole whatever its indexes: ask for the plan the history would get. Its few
        # rows give the planner no reason to prefer one index over another, and which it takes then follows the
        # table's statistics, left by whatever ran before: the indexes that cannot bound a read to the operator's
        # recent batches are dropped for these plans, and come back with the rollback.
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'campaigns_dispatchbatch' AND indexname NOT IN "
            "('batch_operator_recent_idx', 'batch_operator_error_idx', 'campaigns_dispatchbatch_pkey')"
        )
        for (index,) in cursor.fetchall():
            cursor.execute(f'DROP INDEX "{index}"')
        cursor.execute("SET LOCAL enable_seqscan = off")
        for sql in reads:
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            if "batch_operator_recent_idx" not in plan and "batch_operator_error_idx" not in plan:
                unbounded.append(plan)
        transaction.set_rollback(True)
    assert unbounded == []


def test_operators_page_counts_the_throughput_of_batches_accepted_in_the_last_five_minutes_only():
    admin = UserFactory(username="adm", role=Role.ADMIN)
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel")
    now = timezone.now()
    for accepted_at in (now - timedelta(minutes=1), now - timedelta(minutes=6)):
        DispatchBatchFactory(
            operator=operator,
            status=DispatchBatch.Status.ACCEPTED,
            segments=300,
            accepted_count=300,
            accepted_at=accepted_at,
        )
    # Accepted long ago, changed just now (its updated_at is recent): not throughput of the last five minutes.
    DispatchBatchFactory(
        operator=operator,
        status=DispatchBatch.Status.ACCEPTED,
        segments=900,
        accepted_count=900,
        accepted_at=now - timedelta(hours=1),
    )
    response = client_for(admin, "en").get(reverse("operators"))
    (row,) = response.context["rows"]
    assert row["segments_per_second"] == 1.0  # 300 parts over the 5-minute window
    assert row["recipients_per_minute"] == 60


@pytest.mark.parametrize("next_page", [None, "/"])
def test_an_operator_logging_in_lands_on_the_api_documentation_not_a_refusal(operator_user, next_page):
    from django.test import Client

    form = {"username": operator_user.username, "password": "pw-secret-123"}
    if next_page:
        form["next"] = next_page
    response = Client().post(reverse("login"), form)

    assert response.status_code == 302 and response["Location"] == "/api/docs/"


def test_an_officer_logging_in_still_lands_on_the_dashboard(officer_user):
    from django.test import Client

    response = Client().post(reverse("login"), {"username": officer_user.username, "password": "pw-secret-123"})

    assert response.status_code == 302 and response["Location"] == "/"
