import pytest
from django.core.exceptions import PermissionDenied

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

