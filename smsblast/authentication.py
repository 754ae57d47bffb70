"""Bearer tokens for the REST API, stored as SHA-256 hashes."""

import hashlib
import secrets

from django.db import transaction
from django.utils import timezone
from rest_framework import authentication, exceptions

from smsblast.audit import audit_record
from smsblast.models import ApiToken, User


def token_hash(key: str) -> str:
    """Return the stored form of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


@transaction.atomic
def api_token_create(*, user: User, name: str = "", actor: User | None = None) -> str:
    """Create a token for the user and return the key; it is shown once and never stored."""
    key = secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, key_hash=token_hash(key), prefix=key[:8], name=name)
    audit_record(
        actor=actor,
        action="api_token.create",
        obj=token,
        to_state="active",
        details={"user": user.username, "prefix": token.prefix, "name": name},
    )
    return key


@transaction.atomic
def api_token_revoke(*, token: ApiToken, actor: User | None) -> bool:
    """Revoke the token unless it already is, audited; return whether this call revoked it."""
    revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    if revoked:
        audit_record(
            actor=actor,
            action="api_token.revoke",
            obj=token,
            from_state="active",
            to_state="revoked",
            details={"user": token.user.username, "prefix": token.prefix},
        )
    return bool(revoked)


class HashedTokenAuthentication(authentication.BaseAuthentication):
    """Accept `Authorization: Bearer KEY` (or `Token KEY`) against hashed tokens."""

    # Compared as bytes: a header is Latin-1, and a scheme that is not UTF-8 is simply not ours.
    keywords = (b"bearer", b"token")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        try:
            key = header[1].decode()
        except UnicodeError as exc:
            raise exceptions.AuthenticationFailed("Token contains invalid characters.") from exc
        token = (
            ApiToken.objects.select_related("user").filter(key_hash=token_hash(key), revoked_at__isnull=True).first()
        )
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        now = timezone.now()
        # Touch at most once a minute so hot operator endpoints do not write per request.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return "Bearer"
