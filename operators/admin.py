"""Admin for operators: prefixes as a comma list, credentials masked and kept unless replaced."""

from urllib.parse import urlsplit

from django import forms
from django.contrib import admin, messages
from django.core.validators import MaxLengthValidator
from django.db import transaction
from django.urls import reverse
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from campaigns.models import Campaign
from operators.gateways.base import registered_names, sends_area_broadcasts, uses_base_url
from operators.models import AreaBroadcast, AreaBroadcastEvent, AreaBroadcastReach, BroadcastSettings, Operator
from operators.services import (
    PULL_ADAPTER,
    operator_record_change,
    operator_settings,
    operators_add_known_prefixes,
)
from smsblast.admin_utils import AuditedChangeMixin, AuditedDeleteMixin, ReadOnlyAdmin, ShownRowsInline
from smsblast.audit import audit_record
from smsblast.models import Role
from smsblast.phones import COUNTRY_CODE
from smsblast.services import subscriber_routing_lock, subscribers_reroute


def mask_secret(value: str) -> str:
    """Return a masked form of a credential that shows only its last four characters."""
    if not value:
        return _("(not set)")
    return "•" * 8 + value[-4:] if len(value) > 8 else "•" * 8


def adapter_choices() -> list[tuple[str, str]]:
    """Return the names a send can use: every registered adapter, and pull mode (nothing is pushed)."""
    return [(name, name) for name in registered_names()] + [
        (PULL_ADAPTER, _("%(name)s (the operator fetches)") % {"name": PULL_ADAPTER})
    ]


# Longest API key or signing secret taken: what an operator hands over is far shorter, and a longer paste is a mistake
# (a whole file, a key with its certificate) that would only show when every request is refused.
CREDENTIAL_MAX_LENGTH = 200


