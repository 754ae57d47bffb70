"""The second factor at log-in: approvers and admins give a code of their authenticator app after the password."""

import io
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.sessions.models import Session
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from smsblast import totp, two_factor
from smsblast.models import AuditEvent, Role, TwoFactorDevice, User
from tests.concurrency import race_behind_a_row, skip_unless_postgresql
from tests.conftest import client_for, field_description, make_user

pytestmark = pytest.mark.django_db

PASSWORD = "pw-secret-123"  # noqa: S105 - make_user's


class Clock:
    """The time every part of the log-in reads (django.utils.timezone.now), moved on by the test."""

    def __init__(self):
        # Ten seconds into a 30-second step of today, so a code computed "now" is the one the server expects.
        start = int(datetime.now(UTC).timestamp()) // totp.STEP_SECONDS * totp.STEP_SECONDS + 10
        self.now = datetime.fromtimestamp(start, UTC)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(autouse=True)
def two_factor_for_approvers_and_admins():
    with override_settings(SMSBLAST_TWO_FACTOR_ROLES=["approver", "admin"]):
        yield


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(timezone, "now", lambda: clock.now)
    return clock


def enrolled(user, clock, *, steps_ago: int = 10) -> str:
    """Give `user` a confirmed device, last used `steps_ago` steps before now; return its secret."""
    secret = totp.secret_new()
    TwoFactorDevice.objects.create(
        user=user, secret=secret, confirmed_at=clock.now, last_used_step=totp.time_step(clock.now) - steps_ago
    )
    return secret


def wrong_code(secret: str, at) -> str:
    """Return a 6-digit code that is none of the codes accepted at `at` (its step and either neighbour)."""
    step = totp.time_step(at)
    taken = {totp.code_at_step(secret, step + drift) for drift in range(-totp.DRIFT_STEPS, totp.DRIFT_STEPS + 1)}
    return next(
        code for n in range(4) if (code := f"{(int(totp.code_at(secret, at)) + 1 + n) % 1_000_000:06d}") not in taken
    )


def client_with_code_given(user) -> Client:
    """Return a client logged in as `user` as if the code step was passed (with a device of the user's)."""
    if not TwoFactorDevice.objects.filter(user=user).exists():
        TwoFactorDevice.objects.create(
            user=user, secret=totp.secret_new(), confirmed_at=timezone.now(), last_used_step=0
        )
    client = client_for(user)
    session = client.session
    session[two_factor.VERIFIED] = two_factor.verified_mark(user)
    session.save()
    return client


def password_step(client: Client, username: str, *, path: str = "", next_url: str = ""):
    data = {"username": username, "password": PASSWORD}
    if next_url:
        data["next"] = next_url
    return client.post(path or reverse("login"), data)


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def page(response) -> str:
    return response.content.decode()


def test_a_right_password_alone_does_not_log_an_approver_in_nor_open_the_api(clock):
    chair = make_user("chair", Role.APPROVER)
    enrolled(chair, clock)
    client = Client()

    response = password_step(client, "chair")

    assert response.status_code == 302
    assert response["Location"] == reverse("login_code")
    assert not logged_in(client)
    assert client.get(reverse("dashboard"))["Location"].startswith(reverse("login"))
    assert client.get("/api/v1/campaigns/").status_code in (401, 403)
    assert client.get(reverse("admin:index")).status_code == 302


def test_the_code_step_logs_the_approver_in_and_then_pages_and_the_session_api_open(clock):
    chair = make_user("chair", Role.APPROVER)
    secret = enrolled(chair, clock)
    client = Client()
    password_step(client, "chair", next_url="/campaigns/")
    code_page = page(client.get(reverse("login_code")))
    assert "Verifikasi dua langkah" in code_page
    assert re.search(r'<input id="id_code"[^>]* autofocus', code_page)

    response = client.post(reverse("login_code"), {"code": totp.code_at(secret, clock.now)})

    assert response.status_code == 302
    assert response["Location"] == "/campaigns/"
    assert client.session["_auth_user_id"] == str(chair.pk)
    assert client.get(reverse("dashboard")).status_code == 200
    assert client.get("/api/v1/campaigns/").status_code == 200


