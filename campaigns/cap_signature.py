"""XML signatures on imported CAP alerts, checked against the issuers' certificates this installation trusts.

An alert names its signer's certificate in its signature; that it verifies against that certificate only proves
the document is whole, since anyone can make a certificate. It is genuine when it verifies against a certificate
given out of band by its issuer (BMKG, BNPB, a province's BPBD): `CAP_TRUSTED_CERTIFICATES` names a PEM file of
them. A verified alert is read from exactly what was signed, never from the document around it.
"""

import base64
import binascii
import logging
import re
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from lxml import etree

from smsblast.errors import ServiceInvalid
from smsblast.text import label_matching

if TYPE_CHECKING:
    from cryptography import x509

logger = logging.getLogger(__name__)

DSIG = "{http://www.w3.org/2000/09/xmldsig#}"
# The signing library copies and canonicalizes the whole document for each reference and transform before it counts
# the references: a 1 MiB document of a few thousand would hold a worker for minutes. An enveloped signature needs
# one reference and a transform or two (enveloped, a canonicalization).
MAX_TRANSFORMS = 3


@cache
def _libraries() -> SimpleNamespace:
    """Load the certificate and signature libraries at the first signed alert (or trust file): about 15 MB that
    a process checking none, as the workers, does not carry."""
    import signxml
    from cryptography import x509
    from signxml import exceptions

    return SimpleNamespace(
        x509=x509,
        verifier=signxml.XMLVerifier,
        # The signature must sit directly in <alert> and sign it whole (an enveloped signature, as CAP 1.2 section
        # 3.3.2.1 describes): a signature elsewhere could sign a part the alert is not read from.
        config=signxml.SignatureConfiguration(location="./", expect_references=1),
        errors=exceptions,
        # What it raises for a signature it cannot read, beside its own errors: a value left empty (TypeError), a
        # signature its schema refuses or a document nested deeper than lxml reads (lxml's errors).
        uncheckable=(exceptions.SignXMLException, ValueError, TypeError, etree.LxmlError),
    )


class SignatureState:
    UNSIGNED = "unsigned"  # no <Signature> in the alert
    VERIFIED = "verified"  # signed by the key of a trusted issuer's certificate, and unchanged since
    UNTRUSTED = "untrusted"  # signed, but not by a trusted issuer (or not checkable): the approver confirms it


@dataclass(frozen=True)
class CapSignature:
    state: str
    # The signing certificate's subject (its common name, else the whole subject), as far as the alert names it.
    signer: str = ""
    # Why an untrusted signature is not verified, in a sentence; recorded in English (cap_signature_reason_label).
    reason: str = ""
    # Verified: the document exactly as signed, without its signature; the alert is read from this.
    signed_xml: bytes | None = None

    def as_details(self) -> dict[str, str]:
        return {"state": self.state, "signer": self.signer, "reason": self.reason}


def cap_signature_check(raw: bytes, root: Element) -> CapSignature:
    """Check the signature of the CAP document `raw` (already parsed safely into `root`).

    Raises ServiceInvalid when the signature verifies against its key but the alert changed after it was signed, or
    when its value does not match the certificate it names: a document altered on its way, never to be broadcast.
    """
    signature = root.find(f"{DSIG}Signature")
    if signature is None:
        return CapSignature(SignatureState.UNSIGNED)
    unreadable = _unreadable_shape(signature)
    lib = _libraries()
    for certificate in [] if unreadable else trusted_certificates():
        try:
            result = lib.verifier().verify(raw, x509_cert=certificate, expect_config=lib.config)
        except lib.errors.InvalidDigest as exc:
            # The trusted key signed it, and what it signed is not what arrived.
            raise ServiceInvalid(_altered(_subject(certificate))) from exc
        except lib.uncheckable:
            # Another key's signature, one this certificate cannot check, or a certificate out of its validity.
            continue
        signed_xml = etree.tostring(result.signed_xml)
        return CapSignature(SignatureState.VERIFIED, _subject(certificate), signed_xml=signed_xml)
    return _check_untrusted(raw, root, unreadable)


def _unreadable_shape(signature: Element) -> str:
    """Return why the signature is not checked at all, in a few words; "" when it has the shape of one."""
    references = signature.findall(f"{DSIG}SignedInfo/{DSIG}Reference")
    if len(references) != 1:
        return f"it has {len(references)} references where one signs the alert"
    if len(list(references[0].iter(f"{DSIG}Transform"))) > MAX_TRANSFORMS:
        return f"its reference has more than {MAX_TRANSFORMS} transforms"
    return ""


