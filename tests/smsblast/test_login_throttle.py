"""Password guessing stops after a few wrong passwords for one username from one address."""

import re

import pytest
import requests
from django.contrib.auth.backends import ModelBackend
from django.test import Client
from django.urls import reverse

from smsblast.roles import Role
from tests.conftest import make_user


def _log_in(password: str, *, address: str = "10.0.0.7", username: str = "chair", path: str = ""):
    return Client(REMOTE_ADDR=address).post(path or reverse("login"), {"username": username, "password": password})


def _wrong(times: int, **kwargs) -> None:
    for _ in range(times):
        assert _log_in("guess", **kwargs).status_code == 200


@pytest.mark.django_db
def test_after_the_allowed_wrong_passwords_even_the_right_one_is_refused_with_the_wait(throttled):
    make_user("chair", Role.APPROVER)
    _wrong(3)
    response = _log_in("pw-secret-123")
    body = response.content.decode()
    assert response.status_code == 200
    assert "Terlalu banyak percobaan masuk yang gagal. Coba lagi dalam 10 menit." in body
    assert "_auth_user_id" not in response.client.session


@pytest.mark.django_db
def test_fewer_wrong_passwords_than_allowed_still_let_the_right_one_in_and_are_forgotten(throttled):
    make_user("chair", Role.APPROVER)
    _wrong(2)
    assert _log_in("pw-secret-123").status_code == 302
    _wrong(2)
    assert _log_in("pw-secret-123").status_code == 302


@pytest.mark.django_db
def test_the_lock_holds_for_one_username_from_one_address_only(throttled):
    make_user("chair", Role.APPROVER)
    make_user("officer", Role.OFFICER)
    _wrong(3, username="CHAIR ")
    assert _log_in("pw-secret-123", address="10.0.0.8").status_code == 302
    assert _log_in("pw-secret-123", username="officer").status_code == 302
    assert _log_in("pw-secret-123").status_code == 200


@pytest.mark.django_db
def test_the_lock_lapses_after_the_lockout(throttled):
    make_user("chair", Role.APPROVER)
    _wrong(3)
    assert _log_in("pw-secret-123").status_code == 200
    for key in throttled.scan_iter("smsblast:login-failures:*"):
        throttled.expire(key, 0)
    assert _log_in("pw-secret-123").status_code == 302


@pytest.mark.django_db
def test_the_admin_log_in_is_throttled_too(throttled):
    make_user("root", Role.ADMIN)
    admin_login = reverse("admin:login")
    _wrong(3, username="root", path=admin_login)
    response = _log_in("pw-secret-123", username="root", path=admin_login)
    assert response.status_code == 200
    assert "Coba lagi dalam 10 menit" in response.content.decode()


@pytest.mark.django_db
def test_log_in_stays_open_when_redis_cannot_be_reached(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.LOGIN_FAILURES_ALLOWED = 1
    make_user("chair", Role.APPROVER)
    _wrong(2)
    assert _log_in("pw-secret-123").status_code == 302


def _log_in_via_proxy(password: str, *, client_address: str, username: str = "chair"):
    """Log in through one reverse proxy on this machine, which appends the client's address to X-Forwarded-For."""
    client = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=client_address)
    return client.post(reverse("login"), {"username": username, "password": password})


@pytest.mark.django_db
def test_behind_the_reverse_proxy_a_stranger_cannot_lock_the_approver_out(throttled, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    make_user("chair", Role.APPROVER)
    for _ in range(3):
        assert _log_in_via_proxy("guess", client_address="203.0.113.5").status_code == 200
    assert _log_in_via_proxy("pw-secret-123", client_address="203.0.113.5").status_code == 200
    assert _log_in_via_proxy("pw-secret-123", client_address="198.51.100.7").status_code == 302


@pytest.mark.django_db
def test_behind_the_reverse_proxy_a_forged_forwarded_address_does_not_escape_the_lock(throttled, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    make_user("chair", Role.APPROVER)
    for forged in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert _log_in_via_proxy("guess", client_address=f"{forged}, 203.0.113.5").status_code == 200
    response = _log_in_via_proxy("pw-secret-123", client_address="10.0.0.4, 203.0.113.5")
    assert response.status_code == 200
    assert "Coba lagi dalam 10 menit" in response.content.decode()


class OverlappingGuesses(ModelBackend):
    """Check each password while the next guess arrives, as parallel requests of one attacker overlap."""

    checked = 0
    in_flight = 10

    def authenticate(self, request, username=None, password=None, **kwargs):
        OverlappingGuesses.checked += 1
        if OverlappingGuesses.checked < OverlappingGuesses.in_flight:
            _log_in("guess")
        return super().authenticate(request, username=username, password=password, **kwargs)


@pytest.mark.django_db
def test_guesses_sent_in_parallel_get_no_more_password_checks_than_allowed(throttled, settings):
    settings.AUTHENTICATION_BACKENDS = [f"{__name__}.OverlappingGuesses"]
    OverlappingGuesses.checked = 0
    make_user("chair", Role.APPROVER)
    _log_in("guess")
    assert OverlappingGuesses.checked == 3
    assert "Coba lagi dalam 10 menit" in _log_in("pw-secret-123").content.decode()


@pytest.mark.django_db(transaction=True)
def test_log_in_answers_within_seconds_while_redis_takes_connections_and_never_answers(
    live_server, settings, silent_redis_url
):
    settings.REDIS_URL = silent_redis_url
    settings.LOGIN_FAILURES_ALLOWED = 3
    make_user("chair", Role.APPROVER)
    browser = requests.Session()
    page = browser.get(f"{live_server.url}{reverse('login')}", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    # Unthrottled rather than stuck: the whole log-in must start answering before this read timeout.
    response = browser.post(
        f"{live_server.url}{reverse('login')}",
        {"username": "chair", "password": "pw-secret-123", "csrfmiddlewaretoken": token},
        headers={"Referer": f"{live_server.url}{reverse('login')}"},
        allow_redirects=False,
        timeout=(2, 6),
    )
    assert response.status_code == 302, response.text[:500]
    assert "sessionid" in browser.cookies or any("session" in name for name in browser.cookies.keys())