def test_a_next_that_is_not_a_path_leads_where_it_would_without_a_code_rather_than_to_an_error(clock):
    chair = make_user("chair", Role.APPROVER)
    secret = enrolled(chair, clock)
    client = Client(raise_request_exception=False)
    password_step(client, "chair", next_url="subscriber_import")

    response = client.post(reverse("login_code"), {"code": totp.code_at(secret, clock.now)})

    assert response.status_code == 302
    assert response["Location"] == "subscriber_import"
    assert logged_in(client)


def test_an_officer_is_not_asked_for_a_code(clock):
    make_user("clerk", Role.OFFICER)
    client = Client()

    response = password_step(client, "clerk")

    assert response["Location"] == reverse("dashboard")
    assert logged_in(client)


def test_an_officer_made_approver_while_logged_in_with_the_password_alone_is_asked_for_a_code(clock):
    clerk = make_user("clerk", Role.OFFICER)
    client = Client()
    password_step(client, "clerk")
    assert client.get(reverse("dashboard")).status_code == 200

    clerk.groups.add(Group.objects.get(name=Role.APPROVER))

    assert client.get(reverse("dashboard"))["Location"].startswith(reverse("login"))
    assert not logged_in(client)
    assert "Akun Anda kini meminta kode dari aplikasi autentikator" in page(client.get(reverse("login")))
    assert client.get("/api/v1/campaigns/").status_code in (401, 403)
    assert password_step(client, "clerk")["Location"] == reverse("login_enrol")


def test_a_session_opened_with_the_password_alone_before_the_setting_named_the_role_ends(clock):
    make_user("chair", Role.APPROVER)
    client = Client()
    with override_settings(SMSBLAST_TWO_FACTOR_ROLES=[]):
        password_step(client, "chair")
        assert logged_in(client)

    assert client.get("/api/v1/campaigns/").status_code in (401, 403)
    assert client.get(reverse("dashboard"))["Location"].startswith(reverse("login"))


@override_settings(SMSBLAST_TWO_FACTOR_ROLES=[])
def test_with_the_setting_empty_the_approver_logs_in_with_the_password_alone(clock):
    make_user("chair", Role.APPROVER)
    client = Client()
    assert password_step(client, "chair")["Location"] == reverse("dashboard")
    assert logged_in(client)


def test_an_officer_who_is_also_approver_gives_a_code(clock):
    both = make_user("both", Role.OFFICER)
    both.groups.add(Group.objects.get(name=Role.APPROVER))
    client = Client()
    assert password_step(client, "both")["Location"] == reverse("login_enrol")
    assert not logged_in(client)


def test_the_first_log_in_enrols_an_app_with_a_qr_code_drawn_on_the_page_and_saves_it_only_once_confirmed(clock):
    chair = make_user("chair", Role.APPROVER)
    client = Client()
    assert password_step(client, "chair")["Location"] == reverse("login_enrol")

    body = page(client.get(reverse("login_enrol")))
    uri = re.search(r'href="(otpauth://[^"]+)"', body).group(1).replace("&amp;", "&")
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    assert totp.secret_grouped(secret) in body
    assert re.search(r'<svg [^>]*role="img"', body)
    # Nothing the browser would fetch from elsewhere: the QR code is inline, no image or script from outside.
    assert not re.search(r'(src|href)="(https?:)?//', body)
    assert "<img" not in body
    # Nothing focused on arrival: on a phone that would scroll the QR code out of view.
    assert "autofocus" not in body
    # The same secret until the log-in ends: reloading the page does not invalidate an app already scanned.
    assert totp.secret_grouped(secret) in page(client.get(reverse("login_enrol")))
    assert not TwoFactorDevice.objects.exists()
    # The secret offered waits in the session sealed, so the sessions table does not give it away either.
    stored = Session.objects.get(session_key=client.session.session_key)
    assert secret not in str(stored.get_decoded()) and secret not in stored.session_data

    right = totp.code_at(secret, clock.now)
    wrong = client.post(reverse("login_enrol"), {"code": wrong_code(secret, clock.now)})
    assert wrong.status_code == 200
    assert "Kode salah" in page(wrong)
    assert not TwoFactorDevice.objects.exists()
    assert not logged_in(client)

    response = client.post(reverse("login_enrol"), {"code": right})

    assert response["Location"] == reverse("dashboard")
    assert client.session["_auth_user_id"] == str(chair.pk)
    device = TwoFactorDevice.objects.get(user=chair)
    assert (device.secret, device.confirmed_at) == (secret, clock.now)
    event = AuditEvent.objects.get(action="user.two_factor_enrol")
    assert (event.actor, event.object_id, event.to_state) == (chair, str(chair.pk), "enrolled")
    assert secret not in str(event.details)

    # The next log-in asks for the code of the app just set up.
    clock.advance(30)
    second = Client()
    assert password_step(second, "chair")["Location"] == reverse("login_code")
    second.post(reverse("login_code"), {"code": totp.code_at(secret, clock.now)})
    assert logged_in(second)


