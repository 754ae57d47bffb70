"""Deployment checks of the core app: `manage.py check --deploy` names what a production install left out."""

import pytest
from django.core.checks import Warning as CheckWarning
from django.core.checks import run_checks


def deploy_warnings() -> list[str]:
    return [message.id for message in run_checks(include_deployment_checks=True) if isinstance(message, CheckWarning)]


def test_check_deploy_warns_when_notifications_would_only_be_printed(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"  # EMAIL_URL left unset

    assert "smsblast.W001" in deploy_warnings()


def test_check_deploy_is_quiet_about_mail_when_a_mail_server_is_set(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"

    assert "smsblast.W001" not in deploy_warnings()


def test_the_warning_about_printed_notifications_names_the_process_that_prints_them(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

    (warning,) = [message for message in run_checks(include_deployment_checks=True) if message.id == "smsblast.W001"]

    assert "the mail process only prints it" in warning.msg


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:8000/", "http://[::1]:8000", "http://0.0.0.0:8000", "smsblast"]
)
def test_check_deploy_warns_when_links_in_emails_and_report_urls_would_lead_to_this_machine(settings, url):
    settings.PUBLIC_BASE_URL = url  # PUBLIC_BASE_URL left unset, or not a URL

    assert "smsblast.W002" in deploy_warnings()


def test_check_deploy_is_quiet_about_the_public_address_when_it_is_set(settings):
    settings.PUBLIC_BASE_URL = "https://smsblast.blitarkab.go.id"

    assert "smsblast.W002" not in deploy_warnings()


def test_check_deploy_warns_when_emails_would_be_sent_from_a_localhost_address(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "smsblast <noreply@localhost>"  # DEFAULT_FROM_EMAIL left unset

    assert "smsblast.W003" in deploy_warnings()


def test_check_deploy_is_quiet_about_the_sender_when_it_is_set(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "SMS Pemkab Blitar <noreply@blitarkab.go.id>"

    assert "smsblast.W003" not in deploy_warnings()
