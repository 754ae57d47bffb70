"""Management commands of the core app."""

import io
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command, get_commands, load_command_class
from rest_framework.test import APIClient

from operators.models import Operator
from smsblast.audit import audit_history
from smsblast.fixtures import demo
from smsblast.models import ApiToken, Area, Subscriber, User

REFERENCE_DIR = Path(settings.BASE_DIR).parent / "shared" / "data" / "wilayah"

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


def test_create_user_moving_a_user_to_another_role_is_audited_from_and_to():
    create_user("satgas", "--role", "officer", "--password", "first-pass")
    create_user("satgas", "--role", "admin")
    create_user("satgas", "--role", "admin")  # no change, no event
    user = User.objects.get(username="satgas")

    events = list(audit_history(user).filter(action="user.role_set"))

    assert [(e.actor, e.from_state, e.to_state) for e in events] == [(None, "", "officer"), (None, "officer", "admin")]
    assert events[1].details["changed"]["is_superuser"] == {"from": False, "to": True}


def test_create_user_setting_a_password_or_reactivating_a_user_is_audited():
    create_user("satgas", "--role", "officer", "--password", "first-pass")
    User.objects.filter(username="satgas").update(is_active=False)
    create_user("satgas", "--role", "officer", "--password", "second-pass")
    user = User.objects.get(username="satgas")

    (event,) = audit_history(user).filter(action="user.access")

    assert event.actor is None
    assert event.details["changed"] == {"password": "set", "is_active": {"from": False, "to": True}}
    assert "second-pass" not in str(event.details)


def test_changepassword_sets_the_password_as_before_and_is_audited_without_it(monkeypatch):
    create_user("admin", "--role", "admin")
    answers = iter(["Fresh-pass-2026!", "Fresh-pass-2026!"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    out = io.StringIO()

    call_command("changepassword", "admin", stdout=out)

    user = User.objects.get(username="admin")
    assert user.check_password("Fresh-pass-2026!")
    assert "Password changed successfully for user 'admin'" in out.getvalue()
    (event,) = audit_history(user).filter(action="user.password_set")
    assert (event.actor, event.details) == (None, {"username": "admin", "usable": True})
    assert "Fresh-pass-2026!" not in str(event.details)


def test_changepassword_that_gives_up_changes_and_records_nothing(monkeypatch):
    create_user("admin", "--role", "admin", "--password", "First-pass-2026!")
    answers = iter(["Fresh-pass-2026!", "Other-pass-2026!"] * 3)  # three mismatches: Django's command aborts
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))

    with pytest.raises(CommandError, match="Aborting password change"):
        call_command("changepassword", "admin", stdout=io.StringIO())

    user = User.objects.get(username="admin")
    assert user.check_password("First-pass-2026!")
    assert not audit_history(user).filter(action="user.password_set").exists()


def test_createsuperuser_creates_the_superuser_as_before_and_is_audited(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "Root-pass-2026!")

    call_command(
        "createsuperuser", "--noinput", "--username", "root", "--email", "root@example.org", stdout=io.StringIO()
    )

    user = User.objects.get(username="root")
    assert (user.is_superuser, user.is_staff, user.email) == (True, True, "root@example.org")
    assert user.check_password("Root-pass-2026!")
    (event,) = audit_history(user)
    assert (event.action, event.actor, event.from_state, event.to_state) == ("user.create", None, "", "admin")
    assert event.details["username"] == "root"
    assert event.details["changed"]["is_superuser"] == {"from": None, "to": True}
    assert "Root-pass-2026!" not in str(event.details)


class Terminal(io.StringIO):
    """Standard input that says it is a terminal, as createsuperuser asks before it prompts."""

    def isatty(self) -> bool:
        return True


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("command", ["changepassword", "createsuperuser"])
def test_a_command_asking_for_a_password_holds_no_transaction_open_while_it_waits(monkeypatch, command):
    """A person slow to type would otherwise keep a transaction open, holding its snapshot and locks."""
    from django.db import connection

    create_user("admin", "--role", "admin")
    open_while_asked = []

    def getpass(prompt=""):
        open_while_asked.append(connection.in_atomic_block)
        return "Fresh-pass-2026!"

    monkeypatch.setattr("getpass.getpass", getpass)
    if command == "changepassword":
        call_command("changepassword", "admin", stdout=io.StringIO())
    else:
        call_command(
            "createsuperuser",
            "--username",
            "root",
            "--email",
            "root@example.org",
            stdin=Terminal(),
            stdout=io.StringIO(),
        )

    assert open_while_asked == [False, False]
    user = User.objects.get(username="admin" if command == "changepassword" else "root")
    assert user.check_password("Fresh-pass-2026!")
    assert audit_history(user).filter(action__in=["user.password_set", "user.create"]).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_password_whose_event_cannot_be_written_is_not_set(monkeypatch):
    create_user("admin", "--role", "admin", "--password", "First-pass-2026!")
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "Fresh-pass-2026!")

    def refuse(**kwargs):
        raise RuntimeError("audit unavailable")

    monkeypatch.setattr("smsblast.management.commands.changepassword.user_record_password_set", refuse)

    with pytest.raises(RuntimeError):
        call_command("changepassword", "admin", stdout=io.StringIO())

    assert User.objects.get(username="admin").check_password("First-pass-2026!")