def test_leaving_the_code_step_for_the_log_in_page_ends_the_pending_log_in_for_whoever_uses_the_browser_next(clock):
    make_user("chair", Role.APPROVER)
    client = Client()
    password_step(client, "chair")
    enrol_page = page(client.get(reverse("login_enrol")))
    assert f'href="{reverse("login")}"' in enrol_page  # "Log in as someone else"
    secret = parse_qs(urlparse(re.search(r'href="(otpauth://[^"]+)"', enrol_page).group(1)).query)["secret"][0]

    assert client.get(reverse("login")).status_code == 200

    assert client.get(reverse("login_enrol"))["Location"] == reverse("login")
    client.post(reverse("login_enrol"), {"code": totp.code_at(secret, clock.now)})
    assert not logged_in(client)
    assert not TwoFactorDevice.objects.exists()


def test_a_user_slower_than_five_minutes_to_enrol_logs_in_again_to_the_same_secret(clock):
    make_user("chair", Role.APPROVER)
    make_user("deputy", Role.APPROVER)
    client = Client()
    password_step(client, "chair")
    offered = re.search(r'<code class="secret">([^<]+)</code>', page(client.get(reverse("login_enrol")))).group(1)

    clock.advance(600)  # installing an app took a while
    assert client.get(reverse("login_enrol"))["Location"] == reverse("login")
    password_step(client, "chair")
    assert offered in page(client.get(reverse("login_enrol")))
    secret = offered.replace(" ", "")
    client.post(reverse("login_enrol"), {"code": totp.code_at(secret, clock.now)})
    assert logged_in(client)
    # Another user of the same browser is offered a secret of their own.
    client.post(reverse("logout"))
    password_step(client, "deputy")
    assert offered not in page(client.get(reverse("login_enrol")))


def test_a_wrong_code_is_refused_in_indonesian_and_english(clock):
    chair = make_user("chair", Role.APPROVER)
    secret = enrolled(chair, clock)
    wrong = wrong_code(secret, clock.now)
    client = Client()
    password_step(client, "chair")

    response = client.post(reverse("login_code"), {"code": wrong})
    assert response.status_code == 200
    assert "Kode salah. Masukkan 6 angka yang ditampilkan aplikasi autentikator Anda sekarang." in page(response)
    client.cookies["django_language"] = "en"
    response = client.post(reverse("login_code"), {"code": wrong})
    assert "The code is wrong. Enter the 6 digits your authenticator app shows now." in page(response)
    assert not logged_in(client)


def test_a_refused_code_is_read_out_on_the_code_field(clock):
    chair = make_user("chair", Role.APPROVER)
    secret = enrolled(chair, clock)
    client = Client()
    password_step(client, "chair")

    response = client.post(reverse("login_code"), {"code": wrong_code(secret, clock.now)})

    field, said = field_description(page(response), "id_code")
    assert 'aria-invalid="true"' in field
    assert "Kode salah. Masukkan 6 angka yang ditampilkan aplikasi autentikator Anda sekarang." in said


