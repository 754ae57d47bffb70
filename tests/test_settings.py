"""Settings modules: production settings pass Django's deployment checks."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent


def test_production_settings_pass_check_deploy_without_warnings():
    # Not this process's Django variables: live-server tests set DJANGO_ALLOW_ASYNC_UNSAFE, which no deployment has.
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("DJANGO_")}
    env = {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "config.settings.prod",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "example.org",
        "EMAIL_URL": "smtp+tls://smsblast:secret@mail.example.org:587",
        "PUBLIC_BASE_URL": "https://example.org",
        "DEFAULT_FROM_EMAIL": "smsblast <noreply@example.org>",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_seed_demo_refuses_to_run_under_production_settings(tmp_path):
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("DJANGO_")}
    env = {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "config.settings.prod",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "example.org",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "seed_demo", "--subscribers", "0"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "published passwords" in result.stderr


def test_the_web_and_worker_entry_points_default_to_production_settings(tmp_path):
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("DJANGO_")}
    probe = "import config.wsgi, config.celery; from django.conf import settings; print(settings.DEBUG)"

    def run(**extra):
        return subprocess.run(
            [sys.executable, "-c", probe],
            cwd=BASE_DIR,
            env={**inherited, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )

    without_key = run()
    assert without_key.returncode != 0 and "SECRET_KEY" in without_key.stderr
    configured = run(SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="example.org")
    assert configured.stdout.strip() == "False", configured.stderr


@pytest.mark.parametrize(
    "key",
    [
        "dev-only-insecure-key-change-me",  # config.settings.dev's, published with the code
        "test-only-key",  # config.settings.test's
        "django-insecure-" + "x" * 50,  # what startproject writes
        "a" * 60,  # one character
        "abcd" + "x" * 40,  # too short
    ],
)
def test_production_refuses_to_start_with_a_published_or_weak_secret_key(tmp_path, key):
    """Anyone who knows the key forges signed values and opens the operator credentials sealed in the database."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("DJANGO_")}
    probe = "import config.wsgi, config.celery; from django.conf import settings; print(settings.DEBUG)"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=BASE_DIR,
        env={
            **inherited,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "ALLOWED_HOSTS": "example.org",
            "SECRET_KEY": key,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0, result.stdout
    assert "SECRET_KEY" in result.stderr and "secrets.token_urlsafe" in result.stderr, result.stderr
    assert key not in result.stderr  # the refusal does not write the key to the log


def test_approvers_and_admins_give_a_second_factor_in_production_and_nobody_in_development_unless_set():
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("DJANGO_") and name != "SMSBLAST_TWO_FACTOR_ROLES"
    }
    probe = "import django; django.setup(); from django.conf import settings; print(settings.SMSBLAST_TWO_FACTOR_ROLES)"

    def roles(module: str, **extra) -> str:
        result = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=BASE_DIR,
            env={**inherited, "DJANGO_SETTINGS_MODULE": module, "SECRET_KEY": secrets.token_urlsafe(50), **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert roles("config.settings.prod") == "['approver', 'admin']"
    assert roles("config.settings.prod", SMSBLAST_TWO_FACTOR_ROLES="") == "[]"
    assert roles("config.settings.dev") == "[]"
    assert roles("config.settings.dev", SMSBLAST_TWO_FACTOR_ROLES="approver") == "['approver']"


@pytest.mark.parametrize(
    "weak",
    ["dev-only-insecure-key-change-me", "test-only-key", "django-insecure-" + "x" * 50, "a" * 60, "abcd" + "x" * 40],
)
def test_production_refuses_to_start_with_a_published_or_weak_former_key_and_names_its_place(tmp_path, weak):
    """A former key still verifies signatures and opens sealed secrets, so it is held to the rule of the key."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("DJANGO_")}
    probe = "import config.wsgi, config.celery; from django.conf import settings; print(settings.DEBUG)"

    def run(fallbacks: str):
        return subprocess.run(
            [sys.executable, "-c", probe],
            cwd=BASE_DIR,
            env={
                **inherited,
                "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
                "ALLOWED_HOSTS": "example.org",
                "SECRET_KEY": secrets.token_urlsafe(50),
                "SECRET_KEY_FALLBACKS": fallbacks,
            },
            capture_output=True,
            text=True,
            timeout=120,
        )

    strong = secrets.token_urlsafe(50)
    refused = run(f"{strong},{weak}")
    assert refused.returncode != 0, refused.stdout
    assert "SECRET_KEY_FALLBACKS" in refused.stderr and "key 2 of 2" in refused.stderr, refused.stderr
    assert "secrets.token_urlsafe" in refused.stderr
    assert weak not in refused.stderr  # the refusal does not write the key to the log
    assert strong not in refused.stderr
    accepted = run(f"{strong},{secrets.token_urlsafe(50)}")
    assert accepted.stdout.strip() == "False", accepted.stderr
