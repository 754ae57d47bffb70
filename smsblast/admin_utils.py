"""Admin building blocks shared by the apps for records that only the services write."""

from django.contrib import admin


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
