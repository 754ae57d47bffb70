"""Subscriber reads: who may see which subscribers and import jobs, on every page and API path."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from smsblast import selectors, services
from smsblast.models import AuditEvent, Role, Subscriber, SubscriberImport
from tests.smsblast.factories import AreaFactory, SubscriberFactory, UserFactory, area_tree
from tests.urlwalk import signed_in, url_patterns_under

pytestmark = pytest.mark.django_db

BLITAR_NUMBER = "+6281211110001"
UNKNOWN_NUMBER = "+6281299990009"


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def blitar_and_blora():
    """Kab. Blitar (35.05, Jawa Timur) and Kab. Blora (33.16, Jawa Tengah), each with a kecamatan."""
    area_tree("35.05", kecamatan=1)
    AreaFactory(code="33", name="Jawa Tengah")
    AreaFactory(code="33.16", name="Kabupaten Blora")
    AreaFactory(code="33.16.01", name="Kecamatan Jepon")


def user_of(role: str, jurisdiction: str | None = None):
    return UserFactory(role=role, jurisdiction_id=jurisdiction)


def test_a_user_with_a_jurisdiction_sees_only_the_subscribers_homed_within_it(blitar_and_blora):
    wonodadi = SubscriberFactory(area_id="35.05.01")
    blitar = SubscriberFactory(area_id="35.05")
    jepon = SubscriberFactory(area_id="33.16.01")
    jatim = SubscriberFactory(area_id="35")
    homeless = SubscriberFactory(area_id=None)
    everyone = {wonodadi, blitar, jepon, jatim, homeless}

    assert set(selectors.subscribers_visible(user_of(Role.OFFICER, "35.05"))) == {wonodadi, blitar}
    assert set(selectors.subscribers_visible(user_of(Role.OFFICER, "35.05.01"))) == {wonodadi}
    assert set(selectors.subscribers_visible(user_of(Role.OFFICER, "33"))) == {jepon}
    # A province's officer sees its regencies' subscribers and those homed on the province itself.
    assert set(selectors.subscribers_visible(user_of(Role.OFFICER, "35"))) == {wonodadi, blitar, jatim}
    # Without a jurisdiction, and for an admin whatever is set, the whole country; an operator none.
    assert set(selectors.subscribers_visible(user_of(Role.OFFICER))) == everyone
    assert set(selectors.subscribers_visible(user_of(Role.ADMIN, "33.16"))) == everyone
    assert list(selectors.subscribers_visible(user_of(Role.OPERATOR, "35.05"))) == []


def uploaded_by(user, text: str = "msisdn,kode_wilayah\n081211110002,35.05.01\n") -> SubscriberImport:
    upload = SimpleUploadedFile("daftar.csv", text.encode(), "text/csv")
    return services.subscriber_import_create(uploaded_file=upload, user=user)


def test_a_user_with_a_jurisdiction_sees_only_the_imports_of_users_within_it(blitar_and_blora):
    blitar_officer, blora_officer = user_of(Role.OFFICER, "35.05"), user_of(Role.OFFICER, "33.16")
    national_officer, admin = user_of(Role.OFFICER), user_of(Role.ADMIN, "33.16")
    of_blitar, of_blora = uploaded_by(blitar_officer), uploaded_by(blora_officer)
    of_the_nation, of_the_admin = uploaded_by(national_officer), uploaded_by(admin)
    of_the_command_line = services.subscriber_import_create_from_path(path=of_blitar.file_path, user=None)
    everything = {of_blitar, of_blora, of_the_nation, of_the_admin, of_the_command_line}

    assert (of_blitar.area_scope, of_blora.area_scope, of_the_nation.area_scope, of_the_admin.area_scope) == (
        "35.05",
        "33.16",
        "",
        "",
    )
    assert set(selectors.subscriber_imports_visible(blitar_officer)) == {of_blitar}
    assert set(selectors.subscriber_imports_visible(user_of(Role.OFFICER, "35.05"))) == {of_blitar}
    assert set(selectors.subscriber_imports_visible(user_of(Role.OFFICER, "35"))) == {of_blitar}
    assert set(selectors.subscriber_imports_visible(blora_officer)) == {of_blora}
    assert set(selectors.subscriber_imports_visible(national_officer)) == everything
    assert set(selectors.subscriber_imports_visible(admin)) == everything
    assert list(selectors.subscriber_imports_visible(user_of(Role.OPERATOR))) == []


# --- every subscriber page and API path, walked as another jurisdiction's officer ---------------------------------


def subscriber_urls() -> list[tuple[str, set[str]]]:
    """Return (URL name, its parameters) of every page and API path under subscribers/."""
    return url_patterns_under("subscribers/")


def subscriber_paths(*, job_pk: int, msisdn: str) -> list[str]:
    values = {"pk": job_pk, "msisdn": msisdn}
    return [reverse(name, kwargs={key: values[key] for key in params}) for name, params in subscriber_urls()]


def answers(user, path: str, *, msisdn: str) -> dict[str, tuple[int, str]]:
    """Return each method's status and body, searching and opting out `msisdn` where the path takes a form."""
    client = signed_in(user, path)
    query = {"q": msisdn[3:], "msisdn": msisdn}
    body = {"form": "optout", "msisdn": msisdn}
    got = {}
    for method, response in (
        ("GET", client.get(path, query)),
        ("POST", client.post(path, body, format="json" if path.startswith("/api/") else None)),
    ):
        content = b"" if response.streaming else response.content
        got[method] = (response.status_code, content.decode(errors="replace"))
    return got


