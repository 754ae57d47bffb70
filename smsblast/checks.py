"""Deployment checks (`manage.py check --deploy`) for what a production install must set beyond Django's own."""

import ipaddress
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings
from django.core.checks import Error as CheckError
from django.core.checks import Warning as CheckWarning
from django.core.checks import register

PRINTING_EMAIL_BACKENDS = frozenset(
    {
        "django.core.mail.backends.console.EmailBackend",
        "django.core.mail.backends.dummy.EmailBackend",
        "django.core.mail.backends.locmem.EmailBackend",
    }
)


@register(deploy=True)
def check_email_is_mailed(app_configs, **kwargs) -> list[CheckWarning]:
    """Warn when notifications would be marked sent without reaching a mail server (EMAIL_URL left unset)."""
    if settings.EMAIL_BACKEND not in PRINTING_EMAIL_BACKENDS:
        return []
    return [
        CheckWarning(
            "EMAIL_URL names no mail server: approvers and authors are never emailed, though each notification is "
            "recorded as sent (the mail process only prints it).",
            hint="Set EMAIL_URL, e.g. smtp+tls://user:password@mail.example.go.id:587, and DEFAULT_FROM_EMAIL.",
            id="smsblast.W001",
        )
    ]


@register()
def check_cap_trusted_certificates(app_configs, **kwargs) -> list[CheckError]:
    """Refuse to start with a CAP trust file that holds no certificate: every signature would go unverified."""
    from campaigns.cap_signature import read_certificates

    path = settings.CAP_TRUSTED_CERTIFICATES
    if not path:
        if settings.CAP_REQUIRE_SIGNATURE:
            return [
                CheckError(
                    "CAP_REQUIRE_SIGNATURE is on but CAP_TRUSTED_CERTIFICATES names no file: every CAP import "
                    "would be refused.",
                    hint="Set CAP_TRUSTED_CERTIFICATES to a PEM file of the issuers' certificates.",
                    id="smsblast.E001",
                )
            ]
        return []
    try:
        read_certificates(Path(path))
    except (OSError, ValueError) as exc:
        return [
            CheckError(
                f"CAP_TRUSTED_CERTIFICATES {path} holds no readable certificate ({exc}).",
                hint="Give a PEM file with one or more '-----BEGIN CERTIFICATE-----' blocks.",
                id="smsblast.E001",
            )
        ]
    return []


@register(deploy=True)
def check_email_sender(app_configs, **kwargs) -> list[CheckWarning]:
    """Warn when a mail server is set but notifications would come from an address of no domain (noreply@localhost),
    which mail servers refuse: every notification would fail after its attempts."""
    if settings.EMAIL_BACKEND in PRINTING_EMAIL_BACKENDS:
        return []
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2]
    if "." in domain.strip("."):
        return []
    return [
        CheckWarning(
            f"DEFAULT_FROM_EMAIL is {settings.DEFAULT_FROM_EMAIL!r}: mail servers refuse a sender without a domain, "
            "so every notification would be refused and fail.",
            hint="Set DEFAULT_FROM_EMAIL to an address of your mail domain, e.g. smsblast <noreply@blitarkab.go.id>.",
            id="smsblast.W003",
        )
    ]


def _names_this_machine(url: str) -> bool:
    """Return whether `url` is no web address or one only this machine reaches (loopback, or any address)."""
    parts = urlparse(url)
    host = parts.hostname or ""
    if parts.scheme not in {"http", "https"} or not host:
        return True
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


@register(deploy=True)
def check_public_base_url(app_configs, **kwargs) -> list[CheckWarning]:
    """Warn when PUBLIC_BASE_URL (left unset) leads to this machine: the links in emails and the URLs operators
    post reports to would reach no one else."""
    if not _names_this_machine(settings.PUBLIC_BASE_URL):
        return []
    return [
        CheckWarning(
            f"PUBLIC_BASE_URL is {settings.PUBLIC_BASE_URL!r}: the links in notification emails and the URLs operators "
            "post delivery and broadcast reports to lead to this machine, which no reader or operator reaches.",
            hint="Set PUBLIC_BASE_URL to the address users and operators reach the web process at, e.g. "
            "https://smsblast.blitarkab.go.id.",
            id="smsblast.W002",
        )
    ]
