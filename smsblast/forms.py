"""Forms of the log-in pages (throttled) and of the subscriber pages."""

import math

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from smsblast.errors import ServiceError
from smsblast.login_throttle import (
    client_address,
    login_attempt_release,
    login_attempt_start,
    login_failure_record,
    login_failures_clear,
)
from smsblast.phones import normalize
from smsblast.two_factor import two_factor_code_accept, two_factor_device_enrol


def throttled_message(wait: int) -> str:
    """Return the message of a log-in refused for `wait` more seconds, in whole minutes."""
    minutes = math.ceil(wait / 60)
    return ngettext(
        "Too many failed log-ins. Try again in %(minutes)d minute.",
        "Too many failed log-ins. Try again in %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}


class ThrottledLoginMixin:
    """Refuse a log-in after LOGIN_FAILURES_ALLOWED wrong passwords for a username from one address."""

    throttled_message = ""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request)
        wait = login_attempt_start(username=username, address=address) if username else 0
        if wait:
            self.throttled_message = throttled_message(wait)
            raise forms.ValidationError(self.throttled_message, code="throttled")
        # The attempt is counted before the password is checked, so parallel guesses cannot outrun the count.
        try:
            cleaned = super().clean()
        except forms.ValidationError as error:
            # user_cache is set when the password was right and only the account may not log in here.
            if username and error.code == "invalid_login" and self.user_cache is None:
                login_failure_record(username=username, address=address)
            elif username:
                login_attempt_release(username=username, address=address)
            raise
        if username and self.user_cache is not None:
            login_failures_clear(username=username, address=address)
        elif username:
            login_attempt_release(username=username, address=address)
        return cleaned


class LoginForm(ThrottledLoginMixin, AuthenticationForm):
    """The log-in page's form."""


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    """The admin site's log-in form, throttled like the log-in page."""


class TwoFactorCodeForm(forms.Form):
    """The code of the user's authenticator app, after the password; wrong codes are throttled like passwords.

    With `secret` it confirms a device being enrolled (and saves it), else it checks the user's device.
    """

    code = forms.CharField(label=_("Code from your authenticator app"), max_length=16)

    def __init__(self, *args, request, user, secret: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request
        self.user = user
        self.secret = secret
        self.throttled_message = ""

    def clean(self):
        code = self.cleaned_data.get("code")
        if code is None:
            return self.cleaned_data
        username = self.user.get_username()
        # Counted from this address, and from every address together (login_throttle.SCOPES).
        counts = [
            {"username": username, "address": client_address(self.request), "scope": "two-factor"},
            {"username": username, "address": "", "scope": "two-factor-anywhere"},
        ]
        for taken, counted in enumerate(counts):
            wait = login_attempt_start(**counted)
            if wait:
                for earlier in counts[:taken]:
                    login_attempt_release(**earlier)
                self.throttled_message = throttled_message(wait)
                raise forms.ValidationError(self.throttled_message, code="throttled")
        at = timezone.now()
        try:
            if self.secret:
                two_factor_device_enrol(user=self.user, secret=self.secret, code=code, at=at)
            else:
                two_factor_code_accept(user=self.user, code=code, at=at)
        except ServiceError as error:
            reason = getattr(error, "codes", {}).get("code", "wrong")
            for counted in counts:
                if reason in ("wrong", "used"):
                    login_failure_record(**counted)
                else:
                    login_attempt_release(**counted)
            raise forms.ValidationError(self.refusal(reason), code=reason) from error
        for counted in counts:
            login_failures_clear(**counted)
        return self.cleaned_data

    @staticmethod
    def refusal(reason: str) -> str:
        if reason == "used":
            return _("This code was already used. Wait for the next code in your app and enter that one.")
        if reason == "enrolled":
            return _("An authenticator app is already set up for you. Enter the code it shows.")
        if reason == "not_enrolled":
            return _("No authenticator app is set up for you. Log in again to set one up.")
        return _("The code is wrong. Enter the 6 digits your authenticator app shows now.")


class MsisdnField(forms.CharField):
    """A typed Indonesian mobile number in any usual form, cleaned to E.164."""

    def clean(self, value):
        from smsblast.templatetags.ui import import_reject_label  # the template tags build on this app's services

        value = super().clean(value)
        result = normalize(value or "")
        if not result.ok:
            raise forms.ValidationError(
                _("This is not an Indonesian mobile number: %(reason)s. For example 0812 3456 7890.")
                % {"reason": import_reject_label(result.reason)}
            )
        return result.e164


class SubscriberImportForm(forms.Form):
    file = forms.FileField(
        label=_("CSV file"),
        help_text=_("One subscriber a row, with a column msisdn (or nomor); optional area code, language, name."),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        limit = settings.SUBSCRIBER_IMPORT_MAX_BYTES
        if upload.size > limit:
            raise forms.ValidationError(
                _("The file is larger than %(limit)d MB. Split it and upload the parts.") % {"limit": limit // 2**20}
            )
        return upload


class OptOutForm(forms.Form):
    msisdn = MsisdnField(label=_("Number to opt out"), max_length=32)


class OptInForm(forms.Form):
    """The number of a search result to opt back in; the page gives it, so it has no field of its own to type in."""

    msisdn = MsisdnField(widget=forms.HiddenInput, max_length=32)


class SubscriberSearchForm(forms.Form):
    msisdn = MsisdnField(label=_("Search by number"), max_length=32)
