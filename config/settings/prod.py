"""Production: every secret comes from the environment; passes `manage.py check --deploy`."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import SECRET_KEY_FALLBACKS, env

DEBUG = False
DEMO_DATA_ALLOWED = False
SECRET_KEY = env("SECRET_KEY")


def _weak_key(key: str) -> bool:
    """Return whether a signing key is one anyone may know or guess, by the rule `check --deploy` warns by."""
    return len(key) < 50 or len(set(key)) < 5 or key.startswith("django-insecure-")


# A key anyone may know (the development and test ones are published with the code, startproject's are marked
# insecure) or guess would let them forge signed values and open the secrets sealed in the database: refuse to start,
# by the rule `check --deploy` warns by (security.W009, and W025 for the former keys, which still do both).
if _weak_key(SECRET_KEY):
    raise ImproperlyConfigured(
        "SECRET_KEY is too weak for production: it must be at least 50 characters of at least 5 different ones, "
        "made for this installation, e.g. by python3 -c 'import secrets; print(secrets.token_urlsafe(50))'. "
        "Keep the former one in SECRET_KEY_FALLBACKS while sealed secrets are saved again."
    )
for _position, _former_key in enumerate(SECRET_KEY_FALLBACKS, start=1):
    if _weak_key(_former_key):
        raise ImproperlyConfigured(
            f"SECRET_KEY_FALLBACKS: key {_position} of {len(SECRET_KEY_FALLBACKS)} is too weak for production "
            "(a former key still verifies signed values and opens sealed secrets); each must be at least 50 "
            "characters of at least 5 different ones, made for this installation, e.g. by python3 -c 'import "
            "secrets; print(secrets.token_urlsafe(50))'. Remove it from the list."
        )
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# gunicorn listens on the loopback only: one TLS proxy in front sets X-Forwarded-Proto and X-Forwarded-For.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=1)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# The accounts that approve and administer mass SMS give a code of their authenticator app after their password.
SMSBLAST_TWO_FACTOR_ROLES = [
    role for role in env.list("SMSBLAST_TWO_FACTOR_ROLES", default=["approver", "admin"]) if role
]
