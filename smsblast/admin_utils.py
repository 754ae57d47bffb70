"""Admin building blocks shared by the apps for records that only the services write."""

from django.contrib import admin
from django.db import transaction


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


class AuditedDeleteMixin:
    """Audit every deletion made in the admin, one event per record, in the transaction that deletes (invariant 6).

    A subclass says what the event holds (`audit_delete`) and may narrow what a bulk delete removes (`deletable`).
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
