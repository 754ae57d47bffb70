"""Admin building blocks shared by the apps for records that only the services write."""

import json

from django.contrib import admin
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import PROTECT
from django.db.models.deletion import get_candidate_relations_to_delete
from django.utils.formats import number_format
from django.utils.text import capfirst

from smsblast.audit import audit_record


class ReadOnlyAdmin(admin.ModelAdmin):
    """Let records be looked up, never added, changed or deleted by hand: services own their writes."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyTabularInline(admin.TabularInline):
    """Show a record's children under it, every listed field read-only, none added or deleted."""

    extra = 0
    can_delete = False
    max_num = 0

    def get_readonly_fields(self, request, obj=None):
        return self.fields


class ShownRowsInline(ReadOnlyTabularInline):
    """Show only the first `shown` children in the inline's order, saying how many there are and where all are.

    A record gains children without bound (a daily campaign's runs), so its page would grow with it. The formset
    filters its queryset by the parent and so cannot be given a sliced one: it slices its own. The rows are
    read-only and no form is posted for them, so the rows left out are never looked for.
    """

    shown = 20
    template = "admin/edit_inline/tabular_shown.html"
    # "%(shown)s" and "%(total)s" are filled in; shown only when some rows are left out.
    shown_note = ""
    every_row_label = ""

    def rows_total(self, parent, rows) -> int:
        """Return how many children `parent` has; `rows` are those the inline would list."""
        return rows.count()

    def every_row_url(self, parent) -> str:
        """Return the address of the full list of the children of `parent`."""
        raise NotImplementedError

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        inline = self

        class ShownFormSet(formset):
            def get_queryset(self):
                if not hasattr(self, "_shown_rows"):
                    rows = super().get_queryset()
                    self._shown_rows = rows[: inline.shown]
                    shown = len(self._shown_rows)
                    total = inline.rows_total(self.instance, rows) if shown == inline.shown else shown
                    self._shown_note = ""
                    if total > shown:
                        numbers = {"shown": number_format(shown), "total": number_format(total, force_grouping=True)}
                        self._shown_note = inline.shown_note % numbers
                return self._shown_rows

            @property
            def shown_note(self) -> str:
                self.get_queryset()
                return self._shown_note

            @property
            def every_row_url(self) -> str:
                return inline.every_row_url(self.instance)

        return ShownFormSet


class SummarisedDeleteMixin:
    """Confirm a deletion with the number of related rows of each kind, never a line for each of them.

    A record may hold rows without bound (an import's rejected rows, the subscribers homed in an area, an operator's
    batches and deliveries), and Django's confirmation lists, and first loads, every one. The page lists the records
    chosen and Django's count per kind of what goes with them; rows that forbid the deletion (a protecting foreign
    key) are counted in the database, per kind, and stop it as before.
    """

    def protected_counts(self, objs) -> list[str]:
        """Return "kind: count" for each kind of row whose protecting foreign key refers to one of `objs`."""
        counts = []
        for relation in get_candidate_relations_to_delete(self.model._meta):
            if relation.on_delete is not PROTECT:
                continue
            rows = relation.related_model._base_manager.filter(**{f"{relation.field.name}__in": objs})
            if total := rows.count():
                kind = capfirst(relation.related_model._meta.verbose_name_plural)
                counts.append(f"{kind}: {number_format(total, force_grouping=True)}")
        return counts

    def get_deleted_objects(self, objs, request):
        protected = self.protected_counts(objs)
        if protected:
            return [], {}, set(), protected
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        # The nested list holds each chosen record followed by the list of what goes with it.
        chosen = [entry for entry in deleted if not isinstance(entry, list)]
        return chosen, model_count, perms_needed, protected


class AuditedDeleteMixin(SummarisedDeleteMixin):
    """Audit every deletion made in the admin, one event per record, in the transaction that deletes (invariant 6).

    A subclass says what the event holds (`audit_delete`) and may narrow what a bulk delete removes (`deletable`).
    Its confirmation page counts the related rows rather than listing them (SummarisedDeleteMixin).
    """

    def audit_delete(self, obj, actor) -> None:
        raise NotImplementedError

    def deletable(self, queryset):
        return queryset

    def delete_model(self, request, obj):
        with transaction.atomic():
            self.audit_delete(obj, request.user)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            deleted = self.deletable(queryset)
            for obj in deleted:
                self.audit_delete(obj, request.user)
            super().delete_queryset(request, deleted)


class AuditedChangeMixin(AuditedDeleteMixin):
    """Audit every creation, edit and deletion made in the admin (invariant 6): each changed field from → to.

    A subclass names the event's prefix (`audit_action`: "area" writes area.create, area.update, area.delete) and
    the fields it holds (`audited_fields`: attribute names) and may say what state the record is in (`audit_state`)
    or how a field is recorded, or add what the form saves with it (`audit_values`). Values are read from the
    database before and after the save (many-to-many ones are saved by save_related), in the admin's transaction;
    a save that changes none of them writes nothing.
    """

    audit_action = ""
    audited_fields: tuple[str, ...] = ()

    def audit_state(self, obj) -> str:
        return ""

    def audit_values(self, obj) -> dict:
        """Return the audited fields of `obj` as JSON values (a decimal or a time as its text)."""
        values = {name: getattr(obj, name) for name in self.audited_fields}
        return json.loads(json.dumps(values, cls=DjangoJSONEncoder))

    def audit_delete(self, obj, actor) -> None:
        state = self.audit_state(obj)
        audit_record(
            actor=actor,
            action=f"{self.audit_action}.delete",
            obj=obj,
            from_state=state,
            to_state="deleted",
            details=self.audit_values(obj),
        )

    def _audit_stored(self, pk, *, lock: bool = False):
        if pk is None:
            return None
        rows = self.model._default_manager.filter(pk=pk)
        return (rows.select_for_update() if lock else rows).first()

    def save_model(self, request, obj, form, change):
        # The form has already written its values onto `obj`: what was there before is read from the database,
        # locked until the admin's transaction ends, so two admins saving at once each record what they replaced.
        stored = self._audit_stored(obj.pk, lock=True)
        form.audit_before = (self.audit_state(stored), self.audit_values(stored)) if stored is not None else None
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # Many-to-many fields are saved only now; the admin's change view holds both in one transaction.
        stored = self._audit_stored(form.instance.pk)
        before = getattr(form, "audit_before", None)
        after = self.audit_values(stored)
        if before is None:
            changed = {name: {"to": value} for name, value in after.items()}
            from_state = ""
        else:
            from_state, values = before
            changed = {
                name: {"from": values[name], "to": value} for name, value in after.items() if values[name] != value
            }
            if not changed:
                return
        audit_record(
            actor=request.user,
            action=f"{self.audit_action}.{'create' if before is None else 'update'}",
            obj=stored,
            from_state=from_state,
            to_state=self.audit_state(stored),
            details={"changed": changed},
        )
