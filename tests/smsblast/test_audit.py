import pytest
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection, transaction

from smsblast.audit import audit_history, audit_record
from smsblast.models import AuditEvent


@pytest.mark.django_db
def test_audit_events_cannot_be_changed_or_deleted(officer):
    event = audit_record(actor=officer, action="campaign.submit", obj=officer, from_state="draft", to_state="x")
    event.action = "tampered"
    with pytest.raises(PermissionDenied):
        event.save()
    with pytest.raises(PermissionDenied):
        event.delete()
    with pytest.raises(PermissionDenied):
        AuditEvent.objects.filter(pk=event.pk).update(action="tampered")
    with pytest.raises(PermissionDenied):
        AuditEvent.objects.all().delete()
    assert list(audit_history(officer).filter(pk=event.pk).values_list("action", flat=True)) == ["campaign.submit"]


def test_redis_fixture_is_a_real_server(redis_client):
    redis_client.set("k", "v")
    assert redis_client.get("k") == b"v"
    assert "redis_version" in redis_client.info()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE smsblast_auditevent SET action = 'tampered' WHERE id = %s",
        "DELETE FROM smsblast_auditevent WHERE id = %s",
    ],
)
def test_on_postgresql_the_database_itself_refuses_to_change_or_delete_an_audit_event(officer, statement):
    if connection.vendor != "postgresql":
        pytest.skip("the database-level refusal is PostgreSQL's; SQLite keeps the ORM's")
    event = audit_record(actor=officer, action="campaign.submit", obj=officer, from_state="draft", to_state="x")

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, [event.pk])

    assert AuditEvent.objects.filter(pk=event.pk, action="campaign.submit").exists()


@pytest.mark.django_db
def test_no_orm_path_changes_or_deletes_an_audit_event(officer):
    event = audit_record(actor=officer, action="campaign.submit", obj=officer, from_state="draft", to_state="x")
    tampered = AuditEvent(pk=event.pk, action="tampered", object_type="x", object_id="1")
    attempts = [
        # The manager Django uses for related lookups and the one every model has besides its own.
        lambda: AuditEvent._base_manager.filter(pk=event.pk).update(action="tampered"),
        lambda: AuditEvent._base_manager.filter(pk=event.pk).delete(),
        # An "upsert" of an existing event is an update of it.
        lambda: AuditEvent.objects.bulk_create(
            [tampered], update_conflicts=True, unique_fields=["id"], update_fields=["action"]
        ),
    ]

    for attempt in attempts:
        with pytest.raises((PermissionDenied, DatabaseError)), transaction.atomic():
            attempt()

    assert list(AuditEvent.objects.filter(pk=event.pk).values_list("action", flat=True)) == ["campaign.submit"]
