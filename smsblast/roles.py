"""Roles as groups with model permissions, and the DRF permission classes that check them."""

from rest_framework.permissions import BasePermission

from smsblast.models import Role

# Model permissions each role's group carries (app_label.codename).
ROLE_PERMISSIONS: dict[str, list[str]] = {
    Role.OFFICER: [
        "campaigns.add_campaign",
        "campaigns.change_campaign",
        "campaigns.view_campaign",
        "campaigns.view_campaignrun",
        "campaigns.view_delivery",
        "smsblast.view_area",
        "smsblast.view_subscriber",
        "smsblast.add_subscriber",
        "smsblast.change_subscriber",
    ],
    Role.APPROVER: [
        "campaigns.view_campaign",
        "campaigns.add_approval",
        "campaigns.view_approval",
        "campaigns.view_campaignrun",
        "campaigns.view_delivery",
        "smsblast.view_area",
    ],
    Role.OPERATOR: [
        "campaigns.view_dispatchbatch",
        "campaigns.change_delivery",
    ],
    Role.ADMIN: [],  # admins are staff superusers
}


def role_groups_sync() -> None:
    """Create the role groups and give each its permissions (idempotent)."""
    from django.contrib.auth.models import Group, Permission

    for role, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            wanted.extend(Permission.objects.filter(content_type__app_label=app_label, codename=codename))
        group.permissions.set(wanted)


def user_role_set(*, user, role: str) -> None:
    """Put the user in exactly one role group; admins are also staff superusers."""
    from django.contrib.auth.models import Group

    role_groups_sync()
    user.groups.set([Group.objects.get(name=role)])
    user.is_staff = role == Role.ADMIN
    user.is_superuser = role == Role.ADMIN
    user.save(update_fields=["is_staff", "is_superuser"])
    user._role_cache = None


class HasRole(BasePermission):
    """Allow only users holding one of `roles` (set on a subclass or via `HasRole.of`)."""

    roles: tuple[str, ...] = ()
    message = "Your role may not do this."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_role(*self.roles))

    @classmethod
    def of(cls, *roles: str) -> type["HasRole"]:
        names = "_".join(roles)
        return type(f"HasRole_{names}", (cls,), {"roles": roles, "message": f"Only {' or '.join(roles)} may do this."})


IsOfficer = HasRole.of(Role.OFFICER, Role.ADMIN)
IsApprover = HasRole.of(Role.APPROVER)
IsStaffRole = HasRole.of(Role.OFFICER, Role.APPROVER, Role.ADMIN)
IsOperator = HasRole.of(Role.OPERATOR)
IsAdmin = HasRole.of(Role.ADMIN)
