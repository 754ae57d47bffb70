"""Request middleware: a NUL character anywhere in the path, query or form is a 400; an oversized body a 413."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings

from campaigns.models import Campaign
from tests.conftest import client_for
from tests.smsblast.factories import area_tree

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url",
    ["/api/v1/areas/?q=%00", "/api/v1/areas/?parent=35%00", "/api/v1/areas/35%00/", "/api/v1/campaigns/?q=a%00b"],
)
def test_a_nul_in_an_api_query_or_path_is_a_400_with_detail(officer, api_client_for, url):
    area_tree()
    response = api_client_for(officer).get(url)
    assert response.status_code == 400
    assert response.json() == {"detail": "The request contains a NUL character."}


def test_a_nul_in_a_page_form_is_a_400_page_and_creates_nothing(officer):
    area_tree()
    client = client_for(officer)
    assert client.get("/campaigns/areas/?q=blit%00").status_code == 400
    response = client.post(
        "/campaigns/new/",
        {"title": "Covid", "text": "Pakai masker.", "sender": "PEMKAB", "area_codes": ["35.05\x00"]},
    )
    assert response.status_code == 400
    assert not Campaign.objects.exists()


def test_requests_without_nul_pass(officer, api_client_for):
    area_tree()
    assert api_client_for(officer).get("/api/v1/areas/?q=blit").status_code == 200


@pytest.mark.parametrize("path", ["/login/", "/campaigns/", "/api/v1/campaigns/"])
def test_a_nul_in_the_session_cookie_is_a_400_not_a_server_error(path):
    # PostgreSQL cannot look such a session key up: every page, the log-in included, failed with a 500.
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "abcdefgh\x00ijkl"
    response = client.get(path)
    assert response.status_code == 400
    if path.startswith("/api/"):
        assert response.json() == {"detail": "The request contains a NUL character."}


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_a_subscriber_file_posted_with_a_nul_in_the_session_cookie_is_not_a_server_error():
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "abcdefgh\x00ijkl"
    claimed = {"content_type": "multipart/form-data; boundary=x", "CONTENT_LENGTH": str(100 * 2**20)}
    response = client.post("/subscribers/", data="x=1", **claimed)
    assert response.status_code == 302 and response["Location"] == "/login/?next=/subscribers/"


def test_an_htmx_poll_after_the_session_ended_sends_the_whole_page_to_the_login_page():
    from django.test import Client

    response = Client().get(
        "/campaigns/6/runs/1/progress/",
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="http://testserver/campaigns/6/",
    )
    # Not the login page inside the block it polls: htmx is told to load the login page in the window,
    # which brings the officer back to the campaign page afterwards.
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/login/?next=/campaigns/6/"
    assert response.content == b""


def test_a_page_request_after_the_session_ended_is_still_redirected_to_the_login_page():
    from django.test import Client

    response = Client().get("/campaigns/6/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/campaigns/6/"


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_an_api_form_body_over_the_upload_limit_is_a_413_with_detail(officer, api_client_for):
    response = api_client_for(officer).post(
        "/api/v1/sms/analyze/", data="text=" + "a" * 2000, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is larger than the 1000 bytes accepted."}


@override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=10)
def test_an_api_form_of_too_many_fields_is_a_400_with_detail(officer, api_client_for):
    body = "&".join(f"field{i}=1" for i in range(20))
    response = api_client_for(officer).post(
        "/api/v1/sms/analyze/", data=body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400
    assert "at most 10 fields" in response.json()["detail"]


@override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=10)
def test_an_api_multipart_body_of_too_many_fields_is_a_400_with_detail(officer, api_client_for):
    fields = {f"field{i}": "1" for i in range(20)}
    response = api_client_for(officer).post("/api/v1/sms/analyze/", {**fields, "text": "x"}, format="multipart")
    assert response.status_code == 400
    assert "at most 10 fields" in response.json()["detail"]


@override_settings(DATA_UPLOAD_MAX_NUMBER_FILES=2)
def test_an_api_multipart_body_of_too_many_files_is_a_400_with_detail(officer, api_client_for, settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from smsblast.models import SubscriberImport

    settings.MEDIA_ROOT = tmp_path
    files = {f"file{i}": SimpleUploadedFile(f"{i}.csv", b"msisdn\n081234567890\n") for i in range(3)}
    response = api_client_for(officer).post("/api/v1/subscribers/imports/", files, format="multipart")
    assert response.status_code == 400
    assert response.json() == {"detail": "Send at most 2 files."}
    assert not SubscriberImport.objects.exists()


TERABYTE = str(10**12)


def test_a_body_claiming_more_than_any_upload_is_refused_before_it_is_read(officer, api_client_for):
    # The payload is a few bytes: reading the claimed length would fail, so a 413 proves nothing was read.
    api = api_client_for(officer).post(
        "/api/v1/subscribers/imports/", data="msisdn\n", content_type="text/csv", CONTENT_LENGTH=TERABYTE
    )
    page = client_for(officer).post(
        "/subscribers/", data="x=1", content_type="multipart/form-data; boundary=x", CONTENT_LENGTH=TERABYTE
    )

    assert api.status_code == 413
    assert api.json()["detail"].startswith("The request body is 1,000,000,000,000 bytes, more than the")
    assert page.status_code == 413
    assert "Berkas terlalu besar" in page.content.decode()
    assert "hingga 200 MB" in page.content.decode()  # the subscriber file limit, SUBSCRIBER_IMPORT_MAX_BYTES


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_a_body_the_size_of_a_subscriber_file_is_refused_before_it_is_read_where_no_file_is_uploaded(
    officer, api_client_for
):
    # Django writes a multipart body to disk before any view runs, and a page's CSRF check reads it even for an
    # anonymous client: only the subscriber uploads may take one of SUBSCRIBER_IMPORT_MAX_BYTES.
    claimed = {"content_type": "multipart/form-data; boundary=x", "CONTENT_LENGTH": str(100 * 2**20)}
    anonymous = Client(enforce_csrf_checks=True).post("/login/", data="x=1", **claimed)
    api = api_client_for(officer).post("/api/v1/sms/analyze/", data="x=1", **claimed)

    assert anonymous.status_code == 413
    assert "hingga 1 MB" in anonymous.content.decode()
    assert api.status_code == 413
    assert api.json()["detail"] == "The request body is 104,857,600 bytes, more than the 66,536 accepted."


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
@pytest.mark.parametrize(
    ("who", "page", "admin"),
    [("anonymous", "/login/?next=/subscribers/", "/admin/login/?next=/admin/smsblast/subscriber/import/")]
    + [(role, 403, "/admin/login/?next=/admin/smsblast/subscriber/import/") for role in ("approver", "operator")],
)
def test_a_subscriber_file_posted_by_whoever_may_not_upload_one_is_refused_unread(
    who, page, admin, approver, operator_user
):
    # The page reads a posted form before it checks who posts it (for a NUL, for the CSRF token): an anonymous client
    # could otherwise have the server write a subscriber file's worth to disk, request after request. It is answered
    # as the page answers such a visitor, so an officer whose session ended is asked to log in again.
    client = {"anonymous": Client(), "approver": client_for(approver), "operator": client_for(operator_user)}[who]
    claimed = {"content_type": "multipart/form-data; boundary=x", "CONTENT_LENGTH": str(100 * 2**20)}

    for path, expected in (("/subscribers/", page), ("/admin/smsblast/subscriber/import/", admin)):
        response = client.post(path, data="x=1", **claimed)
        if expected == 403:
            assert response.status_code == 403, (path, response.status_code)
            assert "Peran Anda tidak boleh membuka halaman ini." in response.content.decode()
        else:
            assert response.status_code == 302, (path, response.status_code)
            assert response["Location"] == expected


def test_an_officers_subscriber_file_larger_than_any_form_is_still_uploaded_on_the_page(officer, settings, tmp_path):
    from smsblast.models import SubscriberImport

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    settings.MEDIA_ROOT = tmp_path
    content = b"msisdn\n" + b"081234567890\n" * 10_000  # 130 KB: more than a form, within a subscriber file
    upload = SimpleUploadedFile("list.csv", content, "text/csv")

    response = client_for(officer).post("/subscribers/", {"form": "import", "file": upload})

    assert response.status_code == 302, response.content
    assert SubscriberImport.objects.get().file_size == len(content)


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_a_subscriber_file_posted_in_a_session_its_officers_new_password_ended_is_refused_unread(officer):
    client = client_for(officer)
    officer.set_password("a-new-password-456")
    officer.save()
    claimed = {"content_type": "multipart/form-data; boundary=x", "CONTENT_LENGTH": str(100 * 2**20)}
    response = client.post("/subscribers/", data="x=1", **claimed)
    assert response.status_code == 302 and response["Location"] == "/login/?next=/subscribers/"


def test_an_officers_session_from_before_a_key_rotation_still_uploads_a_subscriber_file(officer, settings, tmp_path):
    # Weighing who posts must change nothing of the session: Django renews one signed with a former key, and a renewal
    # the browser never learns of would log the officer out and lose the file.
    from smsblast.models import SubscriberImport

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    settings.MEDIA_ROOT = tmp_path
    client = client_for(officer)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "another-test-only-key"
    content = b"msisdn\n" + b"081234567890\n" * 10_000
    upload = SimpleUploadedFile("list.csv", content, "text/csv")

    response = client.post("/subscribers/", {"form": "import", "file": upload})

    assert response.status_code == 302 and response["Location"].startswith("/subscribers/imports/"), response
    assert SubscriberImport.objects.get().uploaded_by == officer
    assert client.get("/subscribers/").status_code == 200  # still logged in


def test_a_subscriber_file_larger_than_any_form_is_still_uploaded(officer, api_client_for, settings, tmp_path):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    settings.MEDIA_ROOT = tmp_path
    content = b"msisdn\n" + b"081234567890\n" * 10_000  # 130 KB: more than a form, within a subscriber file
    upload = SimpleUploadedFile("list.csv", content, "text/csv")

    response = api_client_for(officer).post("/api/v1/subscribers/imports/", {"file": upload}, format="multipart")

    assert response.status_code == 202, response.content


def test_a_cap_document_claiming_more_than_a_mebibyte_is_refused_before_it_is_read(officer, api_client_for):
    response = api_client_for(officer).post(
        "/api/v1/cap/",
        data="<alert/>",
        content_type="application/cap+xml",
        CONTENT_LENGTH=str(2 * 1024 * 1024),
        HTTP_ACCEPT_LANGUAGE="en",
    )

    assert response.status_code == 413
    assert response.json() == {"detail": "The document is larger than 1024 KiB."}


def test_a_chunked_body_without_its_length_is_a_411_saying_so_not_a_body_read_as_empty(officer, api_client_for):
    # As gunicorn hands it on: Transfer-Encoding chunked and no Content-Length, which Django reads as no body.
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": ""}
    api = api_client_for(officer).post(
        "/api/v1/campaigns/", data='{"title": "Vaksin"}', content_type="application/json", **chunked
    )
    page = client_for(officer).post("/campaigns/new/", data="title=Vaksin", content_type="text/plain", **chunked)

    assert api.status_code == 411
    assert "Content-Length" in api.json()["detail"]
    assert page.status_code == 411
    assert not Campaign.objects.exists()
