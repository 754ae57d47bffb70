"""Admin for users and roles, API tokens, areas, subscribers, imports, notifications and the read-only audit trail."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Max
from django.db.models.functions import Lower
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.timezone import localtime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from smsblast.admin_utils import (
    AuditedChangeMixin,
    AuditedDeleteMixin,
    ReadOnlyAdmin,
    ShownRowsInline,
)
from smsblast.audit import audit_record
from smsblast.authentication import api_token_create, api_token_revoke
from smsblast.errors import ServiceConflict
from smsblast.forms import AdminLoginForm
from smsblast.models import (
    ApiToken,
    Area,
    AuditEvent,
    Notification,
    Role,
    Subscriber,
    SubscriberImport,
    SubscriberImportRejection,
    TwoFactorDevice,
    User,
)
from smsblast.roles import user_access, user_record_access_change, user_record_password_set
from smsblast.services import AREA_AUDITED_FIELDS, area_boundary_digest
from smsblast.two_factor import two_factor_reset

# Password guessing on the admin log-in is throttled like on the log-in page.
admin.site.login_form = AdminLoginForm


@admin.register(User)
class UserAdmin(AuditedDeleteMixin, DjangoUserAdmin):
    list_display = ["username", "email", "role_name", "jurisdiction", "is_active", "last_login", "date_joined"]
    list_filter = ["groups", "is_active", "is_superuser"]
    search_fields = ["username", "email", "first_name", "last_name"]
    # An officer or approver sees and targets only campaigns within this area (empty: all of Indonesia).
    fieldsets = [*DjangoUserAdmin.fieldsets, (gettext_lazy("Jurisdiction"), {"fields": ["jurisdiction"]})]
    add_fieldsets = [*DjangoUserAdmin.add_fieldsets, (gettext_lazy("Jurisdiction"), {"fields": ["jurisdiction"]})]
    autocomplete_fields = ["jurisdiction"]
    readonly_fields = ["two_factor"]
    actions = ["reset_two_factor", "issue_api_token"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        # Whether an authenticator app is set up, never its secret.
        return [*fieldsets, (gettext_lazy("Second factor"), {"fields": ["two_factor"]})]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups").select_related("jurisdiction")

    @admin.display(description=gettext_lazy("authenticator app"))
    def two_factor(self, user: User) -> str:
        device = TwoFactorDevice.objects.filter(user=user).only("confirmed_at").first()
        if device is None:
            return _("not set up")
        return _("set up on %(date)s") % {"date": date_format(localtime(device.confirmed_at), "DATETIME_FORMAT")}

    @admin.action(
        description=gettext_lazy("Reset the second factor (the user sets up an authenticator app again)"),
        permissions=["change"],
    )
    def reset_two_factor(self, request, queryset):
        count = sum(two_factor_reset(user=user, actor=request.user) for user in queryset)
        self.message_user(
            request,
            ngettext(
                "Reset the second factor of %(count)d user; they set it up again at their next log-in.",
                "Reset the second factor of %(count)d users; they set it up again at their next log-in.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )

    @admin.action(
        description=gettext_lazy("Issue a new API token (shown once; older tokens stay valid until revoked)"),
        permissions=["change"],
    )
    def issue_api_token(self, request, queryset):
        inactive = sorted(user.username for user in queryset if not user.is_active)
        if inactive:
            # A token of an inactive user is refused at every request: issuing one would only mislead.
            self.message_user(
                request,
                _("No token issued: %(users)s cannot log in (inactive). Activate the user first.")
                % {"users": ", ".join(inactive)},
                messages.ERROR,
            )
            return None
        with transaction.atomic():
            issued = [(user, api_token_create(user=user, name="admin", actor=request.user)) for user in queryset]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("New API tokens"),
            "issued": issued,
        }
        response = TemplateResponse(request, "admin/smsblast/user/api_tokens_issued.html", context)
        # The keys are on this page only: neither the browser nor a proxy keeps a copy.
        response["Cache-Control"] = "no-store"
        return response

    def save_model(self, request, obj, form, change):
        # Read before the form's flags are saved; groups and permissions follow in save_related. The row stays locked
        # until the admin's transaction ends, so of two admins saving at once the second records what the first saved.
        if change:
            User.objects.select_for_update(no_key=True).filter(pk=obj.pk).first()
        form.access_before = user_access(obj) if change else {}
        if change:
            # Where the user's notifications go, as stored before this save (obj holds the form's address).
            form.access_before["email"] = User.objects.filter(pk=obj.pk).values_list("email", flat=True).first()
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # A role, group, flag or permission given or taken in the admin is audited (invariant 6), in its transaction.
        action = "user.access" if change else "user.create"
        user_record_access_change(
            user=form.instance, before=getattr(form, "access_before", {}), actor=request.user, action=action
        )

    def user_change_password(self, request, id, form_url=""):
        # A password set or password log-in disabled here is audited with its change (invariant 6), never the password.
        with transaction.atomic():
            user = self.get_object(request, unquote(id))
            before = user.password if user is not None else None
            response = super().user_change_password(request, id, form_url)
            if user is not None and request.method == "POST":
                user.refresh_from_db(fields=["password"])
                if user.password != before:
                    user_record_password_set(user=user, actor=request.user)
        return response

    def audit_delete(self, obj, actor) -> None:
        _audit_user_delete(obj, actor)

    @admin.display(description=gettext_lazy("role"))
    def role_name(self, user: User) -> str:
        return Role(user.role).label if user.role else "-"


def _audit_user_delete(user: User, actor) -> None:
    details = {"username": user.username}
    role = user.role or ""
    audit_record(actor=actor, action="user.delete", obj=user, from_state=role, to_state="deleted", details=details)


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(AuditedChangeMixin, DjangoGroupAdmin):
    """Roles are groups by name: renaming or deleting one changes what each of its members may do (invariant 6)."""

    audit_action = "group"
    audited_fields = ("name",)  # and its permissions (audit_values)

    def audit_state(self, obj) -> str:
        return obj.name if obj.name in Role.values else ""

    def audit_values(self, obj) -> dict:
        # Permissions as "app.codename", as a user's own are audited, whatever language the page is in.
        permissions = obj.permissions.values_list("content_type__app_label", "codename")
        return {**super().audit_values(obj), "permissions": sorted(f"{app}.{name}" for app, name in permissions)}

    def audit_delete(self, obj, actor) -> None:
        members = sorted(obj.user_set.values_list("username", flat=True))
        audit_record(
            actor=actor,
            action="group.delete",
            obj=obj,
            from_state=self.audit_state(obj),
            to_state="deleted",
            details={**self.audit_values(obj), "members": members},
        )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued by `manage.py create_user` or the Users action, shown once; here they are revoked."""

    list_display = ["prefix", "user", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["user__username", "prefix", "name"]
    list_select_related = ["user"]
    readonly_fields = ["user", "prefix", "name", "created_at", "last_used_at", "revoked_at"]
    exclude = ["key_hash"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # Deleting a token in use would end it with no api_token.revoke event (invariant 6): revoke it first. This
        # also holds for a user deleted with its tokens.
        return obj is not None and obj.revoked_at is not None and super().has_delete_permission(request, obj)

    @admin.action(description=gettext_lazy("Revoke selected tokens"))
    def revoke(self, request, queryset):
        count = sum(api_token_revoke(token=token, actor=request.user) for token in queryset.select_related("user"))
        self.message_user(request, _("Revoked %(count)s token(s).") % {"count": count}, messages.SUCCESS)


@admin.register(Area)
class AreaAdmin(AuditedChangeMixin, admin.ModelAdmin):
    list_display = ["code", "name", "level", "parent", "population"]
    list_filter = ["level"]
    search_fields = ["code", "name", "search_name"]
    raw_id_fields = ["parent"]
    list_select_related = ["parent"]
    readonly_fields = ["search_name"]
    # Targets, jurisdictions, time zones, audience estimates and polygon checks read areas (invariant 6).
    audit_action = "area"
    audited_fields = AREA_AUDITED_FIELDS

    def save_model(self, request, obj, form, change):
        from smsblast.text import search_key

        obj.search_name = search_key(obj.name)
        super().save_model(request, obj, form, change)

    def audit_values(self, obj) -> dict:
        # A boundary may run to megabytes: its from and to are recorded by their digest.
        values = super().audit_values(obj)
        values["boundary"] = area_boundary_digest(values["boundary"])
        return values


class OptedOutFilter(admin.SimpleListFilter):
    title = gettext_lazy("opted out")
    parameter_name = "opted_out"

    def lookups(self, request, model_admin):
        return [("yes", _("Opted out")), ("no", _("Receiving"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(opted_out_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(opted_out_at__isnull=True)
        return queryset


class LanguageFilter(admin.SimpleListFilter):
    """Filter subscribers by language, offering those imports store; reading the distinct ones would scan them all.

    Languages are matched regardless of case, as a campaign's audience matches them: "Jawa" is "jawa".
    """

    title = gettext_lazy("language")
    parameter_name = "language"

    def value(self):
        value = super().value()
        return value.lower() if value else value

    def lookups(self, request, model_admin):
        languages = {"id": _("Indonesian (id)"), "en": _("English (en)")}
        if self.value() and self.value() not in languages:
            languages[self.value()] = self.value()
        return list(languages.items())

    def queryset(self, request, queryset):
        if self.value():
            return queryset.alias(language_lower=Lower("language")).filter(language_lower=self.value())
        return queryset


class SubscriberAdminForm(forms.ModelForm):
    class Meta:
        model = Subscriber
        fields = ["msisdn", "area", "operator", "name", "language", "latitude", "longitude"]

    def clean_msisdn(self) -> str:
        """Store the number in E.164 as imports and opt-outs do, so it is sent to and found once."""
        from smsblast.phones import normalize
        from smsblast.templatetags.ui import import_reject_label

        raw = self.cleaned_data.get("msisdn") or ""
        normalized = normalize(raw)
        if not normalized.ok:
            raise forms.ValidationError(
                _("%(number)s is not an Indonesian mobile number (%(reason)s).")
                % {"number": repr(raw), "reason": import_reject_label(normalized.reason)}
            )
        if Subscriber.objects.filter(msisdn=normalized.e164).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError(_("%(number)s is already a subscriber.") % {"number": normalized.e164})
        if self.instance.pk and self.instance.opted_out_at and normalized.e164 != self.instance.msisdn:
            # Renamed, the opted-out number would be gone and a later import of it would make it reachable again.
            raise forms.ValidationError(
                _("%(number)s opted out and is kept as it is; add the other number as a new subscriber.")
                % {"number": self.instance.msisdn}
            )
        return normalized.e164

    def clean(self) -> dict:
        """Route a number whose operator is left empty by prefix, as imports and opt-outs do, so runs reach it."""
        from operators.models import Operator
        from smsblast.phones import PrefixTable
        from smsblast.selectors import operators_by_prefix

        cleaned = super().clean()
        if cleaned.get("msisdn") and not cleaned.get("operator"):
            operator_id = PrefixTable(operators_by_prefix()).operator_for(cleaned["msisdn"])
            cleaned["operator"] = Operator.objects.filter(pk=operator_id).first() if operator_id else None
        return cleaned


@admin.register(Subscriber)
class SubscriberAdmin(AuditedChangeMixin, admin.ModelAdmin):
    form = SubscriberAdminForm
    list_display = ["msisdn", "name", "area", "operator", "language", "opted_out_at", "updated_at"]
    list_filter = [OptedOutFilter, "operator", LanguageFilter]
    search_fields = ["msisdn", "name", "area__code"]
    raw_id_fields = ["area", "operator"]
    list_select_related = ["area", "operator"]
    # Opting out and back in goes through the actions, which audit each change; the form cannot undo a STOP.
    readonly_fields = ["opted_out_at", "opted_in_at", "created_at", "updated_at"]
    # Counting a few million rows on every page load is slow; the paginator shows "more" instead.
    show_full_result_count = False
    # Adds an "Import CSV" button leading to import_view.
    change_list_template = "admin/smsblast/subscriber/change_list.html"
    actions = ["opt_out", "opt_in"]
    # What decides whether and where a run sends to the number (the name is kept out of the permanent trail).
    audit_action = "subscriber"
    audited_fields = ("msisdn", "area_id", "operator_id", "language", "latitude", "longitude")

    def audit_state(self, obj) -> str:
        return "opted_out" if obj.opted_out_at else "subscribed"

    def get_search_results(self, request, queryset, search_term):
        """Find a number typed in any usual form ("0812-3456-7890", "0812 345"), as the subscribers page does.

        Numbers are stored in E.164, so the national form matches none of them word by word; a search of digits
        and separators alone looks for the number's E.164 digits instead.
        """
        from smsblast.importer import area_code_of
        from smsblast.phones import SEPARATOR_CHARACTERS
        from smsblast.selectors import number_search_digits, number_search_q

        term = search_term.strip()
        area_code = "." in term and area_code_of(term) is not None  # "35.05.01" is searched among area codes
        if (
            term
            and not area_code
            and all(character in SEPARATOR_CHARACTERS + "+" or character.isdigit() for character in term)
        ):
            forms = number_search_digits(term)
            if all(digits.isascii() and len(digits) >= 3 for digits in forms):
                return queryset.filter(number_search_q(forms)), False
        return super().get_search_results(request, queryset, search_term)

    def has_delete_permission(self, request, obj=None) -> bool:
        # An opted-out number is kept: deleted, a later import of it would make it reachable again.
        if obj is not None and obj.opted_out_at is not None:
            return False
        return super().has_delete_permission(request, obj)

    def audit_delete(self, obj, actor) -> None:
        _audit_subscriber_delete(obj, actor)

    def deletable(self, queryset):
        # The bulk action already refuses a selection holding an opted-out number (has_delete_permission).
        return queryset.filter(opted_out_at__isnull=True)

    def get_urls(self):
        upload = path("import/", self.admin_site.admin_view(self.import_view), name="smsblast_subscriber_import")
        return [upload, *super().get_urls()]

    def import_view(self, request):
        """Upload a CSV and start the same background import job as the API."""
        from smsblast.errors import ServiceInvalid
        from smsblast.services import subscriber_import_create
        from smsblast.views import _upload_refusal

        if not self.has_add_permission(request):
            raise PermissionDenied
        form = SubscriberUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = subscriber_import_create(uploaded_file=form.cleaned_data["file"], user=request.user)
            except ServiceInvalid as exc:
                form.add_error("file", _upload_refusal(exc))
            else:
                message = _("Import #%(number)s started; it runs in the background.") % {"number": job.pk}
                self.message_user(request, message, messages.SUCCESS)
                return redirect("admin:smsblast_subscriberimport_change", job.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "title": _("Import subscribers from CSV"),
        }
        return TemplateResponse(request, "admin/smsblast/subscriber/import.html", context)

    @admin.action(description=gettext_lazy("Opt the selected numbers out"))
    def opt_out(self, request, queryset):
        from smsblast.services import subscriber_opt_out

        changed = sum(
            subscriber_opt_out(msisdn=msisdn, actor=request.user, source="admin")[1]
            for msisdn in queryset.values_list("msisdn", flat=True)
        )
        self.message_user(request, _("Opted out %(count)s number(s).") % {"count": changed}, messages.SUCCESS)

    @admin.action(description=gettext_lazy("Opt the selected numbers back in"))
    def opt_in(self, request, queryset):
        from smsblast.services import subscriber_opt_in

        changed, refused = 0, []
        for msisdn in queryset.values_list("msisdn", flat=True):
            try:
                changed += subscriber_opt_in(msisdn=msisdn, actor=request.user, source="admin")[1]
            except ServiceConflict:
                refused.append(msisdn)
        self.message_user(request, _("Opted in %(count)s number(s).") % {"count": changed}, messages.SUCCESS)
        if refused:
            self.message_user(
                request,
                _(
                    "Not opted in, because they opted out by SMS and only their own START or REG brings them back: "
                    "%(numbers)s."
                )
                % {"numbers": f"{', '.join(refused[:20])}{' …' if len(refused) > 20 else ''}"},
                messages.WARNING,
            )


def _audit_subscriber_delete(subscriber: Subscriber, actor) -> None:
    audit_record(
        actor=actor,
        action="subscriber.delete",
        obj=subscriber,
        from_state="opted_out" if subscriber.opted_out_at else "subscribed",
        to_state="deleted",
        details={"msisdn": subscriber.msisdn, "source": "admin"},
    )


class SubscriberUploadForm(forms.Form):
    file = forms.FileField(
        label=gettext_lazy("CSV file"),
        help_text=gettext_lazy(
            "UTF-8, comma or semicolon separated, with a number column (msisdn, nomor, no_hp, hp or phone)."
        ),
    )


# The distinct values of a column, or the months and days of a date hierarchy, are read over every row: millions
# of audit events on each visit to the list. Its filters offer the values of the latest events instead (any other
# value still filters, from a link or the address), and its dates are ranges over the indexed time.
RECENT_AUDIT_EVENTS = 10_000


class RecentAuditValuesFilter(admin.SimpleListFilter):
    """Filter the audit trail on one column, offering the values found among its latest RECENT_AUDIT_EVENTS events."""

    field = ""

    def lookups(self, request, model_admin):
        newest = AuditEvent.objects.aggregate(newest=Max("id"))["newest"] or 0
        recent = AuditEvent.objects.filter(id__gt=newest - RECENT_AUDIT_EVENTS)
        values = set(recent.order_by().values_list(self.field, flat=True).distinct())
        if self.value():
            values.add(self.value())
        return [(value, value) for value in sorted(values)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.field: self.value()})
        return queryset


class AuditActionFilter(RecentAuditValuesFilter):
    title = gettext_lazy("action")
    parameter_name = "action"
    field = "action"


class AuditObjectTypeFilter(RecentAuditValuesFilter):
    title = gettext_lazy("object type")
    parameter_name = "object_type"
    field = "object_type"


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """The audit trail is append-only (invariant 6): it can be searched, never added, changed or deleted."""

    list_display = ["at", "actor", "action", "action_label", "object_type", "object_id", "from_state", "to_state"]
    list_filter = [AuditActionFilter, AuditObjectTypeFilter, ("at", admin.DateFieldListFilter)]
    search_fields = ["object_id", "action", "actor__username"]
    list_select_related = ["actor"]
    readonly_fields = [
        "at",
        "actor",
        "action",
        "action_label",
        "object_type",
        "object_id",
        "from_state",
        "to_state",
        "details",
    ]
    show_full_result_count = False

    @admin.display(description=gettext_lazy("description"))
    def action_label(self, event: AuditEvent) -> str | None:
        # The words the pages use for an action; the recorded code stays in its own column, as the filter offers it.
        from smsblast.templatetags.ui import ACTION_LABELS

        label = ACTION_LABELS.get(event.action)
        return str(label) if label is not None else None


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """The email outbox: what each user was told, and whether the mail server took it (smsblast/notifications.py)."""

    list_display = ["created_at", "user", "kind", "subject", "status", "attempts", "sent_at"]
    list_filter = ["status", "kind", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["user__username", "user__email", "subject", "object_id"]
    list_select_related = ["user"]
    readonly_fields = [
        "created_at",
        "user",
        "kind",
        "object_id",
        "subject",
        "body",
        "status",
        "attempts",
        "error",
        "updated_at",
        "sent_at",
    ]
    show_full_result_count = False


class SubscriberImportRejectionInline(ShownRowsInline):
    """The first rejected and repeated rows of an import; its rejected.csv holds every one."""

    model = SubscriberImportRejection
    fields = ["line", "reason", "first_line", "raw"]
    shown = 50
    shown_note = gettext_lazy("The first %(shown)s of %(total)s rejected rows are shown.")
    every_row_label = gettext_lazy("Download every rejected row (CSV)")

    def rows_total(self, parent, rows) -> int:
        # Only the first rows are kept in the database; the import counts every one it rejected or found repeated.
        return max(parent.rejected + parent.duplicates, rows.count())

    def every_row_url(self, parent) -> str:
        return reverse("subscriber-import-rejected", args=[parent.pk])


@admin.register(SubscriberImport)
class SubscriberImportAdmin(AuditedDeleteMixin, admin.ModelAdmin):
    """Imports run from the API, the pages or `manage.py import_subscribers`; here they are only watched."""

    list_display = ["id", "original_name", "state", "uploaded_by", "rows_read", "created", "updated", "rejected"]
    list_filter = ["state"]
    search_fields = ["original_name", "uploaded_by__username"]
    list_select_related = ["uploaded_by"]
    inlines = [SubscriberImportRejectionInline]
    exclude = ["file_mtime_ns"]  # a count of nanoseconds, kept for a resume to tell whether the file changed

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def delete_model(self, request, obj):
        from smsblast.services import subscriber_import_files_drop_on_commit

        with transaction.atomic():
            super().delete_model(request, obj)
            subscriber_import_files_drop_on_commit(subscriber_import=obj)

    def delete_queryset(self, request, queryset):
        from smsblast.services import subscriber_import_files_drop_on_commit

        with transaction.atomic():
            deleted = list(self.deletable(queryset))
            super().delete_queryset(request, queryset)
            for job in deleted:
                subscriber_import_files_drop_on_commit(subscriber_import=job)

    def audit_delete(self, obj, actor) -> None:
        details = {"file": obj.original_name, "area_scope": obj.area_scope, "rows_read": obj.rows_read}
        audit_record(
            actor=actor,
            action="subscriber_import.delete",
            obj=obj,
            from_state=obj.state,
            to_state="deleted",
            details=details,
        )
