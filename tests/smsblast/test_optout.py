"""Opt-out and opt-in: the keyword table, the operator inbound API, manual opt-out and number search."""

import threading
from datetime import timedelta
from functools import partial

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.models import Operator
from smsblast import services
from smsblast.models import AuditEvent, Role, Subscriber
from smsblast.optout import Intent, intent_of
from tests.concurrency import skip_unless_postgresql, start_in_thread, wait_until_blocked_on_a_lock
from tests.smsblast.factories import AreaFactory, SubscriberFactory, UserFactory, area_tree


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("STOP", Intent.OPT_OUT),
        ("stop", Intent.OPT_OUT),
        ("  Stop  ", Intent.OPT_OUT),
        ("BERHENTI", Intent.OPT_OUT),
        ("berhenti.", Intent.OPT_OUT),
        ("UNREG", Intent.OPT_OUT),
        ("unreg info", Intent.OPT_OUT),
        (" UNREG INFO COVID ", Intent.OPT_OUT),
        ("STOP!", Intent.OPT_OUT),
        ("START", Intent.OPT_IN),
        ("start", Intent.OPT_IN),
        ("REG", Intent.OPT_IN),
        ("reg info", Intent.OPT_IN),
        ("\tReg\n", Intent.OPT_IN),
        ("STOPPING", None),
        ("REGISTER", None),
        ("please stop", None),
        ("#STOP", None),
        ("apa ini?", None),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_keyword_table(text, intent):
    assert intent_of(text) == intent


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ('"STOP"', Intent.OPT_OUT),  # as an instruction 'balas "STOP"' writes it
        ("“Berhenti”", Intent.OPT_OUT),
        ("'unreg'", Intent.OPT_OUT),
        ("*STOP*", Intent.OPT_OUT),  # as a chat app's bold
        ("(START)", Intent.OPT_IN),
        ("\u200bSTOP", Intent.OPT_OUT),  # zero-width space a keyboard or a copy left before it
        ("\ufeffSTOP", Intent.OPT_OUT),
        ("\u202aREG\u202c", Intent.OPT_IN),
        ('"STOPPING"', None),
        ("#STOP", None),
    ],
)
def test_a_keyword_in_quotes_or_marks_or_after_an_invisible_character_is_still_the_first_word(text, intent):
    assert intent_of(text) == intent


@pytest.fixture
def operator_client(api_client_for, operator_user):
    Operator.objects.create(name="Telkomsel", slug="telkomsel", prefixes=["62812"], user=operator_user)
    return api_client_for(operator_user)


def inbound(client, msisdn: str, text: str, **extra):
    return client.post("/api/v1/operator/inbound/", {"msisdn": msisdn, "text": text, **extra}, format="json")


def test_stop_opts_a_subscriber_out_and_is_audited(operator_client, operator_user):
    subscriber = SubscriberFactory(msisdn="+6281234567890")
    response = inbound(operator_client, "081234567890", " unreg info ", received_at="2021-07-01T13:05:00+07:00")

    assert response.status_code == 200
    assert response.json() | {"detail": ""} == {
        "msisdn": "+6281234567890",
        "action": "opted_out",
        "changed": True,
        "detail": "",
    }
    subscriber.refresh_from_db()
    assert subscriber.opted_out_at.isoformat() == "2021-07-01T06:05:00+00:00"
    event = AuditEvent.objects.get(action="subscriber.opt_out")
    assert (event.actor, event.object_id, event.from_state, event.to_state) == (
        operator_user,
        str(subscriber.pk),
        "subscribed",
        "opted_out",
    )
    assert event.details["source"] == "sms"
    assert event.details["operator"] == "telkomsel"


def test_start_opts_back_in_and_is_audited(operator_client):
    subscriber = SubscriberFactory(msisdn="+6281234567890", opted_out_at=timezone.now())
    response = inbound(operator_client, "+62 812 3456 7890", "REG")

    assert response.json()["action"] == "opted_in"
    subscriber.refresh_from_db()
    assert subscriber.opted_out_at is None
    assert AuditEvent.objects.filter(action="subscriber.opt_in", to_state="subscribed").count() == 1