def test_wrong_codes_are_throttled_and_a_right_password_does_not_clear_their_count(clock, throttled):
    chair = make_user("chair", Role.APPROVER)
    secret = enrolled(chair, clock)
    right = totp.code_at(secret, clock.now)
    wrong = wrong_code(secret, clock.now)
    client = Client(REMOTE_ADDR="10.0.0.7")
    password_step(client, "chair")
    for _ in range(3):
        assert "Kode salah" in page(client.post(reverse("login_code"), {"code": wrong}))

    refused = client.post(reverse("login_code"), {"code": right})
    assert "Terlalu banyak percobaan masuk yang gagal. Coba lagi dalam 10 menit." in page(refused)
    assert not logged_in(client)
    # Giving the password again (it is right) starts a new pending log-in, not a new count of codes.
    password_step(client, "chair")
    assert "Coba lagi dalam 10 menit" in page(client.post(reverse("login_code"), {"code": right}))
    assert not logged_in(client)


def test_wrong_codes_sent_from_ever_new_addresses_are_throttled_too(clock, throttled):
    chair = make_user("chair", Role.APPROVER)
    secret = enrolled(chair, clock)
    right = totp.code_at(secret, clock.now)
    wrong = wrong_code(secret, clock.now)
    # Below the count of one address each time, as from a botnet or the addresses of an IPv6 network.
    for address in range(40):
        client = Client(REMOTE_ADDR=f"2001:db8::{address:x}")
        password_step(client, "chair")
        for _ in range(2):
            client.post(reverse("login_code"), {"code": wrong})

    client = Client(REMOTE_ADDR="2001:db8::ffff")
    password_step(client, "chair")
    refused = client.post(reverse("login_code"), {"code": right})

    assert "Terlalu banyak percobaan masuk yang gagal" in page(refused)
    assert not logged_in(client)


def test_a_code_already_used_is_refused_and_so_is_an_older_one(clock):
    chair = make_user("chair", Role.APPROVER)
    secret = enrolled(chair, clock)
    code = totp.code_at(secret, clock.now)
    first = Client()
    password_step(first, "chair")
    first.post(reverse("login_code"), {"code": code})
    assert logged_in(first)

    # Someone who saw the code over the approver's shoulder and knows the password, within the same half-minute.
    onlooker = Client()
    password_step(onlooker, "chair")
    response = onlooker.post(reverse("login_code"), {"code": code})
    assert "Kode ini sudah dipakai." in page(response)
    earlier = totp.code_at(secret, clock.now - timedelta(seconds=30))
    assert "Kode ini sudah dipakai." in page(onlooker.post(reverse("login_code"), {"code": earlier}))
    assert not logged_in(onlooker)

    clock.advance(30)
    onlooker.post(reverse("login_code"), {"code": totp.code_at(secret, clock.now)})
    assert logged_in(onlooker)


def test_a_pending_log_in_expires_after_five_minutes(clock):
    chair = make_user("chair", Role.APPROVER)
    secret = enrolled(chair, clock)
    client = Client()
    password_step(client, "chair")

    clock.advance(301)
    response = client.post(reverse("login_code"), {"code": totp.code_at(secret, clock.now)}, follow=True)

    assert response.redirect_chain[-1][0] == reverse("login")
    assert "Waktu untuk memasukkan kode sudah habis (5 menit)." in page(response)
    assert not logged_in(client)
    # The lapsed log-in is forgotten: a code alone does not bring it back.
    assert client.post(reverse("login_code"), {"code": totp.code_at(secret, clock.now)})["Location"] == reverse("login")
    assert not logged_in(client)


def test_a_pending_log_in_within_five_minutes_is_completed(clock):
    chair = make_user("chair", Role.APPROVER)
    secret = enrolled(chair, clock)
    client = Client()
    password_step(client, "chair")
    clock.advance(299)
    client.post(reverse("login_code"), {"code": totp.code_at(secret, clock.now)})
    assert logged_in(client)


def test_the_code_step_without_a_password_sends_to_the_log_in_page(clock):
    response = Client().get(reverse("login_code"))
    assert response["Location"] == reverse("login")
    assert Client().get(reverse("login_enrol"))["Location"] == reverse("login")