def test_changepassword_and_createsuperuser_keep_djangos_arguments():
    from django.contrib.auth.management.commands import changepassword, createsuperuser

    for name, django_module in (("changepassword", changepassword), ("createsuperuser", createsuperuser)):
        ours, djangos = load_command_class(get_commands()[name], name), django_module.Command()
        assert isinstance(ours, django_module.Command)
        options = {action.dest for action in ours.create_parser("manage.py", name)._actions}
        assert options == {action.dest for action in djangos.create_parser("manage.py", name)._actions}


def test_create_user_changing_a_users_email_is_audited_from_and_to():
    # Notifications (a campaign waiting for approval, a decision) go to this address.
    create_user("satgas", "--role", "approver", "--email", "ketua@blitarkab.go.id")
    create_user("satgas", "--role", "approver", "--email", "other@example.org")
    create_user("satgas", "--role", "approver", "--email", "other@example.org")  # the same: nothing to record
    user = User.objects.get(username="satgas")

    (event,) = audit_history(user).filter(action="user.access")

    assert event.actor is None
    assert event.details["changed"] == {"email": {"from": "ketua@blitarkab.go.id", "to": "other@example.org"}}


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x" * 151, "--role", "officer"], "USERNAME"),
        (["dinas kominfo!", "--role", "officer"], "USERNAME"),
        (["dinkes", "--role", "officer", "--email", "not-an-address"], "EMAIL"),
    ],
)
def test_create_user_refuses_a_bad_username_or_email_with_a_message(args, message):
    with pytest.raises(CommandError, match=message):
        create_user(*args)
    assert not User.objects.exists()


@pytest.mark.parametrize("password", ["123", "password", "satgas-2021"])
def test_create_user_refuses_a_password_the_password_rules_refuse_and_changes_no_one(password):
    # Too short, too common, or the username itself: refused as changepassword and the admin refuse them.
    create_user("satgas-2021", "--role", "approver", "--password", "first-pass")

    with pytest.raises(CommandError, match="^PASSWORD: ") as refused:
        create_user("satgas-2021", "--role", "admin", "--password", password)
    with pytest.raises(CommandError, match="^PASSWORD: "):
        create_user(password, "--role", "officer", "--password", password)

    assert f"'{password}'" not in str(refused.value)  # the password is never echoed to the terminal or its log
    user = User.objects.get(username="satgas-2021")
    assert (user.role, user.check_password("first-pass")) == ("approver", True)
    assert User.objects.count() == 1


def test_create_user_refuses_an_unknown_role():
    with pytest.raises(CommandError):
        call_command("create_user", "x", "--role", "boss")
    assert not User.objects.filter(username="x").exists()


