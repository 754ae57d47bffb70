"""Forms of the subscriber pages."""

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from smsblast.phones import normalize


class MsisdnField(forms.CharField):
    """A typed Indonesian mobile number in any usual form, cleaned to E.164."""

    def clean(self, value):
        value = super().clean(value)
        result = normalize(value or "")
        if not result.ok:
            raise forms.ValidationError(_("This is not a valid Indonesian mobile number, e.g. 0812 3456 7890."))
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


class SubscriberSearchForm(forms.Form):
    msisdn = MsisdnField(label=_("Search by number"), max_length=32)