def test_a_password_changed_while_the_code_is_awaited_ends_the_pending_log_in(clock):
    chair = make_user("chair", Role.APPROVER)
    secret = enrolled(chair, clock)
    client = Client()
    password_step(client, "chair")
    chair.set_password("another-pw-456")
    chair.save()
    assert client.post(reverse("login_code"), {"code": totp.code_at(secret, clock.now)})["Location"] == reverse("login")
    assert not logged_in(client)


def test_api_tokens_need_no_code(clock, api_client_for):
    chair = make_user("chair", Role.APPROVER)
    assert api_client_for(chair).get("/api/v1/campaigns/").status_code == 200


def test_the_admin_site_log_in_also_asks_for_the_code(clock):
    root = make_user("root", Role.ADMIN)
    secret = enrolled(root, clock)
    client = Client()

    response = password_step(client, "root", path=reverse("admin:login"), next_url=reverse("admin:index"))

    assert response["Location"] == reverse("login_code")
    assert not logged_in(client)
    assert client.get(reverse("admin:index"))["Location"].startswith(reverse("admin:login"))
    response = client.post(reverse("login_code"), {"code": totp.code_at(secret, clock.now)})
    assert response["Location"] == reverse("admin:index")
    assert client.get(reverse("admin:index")).status_code == 200


def test_a_staff_user_without_a_role_gives_the_code_at_the_admin_log_in_as_an_administrator_does(clock):
    helpdesk = User.objects.create_user(username="helpdesk", password=PASSWORD, is_staff=True)
    helpdesk.user_permissions.set(
        Permission.objects.filter(content_type__app_label="smsblast", codename__endswith="_user")
    )
    client = Client()

    response = password_step(client, "helpdesk", path=reverse("admin:login"), next_url=reverse("admin:index"))

    assert response["Location"] == reverse("login_enrol")
    assert not logged_in(client)
    assert client.get(reverse("admin:smsblast_user_changelist"))["Location"].startswith(reverse("admin:login"))


def test_the_admin_site_log_in_still_refuses_a_wrong_password_and_a_non_staff_user(clock):
    make_user("chair", Role.APPROVER)
    client = Client()
    refused = client.post(reverse("admin:login"), {"username": "chair", "password": PASSWORD})
    assert refused.status_code == 200
    assert not logged_in(client)
    assert client.get(reverse("admin:login")).status_code == 200


@override_settings(SMSBLAST_TWO_FACTOR_ROLES=[])
def test_the_admin_site_log_in_without_the_setting_logs_an_admin_in(clock):
    make_user("root", Role.ADMIN)
    client = Client()
    response = password_step(client, "root", path=reverse("admin:login"), next_url=reverse("admin:index"))
    assert response["Location"] == reverse("admin:index")
    assert logged_in(client)


def test_an_admin_reset_makes_the_user_enrol_again_and_is_audited(clock):
    chair = make_user("chair", Role.APPROVER)
    old_secret = enrolled(chair, clock)
    root = make_user("root", Role.ADMIN)
    admin_client = client_with_code_given(root)
    change_page = page(admin_client.get(reverse("admin:smsblast_user_change", args=[chair.pk])))
    assert "Aplikasi autentikator" in change_page or "aplikasi autentikator" in change_page
    assert old_secret not in change_page

    response = admin_client.post(
        reverse("admin:smsblast_user_changelist"), {"action": "reset_two_factor", "_selected_action": [chair.pk]}
    )

    assert response.status_code == 302
    assert not TwoFactorDevice.objects.filter(user=chair).exists()
    event = AuditEvent.objects.get(action="user.two_factor_reset")
    assert (event.actor, event.object_id, event.from_state) == (root, str(chair.pk), "enrolled")
    assert old_secret not in str(event.details)
    client = Client()
    assert password_step(client, "chair")["Location"] == reverse("login_enrol")
    assert old_secret not in page(client.get(reverse("login_enrol")))