class OperatorAdminForm(forms.ModelForm):
    # A name no adapter answers to would only show when batches fail mid-run; refuse it when saved.
    adapter = forms.ChoiceField(
        label=capfirst(gettext_lazy("adapter")), choices=adapter_choices, initial="http_batch_v1"
    )
    prefixes = forms.CharField(
        label=capfirst(gettext_lazy("prefixes")),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=gettext_lazy("E.164 digit prefixes routed to this operator, separated by commas, e.g. 62811, 62812."),
    )
    base_url = forms.URLField(label=capfirst(gettext_lazy("base URL")), required=False, assume_scheme="https")
    # Credentials are never sent back to the browser; a blank field keeps the stored value.
    api_key = forms.CharField(
        label=capfirst(gettext_lazy("API key")),
        required=False,
        # A validator, not max_length: its maxlength attribute would have the browser cut a longer paste unseen.
        validators=[MaxLengthValidator(CREDENTIAL_MAX_LENGTH)],
        widget=forms.PasswordInput(render_value=False),
        help_text=gettext_lazy("Leave blank to keep the current key."),
    )
    signing_secret = forms.CharField(
        label=capfirst(gettext_lazy("signing secret")),
        required=False,
        # A validator, not max_length: its maxlength attribute would have the browser cut a longer paste unseen.
        validators=[MaxLengthValidator(CREDENTIAL_MAX_LENGTH)],
        widget=forms.PasswordInput(render_value=False),
        help_text=gettext_lazy("Leave blank to keep the current secret."),
    )

    class Meta:
        model = Operator
        fields = [
            "name",
            "slug",
            "active",
            "is_test_endpoint",
            "user",
            "prefixes",
            "adapter",
            "base_url",
            "api_key",
            "signing_secret",
            "segments_per_second",
            "batch_size",
            "tariff_per_segment",
            "vertex_limit",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["prefixes"] = ", ".join(self.instance.prefixes or [])

    def clean_prefixes(self) -> list[str]:
        raw = self.cleaned_data.get("prefixes") or ""
        prefixes = []
        for item in raw.replace("\n", ",").split(","):
            item = item.strip().lstrip("+")
            if not item:
                continue
            if not (item.isascii() and item.isdigit()) or not 3 <= len(item) <= 15:
                raise forms.ValidationError(_("%(prefix)s is not a prefix of E.164 digits.") % {"prefix": repr(item)})
            if not item.startswith(str(COUNTRY_CODE)):
                # Subscribers are Indonesian numbers stored as +62…: a prefix written as dialled at home (0812) or
                # without its trunk zero (812) would match none of them, leaving its numbers without an operator.
                national = item.removeprefix("0")
                example = f"{COUNTRY_CODE}{national}" if national.startswith("8") else f"{COUNTRY_CODE}811"
                raise forms.ValidationError(
                    _(
                        "%(prefix)s does not start with the country code 62, so it would route no number; write it as "
                        "E.164 digits, e.g. %(example)s."
                    )
                    % {"prefix": repr(item), "example": example}
                )
            if item not in prefixes:
                prefixes.append(item)
        # A prefix routes to one operator; held by two, its numbers would go to whichever was read last. The admin
        # validates and saves in one transaction: the routing lock taken here holds until the save commits, so of
        # two admins giving one prefix away at once, the second reads the first's and is told.
        if transaction.get_connection().in_atomic_block:
            subscriber_routing_lock()
        others = Operator.objects.exclude(pk=self.instance.pk).values_list("name", "prefixes")
        taken = [f"{prefix} ({name})" for name, listed in others for prefix in listed or [] if prefix in prefixes]
        if taken:
            raise forms.ValidationError(
                _("Already routed to another operator: %(prefixes)s.") % {"prefixes": ", ".join(sorted(taken))}
            )
        return sorted(prefixes)

    def clean_slug(self) -> str:
        slug = self.cleaned_data.get("slug")
        old = self.instance.slug if self.instance.pk else None
        if old and slug != old:
            # An area broadcast names its operators by slug: renamed, this one would be left out of it unseen.
            naming = sorted(
                title
                for title, slugs in Campaign.objects.exclude(status__in=Campaign.FINAL_STATUSES)
                .exclude(operator_slugs=[])
                .values_list("title", "operator_slugs")
                if old in (slugs or [])
            )
            if naming:
                raise forms.ValidationError(
                    _(
                        "Campaigns not over name this operator by its slug %(slug)s: %(titles)s. Renamed, it would be "
                        "left out of them; change the slug once they are over."
                    )
                    % {"slug": old, "titles": ", ".join(naming)}
                )
        return slug

    def clean_user(self):
        user = self.cleaned_data.get("user")
        # The operator API takes only operator-role tokens: linked to anyone else, the operator's reports, pulls and
        # STOP messages would all be refused (and its own user's token, no longer linked, with them).
        if user is not None and user.role != Role.OPERATOR:
            raise forms.ValidationError(
                _(
                    "%(user)s is not an operator's user (role: %(role)s): its token could not report for this "
                    "operator. Link the user that manage.py create_user NAME --role operator made."
                )
                % {"user": user.username, "role": Role(user.role).label if user.role else _("none")}
            )
        return user

    def clean_base_url(self) -> str:
        # Batches go to "{base URL}/v1/batches" (area broadcasts below it too): an address that cannot take that
        # suffix would only show when every batch fails for good, mid-run.
        base_url = self.cleaned_data.get("base_url") or ""
        if not base_url:
            return base_url
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise forms.ValidationError(_("Give an http:// or https:// address: batches are posted to it over HTTP."))
        if parts.username is not None or parts.password is not None:
            raise forms.ValidationError(
                _(
                    "Give the address without a user name or password: the API key and the signing secret go in "
                    "their own fields, which are kept sealed and never shown."
                )
            )
        if parts.query or parts.fragment or base_url.endswith(("?", "#")):
            raise forms.ValidationError(
                _("Give the address without ?… or #…: batches are posted to it followed by /v1/batches.")
            )
        if parts.path.rstrip("/").endswith("/v1/batches"):
            raise forms.ValidationError(
                _("Give the address before /v1/batches: batches are posted to it followed by /v1/batches.")
            )
        return base_url

    def clean(self) -> dict:
        cleaned = super().clean()
        adapter = cleaned.get("adapter")
        if adapter and uses_base_url(adapter) and "base_url" in cleaned and not cleaned["base_url"]:
            self.add_error(
                "base_url",
                _("The adapter %(adapter)s sends to the operator: give its base URL (the address before /v1/batches).")
                % {"adapter": adapter},
            )
        if adapter and self.instance.pk and adapter != self.instance.adapter and not sends_area_broadcasts(adapter):
            # Its area broadcasts under way are sent, retried and cancelled through its adapter: switched, an alert
            # the operator holds could no longer be cancelled.
            live = (
                AreaBroadcast.objects.filter(operator=self.instance)
                .exclude(state__in=AreaBroadcast.FINAL_STATES)
                .count()
            )
            if live:
                self.add_error(
                    "adapter",
                    _(
                        "This operator has area broadcasts not over yet (%(count)s): with %(adapter)s they could not "
                        "be sent, retried or cancelled. Switch once they are over."
                    )
                    % {"count": live, "adapter": adapter},
                )
        return cleaned

    def clean_api_key(self) -> str:
        return _credential_checked(self.cleaned_data.get("api_key")) or self.instance.api_key

    def clean_signing_secret(self) -> str:
        return _credential_checked(self.cleaned_data.get("signing_secret")) or self.instance.signing_secret


# What an operator's key or secret is made of: visible ASCII, as a Bearer token is. A zero-width space or curly quote
# copied with it cannot go in a request header (every batch would fail, the key in the error), nor be what the
# operator signs with.
_CREDENTIAL_CHARACTERS = frozenset(chr(code) for code in range(0x21, 0x7F))


def _credential_checked(value: str | None) -> str | None:
    """Return `value` if it is made of visible ASCII only; else refuse it, naming the character but never the value."""
    for character in value or "":
        if character not in _CREDENTIAL_CHARACTERS:
            raise forms.ValidationError(
                _("It holds %(character)s, which a credential cannot: type or paste it again without it.")
                % {"character": f"U+{ord(character):04X}"}
            )
    return value


@admin.register(Operator)
class OperatorAdmin(AuditedDeleteMixin, admin.ModelAdmin):
    form = OperatorAdminForm
    list_display = [
        "name",
        "slug",
        "adapter",
        "active",
        "is_test_endpoint",
        "segments_per_second",
        "batch_size",
        "tariff_per_segment",
        "prefix_count",
        "masked_api_key",
    ]
    list_filter = ["active", "adapter", "is_test_endpoint"]
    search_fields = ["name", "slug", "base_url"]
    actions = ["add_known_prefixes"]
    prepopulated_fields = {"slug": ["name"]}
    raw_id_fields = ["user"]
    readonly_fields = ["masked_api_key", "masked_signing_secret", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "active", "is_test_endpoint", "user"]}),
        (gettext_lazy("Routing"), {"fields": ["prefixes"]}),
        (
            gettext_lazy("Endpoint"),
            {
                "fields": [
                    "adapter",
                    "base_url",
                    "masked_api_key",
                    "api_key",
                    "masked_signing_secret",
                    "signing_secret",
                ]
            },
        ),
        (
            gettext_lazy("Limits and tariff"),
            {"fields": ["segments_per_second", "batch_size", "tariff_per_segment", "vertex_limit"]},
        ),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            subscriber_routing_lock()
            # What the save replaces, read under the row's lock: another admin's save committed meanwhile is what
            # this one's event starts from and its re-route undoes, not the row as this form was opened on.
            stored = Operator.objects.select_for_update(no_key=True).filter(pk=obj.pk).first() if obj.pk else None
            before = operator_settings(stored) if stored else None
            super().save_model(request, obj, form, change)
            # Runs send through each subscriber's operator, so numbers under a changed prefix are routed again.
            subscribers_reroute(prefixes=set((before or {}).get("prefixes") or []) ^ set(obj.prefixes or []))
            # Endpoint, credentials, limits, tariff, prefixes and the active flag are audited (invariant 6).
            operator_record_change(operator=obj, before=before, actor=request.user)

    def audit_delete(self, obj, actor) -> None:
        _audit_operator_delete(obj, actor)

    def delete_model(self, request, obj):
        prefixes = list(obj.prefixes or [])
        with transaction.atomic():
            # Before the deletion nulls its subscribers' operator: an import chunk waiting behind those rows
            # while holding the routing lock would otherwise deadlock with the re-route.
            subscriber_routing_lock()
            super().delete_model(request, obj)
            # Its subscribers were left without an operator: route them by the table without its prefixes.
            subscribers_reroute(prefixes=prefixes)

    def delete_queryset(self, request, queryset):
        prefixes = [prefix for listed in queryset.values_list("prefixes", flat=True) for prefix in listed or []]
        with transaction.atomic():
            subscriber_routing_lock()
            super().delete_queryset(request, queryset)
            subscribers_reroute(prefixes=prefixes)

    @admin.action(
        description=gettext_lazy("Add the prefixes phonenumbers knows for the selected operators"),
        permissions=["change"],
    )
    def add_known_prefixes(self, request, queryset):
        added = operators_add_known_prefixes(operators=queryset, actor=request.user)
        for operator, prefixes in added.items():
            if prefixes:
                message = _("%(operator)s: added %(prefixes)s.") % {
                    "operator": operator.name,
                    "prefixes": ", ".join(prefixes),
                }
                self.message_user(request, message, messages.SUCCESS)
            else:
                message = _(
                    "%(operator)s: nothing added. phonenumbers knows prefixes only for Telkomsel, Indosat, XL and "
                    "Smartfren, by their name or slug, and none that another operator routes already."
                ) % {"operator": operator.name}
                self.message_user(request, message, messages.WARNING)

    @admin.display(description=gettext_lazy("prefixes"))
    def prefix_count(self, operator: Operator) -> int:
        return len(operator.prefixes or [])

    @admin.display(description=gettext_lazy("API key"))
    def masked_api_key(self, operator: Operator) -> str:
        return mask_secret(operator.api_key)

    @admin.display(description=gettext_lazy("signing secret"))
    def masked_signing_secret(self, operator: Operator) -> str:
        return mask_secret(operator.signing_secret)


