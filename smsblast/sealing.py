"""Secrets the server must read back (operator credentials, second-factor secrets), sealed at rest.

A value is stored as `sealed:v1:<Fernet token>`, encrypted and authenticated with a key derived from SECRET_KEY, so a
copy of the database or of a backup does not give away the credentials we present to operators or the secrets
log-in codes are computed from. Rotating SECRET_KEY keeps old values readable while the old key is listed in
SECRET_KEY_FALLBACKS; each value is sealed again with the new key when it is next saved.

A stored value without the prefix was written before sealing and is read as it is; the migrations that introduced
`SealedTextField` sealed every such value.
"""

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

PREFIX = "sealed:v1:"
# Separates this key from every other use of SECRET_KEY (sessions, signing, password resets).
_KEY_INFO = b"smsblast sealed secrets v1"


class SealedValueUnreadable(ImproperlyConfigured):
    """A sealed value that no key derived from SECRET_KEY or SECRET_KEY_FALLBACKS opens."""


def _derived_key(secret_key: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(secret_key.encode()))


@lru_cache(maxsize=4)
def _fernet(secret_key: str, fallbacks: tuple[str, ...]) -> MultiFernet:
    if not secret_key:
        raise ImproperlyConfigured("SECRET_KEY is empty: secrets cannot be sealed or read.")
    return MultiFernet([Fernet(_derived_key(key)) for key in (secret_key, *fallbacks) if key])


def _keys() -> MultiFernet:
    return _fernet(settings.SECRET_KEY, tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ())))


def seal(value: str) -> str:
    """Return `value` sealed for storage; an empty value stays empty (nothing to hide)."""
    if not value:
        return value
    return PREFIX + _keys().encrypt(value.encode()).decode()


def unseal(stored: str | None) -> str | None:
    """Return the value `stored` holds: opened if sealed, as it is if written before sealing."""
    if not stored or not stored.startswith(PREFIX):
        return stored
    try:
        return _keys().decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        raise SealedValueUnreadable(
            "A sealed secret cannot be opened with SECRET_KEY or SECRET_KEY_FALLBACKS: was SECRET_KEY changed "
            "without keeping the old one in SECRET_KEY_FALLBACKS?"
        ) from None


def is_sealed(stored: str | None) -> bool:
    """Return whether a stored value is sealed (empty values are never sealed)."""
    return bool(stored) and stored.startswith(PREFIX)


class SealedTextField(models.TextField):
    """A text the application reads in clear and the database holds sealed (see the module's docstring).

    Lookups compare sealed values, which differ at every save: never filter on such a field.
    """

    def from_db_value(self, value, expression, connection):
        return unseal(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return value if is_sealed(value) else seal(value)


def migration_sealing(app_label: str, model_name: str, fields: tuple[str, ...]):
    """Return the RunPython pair that seals `fields` of every row (forwards) or writes them in clear (backwards).

    Forwards runs after the fields became SealedTextFields: reading gives each value in clear (a value written
    before sealing is read as it is) and saving seals it. Backwards runs while they still are, before they turn
    back into plain text columns, so it writes the opened values with SQL of its own.
    """

    def forwards(apps, schema_editor):
        model = apps.get_model(app_label, model_name)
        rows = list(model.objects.using(schema_editor.connection.alias).only("pk", *fields))
        model.objects.using(schema_editor.connection.alias).bulk_update(rows, fields, batch_size=500)

    def backwards(apps, schema_editor):
        model = apps.get_model(app_label, model_name)
        connection = schema_editor.connection
        quote = connection.ops.quote_name
        assignments = ", ".join(f"{quote(field)} = %s" for field in fields)
        sql = f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {quote(model._meta.pk.column)} = %s"  # noqa: S608
        with connection.cursor() as cursor:
            for row in model.objects.using(connection.alias).values_list("pk", *fields):
                cursor.execute(sql, [*row[1:], row[0]])

    return forwards, backwards