def test_a_staff_user_who_may_only_view_users_cannot_reset_a_second_factor(clock):
    root = make_user("root", Role.ADMIN)
    enrolled(root, clock)
    viewer = User.objects.create_user(username="viewer", password=PASSWORD, is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(content_type__app_label="smsblast", codename="view_user"))
    client = client_with_code_given(viewer)
    assert client.get(reverse("admin:smsblast_user_changelist")).status_code == 200

    client.post(
        reverse("admin:smsblast_user_changelist"), {"action": "reset_two_factor", "_selected_action": [root.pk]}
    )

    assert TwoFactorDevice.objects.filter(user=root).exists()
    assert not AuditEvent.objects.filter(action="user.two_factor_reset").exists()


def test_resetting_a_user_without_an_app_changes_nothing_and_audits_nothing(clock):
    chair = make_user("chair", Role.APPROVER)
    admin_client = client_with_code_given(make_user("root", Role.ADMIN))
    admin_client.post(
        reverse("admin:smsblast_user_changelist"), {"action": "reset_two_factor", "_selected_action": [chair.pk]}
    )
    assert not AuditEvent.objects.filter(action="user.two_factor_reset").exists()


def test_the_command_resets_an_admin_who_lost_the_phone_audited_as_done_by_the_system(clock):
    root = make_user("root", Role.ADMIN)
    enrolled(root, clock)
    out = io.StringIO()

    call_command("reset_two_factor", "root", stdout=out)

    assert "second factor reset" in out.getvalue()
    assert not TwoFactorDevice.objects.filter(user=root).exists()
    event = AuditEvent.objects.get(action="user.two_factor_reset")
    assert (event.actor, event.object_id) == (None, str(root.pk))
    with pytest.raises(CommandError):
        call_command("reset_two_factor", "nobody", stdout=io.StringIO())


def test_an_officers_password_session_and_an_approvers_session_with_the_code_both_go_on(clock):
    officer_client = client_for(make_user("officer-plain", Role.OFFICER))
    chair = make_user("chair-coded", Role.APPROVER)
    secret = enrolled(chair, clock)
    chair_client = Client()
    password_step(chair_client, "chair-coded")
    chair_client.post(reverse("login_code"), {"code": totp.code_at(secret, clock.now)})

    for client in (officer_client, chair_client):
        for _ in range(2):
            assert client.get(reverse("dashboard")).status_code == 200
            assert client.get("/api/v1/campaigns/").status_code == 200
        assert logged_in(client)


@pytest.mark.django_db(transaction=True)
def test_the_same_code_given_twice_at_once_is_taken_once(clock):
    skip_unless_postgresql()
    chair = make_user("chair", Role.APPROVER)
    secret = enrolled(chair, clock)
    code = totp.code_at(secret, clock.now)
    taken = []

    def give_the_code():
        taken.append(two_factor.two_factor_code_accept(user=chair, code=code, at=clock.now))

    # Both requests read the device and check the code, then meet at its row: only one may move its step on.
    errors = race_behind_a_row(TwoFactorDevice.objects.get(user=chair), give_the_code, give_the_code)

    assert len(taken) == 1
    assert [getattr(error, "codes", error) for error in errors] == [{"code": "used"}]
    assert TwoFactorDevice.objects.get(user=chair).last_used_step == totp.time_step(clock.now)


def test_resetting_the_second_factor_ends_the_sessions_opened_with_the_lost_app(clock):
    chair = make_user("chair", Role.APPROVER)
    secret = enrolled(chair, clock)
    # The approver's phone, logged in with its own code, is then lost: an admin resets the second factor.
    phone = Client()
    password_step(phone, "chair")
    phone.post(reverse("login_code"), {"code": totp.code_at(secret, clock.now)})
    assert phone.get(reverse("dashboard")).status_code == 200

    two_factor.two_factor_reset(user=chair, actor=make_user("root", Role.ADMIN))

    assert phone.get(reverse("dashboard"))["Location"].startswith(reverse("login"))
    assert phone.get("/api/v1/campaigns/").status_code in (401, 403)
    assert not logged_in(phone)
    assert password_step(Client(), "chair")["Location"] == reverse("login_enrol")