def test_a_start_received_before_the_numbers_latest_stop_leaves_it_opted_out(operator_client):
    subscriber = SubscriberFactory(msisdn="+6281234567890")
    inbound(operator_client, "081234567890", "STOP", received_at="2021-07-01T13:05:00+07:00")

    late = inbound(operator_client, "081234567890", "START", received_at="2021-07-01T13:00:00+07:00")

    assert (late.json()["action"], late.json()["changed"]) == ("ignored", False)
    subscriber.refresh_from_db()
    assert subscriber.opted_out_at.isoformat() == "2021-07-01T06:05:00+00:00"
    assert not AuditEvent.objects.filter(action="subscriber.opt_in").exists()
    newer = inbound(operator_client, "081234567890", "START", received_at="2021-07-01T13:10:00+07:00")
    assert (newer.json()["action"], newer.json()["changed"]) == ("opted_in", True)


def test_a_stop_received_before_the_numbers_latest_start_leaves_it_opted_in(operator_client):
    subscriber = SubscriberFactory(msisdn="+6281234567890")
    inbound(operator_client, "081234567890", "STOP", received_at="2021-07-01T09:00:00+07:00")
    inbound(operator_client, "081234567890", "START", received_at="2021-07-01T10:05:00+07:00")

    late = inbound(operator_client, "081234567890", "STOP", received_at="2021-07-01T10:00:00+07:00")

    assert late.json() == {
        "msisdn": "+6281234567890",
        "action": "ignored",
        "changed": False,
        "detail": "Received before the number's latest opt-in, which stands.",
    }
    subscriber.refresh_from_db()
    assert subscriber.opted_out_at is None
    assert AuditEvent.objects.filter(action="subscriber.opt_out").count() == 1
    newer = inbound(operator_client, "081234567890", "STOP", received_at="2021-07-01T10:10:00+07:00")
    assert (newer.json()["action"], newer.json()["changed"]) == ("opted_out", True)


def test_a_start_to_a_reachable_number_still_outdates_an_older_stop_delivered_after_it(operator_client):
    subscriber = SubscriberFactory(msisdn="+6281234567890")
    start = inbound(operator_client, "081234567890", "START", received_at="2021-07-01T10:05:00+07:00")
    assert (start.json()["action"], start.json()["changed"]) == ("opted_in", False)

    late = inbound(operator_client, "081234567890", "STOP", received_at="2021-07-01T10:00:00+07:00")

    assert (late.json()["action"], late.json()["changed"]) == ("ignored", False)
    subscriber.refresh_from_db()
    assert subscriber.opted_out_at is None


def test_a_repeated_stop_outdates_an_older_start_delivered_after_it(operator_client):
    subscriber = SubscriberFactory(msisdn="+6281234567890")
    inbound(operator_client, "081234567890", "STOP", received_at="2021-07-01T10:00:00+07:00")
    inbound(operator_client, "081234567890", "STOP", received_at="2021-07-01T10:07:00+07:00")

    late = inbound(operator_client, "081234567890", "START", received_at="2021-07-01T10:05:00+07:00")

    assert (late.json()["action"], late.json()["changed"]) == ("ignored", False)
    subscriber.refresh_from_db()
    assert subscriber.opted_out_at is not None
    assert AuditEvent.objects.filter(action="subscriber.opt_out").count() == 1


def test_an_officers_opt_out_without_a_time_applies_whatever_start_came_before(operator_client, officer):
    subscriber = SubscriberFactory(msisdn="+6281234567890", opted_out_at=timezone.now())
    inbound(operator_client, "081234567890", "START", received_at=timezone.now().isoformat())

    _, changed = services.subscriber_opt_out(msisdn="+6281234567890", actor=officer, source="manual")

    assert changed
    subscriber.refresh_from_db()
    assert subscriber.opted_out_at is not None


@settings(max_examples=60)
@given(
    words=st.lists(st.sampled_from(["STOP", "START"]), min_size=1, max_size=5),
    order=st.randoms(use_true_random=False),
)
def test_whatever_order_the_operator_delivers_them_in_the_latest_message_sent_wins(operator_client, words, order):
    Subscriber.objects.filter(msisdn="+6281234567890").delete()
    SubscriberFactory(msisdn="+6281234567890")
    sent = [(word, f"2021-07-01T10:{minute:02d}:00+07:00") for minute, word in enumerate(words)]
    delivered = list(sent)
    order.shuffle(delivered)

    for word, received_at in delivered:
        assert inbound(operator_client, "081234567890", word, received_at=received_at).status_code == 200

    opted_out = Subscriber.objects.get(msisdn="+6281234567890").opted_out_at is not None
    assert opted_out == (sent[-1][0] == "STOP")


