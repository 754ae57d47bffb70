"""CAP import checks XML signatures against the issuers' certificates the installation trusts."""

import base64
from copy import deepcopy
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from lxml import etree
from signxml import XMLSigner, methods

from campaigns.models import Campaign
from campaigns.selectors import campaign_cap_source
from smsblast.audit import audit_record
from smsblast.models import AuditEvent, Role
from tests.campaigns import test_cap
from tests.campaigns.test_cap import CANCEL, GEOCODES, _import_geocoded_alert, _post_xml
from tests.conftest import client_for
from tests.operators.area_scripted import blitar_areas
from tests.operators.factories import OperatorFactory
from tests.smsblast.factories import UserFactory

ALERT = GEOCODES.format(description="Mulai 3 Juli 2021.")
DSIG = "{http://www.w3.org/2000/09/xmldsig#}"


@cache
def issuer(name: str, *, expired: bool = False):
    """Return a private key and its self-signed certificate for an issuer named `name`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    end = now - timedelta(days=1) if expired else now + timedelta(days=365)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=30))
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


class LegacySigner(XMLSigner):
    """Signs with SHA-1 as older CAP feeds do, which the signing library otherwise refuses to."""

    def check_deprecated_methods(self):
        pass


def signed(document: str, by: str = "Satgas Jatim CAP", *, expired: bool = False, sha1: bool = False) -> str:
    """Return the CAP document with an enveloped XML signature of issuer `by` (its certificate in KeyInfo)."""
    key, certificate = issuer(by, expired=expired)
    root = etree.fromstring(document.encode())
    signer = (
        LegacySigner(method=methods.enveloped, signature_algorithm="rsa-sha1", digest_algorithm="sha1")
        if sha1
        else XMLSigner(method=methods.enveloped)
    )
    signed_root = signer.sign(root, key=key, cert=[certificate])
    return etree.tostring(signed_root, xml_declaration=True, encoding="UTF-8").decode()


# Services and API clients answer in English here, as in test_cap.
english = test_cap.english
api_client_for = test_cap.api_client_for


@pytest.fixture
def trust(settings, tmp_path):
    """Trust the certificates of the issuers named; returns a function taking their names."""

    def trust_issuers(*names: str, expired: bool = False) -> None:
        path = tmp_path / "cap-issuers.pem"
        path.write_bytes(
            b"".join(issuer(name, expired=expired)[1].public_bytes(serialization.Encoding.PEM) for name in names)
        )
        settings.CAP_TRUSTED_CERTIFICATES = str(path)

    return trust_issuers


@pytest.fixture
def officer_client(db, api_client_for):
    blitar_areas()
    OperatorFactory(slug="telkomsel")
    user = UserFactory(role=Role.OFFICER)
    client = api_client_for(user)
    client.user = user
    return client


def review_page(campaign_id: int) -> str:
    Campaign.objects.filter(pk=campaign_id).update(status=Campaign.Status.PENDING_APPROVAL)
    return client_for(UserFactory(role=Role.APPROVER)).get(f"/campaigns/{campaign_id}/review/").content.decode()


def test_an_alert_signed_by_a_trusted_issuer_is_shown_verified_with_its_signer(officer_client, trust):
    trust("Satgas Jatim CAP")
    response = _post_xml(officer_client, signed(ALERT))
    assert response.status_code == 201, response.json()
    assert any("verified: signed by Satgas Jatim CAP" in note for note in response.json()["notes"])
    page = review_page(response.json()["campaign_id"])
    assert 'data-cap-signature="verified"' in page
    assert "Satgas Jatim CAP" in page


def test_an_unsigned_alert_tells_the_approver_that_nothing_vouches_for_the_sender_it_names(officer_client, trust):
    # Anyone can write any <sender> into an alert: without a signature the page must not read as the issuer's word.
    trust("Satgas Jatim CAP")
    unsigned = _post_xml(officer_client, ALERT)
    verified = _post_xml(officer_client, signed(ALERT.replace("<identifier>", "<identifier>signed-")))
    assert (unsigned.status_code, verified.status_code) == (201, 201), (unsigned.json(), verified.json())

    page = review_page(unsigned.json()["campaign_id"])
    assert 'data-cap-signature="unsigned"' in page
    assert "tidak ditandatangani" in page and "satgas@jatimprov.go.id" in page
    assert 'data-cap-signature="unsigned"' not in review_page(verified.json()["campaign_id"])


def test_an_alert_changed_after_it_was_signed_is_refused_and_nothing_is_created(officer_client, trust):
    trust("Satgas Jatim CAP")
    altered = signed(ALERT).replace("Tetap di rumah", "Keluar rumah")
    response = _post_xml(officer_client, altered)
    assert response.status_code == 400
    assert "changed after it was signed" in response.json()["detail"]
    assert not Campaign.objects.exists()
    assert not AuditEvent.objects.filter(action="campaign.cap_import").exists()


def test_an_altered_alert_is_refused_even_with_no_issuer_trusted(officer_client):
    # Its own certificate shows the content is not what was signed, whoever signed it.
    altered = signed(ALERT, by="Someone").replace("PPKM Darurat berlaku", "PPKM dicabut")
    response = _post_xml(officer_client, altered)
    assert response.status_code == 400
    assert "changed after it was signed" in response.json()["detail"]
    assert not Campaign.objects.exists()


def test_an_alert_signed_by_an_unknown_certificate_is_imported_with_a_warning_naming_its_signer(officer_client, trust):
    trust("Satgas Jatim CAP")
    response = _post_xml(officer_client, signed(ALERT, by="Not Satgas"))
    assert response.status_code == 201, response.json()
    assert any("not among the trusted issuers" in note for note in response.json()["notes"])
    page = review_page(response.json()["campaign_id"])
    assert 'data-cap-signature="untrusted"' in page
    assert "Not Satgas" in page
    assert 'data-cap-signature="verified"' not in page


def test_an_unknown_signer_and_an_altered_alert_are_told_in_indonesian_and_the_reason_recorded_in_english(
    officer_client, trust
):
    trust("Satgas Jatim CAP")
    untrusted = _post_xml(officer_client, signed(ALERT, by="Not Satgas"), HTTP_ACCEPT_LANGUAGE="id")
    altered = _post_xml(
        officer_client, signed(ALERT).replace("Tetap di rumah", "Keluar rumah"), HTTP_ACCEPT_LANGUAGE="id"
    )
    assert untrusted.status_code == 201, untrusted.json()
    assert (
        "Peringatan ini membawa tanda tangan XML (penanda tangan: Not Satgas) yang tidak terverifikasi: sertifikatnya "
        "tidak termasuk penerbit tepercaya (CAP_TRUSTED_CERTIFICATES)."
    ) in untrusted.json()["notes"]
    recorded = AuditEvent.objects.get(action="campaign.cap_import").details["signature"]["reason"]
    assert recorded == "its certificate is not among the trusted issuers (CAP_TRUSTED_CERTIFICATES)"
    assert altered.status_code == 400
    assert altered.json()["detail"].startswith(
        "Tanda tangan XML peringatan ini (penanda tangan: Satgas Jatim CAP) tidak cocok dengan isinya"
    )


def test_a_trusted_certificate_past_its_end_does_not_verify(officer_client, trust):
    trust("Old Satgas", expired=True)
    response = _post_xml(officer_client, signed(ALERT, by="Old Satgas", expired=True))
    assert response.status_code == 201, response.json()
    campaign = Campaign.objects.get(pk=response.json()["campaign_id"])
    signature = campaign_cap_source(campaign, user=officer_client.user)["signature"]
    assert signature["state"] == "untrusted"
    assert "not valid" in signature["reason"]


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "unknown"])
def test_an_alert_changed_after_it_was_signed_with_a_certificate_past_its_end_is_refused(
    officer_client, trust, trusted
):
    # An expired certificate vouches for no issuer, but its key still shows the content is not what was signed.
    if trusted:
        trust("Old Satgas", expired=True)
    altered = signed(ALERT, by="Old Satgas", expired=True).replace("Tetap di rumah", "Keluar rumah")
    response = _post_xml(officer_client, altered)
    assert response.status_code == 400, response.json()
    assert "changed after it was signed" in response.json()["detail"]
    assert not Campaign.objects.exists()


def test_a_sha1_signature_is_not_verified(officer_client, trust):
    trust("Satgas Jatim CAP")
    document = signed(ALERT, sha1=True)
    response = _post_xml(officer_client, document)
    assert response.status_code == 201, response.json()
    campaign = Campaign.objects.get(pk=response.json()["campaign_id"])
    signature = campaign_cap_source(campaign, user=officer_client.user)["signature"]
    assert signature["state"] == "untrusted"
    assert "cannot be checked" in signature["reason"]


@pytest.mark.parametrize(
    ("document", "needle"),
    [(ALERT, "it is not signed"), (signed(ALERT, by="Not Satgas"), "not among the trusted issuers")],
    ids=["unsigned", "untrusted"],
)
def test_requiring_signatures_refuses_alerts_not_verified(officer_client, trust, settings, document, needle):
    trust("Satgas Jatim CAP")
    settings.CAP_REQUIRE_SIGNATURE = True
    response = _post_xml(officer_client, document)
    assert response.status_code == 400
    assert needle in response.json()["detail"]
    assert not Campaign.objects.exists()
    assert _post_xml(officer_client, signed(ALERT)).status_code == 201


def test_requiring_signatures_refuses_an_unsigned_cancel_and_the_alert_stays(officer_client, trust, settings):
    campaign = _import_geocoded_alert(officer_client)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.APPROVED)
    trust("Satgas Jatim CAP")
    settings.CAP_REQUIRE_SIGNATURE = True
    assert _post_xml(officer_client, CANCEL).status_code == 400
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED
    assert _post_xml(officer_client, signed(CANCEL)).status_code == 200
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.CANCELLED


def test_an_import_from_before_signatures_were_checked_still_shows_as_not_verified(officer_client):
    campaign = _import_geocoded_alert(officer_client)
    # What an import recorded then: only that the alert was signed.
    audit_record(actor=officer_client.user, action="campaign.cap_import", obj=campaign, details={"signed": True})
    page = review_page(campaign.pk)
    assert 'data-cap-signature="untrusted"' in page
    assert "tidak diverifikasi" in page  # the page speaks Indonesian


def test_a_trust_file_without_a_certificate_stops_the_checks(settings, tmp_path):
    path = tmp_path / "empty.pem"
    path.write_text("not a certificate\n")
    settings.CAP_TRUSTED_CERTIFICATES = str(path)
    with pytest.raises(SystemCheckError, match="smsblast.E001"):
        call_command("check")


def test_requiring_signatures_without_a_trust_file_stops_the_checks(settings):
    settings.CAP_TRUSTED_CERTIFICATES = ""
    settings.CAP_REQUIRE_SIGNATURE = True
    with pytest.raises(SystemCheckError, match="CAP_REQUIRE_SIGNATURE"):
        call_command("check")


@pytest.mark.parametrize(
    "cancel_by",
    [None, "Not Satgas", "BPBD Jateng CAP"],
    ids=["unsigned", "untrusted", "another-trusted-issuer"],
)
def test_only_a_cancel_verified_as_the_same_issuers_withdraws_a_verified_alert(officer_client, trust, cancel_by):
    trust("Satgas Jatim CAP", "BPBD Jateng CAP")
    imported = _post_xml(officer_client, signed(ALERT))
    campaign = Campaign.objects.get(pk=imported.json()["campaign_id"])
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.APPROVED)

    response = _post_xml(officer_client, signed(CANCEL, by=cancel_by) if cancel_by else CANCEL)

    assert response.status_code == 400
    assert "verified as signed by Satgas Jatim CAP" in response.json()["detail"]
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED
    assert _post_xml(officer_client, signed(CANCEL)).status_code == 200
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.CANCELLED


def _signature_edited(document: str, edit) -> str:
    """Return the signed document with `edit` applied to its Signature element."""
    root = etree.fromstring(document.encode())
    edit(root.find(f"{DSIG}Signature"))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8").decode()


def _empty_signature_value(signature) -> None:
    signature.find(f"{DSIG}SignatureValue").text = None


def _no_key_info(signature) -> None:
    signature.remove(signature.find(f"{DSIG}KeyInfo"))
    etree.SubElement(signature, f"{DSIG}KeyInfo")


def _two_canonicalizations(signature) -> None:
    transforms = signature.find(f".//{DSIG}Transforms")
    for _ in range(2):
        etree.SubElement(transforms, f"{DSIG}Transform").set("Algorithm", "http://www.w3.org/2001/10/xml-exc-c14n#")
    _sign_again(signature)


def _sign_again(signature) -> None:
    """Sign the signature's edited SignedInfo again with the trusted issuer's key."""
    key, _certificate = issuer("Satgas Jatim CAP", expired=False)
    value = key.sign(
        etree.tostring(signature.find(f"{DSIG}SignedInfo"), method="c14n"), padding.PKCS1v15(), hashes.SHA256()
    )
    signature.find(f"{DSIG}SignatureValue").text = base64.b64encode(value).decode()


def _two_references(signature) -> None:
    reference = signature.find(f"{DSIG}SignedInfo/{DSIG}Reference")
    reference.addnext(deepcopy(reference))
    _sign_again(signature)


# Well-formed, but nested deeper than the signing library's parser reads.
DEEP_ALERT = signed(ALERT).replace("<scope>Public</scope>", "<scope>Public</scope>" + "<x>" * 300 + "</x>" * 300)


@pytest.mark.parametrize(
    "document",
    [
        _signature_edited(signed(ALERT), _empty_signature_value),
        _signature_edited(signed(ALERT), _no_key_info),
        _signature_edited(signed(ALERT), _two_canonicalizations),
        DEEP_ALERT,
    ],
    ids=["empty-signature-value", "empty-key-info", "two-canonicalizations", "nested-deeper-than-256"],
)
def test_a_signature_that_cannot_be_checked_is_shown_not_verified_instead_of_failing(officer_client, trust, document):
    trust("Satgas Jatim CAP")
    response = _post_xml(officer_client, document)
    assert response.status_code == 201, response.content
    campaign = Campaign.objects.get(pk=response.json()["campaign_id"])
    assert campaign_cap_source(campaign, user=officer_client.user)["signature"]["state"] == "untrusted"


def test_a_signature_of_several_references_is_not_checked_and_not_verified(officer_client, trust):
    # The signing library copies and canonicalizes the whole document for every reference before it counts them:
    # a few thousand in a 1 MiB document would hold the worker for minutes.
    trust("Satgas Jatim CAP")
    response = _post_xml(officer_client, _signature_edited(signed(ALERT), _two_references))

    assert response.status_code == 201, response.content
    signature = campaign_cap_source(Campaign.objects.get(pk=response.json()["campaign_id"]), user=officer_client.user)[
        "signature"
    ]
    assert signature["state"] == "untrusted"
    assert "2 references" in signature["reason"]


def test_a_verified_alert_edited_after_its_import_tells_the_approver_what_the_signature_does_not_cover(
    officer_client, trust
):
    trust("Satgas Jatim CAP")
    imported = _post_xml(officer_client, signed(ALERT))
    campaign_id = imported.json()["campaign_id"]
    assert "data-cap-edited" not in review_page(campaign_id)
    Campaign.objects.filter(pk=campaign_id).update(status=Campaign.Status.DRAFT)

    edited = officer_client.patch(f"/api/v1/campaigns/{campaign_id}/", {"text": "Keluar rumah."}, format="json")

    assert edited.status_code == 200, edited.json()
    page = review_page(campaign_id)
    assert 'data-cap-signature="verified"' in page
    assert "data-cap-edited" in page
    assert "teks" in page.split("data-cap-edited", 1)[1].split("</p>", 1)[0]


@pytest.mark.parametrize("earlier_status", [Campaign.Status.DRAFT, Campaign.Status.PENDING_APPROVAL])
def test_an_alert_verified_as_signed_replaces_an_unverified_copy_imported_first(
    officer_client, trust, api_client_for, earlier_status
):
    # Anyone may post an unsigned alert under an issuer's sender and identifier; it must not keep the signed one out.
    trust("Satgas Jatim CAP")
    copy = _post_xml(officer_client, ALERT.replace("PPKM Darurat berlaku", "PPKM dicabut"))
    assert copy.status_code == 201, copy.json()
    earlier = Campaign.objects.get(pk=copy.json()["campaign_id"])
    Campaign.objects.filter(pk=earlier.pk).update(status=earlier_status)
    another_officer = api_client_for(UserFactory(role=Role.OFFICER))

    response = _post_xml(another_officer, signed(ALERT))

    assert response.status_code == 201, response.json()
    assert any(f"Replaced campaign {earlier.pk}" in note for note in response.json()["notes"])
    earlier.refresh_from_db()
    assert earlier.status == Campaign.Status.CANCELLED
    assert earlier.cap_source_identifier == "satgas-covid-35-0001 (unverified, replaced)"
    cancel = AuditEvent.objects.get(action="campaign.cancel", object_id=str(earlier.pk))
    assert (cancel.from_state, cancel.details["reason"]) == (
        earlier_status,
        "Replaced by the same CAP alert, verified as signed by Satgas Jatim CAP.",
    )
    marked = AuditEvent.objects.get(action="campaign.cap_source_replaced", object_id=str(earlier.pk))
    assert marked.details["identifier"] == "satgas-covid-35-0001"
    verified = Campaign.objects.get(pk=response.json()["campaign_id"])
    assert verified.cap_source_identifier == "satgas-covid-35-0001" and verified.title == "PPKM Darurat berlaku"
    # The alert's Cancel now finds the verified campaign only; the signed alert posted again is a duplicate.
    assert _post_xml(officer_client, signed(ALERT)).status_code == 409
    assert _post_xml(officer_client, signed(CANCEL)).json()["campaign_id"] == verified.pk


def test_the_page_of_a_copy_a_verified_alert_replaced_says_so_and_why_it_was_cancelled_in_the_pages_language(
    officer_client, trust, api_client_for
):
    trust("Satgas Jatim CAP")
    earlier = _post_xml(officer_client, ALERT).json()["campaign_id"]
    assert _post_xml(api_client_for(UserFactory(role=Role.OFFICER)), signed(ALERT)).status_code == 201
    indonesian = client_for(officer_client.user).get(f"/campaigns/{earlier}/").content.decode()
    english = client_for(officer_client.user, language="en").get(f"/campaigns/{earlier}/").content.decode()
    assert "Digantikan oleh peringatan CAP yang sama, yang terverifikasi ditandatangani oleh Satgas Jatim CAP." in (
        indonesian
    )
    assert "Replaced by the same CAP alert, verified as signed by Satgas Jatim CAP." in english
    assert "unverified, replaced" not in indonesian + english
    assert "Diimpor dari peringatan CAP “satgas-covid-35-0001”" in indonesian
    assert (
        "Peringatan yang sama kemudian datang dengan tanda tangan terverifikasi dan diimpor sebagai kampanye lain; "
        "salinan ini, yang tanda tangannya tidak terverifikasi, dibatalkan."
    ) in indonesian
    assert (
        "The same alert later arrived verified as signed and was imported as another campaign; this copy, whose "
        "signature was not verified, was cancelled."
    ) in english


def test_an_approved_unverified_copy_is_not_replaced_and_the_officer_is_told_to_compare_it(officer_client, trust):
    trust("Satgas Jatim CAP")
    earlier = Campaign.objects.get(pk=_post_xml(officer_client, ALERT).json()["campaign_id"])
    Campaign.objects.filter(pk=earlier.pk).update(status=Campaign.Status.APPROVED)

    response = _post_xml(officer_client, signed(ALERT))

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert f"campaign {earlier.pk}" in detail and "verified as signed by Satgas Jatim CAP" in detail
    assert "cancel it if they differ, then import this one again" in detail
    earlier.refresh_from_db()
    assert earlier.status == Campaign.Status.APPROVED and earlier.cap_source_identifier == "satgas-covid-35-0001"
    assert Campaign.objects.count() == 1
    # Cancelled on its page, the copy gives way.
    Campaign.objects.filter(pk=earlier.pk).update(status=Campaign.Status.CANCELLED)
    assert _post_xml(officer_client, signed(ALERT)).status_code == 201
    assert Campaign.objects.count() == 2


@pytest.mark.parametrize("second_signed", [False, True], ids=["unsigned-again", "signed-by-an-unknown-issuer"])
def test_an_alert_not_verified_never_replaces_an_earlier_import(officer_client, trust, second_signed):
    trust("Satgas Jatim CAP")
    first = _post_xml(officer_client, signed(ALERT))
    assert first.status_code == 201
    second = _post_xml(officer_client, signed(ALERT, by="Not Satgas") if second_signed else ALERT)
    assert second.status_code == 409
    assert Campaign.objects.get().status == Campaign.Status.DRAFT
