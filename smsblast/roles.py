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
    """Create the role groups and give each its permissions (idempotent).

    A group created, or given back its role's permissions after an edit in the group admin, is audited as that
    admin audits it (invariant 6), with no actor: the system did it.
    """
    from django.contrib.auth.models import Group, Permission
    from django.db import transaction

    from smsblast.audit import audit_record

    with transaction.atomic():
        for role, perms in ROLE_PERMISSIONS.items():
            group, created = Group.objects.get_or_create(name=role)
            before = [] if created else _group_permissions(group)
            wanted = []
            for perm in perms:
                app_label, codename = perm.split(".")
                wanted.extend(Permission.objects.filter(content_type__app_label=app_label, codename=codename))
            group.permissions.set(wanted)
            after = _group_permissions(group)
            if created:
                changed = {"name": {"to": role}, "permissions": {"to": after}}
            elif before != after:
                changed = {"permissions": {"from": before, "to": after}}
            else:
                continue
            audit_record(
                actor=None,
                action="group.create" if created else "group.update",
                obj=group,
                from_state="" if created else role,
                to_state=role,
                details={"changed": changed},
            )


def _group_permissions(group) -> list[str]:
    """Return the group's permissions as sorted "app.codename", as the group admin audits them."""
    return sorted(f"{app}.{name}" for app, name in group.permissions.values_list("content_type__app_label", "codename"))


def user_access(user) -> dict:
    """Return what the user may do as stored: role, groups, active, staff and superuser flags, own permissions and
    the jurisdiction whose campaigns the user sees ("" for all of Indonesia)."""
    from smsblast.models import User

    stored = User.objects.filter(pk=user.pk).prefetch_related("groups").first() if user.pk else None
    if stored is None:
        return {}
    return {
        "role": stored.role or "",
        "groups": sorted(group.name for group in stored.groups.all()),
        "is_active": stored.is_active,
        "is_staff": stored.is_staff,
        "is_superuser": stored.is_superuser,
        "permissions": sorted(
            f"{app}.{codename}"
            for app, codename in stored.user_permissions.values_list("content_type__app_label", "codename")
        ),
        "jurisdiction": stored.jurisdiction_id or "",
    }


def user_record_access_change(*, user, before: dict, actor, action: str = "user.access") -> None:
    """Audit a change of the user's role, groups, flags, own permissions or jurisdiction, and of the email address when
    `before` holds it (invariant 6); nothing when none changed.

    `before` is user_access() read before the change ({} for a new user); call it in the change's transaction.
    """
    from smsblast.audit import audit_record

    user._role_cache = None
    after = user_access(user)
    if "email" in before:
        # The address is compared only when the caller read it before the change (the user admin does).
        after["email"] = type(user).objects.filter(pk=user.pk).values_list("email", flat=True).first()
    changed = {
        name: {"from": before.get(name), "to": value} for name, value in after.items() if before.get(name) != value
    }
    if not changed:
        return
    audit_record(
        actor=actor,
        action=action,
        obj=user,
        from_state=before.get("role", ""),
        to_state=after.get("role", ""),
        details={"username": user.username, "changed": changed},
    )


def user_record_password_set(*, user, actor) -> None:
    """Audit a password set, or password log-in disabled, for the user (invariant 6): whether one is usable, never
    the password. Call it in the change's transaction; `actor` None is the system (a management command)."""
    from smsblast.audit import audit_record

    details = {"username": user.username, "usable": user.has_usable_password()}
    audit_record(actor=actor, action="user.password_set", obj=user, details=details)


def user_role_set(*, user, role: str, actor=None) -> None:
    """Put the user in exactly one role group, audited; admins are also staff superusers.

    `actor` is who did it (None: the system, e.g. `manage.py create_user`).
    """
    from django.contrib.auth.models import Group
    from django.db import transaction

    with transaction.atomic():
        role_groups_sync()
        before = user_access(user)
        user.groups.set([Group.objects.get(name=role)])
        user.is_staff = role == Role.ADMIN
        user.is_superuser = role == Role.ADMIN
        user.save(update_fields=["is_staff", "is_superuser"])
        user_record_access_change(user=user, before=before, actor=actor, action="user.role_set")


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