def _audit_operator_delete(operator: Operator, actor) -> None:
    state = "active" if operator.active else "inactive"
    details = {"name": operator.name, "slug": operator.slug, "prefixes": operator.prefixes}
    audit_record(
        actor=actor, action="operator.delete", obj=operator, from_state=state, to_state="deleted", details=details
    )


@admin.register(BroadcastSettings)
class BroadcastSettingsAdmin(AuditedChangeMixin, admin.ModelAdmin):
    list_display = ["__str__", "phone_ownership_rate", "max_import_segments"]
    # Audience estimates of area broadcasts and the length of imported alerts follow them (invariant 6).
    audit_action = "broadcast_settings"
    audited_fields = ("phone_ownership_rate", "max_import_segments")

    def has_add_permission(self, request) -> bool:
        # A single row, created on first use.
        return not BroadcastSettings.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AreaBroadcastEventInline(ShownRowsInline):
    """The latest events: one retried for days logs two an attempt; the event list filtered by the broadcast has all."""

    model = AreaBroadcastEvent
    fields = ["at", "state", "details"]
    ordering = ["-at", "-id"]
    shown = 20
    shown_note = gettext_lazy("The latest %(shown)s of %(total)s events are shown.")
    every_row_label = gettext_lazy("All events of this broadcast")

    def every_row_url(self, parent) -> str:
        return f"{reverse('admin:operators_areabroadcastevent_changelist')}?broadcast__id__exact={parent.pk}"


@admin.register(AreaBroadcast)
class AreaBroadcastAdmin(ReadOnlyAdmin):
    list_display = ["id", "run", "operator", "state", "attempts", "handsets_reached", "acknowledged_at", "finished_at"]
    list_filter = ["state", "operator"]
    search_fields = ["id", "operator_ref", "run__campaign__title"]
    list_select_related = ["run", "operator"]
    raw_id_fields = ["run", "operator"]
    inlines = [AreaBroadcastEventInline]


@admin.register(AreaBroadcastEvent)
class AreaBroadcastEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "broadcast", "state", "details"]
    list_filter = ["state"]
    list_select_related = ["broadcast"]
    ordering = ["-at", "-id"]
    raw_id_fields = ["broadcast"]
    show_full_result_count = False


@admin.register(AreaBroadcastReach)
class AreaBroadcastReachAdmin(ReadOnlyAdmin):
    list_display = ["broadcast", "handsets_reached", "at", "received_at"]
    search_fields = ["broadcast__id"]
    raw_id_fields = ["broadcast"]
