"""A session logged in by password alone does not outlive the rule that its user gives a code.

Sessions begun before SMSBLAST_TWO_FACTOR_ROLES named the user's role, and sessions of a user given such a role
later (an officer made approver), end at their next request; the user logs in again, with the code.
"""

import pytest
from django.contrib.auth.models import Group
from django.test import Client, override_settings
from django.urls import reverse

from smsblast import totp
from smsblast.models import Role
from tests.conftest import make_user
from tests.smsblast.test_two_factor import Clock, enrolled, password_step

pytestmark = pytest.mark.django_db

ROLES = ["approver", "admin"]


@pytest.fixture
def clock(monkeypatch):
    from django.utils import timezone

    clock = Clock()
    monkeypatch.setattr(timezone, "now", lambda: clock.now)
    return clock


def password_session(user) -> Client:
    """A client logged in the way every log-in was before the second factor: by password alone."""
    client = Client()
    client.force_login(user)
    return client


def test_an_approvers_session_from_before_the_setting_ends_at_its_next_request():
    chair = make_user("chair", Role.APPROVER)
    client = password_session(chair)
    assert client.get("/campaigns/").status_code == 200

    with override_settings(SMSBLAST_TWO_FACTOR_ROLES=ROLES):
        page = client.get("/campaigns/")
        api = client.get("/api/v1/campaigns/")

    assert page.status_code == 302 and page["Location"].startswith(reverse("login"))
    assert api.status_code in (401, 403)
    assert "_auth_user_id" not in client.session


def test_an_officer_made_approver_while_logged_in_gives_the_code_before_approving_anything():
    officer = make_user("officer-promoted", Role.OFFICER)
    client = password_session(officer)
    with override_settings(SMSBLAST_TWO_FACTOR_ROLES=ROLES):
        assert client.get("/campaigns/").status_code == 200
        officer.groups.add(Group.objects.get(name=Role.APPROVER))
        response = client.get("/campaigns/")

    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert "_auth_user_id" not in client.session


@override_settings(SMSBLAST_TWO_FACTOR_ROLES=ROLES)
def test_an_officers_password_session_and_an_approvers_session_with_the_code_both_go_on(clock):
    officer = make_user("officer-plain", Role.OFFICER)
    officer_client = password_session(officer)
    chair = make_user("chair-coded", Role.APPROVER)
    secret = enrolled(chair, clock)
    chair_client = Client()
    password_step(chair_client, "chair-coded")
    chair_client.post(reverse("login_code"), {"code": totp.code_at(secret, clock.now)})

    for client in (officer_client, chair_client):
        for _ in range(2):
            assert client.get("/campaigns/").status_code == 200
            assert client.get("/api/v1/campaigns/").status_code == 200
        assert "_auth_user_id" in client.session
