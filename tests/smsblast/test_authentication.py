"""API tokens: a malformed Authorization header is refused with 401, never a 500; issuing and revoking is audited."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from smsblast.authentication import api_token_create
from smsblast.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("header", ["B\xe9arer abc", "\xff\xfe abc", "\xe9"])
def test_an_authorization_scheme_that_is_not_utf8_is_ignored_not_a_server_error(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/campaigns/")
    assert response.status_code in (401, 403)
    assert "detail" in response.json()


def test_a_token_that_is_not_utf8_is_refused_with_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer \xe9\xe9")
    response = client.get("/api/v1/campaigns/")
    assert response.status_code == 401


def test_creating_a_token_is_audited_without_its_key(officer):
    key = api_token_create(user=officer, name="laptop")

    event = AuditEvent.objects.get(action="api_token.create")
    token = ApiToken.objects.get(pk=event.object_id)
    assert event.to_state == "active"
    assert event.details == {"user": officer.username, "prefix": key[:8], "name": "laptop"}
    assert key not in str(event.details) and token.key_hash not in str(event.details)


def test_revoking_tokens_in_the_admin_is_audited_once_with_who_did_it(client, admin_user, operator_user):
    key = api_token_create(user=operator_user)
    token = ApiToken.objects.get(user=operator_user)
    client.force_login(admin_user)
    url = reverse("admin:smsblast_apitoken_changelist")

    for _ in range(2):
        client.post(url, {"action": "revoke", "_selected_action": [token.pk]}, follow=True)

    event = AuditEvent.objects.get(action="api_token.revoke")
    assert (event.actor, event.object_id, event.from_state, event.to_state) == (
        admin_user,
        str(token.pk),
        "active",
        "revoked",
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.get("/api/v1/operator/batches/?state=ready").status_code == 401
