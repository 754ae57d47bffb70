"""Forms of the officer and approver pages; they validate input and hand clean values to the services."""

import re
from zoneinfo import ZoneInfo

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from campaigns.models import Mode, Priority, RepeatPolicy
from campaigns.scheduling import WEEKDAY_NAMES, ScheduleError, schedule_normalize
from campaigns.selectors import campaign_zone, target_zone
from campaigns.services import SENDER_MAX_LENGTH, SENDER_RE, SENDER_SHOWN_LENGTH, campaign_content_hash
from operators.broadcasts import MAX_WINDOW, MIN_WINDOW
from smsblast.models import Area
from smsblast.sms import EMPTY, TextError, analyze

WEEKDAY_LABELS = (_("Mon"), _("Tue"), _("Wed"), _("Thu"), _("Fri"), _("Sat"), _("Sun"))
# The schedule errors this form's fields can still reach, said in the user's language.
SCHEDULE_ERROR_MESSAGES = {
    "at": _("Give a date between the years 2000 and 9998."),
    "quiet_hours": _("Quiet hours must not start and end at the same time; change one of them or clear both."),
}
SCHEDULE_KINDS = (
    ("now", _("Once, as soon as approved")),
    ("once", _("Once, at a set time")),
    ("daily", _("Every day")),
    ("weekly", _("On chosen weekdays")),
)


