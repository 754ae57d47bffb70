"""Management commands of the core app."""

import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from smsblast.models import ApiToken, User

pytestmark = pytest.mark.django_db


def create_user(*args) -> list[str]:
    out = io.StringIO()
    call_command("create_user", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_create_user_prints_a_working_token_as_the_last_line():
    lines = create_user("dinkes", "--role", "officer", "--password", "s3cret-pass")
    token = lines[-1]
    user = User.objects.get(username="dinkes")
    assert user.role == "officer"
    assert user.check_password("s3cret-pass")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/v1/campaigns/").status_code == 200
    assert client.post("/api/v1/sms/analyze/", {"text": "Halo"}, format="json").status_code == 200


def test_create_user_updates_an_existing_user_and_moves_them_to_the_new_role():
    create_user("satgas", "--role", "officer", "--password", "first-pass")
    token = create_user("satgas", "--role", "approver")[-1]
    user = User.objects.get(username="satgas")
    assert user.role == "approver"
    assert [g.name for g in user.groups.all()] == ["approver"]
    assert user.check_password("first-pass"), "no --password keeps the password"
    assert ApiToken.objects.filter(user=user).count() == 2
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    # An approver may view but not create.
    assert client.get("/api/v1/campaigns/").status_code == 200
    assert client.post("/api/v1/campaigns/", {"title": "x"}, format="json").status_code == 403


def test_create_user_without_password_makes_an_api_only_identity():
    token = create_user("telkomsel-api", "--role", "operator")[-1]
    user = User.objects.get(username="telkomsel-api")
    assert not user.has_usable_password()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/v1/campaigns/").status_code == 403


def test_create_user_admin_is_staff_superuser():
    create_user("root", "--role", "admin", "--password", "admin-pass-1")
    user = User.objects.get(username="root")
    assert (user.is_staff, user.is_superuser, user.role) == (True, True, "admin")


def test_create_user_refuses_an_unknown_role():
    with pytest.raises(CommandError):
        call_command("create_user", "x", "--role", "boss")
    assert not User.objects.filter(username="x").exists()
