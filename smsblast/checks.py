"""Deployment checks (`manage.py check --deploy`) for what a production install must set beyond Django's own."""

from pathlib import Path

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
