"""The second factor at log-in: a code of the user's authenticator app (TOTP) after the password.

Users holding a role named in SMSBLAST_TWO_FACTOR_ROLES are not logged in by their password: the log-in page
keeps them in the session as a pending log-in for TWO_FACTOR_PENDING_SECONDS, and only a right code (or, the
first time, the code that confirms a newly enrolled app) calls login(). Every page and session-authenticated
API call is thus behind both factors; API tokens are not affected.

The secret never leaves this module except on the enrolment page; it is neither audited nor logged.
"""

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.shortcuts import resolve_url
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext as _

from smsblast import sealing, totp
from smsblast.audit import audit_record
from smsblast.errors import ServiceInvalid
from smsblast.models import Role, TwoFactorDevice, User

# The issuer an authenticator app shows beside the account name.
ISSUER = "smsblast"
# Session keys of a pending log-in (a right password waiting for its code).
PENDING_USER = "two_factor_user_id"
PENDING_BACKEND = "two_factor_backend"
PENDING_HASH = "two_factor_auth_hash"
PENDING_SINCE = "two_factor_since"
PENDING_REDIRECT = "two_factor_redirect"
# The secret offered for enrolment and whose it is: kept past a lapsed pending log-in, so that a user who took
# longer than that to install an app and scan the QR code logs in again to the same secret, not to a new one.
PENDING_ENROLMENT = "two_factor_enrolment"
PENDING_KEYS = (PENDING_USER, PENDING_BACKEND, PENDING_HASH, PENDING_SINCE, PENDING_REDIRECT)
# Set in the session of a log-in completed with the second factor: whose log-in it was.
VERIFIED = "two_factor_verified"


def two_factor_required(user: User) -> bool:
    """Return whether the user must give a code after the password: one of the user's roles is in the setting."""
    wanted = set(settings.SMSBLAST_TWO_FACTOR_ROLES)
    if not wanted:
        return False
    # Every role group the user is in counts, not only the one `role` names: a user both officer and approver
    # approves like an approver.
    roles = set(user.groups.filter(name__in=Role.values).values_list("name", flat=True))
    # Whoever may use the admin site administers, role or not: a staff user given permissions there by hand too.
    if user.is_superuser or user.is_staff:
        roles.add(Role.ADMIN)
    return bool(roles & wanted)


def two_factor_device(user: User) -> TwoFactorDevice | None:
    """Return the user's confirmed authenticator device, or None when the user has to enrol one."""
    return TwoFactorDevice.objects.filter(user=user).first()


@transaction.atomic
def two_factor_device_enrol(*, user: User, secret: str, code: str, at) -> TwoFactorDevice:
    """Save the user's device once `code` is right for `secret` at `at`, audited (without the secret)."""
    step = totp.matching_step(secret, code, at)
    if step is None:
        raise ServiceInvalid(_("The code is wrong."), codes={"code": "wrong"})
    try:
        with transaction.atomic():
            device = TwoFactorDevice.objects.create(user=user, secret=secret, confirmed_at=at, last_used_step=step)
    except IntegrityError:
        # Another tab of the same log-in enrolled first.
        raise ServiceInvalid(_("An authenticator app is already set up for you."), codes={"code": "enrolled"}) from None
    audit_record(
        actor=user,
        action="user.two_factor_enrol",
        obj=user,
        from_state="",
        to_state="enrolled",
        details={"username": user.username},
    )
    return device


def two_factor_code_accept(*, user: User, code: str, at) -> TwoFactorDevice:
    """Take `code` as the user's second factor at `at`; refuse a wrong code and one of a step already used."""
    device = two_factor_device(user)
    if device is None:
        raise ServiceInvalid(_("No authenticator app is set up for you."), codes={"code": "not_enrolled"})
    step = totp.matching_step(device.secret, code, at)
    if step is None:
        raise ServiceInvalid(_("The code is wrong."), codes={"code": "wrong"})
    # Conditional update: of two requests with the same code (or a code seen over a shoulder), one wins.
    taken = TwoFactorDevice.objects.filter(pk=device.pk, last_used_step__lt=step).update(last_used_step=step)
    if not taken:
        raise ServiceInvalid(_("This code was already used."), codes={"code": "used"})
    device.last_used_step = step
    return device


@transaction.atomic
def two_factor_reset(*, user: User, actor: User | None) -> bool:
    """Forget the user's device, audited, so the user enrols again at the next log-in; return whether one was set."""
    deleted, _counts = TwoFactorDevice.objects.filter(user=user).delete()
    if deleted:
        audit_record(
            actor=actor,
            action="user.two_factor_reset",
            obj=user,
            from_state="enrolled",
            to_state="not_enrolled",
            details={"username": user.username},
        )
    return bool(deleted)