def _check_untrusted(raw: bytes, root: Element, unreadable: str = "") -> CapSignature:
    """Check the signature against the certificate it names itself: whole or altered, but from no trusted issuer."""
    named = root.find(f"{DSIG}Signature/{DSIG}KeyInfo/{DSIG}X509Data/{DSIG}X509Certificate")
    if named is None or not (named.text or "").strip():
        return CapSignature(SignatureState.UNTRUSTED, reason="the signature names no certificate")
    lib = _libraries()
    try:
        certificate = lib.x509.load_der_x509_certificate(base64.b64decode("".join(named.text.split()), validate=True))
    except (binascii.Error, ValueError):
        return CapSignature(SignatureState.UNTRUSTED, reason="the certificate the signature names cannot be read")
    signer = _subject(certificate)
    if unreadable:
        return CapSignature(SignatureState.UNTRUSTED, signer, f"the signature cannot be checked ({unreadable})")
    reason = "its certificate is not among the trusted issuers (CAP_TRUSTED_CERTIFICATES)"
    try:
        lib.verifier().verify(raw, x509_cert=certificate, expect_config=lib.config)
    except lib.errors.InvalidCertificate as exc:
        _check_whole(raw, certificate, signer)
        return CapSignature(SignatureState.UNTRUSTED, signer, f"its certificate is not valid ({exc})")
    except lib.errors.InvalidSignature as exc:  # InvalidDigest included
        raise ServiceInvalid(_altered(signer)) from exc
    except lib.uncheckable as exc:
        # An algorithm no longer accepted (SHA-1), a signature elsewhere than in <alert>, a malformed one.
        return CapSignature(SignatureState.UNTRUSTED, signer, f"the signature cannot be checked ({exc})")
    return CapSignature(SignatureState.UNTRUSTED, signer, reason)


def _check_whole(raw: bytes, certificate: "x509.Certificate", signer: str) -> None:
    """Raise ServiceInvalid when the alert changed after `certificate`'s key signed it, the certificate being out of
    its validity: it vouches for no one, but its key still tells whether the content is what was signed."""
    lib = _libraries()
    config = replace(lib.config, verification_time=certificate.not_valid_before_utc)
    try:
        lib.verifier().verify(raw, x509_cert=certificate, expect_config=config)
    except lib.errors.InvalidCertificate:
        pass  # not valid at any time: nothing more to learn from it
    except lib.errors.InvalidSignature as exc:
        raise ServiceInvalid(_altered(signer)) from exc
    except lib.uncheckable:
        pass


def _altered(signer: str) -> str:
    return _(
        "The alert's XML signature (signer: %(signer)s) does not match its content: it was changed after it was "
        "signed, so it is not imported. Ask its issuer for the alert again."
    ) % {"signer": signer}


# Why a signature is not verified, as recorded in English, and how it reads in the user's language.
_REASONS = (
    (re.compile(re.escape("the signature names no certificate")), gettext_lazy("the signature names no certificate")),
    (
        re.compile(re.escape("the certificate the signature names cannot be read")),
        gettext_lazy("the certificate the signature names cannot be read"),
    ),
    (
        re.compile(re.escape("its certificate is not among the trusted issuers (CAP_TRUSTED_CERTIFICATES)")),
        gettext_lazy("its certificate is not among the trusted issuers (CAP_TRUSTED_CERTIFICATES)"),
    ),
    (
        re.compile(r"the signature cannot be checked \(it has (?P<count>\d+) references where one signs the alert\)"),
        gettext_lazy("the signature cannot be checked (it has %(count)s references where one signs the alert)"),
    ),
    (
        re.compile(r"the signature cannot be checked \(its reference has more than (?P<count>\d+) transforms\)"),
        gettext_lazy("the signature cannot be checked (its reference has more than %(count)s transforms)"),
    ),
    (
        re.compile(r"the signature cannot be checked \((?P<error>.*)\)", re.DOTALL),
        gettext_lazy("the signature cannot be checked (%(error)s)"),
    ),
    (
        re.compile(r"its certificate is not valid \((?P<error>.*)\)", re.DOTALL),
        gettext_lazy("its certificate is not valid (%(error)s)"),
    ),
)


def cap_signature_reason_label(reason: str) -> str:
    """Return why a signature is not verified (a CapSignature's reason) in the user's language."""
    return label_matching(reason, _REASONS)


def _subject(certificate: "x509.Certificate") -> str:
    names = certificate.subject.get_attributes_for_oid(_libraries().x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else certificate.subject.rfc4514_string()


_cache: dict[tuple[str, float], list["x509.Certificate"]] = {}


def trusted_certificates() -> list["x509.Certificate"]:
    """Return the certificates of `CAP_TRUSTED_CERTIFICATES`, read again when the file changes; [] when unset."""
    path = settings.CAP_TRUSTED_CERTIFICATES
    if not path:
        return []
    try:
        key = (path, Path(path).stat().st_mtime)
    except OSError:
        logger.error("CAP_TRUSTED_CERTIFICATES %s cannot be read: no CAP signature is verified", path)
        return []
    if key not in _cache:
        try:
            certificates = read_certificates(Path(path))
        except (OSError, ValueError) as exc:
            logger.error("CAP_TRUSTED_CERTIFICATES %s holds no certificate (%s): none is verified", path, exc)
            return []
        _cache.clear()
        _cache[key] = certificates
    return _cache[key]


def read_certificates(path: Path) -> list["x509.Certificate"]:
    """Return the PEM certificates in the file at `path`; raise OSError or ValueError saying why there are none."""
    return _libraries().x509.load_pem_x509_certificates(path.read_bytes())
