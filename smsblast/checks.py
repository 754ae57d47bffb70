"""Deployment checks (`manage.py check --deploy`) for what a production install must set beyond Django's own."""

from django.conf import settings
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
