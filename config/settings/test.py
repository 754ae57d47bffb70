"""Test settings: pytest-django. DATABASE_URL picks PostgreSQL in CI."""

from .base import *  # noqa: F403
from .base import DATABASES, env

DEBUG = False
SECRET_KEY = "test-only-key"  # noqa: S105
# Log-in throttling keeps counts in Redis across tests; its own tests switch it on with a private server.
LOGIN_FAILURES_ALLOWED = 0
# Password-only log-in, as under `make run`; the tests of the second factor switch it on with override_settings.
SMSBLAST_TWO_FACTOR_ROLES: list[str] = []
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # In-memory for unit tests; integration tests that need a shared file set their own.
    DATABASES["default"]["TEST"] = {"NAME": env("SQLITE_TEST_NAME", default="")}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