def test_a_received_at_later_than_the_message_arrived_counts_as_its_arrival(operator_client):
    subscriber = SubscriberFactory(msisdn="+6281234567890")
    before = timezone.now()
    inbound(operator_client, "081234567890", "STOP", received_at="2999-01-01T00:00:00+07:00")

    subscriber.refresh_from_db()
    assert before <= subscriber.opted_out_at <= timezone.now()
    start = inbound(operator_client, "081234567890", "START", received_at=timezone.now().isoformat())
    assert (start.json()["action"], start.json()["changed"]) == ("opted_in", True)


def test_repeated_stop_changes_nothing_and_writes_no_second_event(operator_client):
    SubscriberFactory(msisdn="+6281234567890")
    inbound(operator_client, "081234567890", "STOP")
    response = inbound(operator_client, "081234567890", "STOP")

    assert (response.json()["action"], response.json()["changed"]) == ("opted_out", False)
    assert AuditEvent.objects.filter(action="subscriber.opt_out").count() == 1


def test_a_stop_sent_after_a_hand_made_opt_out_keeps_the_number_out_until_its_own_start(
    operator_client, api_client_for, officer
):
    SubscriberFactory(msisdn="+6281234567890")
    services.subscriber_opt_out(msisdn="+6281234567890", actor=officer, source="manual")

    stop = inbound(operator_client, "081234567890", "STOP")

    assert (stop.json()["action"], stop.json()["changed"]) == ("opted_out", False)
    refused = api_client_for(officer).post("/api/v1/subscribers/+6281234567890/opt-in/")
    assert refused.status_code == 409
    assert Subscriber.objects.get(msisdn="+6281234567890").opted_out_at is not None
    latest = AuditEvent.objects.filter(action="subscriber.opt_out").last()
    assert (latest.from_state, latest.to_state, latest.details["source"]) == ("opted_out", "opted_out", "sms")
    start = inbound(operator_client, "081234567890", "START")
    assert (start.json()["action"], start.json()["changed"]) == ("opted_in", True)


def test_other_text_is_ignored_with_200(operator_client):
    subscriber = SubscriberFactory(msisdn="+6281234567890")
    response = inbound(operator_client, "081234567890", "Terima kasih infonya")

    assert response.status_code == 200
    assert response.json()["action"] == "ignored"
    subscriber.refresh_from_db()
    assert subscriber.opted_out_at is None


def test_other_text_is_answered_with_every_field_of_the_answer_and_nothing_changed(operator_client):
    SubscriberFactory(msisdn="+6281234567890")
    response = inbound(operator_client, "081234567890", "Terima kasih infonya")

    assert response.status_code == 200
    assert response.json() == {
        "msisdn": "+6281234567890",
        "action": "ignored",
        "changed": False,
        "detail": "Not an opt-out or opt-in keyword.",
    }
    assert not AuditEvent.objects.filter(action__startswith="subscriber.").exists()


def test_stop_from_an_unknown_number_records_it_opted_out_and_a_later_import_keeps_that(
    operator_client, tmp_path, settings
):
    settings.MEDIA_ROOT = tmp_path
    response = inbound(operator_client, "081299998888", "BERHENTI")

    assert response.json()["action"] == "opted_out"
    subscriber = Subscriber.objects.get(msisdn="+6281299998888")
    assert subscriber.opted_out_at is not None
    assert subscriber.operator.slug == "telkomsel"

    path = tmp_path / "list.csv"
    path.write_text("msisdn,nama\n081299998888,Siti\n")
    job = services.subscriber_import_create_from_path(path=path, user=None)
    job = services.subscriber_import_run(subscriber_import=job)

    subscriber.refresh_from_db()
    assert (job.created, job.updated) == (0, 1)
    assert subscriber.name == "Siti"
    assert subscriber.opted_out_at is not None