def seed_demo(*args) -> list[str]:
    out = io.StringIO()
    call_command("seed_demo", "--subscribers", "300", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def seeded_counts() -> dict[str, int]:
    return {
        "users": User.objects.count(),
        "areas": Area.objects.count(),
        "operators": Operator.objects.count(),
        "subscribers": Subscriber.objects.count(),
        "boundaries": Area.objects.filter(boundary__isnull=False).count(),
        "populations": Area.objects.filter(population__isnull=False).count(),
    }


def test_seed_demo_twice_leaves_the_same_rows(tmp_path):
    seed_demo("--reference-data", str(tmp_path / "wilayah"))
    first = seeded_counts()
    seed_demo("--reference-data", str(tmp_path / "wilayah"))
    assert seeded_counts() == first
    assert first["areas"] == 2 + len(demo.KECAMATAN)
    assert first["subscribers"] == 300
    assert first["operators"] == len(demo.OPERATORS)


def test_seed_demo_run_again_routes_the_demo_numbers_by_the_prefixes_it_gives_the_operators_back(tmp_path):
    from smsblast.phones import PrefixTable
    from smsblast.selectors import operators_by_prefix
    from smsblast.services import subscribers_reroute

    seed_demo("--reference-data", str(tmp_path / "wilayah"))
    telkomsel, indosat = Operator.objects.get(slug="telkomsel"), Operator.objects.get(slug="indosat")
    moved = [
        prefix
        for prefix in telkomsel.prefixes
        if Subscriber.objects.filter(msisdn__startswith=f"+{prefix}", operator=telkomsel).exists()
    ][:3]
    assert moved
    # An admin moves three of Telkomsel's prefixes to Indosat, and their numbers with them.
    Operator.objects.filter(pk=telkomsel.pk).update(prefixes=sorted(set(telkomsel.prefixes) - set(moved)))
    Operator.objects.filter(pk=indosat.pk).update(prefixes=sorted({*indosat.prefixes, *moved}))
    subscribers_reroute(prefixes=moved)
    assert not Subscriber.objects.filter(msisdn__startswith=f"+{moved[0]}", operator=telkomsel).exists()

    seed_demo("--reference-data", str(tmp_path / "wilayah"))

    assert set(moved) <= set(Operator.objects.get(slug="telkomsel").prefixes)
    routes = PrefixTable(operators_by_prefix())
    misrouted = [
        msisdn
        for msisdn, operator_id in Subscriber.objects.values_list("msisdn", "operator_id")
        if routes.operator_for(msisdn.lstrip("+")) != operator_id
    ]
    assert misrouted == []


def test_seed_demo_run_again_leaves_a_prefix_an_admin_gave_to_another_operator_with_it_and_says_so(tmp_path):
    from smsblast.phones import PrefixTable
    from smsblast.selectors import operators_by_prefix
    from smsblast.services import subscribers_reroute
    from tests.operators.factories import OperatorFactory

    seed_demo("--reference-data", str(tmp_path / "wilayah"))
    telkomsel = Operator.objects.get(slug="telkomsel")
    moved = next(
        prefix
        for prefix in telkomsel.prefixes
        if Subscriber.objects.filter(msisdn__startswith=f"+{prefix}", operator=telkomsel).exists()
    )
    # An admin gives one of Telkomsel's prefixes to an operator of their own, and its numbers with it.
    Operator.objects.filter(pk=telkomsel.pk).update(prefixes=[p for p in telkomsel.prefixes if p != moved])
    local = OperatorFactory(slug="lokal", name="Operator Lokal", prefixes=[moved])
    subscribers_reroute(prefixes=[moved])

    lines = seed_demo("--reference-data", str(tmp_path / "wilayah"))

    holders = [name for name, prefixes in Operator.objects.values_list("name", "prefixes") if moved in prefixes]
    assert holders == ["Operator Lokal"]
    assert any(moved in line and "Operator Lokal" in line and "Telkomsel" in line for line in lines)
    routes = PrefixTable(operators_by_prefix())
    assert {
        routes.operator_for(msisdn.lstrip("+"))
        for msisdn in Subscriber.objects.filter(msisdn__startswith=f"+{moved}").values_list("msisdn", flat=True)
    } == {local.pk}
    assert not Subscriber.objects.filter(msisdn__startswith=f"+{moved}").exclude(operator=local).exists()


def test_seed_demo_gives_every_demo_operator_an_api_identity_for_its_reports(tmp_path):
    from operators.models import Operator

    seed_demo("--reference-data", str(tmp_path / "wilayah"))
    operators = Operator.objects.select_related("user")
    assert operators.count() == len(demo.OPERATORS)
    assert all(op.user is not None and op.user.role == "operator" for op in operators)


def test_seed_demo_says_in_one_line_when_the_reference_data_is_missing(tmp_path):
    missing = tmp_path / "wilayah"
    lines = seed_demo("--reference-data", str(missing))
    assert [line for line in lines if "boundaries" in line] == [
        "Area boundaries were not attached: batas_kabupaten.geojson, batas_kecamatan_contoh.geojson, "
        f"penduduk.csv not found in {missing}."
    ]
    assert not Area.objects.filter(boundary__isnull=False).exists()


def test_seed_demo_with_a_partial_reference_folder_attaches_nothing(tmp_path):
    (tmp_path / "penduduk.csv").write_text("kode,nama,pria,wanita,total\n35.05,Kabupaten Blitar,1,1,2\n")
    lines = seed_demo("--reference-data", str(tmp_path))
    assert any(line.startswith("Area boundaries were not attached: batas_kabupaten.geojson") for line in lines)
    assert Area.objects.get(code=demo.REGENCY[0]).population == demo.REGENCY[2]


def test_seed_demo_with_an_unreadable_reference_file_says_which_in_one_line_and_creates_no_one(tmp_path):
    for name in ("batas_kabupaten.geojson", "batas_kecamatan_contoh.geojson"):
        (tmp_path / name).write_text('{"type": "FeatureCollection", "features": []}')
    (tmp_path / "penduduk.csv").write_text("code,population\n35.05,2\n")

    with pytest.raises(CommandError, match="^penduduk.csv has no column kode, total; expected kode,...,total.$"):
        seed_demo("--reference-data", str(tmp_path))
    assert not User.objects.exists()
    assert not Area.objects.exists()


@pytest.mark.skipif(not REFERENCE_DIR.is_dir(), reason="the shared reference data is not beside the repository")
def test_seed_demo_attaches_the_boundaries_and_populations_of_the_demo_areas():
    lines = seed_demo()
    assert "Attached 23 area boundaries and 2 populations." in lines
    with_boundary = set(Area.objects.filter(boundary__isnull=False).values_list("code", flat=True))
    assert with_boundary == {demo.REGENCY[0], *(code for code, _ in demo.KECAMATAN)}
    blitar = Area.objects.get(code=demo.REGENCY[0])
    assert blitar.boundary["type"] in {"Polygon", "MultiPolygon"}
    assert blitar.population == 1_261_699
    assert Area.objects.get(code=demo.PROVINCE[0]).population == 41_919_906
    first = seeded_counts()
    seed_demo()
    assert seeded_counts() == first


@pytest.mark.parametrize("url", ["not a url", "127.0.0.1:9100", "ftp://127.0.0.1:9100"])
def test_seed_demo_refuses_a_simulator_url_operators_cannot_be_sent_to_and_creates_no_one(tmp_path, url):
    with pytest.raises(CommandError, match=f"--simulator-url {url!r} is not an http or https URL"):
        seed_demo("--simulator-url", url, "--reference-data", str(tmp_path))
    assert not Operator.objects.exists()
    assert not User.objects.exists()


def test_seed_demo_points_the_operators_at_the_simulator_url_given(tmp_path):
    seed_demo("--simulator-url", "http://localhost:9101/", "--reference-data", str(tmp_path))
    assert Operator.objects.get(slug="xl").base_url == "http://localhost:9101/xl"


def test_seed_demo_refuses_production_settings_and_creates_no_one(settings):
    from django.core.management.base import CommandError

    settings.DEMO_DATA_ALLOWED = False  # as config.settings.prod sets it
    with pytest.raises(CommandError, match="published passwords"):
        seed_demo()
    assert not User.objects.exists()


def test_create_user_with_an_area_limits_the_user_to_that_jurisdiction():
    Area.objects.create(code="35", name="Jawa Timur", search_name="jawa timur", level="provinsi")
    Area.objects.create(code="35.05", name="Kabupaten Blitar", search_name="kabupaten blitar", level="kabupaten")
    lines = create_user("kominfo-blitar", "--role", "officer", "--area", "35.05")
    assert lines[0] == "Created user 'kominfo-blitar' with role officer for 35.05 Kabupaten Blitar."
    assert User.objects.get(username="kominfo-blitar").jurisdiction_id == "35.05"
    create_user("kominfo-blitar", "--role", "approver")
    assert User.objects.get(username="kominfo-blitar").jurisdiction_id == "35.05", "no --area keeps the jurisdiction"


def test_create_user_audits_the_jurisdiction_it_gives_or_moves():
    Area.objects.create(code="35", name="Jawa Timur", search_name="jawa timur", level="provinsi")
    Area.objects.create(code="35.05", name="Kabupaten Blitar", search_name="kabupaten blitar", level="kabupaten")
    create_user("kominfo-blitar", "--role", "officer", "--area", "35.05")
    user = User.objects.get(username="kominfo-blitar")
    changes = [event.details["changed"].get("jurisdiction") for event in audit_history(user)]
    assert {"from": "", "to": "35.05"} in changes

    create_user("kominfo-blitar", "--role", "officer", "--area", "35")
    changes = [event.details["changed"].get("jurisdiction") for event in audit_history(user)]
    assert {"from": "35.05", "to": "35"} in changes
    events = audit_history(user).count()
    create_user("kominfo-blitar", "--role", "officer", "--area", "35")
    assert audit_history(user).count() == events, "the same jurisdiction again is no change"


@pytest.mark.parametrize("role", ["admin", "operator"])
def test_create_user_refuses_an_area_for_a_role_no_jurisdiction_limits(role):
    Area.objects.create(code="35", name="Jawa Timur", search_name="jawa timur", level="provinsi")

    with pytest.raises(CommandError, match="only an officer or approver"):
        create_user("pusat", "--role", role, "--area", "35")

    assert not User.objects.filter(username="pusat").exists()


def test_create_user_with_an_unknown_area_code_says_so_and_creates_no_one():
    with pytest.raises(CommandError, match="Unknown area code '33.16'"):
        create_user("kominfo-blora", "--role", "officer", "--area", "33.16")
    assert not User.objects.filter(username="kominfo-blora").exists()


def test_seed_demo_officers_and_approver_work_for_the_demo_regency(tmp_path):
    seed_demo("--reference-data", str(tmp_path / "wilayah"))
    jurisdictions = dict(User.objects.values_list("username", "jurisdiction_id"))
    assert {name: jurisdictions[name] for name in ("officer", "officer2", "approver", "admin")} == {
        "officer": demo.REGENCY[0],
        "officer2": demo.REGENCY[0],
        "approver": demo.REGENCY[0],
        "admin": None,
    }


def test_seed_demo_moving_a_demo_officer_back_to_the_demo_regency_is_audited(tmp_path):
    seed_demo("--reference-data", str(tmp_path / "wilayah"))
    officer = User.objects.get(username="officer")
    User.objects.filter(pk=officer.pk).update(jurisdiction_id="35.05.01")  # moved since, e.g. in the admin
    events = audit_history(officer).count()

    seed_demo("--reference-data", str(tmp_path / "wilayah"))

    officer.refresh_from_db()
    assert officer.jurisdiction_id == demo.REGENCY[0]
    changes = [event.details.get("changed", {}).get("jurisdiction") for event in audit_history(officer)]
    assert {"from": "35.05.01", "to": demo.REGENCY[0]} in changes
    events = audit_history(officer).count()
    seed_demo("--reference-data", str(tmp_path / "wilayah"))
    assert audit_history(officer).count() == events, "a re-run that changes nothing audits nothing"


def test_seed_demo_creating_or_resetting_a_demo_operator_is_audited_from_and_to(tmp_path):
    seed_demo("--reference-data", str(tmp_path / "wilayah"), "--simulator-url", "http://127.0.0.1:9100")
    telkomsel = Operator.objects.get(slug="telkomsel")
    (created,) = audit_history(telkomsel)
    assert (created.action, created.actor, created.to_state) == ("operator.create", None, "active")
    assert created.details["changed"]["base_url"] == {"to": "http://127.0.0.1:9100/telkomsel"}
    assert created.details["credentials_replaced"] == ["api_key", "signing_secret"]
    prefixes = telkomsel.prefixes
    Operator.objects.filter(pk=telkomsel.pk).update(prefixes=["62811"])  # changed since, e.g. in the admin

    seed_demo("--reference-data", str(tmp_path / "wilayah"), "--simulator-url", "http://127.0.0.1:9101")

    reset = audit_history(telkomsel).last()
    assert (reset.action, reset.actor) == ("operator.update", None)
    assert reset.details["changed"] == {
        "prefixes": {"from": ["62811"], "to": prefixes},
        "base_url": {"from": "http://127.0.0.1:9100/telkomsel", "to": "http://127.0.0.1:9101/telkomsel"},
    }
    events = audit_history(telkomsel).count()
    seed_demo("--reference-data", str(tmp_path / "wilayah"), "--simulator-url", "http://127.0.0.1:9101")
    assert audit_history(telkomsel).count() == events, "a re-run that changes nothing audits nothing"


def test_seed_demo_creating_or_renaming_back_a_demo_area_is_audited_from_and_to(tmp_path):
    from smsblast.models import AuditEvent

    seed_demo("--reference-data", str(tmp_path / "wilayah"))
    created = AuditEvent.objects.filter(action="area.create")
    codes = [demo.PROVINCE[0], demo.REGENCY[0], *(code for code, _ in demo.KECAMATAN)]
    assert sorted(created.values_list("object_id", flat=True)) == sorted(codes)
    assert {event.actor for event in created} == {None}
    regency = created.get(object_id=demo.REGENCY[0]).details["changed"]
    assert (regency["name"], regency["parent_id"]) == ({"to": demo.REGENCY[1]}, {"to": demo.PROVINCE[0]})
    Area.objects.filter(code=demo.REGENCY[0]).update(name="Kab. Blitar")  # renamed since, e.g. in the admin

    seed_demo("--reference-data", str(tmp_path / "wilayah"))

    renamed = AuditEvent.objects.get(action="area.update")
    assert (renamed.object_id, renamed.actor) == (demo.REGENCY[0], None)
    assert renamed.details == {"changed": {"name": {"from": "Kab. Blitar", "to": demo.REGENCY[1]}}}
    events = AuditEvent.objects.filter(object_type="smsblast.area").count()
    seed_demo("--reference-data", str(tmp_path / "wilayah"))
    assert AuditEvent.objects.filter(object_type="smsblast.area").count() == events, "nothing changed: none"


def test_seed_demo_adding_subscribers_is_audited_once_with_how_many(tmp_path):
    from smsblast.models import AuditEvent

    seed_demo("--reference-data", str(tmp_path / "wilayah"))

    added = AuditEvent.objects.get(object_type="smsblast.subscriber")
    assert (added.action, added.actor, added.object_id) == ("subscriber.demo_create", None, "")
    assert added.details == {"created": 300, "subscribers": 300}
    call_command(
        "seed_demo", "--subscribers", "350", "--reference-data", str(tmp_path / "wilayah"), stdout=io.StringIO()
    )
    assert AuditEvent.objects.filter(action="subscriber.demo_create").last().details == {
        "created": 50,
        "subscribers": 350,
    }
    seed_demo("--reference-data", str(tmp_path / "wilayah"))  # 350 already: none added, none recorded
    assert AuditEvent.objects.filter(action="subscriber.demo_create").count() == 2


def test_create_user_restoring_a_role_groups_permissions_is_audited_from_and_to(client, admin_user):
    from django.contrib.auth.models import Group, Permission

    client.force_login(admin_user)
    create_user("kominfo", "--role", "officer")
    officers = Group.objects.get(name="officer")
    assert [e.action for e in audit_history(officers)] == ["group.create"]
    # An admin gives officers one more permission in the group admin (audited there as group.update).
    extra = Permission.objects.get(content_type__app_label="campaigns", codename="view_dispatchbatch")
    form = {"name": "officer", "permissions": [*officers.permissions.values_list("pk", flat=True), extra.pk]}
    assert client.post(f"/admin/auth/group/{officers.pk}/change/", form).status_code == 302
    granted = sorted(f"{p.content_type.app_label}.{p.codename}" for p in officers.permissions.all())

    create_user("kominfo2", "--role", "officer")  # puts every role group back to its permissions

    restored = audit_history(officers).last()
    assert "campaigns.view_dispatchbatch" not in {p.codename for p in officers.permissions.all()}
    assert (restored.actor, restored.action, restored.from_state, restored.to_state) == (
        None,
        "group.update",
        "officer",
        "officer",
    )
    permissions = restored.details["changed"]["permissions"]
    assert permissions["from"] == granted and "campaigns.view_dispatchbatch" not in permissions["to"]
    events = audit_history(officers).count()
    create_user("kominfo3", "--role", "officer")
    assert audit_history(officers).count() == events, "groups already as their role wants them are no change"


# Options every Django command has, with Django's own help.
DJANGO_OPTIONS = {"help", "version", "verbosity", "settings", "pythonpath", "traceback", "no_color", "force_color"}
PROJECT_APPS = {"smsblast", "campaigns", "operators"}


def test_every_argument_of_every_command_says_what_it_is():
    silent = []
    for name, app in get_commands().items():
        if app not in PROJECT_APPS:
            continue
        parser = load_command_class(app, name).create_parser("manage.py", name)
        silent += [
            f"{name} {action.dest}"
            for action in parser._actions
            if action.dest not in DJANGO_OPTIONS | {"skip_checks"} and not action.help
        ]
    assert silent == []


def test_the_simulator_help_names_every_setting_control_takes():
    from dataclasses import fields

    from operators.simulator import OperatorBehaviour

    parser = load_command_class("operators", "run_operator_simulator").create_parser("manage.py", "x")
    # argparse wraps the help at spaces: compare it unwrapped.
    text = " ".join(parser.format_help().split())

    for setting in [field.name for field in fields(OperatorBehaviour)] + ["outage_seconds", "outage_mode"]:
        assert setting in text, setting
    assert "/stats" in text and "/<slug>/control" in text