class CampaignForm(forms.Form):
    """Text, sender, mode, target areas, priority and schedule of a campaign."""

    title = forms.CharField(label=_("Title"), max_length=200)
    text = forms.CharField(
        label=_("Message text"),
        widget=forms.Textarea(attrs={"rows": 6, "data-sms-input": "", "spellcheck": "true"}),
        strip=False,
    )
    sender = forms.CharField(
        label=_("Sender ID"),
        max_length=SENDER_MAX_LENGTH,
        # The compose page warns, as the officer types, once handsets would not show the whole ID.
        widget=forms.TextInput(attrs={"data-sender-shown": SENDER_SHOWN_LENGTH}),
        help_text=_(
            "Up to 16 letters, digits, spaces, dots or dashes, e.g. PEMKAB-BLITAR; handsets show the first 11."
        ),
    )
    mode = forms.ChoiceField(
        label=_("Delivery mode"),
        choices=((Mode.TARGETED, _("Targeted: registered subscribers")), (Mode.AREA_BROADCAST, _("Area broadcast"))),
        initial=Mode.TARGETED,
    )
    priority = forms.ChoiceField(
        label=_("Priority"),
        choices=(
            (Priority.NORMAL, _("Normal: waits out quiet hours")),
            (Priority.URGENT, _("Urgent: ignores quiet hours")),
        ),
        initial=Priority.NORMAL,
    )
    broadcast_starts = forms.DateTimeField(
        label=_("Broadcast from"),
        required=False,
        input_formats=["%Y-%m-%dT%H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    broadcast_ends = forms.DateTimeField(
        label=_("Broadcast until"),
        required=False,
        input_formats=["%Y-%m-%dT%H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    repeat_policy = forms.ChoiceField(
        label=_("Each handset receives it"),
        choices=(
            (RepeatPolicy.ONCE_PER_WINDOW, _("once in the whole window")),
            (RepeatPolicy.ONCE_PER_DAY, _("once on each day of the window")),
        ),
        initial=RepeatPolicy.ONCE_PER_WINDOW,
        required=False,
    )
    area_codes = forms.MultipleChoiceField(
        label=_("Coverage area"),
        widget=forms.MultipleHiddenInput,
        error_messages={"required": _("Choose at least one area.")},
    )

    schedule_kind = forms.ChoiceField(label=_("When"), choices=SCHEDULE_KINDS, initial="now", widget=forms.RadioSelect)
    schedule_at = forms.DateTimeField(
        label=_("Date and time"),
        required=False,
        input_formats=["%Y-%m-%dT%H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    schedule_time = forms.TimeField(label=_("Time"), required=False, widget=forms.TimeInput(attrs={"type": "time"}))
    schedule_weekdays = forms.MultipleChoiceField(
        label=_("Weekdays"),
        required=False,
        choices=[(str(i), label) for i, label in enumerate(WEEKDAY_LABELS)],
        widget=forms.CheckboxSelectMultiple,
    )
    schedule_until = forms.DateField(
        label=_("Until (inclusive)"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    quiet_start = forms.TimeField(
        label=_("Quiet hours from"), required=False, widget=forms.TimeInput(attrs={"type": "time"})
    )
    quiet_end = forms.TimeField(
        label=_("Quiet hours until"), required=False, widget=forms.TimeInput(attrs={"type": "time"})
    )
    # The content hash of the version an edit page was opened at: saving over a version changed since is refused.
    loaded_hash = forms.CharField(widget=forms.HiddenInput, required=False, max_length=64)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Weekday overrides of a daily schedule: Blora's 13:00 update goes out at 10:00 on Fridays.
        for index, label in enumerate(WEEKDAY_LABELS):
            self.fields[f"override_{index}"] = forms.TimeField(
                label=label, required=False, widget=forms.TimeInput(attrs={"type": "time"})
            )
        codes = self.data.getlist("area_codes") if hasattr(self.data, "getlist") else self.initial.get("area_codes", [])
        self.fields["area_codes"].choices = [(code, code) for code in codes]

    @property
    def override_fields(self):
        return [self[f"override_{index}"] for index in range(len(WEEKDAY_NAMES))]

    def clean_text(self) -> str:
        # A browser submits each line break of a text box as CR LF, while the box and its counter hold LF alone;
        # kept as submitted, every line break would cost a second septet the officer never saw counted.
        text = self.cleaned_data["text"].replace("\r\n", "\n")
        try:
            analyze(text)
        except TextError as error:
            raise forms.ValidationError(_text_error_message(error)) from None
        return text

    def clean_sender(self) -> str:
        sender = self.cleaned_data["sender"].strip()
        if not SENDER_RE.match(sender):
            raise forms.ValidationError(
                _("Use 1 to 16 letters, digits, spaces, dots or dashes, with at least one letter.")
            )
        return sender

    def clean_area_codes(self) -> list[str]:
        codes = list(dict.fromkeys(self.cleaned_data["area_codes"]))
        known = set(Area.objects.filter(code__in=codes).values_list("code", flat=True))
        unknown = [code for code in codes if code not in known]
        if unknown:
            raise forms.ValidationError(_("Unknown area code: %(codes)s.") % {"codes": ", ".join(unknown)})
        return codes

    def clean(self):
        cleaned = super().clean()
        self._clean_broadcast_window(cleaned)
        kind = cleaned.get("schedule_kind")
        if not kind:
            return cleaned
        raw: dict = {"kind": kind}
        # Every part of the schedule is checked, so that one save names all that is missing, not one at a time.
        errors_before = sum(len(messages) for messages in self.errors.values())
        if kind == "once":
            if not cleaned.get("schedule_at"):
                self.add_error("schedule_at", _("Give the date and time to send."))
            else:
                raw["at"] = cleaned["schedule_at"].strftime("%Y-%m-%dT%H:%M")
                # The time is meant in the area's zone; one already past would never run, so no one should approve it.
                zone = target_zone(sorted(cleaned.get("area_codes") or []))
                if raw["at"] <= timezone.now().astimezone(zone.tzinfo).strftime("%Y-%m-%dT%H:%M"):
                    message = _("This time has already passed in %(zone)s; choose a later one.")
                    self.add_error("schedule_at", message % {"zone": zone.label})
        if kind in ("daily", "weekly"):
            if not cleaned.get("schedule_time"):
                self.add_error("schedule_time", _("Give the time to send each day."))
            else:
                raw["time"] = cleaned["schedule_time"].strftime("%H:%M")
            if cleaned.get("schedule_until"):
                # The end date is meant in the area's zone; one already past would leave nothing to send.
                zone = target_zone(sorted(cleaned.get("area_codes") or []))
                if cleaned["schedule_until"] < timezone.now().astimezone(zone.tzinfo).date():
                    message = _("This date has already passed in %(zone)s; choose a later one or leave it empty.")
                    self.add_error("schedule_until", message % {"zone": zone.label})
                else:
                    raw["until"] = cleaned["schedule_until"].isoformat()
        if kind == "daily":
            overrides = {
                str(index): cleaned[f"override_{index}"].strftime("%H:%M")
                for index in range(7)
                if cleaned.get(f"override_{index}")
            }
            if overrides:
                raw["weekday_times"] = overrides
        if kind == "weekly":
            if not cleaned.get("schedule_weekdays"):
                self.add_error("schedule_weekdays", _("Choose at least one weekday."))
            else:
                raw["weekdays"] = [int(day) for day in cleaned["schedule_weekdays"]]
        start, end = cleaned.get("quiet_start"), cleaned.get("quiet_end")
        if bool(start) != bool(end):
            self.add_error("quiet_end", _("Give both the start and the end of the quiet hours, or neither."))
        if start and end:
            raw["quiet_hours"] = {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}
        if sum(len(messages) for messages in self.errors.values()) > errors_before:
            return cleaned
        try:
            cleaned["schedule"] = schedule_normalize(raw)
        except ScheduleError as error:
            field = {"at": "schedule_at", "time": "schedule_time", "weekdays": "schedule_weekdays"}.get(
                error.field, "quiet_end" if error.field == "quiet_hours" else "schedule_kind"
            )
            self.add_error(field, SCHEDULE_ERROR_MESSAGES.get(error.field, str(error)))
            return cleaned
        if cleaned.get("mode") == Mode.AREA_BROADCAST and cleaned["schedule"] != {"kind": "now"}:
            # Submit refuses it too: the broadcast goes out once, in its window, whatever schedule was approved.
            message = _("An area broadcast is sent in its window: send it once, as soon as approved, no quiet hours.")
            self.add_error("schedule_kind", message)
        return cleaned

    def _clean_broadcast_window(self, cleaned: dict) -> None:
        """Read the area-broadcast window as local time in the zone of the first area."""
        cleaned["starts_at"] = cleaned["ends_at"] = None
        if cleaned.get("mode") != Mode.AREA_BROADCAST:
            return
        # The codes are stored sorted, and the campaign is shown in the zone of the first stored one.
        area_zone = target_zone(sorted(cleaned.get("area_codes") or []))
        zone = ZoneInfo(area_zone.name)
        for field, target in (("broadcast_starts", "starts_at"), ("broadcast_ends", "ends_at")):
            value = cleaned.get(field)
            if value is None:
                if field not in self.errors:
                    self.add_error(field, _("An area broadcast needs the start and the end of its window."))
                continue
            # The browser sends a wall-clock time; it is meant in the area's zone, not the server's.
            cleaned[target] = timezone.localtime(value).replace(tzinfo=None).replace(tzinfo=zone)
        starts, ends = cleaned["starts_at"], cleaned["ends_at"]
        # The rules submit checks (operators.broadcasts.broadcast_errors), said here while the officer can fix them.
        if starts and starts <= timezone.now():
            message = _("This time has already passed in %(zone)s; the window must start later.")
            self.add_error("broadcast_starts", message % {"zone": area_zone.label})
        if starts and ends and ends <= starts:
            self.add_error("broadcast_ends", _("The window must end after it starts."))
        elif starts and ends and not MIN_WINDOW <= ends - starts <= MAX_WINDOW:
            self.add_error("broadcast_ends", _("The window must last at least 5 minutes and at most 24 hours."))

    def service_fields(self) -> dict:
        """Return the cleaned values under the names the campaign services take."""
        data = self.cleaned_data
        # Operators and the exercise flag limit only an area broadcast, and this form has no field for them (an edit
        # of one keeps them): a campaign made targeted drops them, as its submit would refuse them.
        targeted = {"operator_slugs": [], "exercise": False} if data["mode"] == Mode.TARGETED else {}
        return {
            **targeted,
            "title": data["title"],
            "text": data["text"],
            "sender": data["sender"],
            "mode": data["mode"],
            "priority": data["priority"],
            "area_codes": data["area_codes"],
            "schedule": data.get("schedule") or {},
            "starts_at": data.get("starts_at"),
            "ends_at": data.get("ends_at"),
            "repeat_policy": data.get("repeat_policy") or RepeatPolicy.ONCE_PER_WINDOW,
        }

    @classmethod
    def initial_from(cls, campaign) -> dict:
        """Return the form's initial values for an existing campaign."""
        schedule = campaign.schedule or {}
        initial = {
            "loaded_hash": campaign_content_hash(campaign),
            "title": campaign.title,
            "text": campaign.text,
            "sender": campaign.sender,
            "mode": campaign.mode,
            "priority": campaign.priority,
            "area_codes": list(campaign.area_codes or []),
            "schedule_kind": schedule.get("kind", "now"),
            "schedule_at": schedule.get("at"),
            "schedule_time": schedule.get("time"),
            "schedule_weekdays": [str(day) for day in schedule.get("weekdays", [])],
            "schedule_until": schedule.get("until"),
        }
        zone = ZoneInfo(campaign_zone(campaign).name)
        for field, value in (("broadcast_starts", campaign.starts_at), ("broadcast_ends", campaign.ends_at)):
            if value is not None:
                initial[field] = value.astimezone(zone).strftime("%Y-%m-%dT%H:%M")
        initial["repeat_policy"] = campaign.repeat_policy
        for day, value in (schedule.get("weekday_times") or {}).items():
            initial[f"override_{day}"] = value
        quiet = schedule.get("quiet_hours") or {}
        initial["quiet_start"], initial["quiet_end"] = quiet.get("start"), quiet.get("end")
        return initial


class ApproveForm(forms.Form):
    """The approver's yes, bound to the content hash of the version on screen, and ticked as meant.

    Approving lets the message go to everyone in the area: a deliberate tick, as for pausing or cancelling,
    keeps a stray tap on a phone from approving it.
    """

    content_hash = forms.CharField(widget=forms.HiddenInput, max_length=64)
    confirm = forms.BooleanField(label=_("Yes, approve this version for sending"), required=True)


class RejectForm(forms.Form):
    """The approver's no; the reason tells the officer what to change."""

    content_hash = forms.CharField(widget=forms.HiddenInput, max_length=64, required=False)
    reason = forms.CharField(
        label=_("Reason for rejection"),
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        help_text=_("Tell the officer what to change."),
    )

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError(_("Give a reason, so the officer knows what to change."))
        return reason


class ConfirmForm(forms.Form):
    """A deliberate tick before starting a schedule, pausing, resuming or cancelling."""

    confirm = forms.BooleanField(label=_("Yes, I am sure"), required=True)


def _text_error_message(error: TextError) -> str:
    # A text of zero-width characters alone is empty too, though it is not white space.
    if error.reason == EMPTY:
        return str(_("Write the message text."))
    return str(_("The text is too long: it needs more than 10 SMS parts. Shorten it."))


# The encoding an XML declaration names: pasted XML is already text, so it is sent on as UTF-8 and must say so.
_DECLARED_ENCODING = re.compile(r"""^(<\?xml[^>]*?\sencoding\s*=\s*)(["'])[^"']*\2""")


class CapImportForm(forms.Form):
    """A CAP alert (or its Cancel) to import: a file, or its XML pasted."""

    file = forms.FileField(
        label=_("CAP file"),
        required=False,
        help_text=_("A CAP 1.1 or 1.2 alert (.xml or .cap) as its issuer published it, at most 1 MB."),
    )
    document = forms.CharField(
        label=_("Or paste its XML"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "autocomplete": "off"}),
    )

    def clean(self):
        from campaigns.cap_import import MAX_DOCUMENT_BYTES

        cleaned = super().clean()
        upload, pasted = cleaned.get("file"), cleaned.get("document") or ""
        if upload is not None and pasted.strip():
            raise forms.ValidationError(_("Give either a file or pasted XML, not both."))
        if upload is None and not pasted.strip():
            raise forms.ValidationError(_("Choose a CAP file or paste its XML."))
        if upload is not None:
            raw = upload.read(MAX_DOCUMENT_BYTES + 1)
        else:
            # A blank line copied above the declaration would make the XML malformed; a declared Latin-1 or UTF-16
            # would have the parser misread the UTF-8 the text is sent as. The signature covers neither.
            raw = _DECLARED_ENCODING.sub(r"\1\2UTF-8\2", pasted.lstrip(), count=1).encode()
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise forms.ValidationError(
                _("The alert is larger than %(limit)d MB; no CAP alert is that large.") % {"limit": 1}
            )
        cleaned["raw"] = raw
        return cleaned