def test_every_subscriber_url_hides_another_jurisdictions_subscribers_and_imports(blitar_and_blora):
    """Pages and API alike: Kab. Blitar's subscriber and import do not exist for Kab. Blora's officer.

    A path naming one answers them exactly as for a number or an import that does not exist (404; 405 where the
    method is never allowed); a list or search shows neither, and nothing about them changes. Blitar's own
    officer, and Jawa Timur's, reach both.
    """
    blitar_officer = user_of(Role.OFFICER, "35.05")
    subscriber = SubscriberFactory(msisdn=BLITAR_NUMBER, area_id="35.05.01", name="Siti")
    job = uploaded_by(blitar_officer, "msisdn,kode_wilayah\n081211110002,35.05.01\n12,35.05.01\n")
    services.subscriber_import_run(subscriber_import=job)
    SubscriberImport.objects.filter(pk=job.pk).update(state=SubscriberImport.State.FAILED)  # so it may be resumed
    outsider = user_of(Role.OFFICER, "33.16")
    events = AuditEvent.objects.count()
    missing = job.pk + 1000
    names = {name for name, _ in subscriber_urls()}
    # The walk reaches every page and API path of subscribers and imports, so a new one cannot slip past it.
    assert {"subscribers", "subscriber_import", "subscriber_import_resume", "subscriber-list"} <= names
    assert {"subscriber-import-list", "subscriber-import-detail", "subscriber-import-resume"} <= names
    assert {"subscriber-import-rejected", "subscriber-opt-out", "subscriber-opt-in"} <= names

    paths = subscriber_paths(job_pk=job.pk, msisdn=BLITAR_NUMBER)
    absent_paths = subscriber_paths(job_pk=missing, msisdn=UNKNOWN_NUMBER)
    not_found = 0
    for path, absent_path in zip(paths, absent_paths, strict=True):
        got = answers(outsider, path, msisdn=BLITAR_NUMBER)
        for method, (_status, body) in got.items():
            # A page shows a number found with data-found; the API would give its name; the rejected row is 12.
            assert "Siti" not in body and "data-found" not in body and "12,35.05.01" not in body, (path, method)
        if path == absent_path:  # a list or search: it names no subscriber or import of its own
            for method, (_status, body) in got.items():
                assert f"/imports/{job.pk}/" not in body, (path, method)
                assert not path.startswith("/api/") or BLITAR_NUMBER not in body, (path, method)
            continue
        absent = answers(outsider, absent_path, msisdn=UNKNOWN_NUMBER)
        assert {method: status for method, (status, _) in got.items()} == {
            method: status for method, (status, _) in absent.items()
        }, path
        assert {status for status, _ in got.values()} <= {404, 405}, (path, got)
        not_found += [status for status, _ in got.values()].count(404)
    assert not_found >= len([path for path, absent in zip(paths, absent_paths, strict=True) if path != absent])

    subscriber.refresh_from_db()
    assert (subscriber.opted_out_at, subscriber.area_id, subscriber.name) == (None, "35.05.01", "Siti")
    assert not Subscriber.objects.filter(msisdn=UNKNOWN_NUMBER).exists()  # nor is a stranger recorded for them
    job.refresh_from_db()
    assert job.state == SubscriberImport.State.FAILED
    assert AuditEvent.objects.count() == events

    for insider in (blitar_officer, user_of(Role.OFFICER, "35")):
        for path in paths:
            response = signed_in(insider, path).get(path, {"q": BLITAR_NUMBER[3:], "msisdn": BLITAR_NUMBER})
            assert response.status_code in {200, 302, 405}, (path, response.status_code)
        assert (
            BLITAR_NUMBER
            in signed_in(insider, "/api/v1/").get(reverse("subscriber-list"), {"q": BLITAR_NUMBER[3:]}).content.decode()
        )
        page = signed_in(insider, "/").get(reverse("subscribers"), {"msisdn": BLITAR_NUMBER}).content.decode()
        assert "data-found" in page and f"/imports/{job.pk}/" in page
