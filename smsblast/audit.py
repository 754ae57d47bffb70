"""The append-only audit trail (invariant 6)."""

from django.db import models

from smsblast.models import AuditEvent


def audit_record(
    *,
    actor,
    action: str,
    obj: models.Model,
    from_state: str = "",
    to_state: str = "",
    details: dict | None = None,
) -> AuditEvent:
    """Write one AuditEvent for a state change of `obj`."""
    return AuditEvent.objects.create(
        actor=actor if actor is not None and getattr(actor, "pk", None) else None,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        from_state=from_state or "",
        to_state=to_state or "",
        details=details or {},
    )


def audit_record_table(*, actor, action: str, model: type[models.Model], details: dict) -> AuditEvent:
    """Write one AuditEvent for a change of many rows of `model` at once: the table is its object (no object ID)."""
    return AuditEvent.objects.create(
        actor=actor if actor is not None and getattr(actor, "pk", None) else None,
        action=action,
        object_type=model._meta.label_lower,
        object_id="",
        details=details,
    )


def audit_history(obj: models.Model):
    """Return the audit events of `obj`, oldest first."""
    return AuditEvent.objects.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk)).select_related("actor")