@dataclass(frozen=True)
class PendingLogin:
    """A right password waiting for its code, as kept in the session."""

    user: User | None  # None when the time ran out or the account changed meanwhile
    redirect_to: str


def pending_login_start(*, request: HttpRequest, user: User, redirect_to: str) -> None:
    """Remember in the session that `user` gave the right password; nobody is logged in yet."""
    pending_login_clear(request)
    if (request.session.get(PENDING_ENROLMENT) or {}).get("user") != str(user.pk):
        request.session.pop(PENDING_ENROLMENT, None)
    request.session[PENDING_USER] = str(user.pk)
    request.session[PENDING_BACKEND] = user.backend
    # A password changed or an account disabled meanwhile ends the pending log-in.
    request.session[PENDING_HASH] = user.get_session_auth_hash()
    request.session[PENDING_SINCE] = timezone.now().timestamp()
    request.session[PENDING_REDIRECT] = redirect_to


def pending_login(request: HttpRequest) -> PendingLogin | None:
    """Return the session's pending log-in (its user None once it lapsed), or None when there is none."""
    session = request.session
    if PENDING_USER not in session:
        return None
    redirect_to = session.get(PENDING_REDIRECT) or resolve_url(settings.LOGIN_REDIRECT_URL)
    age = timezone.now().timestamp() - float(session.get(PENDING_SINCE) or 0)
    user = get_user_model().objects.filter(pk=session[PENDING_USER], is_active=True).first()
    if (
        not 0 <= age <= settings.TWO_FACTOR_PENDING_SECONDS
        or user is None
        or not constant_time_compare(session.get(PENDING_HASH, ""), user.get_session_auth_hash())
        or session.get(PENDING_BACKEND) not in settings.AUTHENTICATION_BACKENDS
    ):
        pending_login_clear(request)
        return PendingLogin(user=None, redirect_to=redirect_to)
    return PendingLogin(user=user, redirect_to=redirect_to)


def pending_login_secret(request: HttpRequest) -> str:
    """Return the secret offered to the pending user for enrolment, the same one until that user logs in."""
    user_id = request.session[PENDING_USER]
    enrolment = request.session.get(PENDING_ENROLMENT) or {}
    if enrolment.get("user") != user_id or not enrolment.get("secret"):
        # Sealed like a saved device's secret: sessions live in the database too.
        enrolment = request.session[PENDING_ENROLMENT] = {"user": user_id, "secret": sealing.seal(totp.secret_new())}
    return sealing.unseal(enrolment["secret"])


def pending_login_complete(*, request: HttpRequest, pending: PendingLogin) -> None:
    """Log the pending user in, now that the second factor was given."""
    backend = request.session.get(PENDING_BACKEND) or settings.AUTHENTICATION_BACKENDS[0]
    pending_login_clear(request)
    request.session.pop(PENDING_ENROLMENT, None)
    login(request, pending.user, backend=backend)
    request.session[VERIFIED] = verified_mark(pending.user)


def verified_mark(user: User) -> str | None:
    """Return what a session opened with the user's code keeps: whose it is and which device gave the code.

    A reset deletes the device, so the sessions it opened (a lost phone's among them) no longer match.
    """
    device_id = TwoFactorDevice.objects.filter(user=user).values_list("pk", flat=True).first()
    return None if device_id is None else f"{user.pk}:{device_id}"


def session_lacks_second_factor(request: HttpRequest) -> bool:
    """Return whether the request's user logged in without the code their role now asks for.

    An officer made approver, or an administrator logged in before the setting named the role, holds such a session;
    so does one opened with a code of a device reset since.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not settings.SMSBLAST_TWO_FACTOR_ROLES:
        return False
    verified = request.session.get(VERIFIED)
    if verified is None:
        return two_factor_required(user)
    # Opened with a code: it lasts as long as the device that gave it (a reset ends it).
    return verified != verified_mark(user)


def pending_login_clear(request: HttpRequest) -> None:
    """Forget the session's pending log-in, if any (a secret offered for enrolment stays for its user)."""
    for key in PENDING_KEYS:
        request.session.pop(key, None)


def enrolment_uri(*, user: User, secret: str) -> str:
    """Return the otpauth:// URI of the user's new device."""
    return totp.provisioning_uri(secret, account=user.get_username(), issuer=ISSUER)