def test_start_from_an_unknown_number_creates_nothing(operator_client):
    response = inbound(operator_client, "081299998888", "START")

    assert response.json()["action"] == "ignored"
    assert not Subscriber.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"msisdn": "12345", "text": "STOP"}, "msisdn"),
        ({"msisdn": "0215551234", "text": "STOP"}, "msisdn"),
        ({"text": "STOP"}, "msisdn"),
        ({"msisdn": "081234567890", "text": "STOP", "received_at": "yesterday"}, "received_at"),
        ({"msisdn": "081234567890", "text": "STOP", "received_at": "2021-07-01T13:05:00"}, "received_at"),
        ({"msisdn": "081234567890", "text": "STOP", "received_at": "2021-13-45T13:05:00+07:00"}, "received_at"),
        ({"msisdn": "081234567890", "text": "STOP", "received_at": "0001-01-01T00:00:00+14:00"}, "received_at"),
    ],
)
def test_bad_inbound_message_is_400(operator_client, body, field):
    response = operator_client.post("/api/v1/operator/inbound/", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not Subscriber.objects.exists()


def test_an_operator_cannot_opt_another_operators_subscriber_in_or_out(operator_client):
    indosat = Operator.objects.create(name="Indosat", slug="indosat", prefixes=["62815"])
    opted_out = SubscriberFactory(msisdn="+6281512345678", operator=indosat, opted_out_at=timezone.now())
    receiving = SubscriberFactory(msisdn="+6281587654321", operator=indosat)

    refused = [
        inbound(operator_client, "081512345678", "START"),
        inbound(operator_client, "081587654321", "STOP"),
        inbound(operator_client, "081599990000", "STOP"),  # unknown, but an Indosat prefix
    ]

    assert [response.status_code for response in refused] == [403, 403, 403]
    assert "another operator" in refused[0].json()["detail"]
    opted_out.refresh_from_db()
    receiving.refresh_from_db()
    assert opted_out.opted_out_at is not None
    assert receiving.opted_out_at is None
    assert not Subscriber.objects.filter(msisdn="+6281599990000").exists()
    assert not AuditEvent.objects.filter(action__startswith="subscriber.").exists()


def test_an_operator_token_not_linked_to_an_operator_cannot_post_inbound_messages(api_client_for, operator_user):
    subscriber = SubscriberFactory(msisdn="+6281234567890")
    response = inbound(api_client_for(operator_user), "081234567890", "STOP")

    assert response.status_code == 403
    subscriber.refresh_from_db()
    assert subscriber.opted_out_at is None


def test_only_operators_post_inbound_messages(api_client_for, officer):
    response = inbound(api_client_for(officer), "081234567890", "STOP")

    assert response.status_code == 403
    assert not Subscriber.objects.exists()


def test_officer_opts_a_number_out_and_in_by_hand(api_client_for, officer):
    subscriber = SubscriberFactory(msisdn="+6281234567890")
    client = api_client_for(officer)

    out = client.post("/api/v1/subscribers/0812-3456-7890/opt-out/")
    assert out.status_code == 200
    assert (out.json()["msisdn"], out.json()["opted_out"], out.json()["changed"]) == ("+6281234567890", True, True)
    event = AuditEvent.objects.get(action="subscriber.opt_out")
    assert (event.actor, event.details["source"]) == (officer, "manual")

    back = client.post("/api/v1/subscribers/+6281234567890/opt-in/")
    assert (back.status_code, back.json()["opted_out"]) == (200, False)
    subscriber.refresh_from_db()
    assert subscriber.opted_out_at is None


def test_manual_opt_out_of_an_unknown_number_records_it(api_client_for, officer):
    response = api_client_for(officer).post("/api/v1/subscribers/081299998888/opt-out/")

    assert response.status_code == 200
    assert Subscriber.objects.get(msisdn="+6281299998888").opted_out_at is not None


def test_manual_opt_in_of_an_unknown_number_is_404_and_a_bad_number_400(api_client_for, officer):
    client = api_client_for(officer)

    assert client.post("/api/v1/subscribers/081299998888/opt-in/").status_code == 404
    assert client.post("/api/v1/subscribers/not-a-number/opt-out/").status_code == 400


def test_an_officer_limited_to_a_jurisdiction_opts_in_and_out_only_the_subscribers_homed_within_it(
    api_client_for, operator_client
):
    area_tree("35.05", kecamatan=1)
    AreaFactory(code="33", name="Jawa Tengah")
    AreaFactory(code="33.16", name="Kabupaten Blora")
    SubscriberFactory(msisdn="+6281234567890", area_id="35.05.01")
    SubscriberFactory(msisdn="+6281234567891", area_id="33.16", opted_out_at=timezone.now())
    client = api_client_for(UserFactory(role=Role.OFFICER, jurisdiction_id="33.16"))

    # Blitar's subscriber and a number nobody knows answer alike, and neither is written.
    for path in ("0812-3456-7890/opt-out", "0812-3456-7890/opt-in", "081299998888/opt-out", "081299998888/opt-in"):
        assert client.post(f"/api/v1/subscribers/{path}/").status_code == 404, path
    assert Subscriber.objects.get(msisdn="+6281234567890").opted_out_at is None
    assert not Subscriber.objects.filter(msisdn="+6281299998888").exists()
    assert not AuditEvent.objects.filter(action__startswith="subscriber.").exists()
    # Blora's own subscriber is theirs.
    back = client.post("/api/v1/subscribers/081234567891/opt-in/")
    assert (back.status_code, back.json()["opted_out"]) == (200, False)
    assert client.post("/api/v1/subscribers/081234567891/opt-out/").json()["changed"] is True
    # An operator relays any of its subscribers' STOP, wherever they live.
    assert inbound(operator_client, "081234567890", "STOP").json()["changed"] is True


def test_approvers_cannot_opt_numbers_out(api_client_for, approver):
    SubscriberFactory(msisdn="+6281234567890")

    assert api_client_for(approver).post("/api/v1/subscribers/081234567890/opt-out/").status_code == 403
    assert Subscriber.objects.get().opted_out_at is None


def found_numbers(client, query: str) -> list[str]:
    """Return the numbers the subscriber search finds for `query`."""
    response = client.get("/api/v1/subscribers/", {"q": query})
    assert response.status_code == 200
    return [row["msisdn"] for row in response.json()["results"]]


def test_subscribers_are_found_by_any_form_of_part_of_their_number(api_client_for, officer):
    SubscriberFactory(msisdn="+6281234567890", name="Siti")
    SubscriberFactory(msisdn="+6281234500000")
    SubscriberFactory(msisdn="+6285600000000")
    client = api_client_for(officer)

    found = partial(found_numbers, client)

    assert found("0812 345") == ["+6281234500000", "+6281234567890"]
    assert found("+62 812-3456-7890") == ["+6281234567890"]
    assert found("67890") == ["+6281234567890"]
    assert found("0856") == ["+6285600000000"]
    assert client.get("/api/v1/subscribers/", {"q": "12"}).status_code == 400


def test_subscribers_are_found_by_their_last_digits_whatever_digit_those_begin_with(api_client_for, officer):
    SubscriberFactory(msisdn="+6281234560123")
    SubscriberFactory(msisdn="+6281234568901")
    SubscriberFactory(msisdn="+6285612345678")
    client = api_client_for(officer)

    found = partial(found_numbers, client)

    assert found("0123") == ["+6281234560123"]
    assert found("8901") == ["+6281234568901"]
    assert found("678") == ["+6285612345678"]
    # A beginning as dialled at home, with or without its 0, still finds the numbers starting so.
    assert found("0856") == ["+6285612345678"]
    assert found("812 3456") == ["+6281234560123", "+6281234568901"]


def test_opted_out_subscribers_are_left_out_of_the_targeted_audience(officer):
    from smsblast.selectors import subscribers_in_area
    from tests.smsblast.factories import AreaFactory

    for code in ("35", "35.05", "35.05.01"):
        AreaFactory(code=code)
    SubscriberFactory(msisdn="+6281234567890", area_id="35.05.01")
    services.subscriber_opt_out(msisdn="081234567890", actor=officer, source="manual")
    SubscriberFactory(msisdn="+6281234567891", area_id="35.05.01")

    reached = subscribers_in_area(["35.05"], opted_in_only=True).values_list("msisdn", flat=True)
    assert list(reached) == ["+6281234567891"]


def test_admin_actions_opt_selected_numbers_out_and_in(client, admin_user):
    subscribers = [SubscriberFactory(msisdn="+6281234567890"), SubscriberFactory(msisdn="+6281234567891")]
    client.force_login(admin_user)
    selected = [str(subscriber.pk) for subscriber in subscribers]

    client.post("/admin/smsblast/subscriber/", {"action": "opt_out", "_selected_action": selected})
    assert Subscriber.objects.filter(opted_out_at__isnull=False).count() == 2
    assert AuditEvent.objects.filter(action="subscriber.opt_out", actor=admin_user).count() == 2

    client.post("/admin/smsblast/subscriber/", {"action": "opt_in", "_selected_action": selected[:1]})
    assert list(Subscriber.objects.filter(opted_out_at__isnull=True).values_list("msisdn", flat=True)) == [
        "+6281234567890"
    ]


def test_a_number_that_sent_stop_is_not_opted_back_in_by_an_officer_or_an_admin(
    api_client_for, officer, client, admin_user
):
    subscriber = SubscriberFactory(msisdn="+6281234567890")
    services.subscriber_opt_out(msisdn="+6281234567890", actor=None, source="sms")

    refused = api_client_for(officer).post("/api/v1/subscribers/+6281234567890/opt-in/")
    assert refused.status_code == 409
    assert "START or REG" in refused.json()["detail"]
    client.force_login(admin_user)
    page = client.post(
        "/admin/smsblast/subscriber/", {"action": "opt_in", "_selected_action": [str(subscriber.pk)]}, follow=True
    )
    assert "berhenti berlangganan lewat SMS" in page.content.decode()
    subscriber.refresh_from_db()
    assert subscriber.opted_out_at is not None
    assert not AuditEvent.objects.filter(action="subscriber.opt_in").exists()

    # Its own START brings it back, and after an officer's later opt-out an officer may undo that one.
    services.subscriber_opt_in(msisdn="+6281234567890", actor=None, source="sms")
    services.subscriber_opt_out(msisdn="+6281234567890", actor=officer, source="manual")
    assert api_client_for(officer).post("/api/v1/subscribers/+6281234567890/opt-in/").status_code == 200


@pytest.mark.django_db
def test_an_opt_in_whose_audit_event_cannot_be_written_leaves_the_number_opted_out(monkeypatch, officer):
    SubscriberFactory(msisdn="+6281234567890")
    services.subscriber_opt_out(msisdn="+6281234567890", actor=officer, source="manual")

    def refuse(**kwargs):
        raise RuntimeError("audit trail unavailable")

    monkeypatch.setattr(services, "audit_record", refuse)
    with pytest.raises(RuntimeError):
        services.subscriber_opt_in(msisdn="+6281234567890", actor=officer, source="manual")

    assert Subscriber.objects.get(msisdn="+6281234567890").opted_out_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_stop_from_an_unknown_number_while_its_prefix_moves_routes_it_by_the_new_table():
    skip_unless_postgresql()
    telkomsel = Operator.objects.create(name="Telkomsel", slug="telkomsel", prefixes=["62812", "62813"])
    indosat = Operator.objects.create(name="Indosat", slug="indosat", prefixes=["62856"])
    moved, go = threading.Event(), threading.Event()

    def move_prefix_and_hold():
        with transaction.atomic():
            telkomsel.prefixes = ["62812"]
            telkomsel.save(update_fields=["prefixes"])
            indosat.prefixes = ["62856", "62813"]
            indosat.save(update_fields=["prefixes"])
            services.subscribers_reroute(prefixes=["62813"])
            moved.set()  # re-routed under the routing lock, not committed yet
            go.wait(30)

    errors = []
    moving = start_in_thread(move_prefix_and_hold, errors)
    assert moved.wait(30)
    stopping = start_in_thread(
        lambda: services.subscriber_opt_out(msisdn="081300000009", actor=None, source="sms"), errors
    )
    wait_until_blocked_on_a_lock(1, unless=stopping)
    go.set()
    moving.join(30)
    stopping.join(30)

    assert errors == []
    subscriber = Subscriber.objects.get(msisdn="+6281300000009")
    assert (subscriber.operator_id, subscriber.opted_out_at is not None) == (indosat.pk, True)


def test_a_late_stop_is_honoured_after_an_officer_opted_the_number_back_in(operator_client, officer):
    # An officer's opt-in undoes a hand-made opt-out; it must not swallow the subscriber's own STOP delivered late.
    subscriber = SubscriberFactory(msisdn="+6281234567890", opted_out_at=timezone.now() - timedelta(hours=2))
    sent_at = timezone.now() - timedelta(minutes=5)
    _, changed = services.subscriber_opt_in(msisdn="+6281234567890", actor=officer, source="manual")
    assert changed

    late = inbound(operator_client, "081234567890", "STOP", received_at=sent_at.isoformat())

    assert (late.json()["action"], late.json()["changed"]) == ("opted_out", True)
    subscriber.refresh_from_db()
    assert subscriber.opted_out_at is not None
