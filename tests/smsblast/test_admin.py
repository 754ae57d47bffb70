"""The admin: every model's list, search and filters render; the audit trail and sending records are read-only."""

import json
import re

import pytest
from django.contrib import admin
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.services import campaign_cancel
from operators.models import BroadcastSettings, Operator
from smsblast.models import Area, AuditEvent, Subscriber, User
from tests.campaigns.factories import ApprovalFactory, CampaignFactory, DeliveryFactory, DispatchBatchFactory
from tests.operators.factories import OperatorFactory
from tests.smsblast.factories import SubscriberFactory, area_tree

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def records(officer):
    area_tree(kecamatan=1)
    operator = OperatorFactory(slug="telkomsel", name="Telkomsel")
    SubscriberFactory(area_id="35.05.01", operator=operator, name="Siti")
    campaign = CampaignFactory(author=officer, title="Vaksinasi lansia")
    campaign_cancel(campaign=campaign, actor=officer)
    ApprovalFactory()
    DeliveryFactory(batch=DispatchBatchFactory(operator=operator))
    return campaign


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


REGISTERED = sorted(admin.site._registry, key=lambda model: model._meta.label)


@pytest.mark.parametrize("model", REGISTERED, ids=[model._meta.label for model in REGISTERED])
def test_every_model_list_renders_with_search_and_filters(model, admin_client, records):
    model_admin = admin.site._registry[model]
    response = admin_client.get(admin_url(model, "changelist"), {"q": "a"} if model_admin.search_fields else {})
    assert response.status_code == 200
    if model._meta.app_label in {"smsblast", "campaigns", "operators"}:
        assert model_admin.list_display != ("__str__",), "each admin names useful columns"
    first = model.objects.first()
    if first is not None:
        assert admin_client.get(admin_url(model, "change", first.pk)).status_code == 200


@pytest.mark.parametrize(
    "model",
    [
        Campaign,
        AuditEvent,
        *(m for m in REGISTERED if m._meta.model_name in {"delivery", "dispatchbatch", "campaignrun", "approval"}),
    ],
)
def test_records_written_by_services_cannot_be_added_changed_or_deleted_in_the_admin(model, admin_client, records):
    obj = model.objects.first()
    before = model.objects.count()
    assert admin_client.get(admin_url(model, "add")).status_code == 403
    assert admin_client.post(admin_url(model, "change", obj.pk), {}).status_code == 403
    assert admin_client.post(admin_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    assert model.objects.count() == before


def test_audit_events_are_unchanged_after_admin_attempts(admin_client, records):
    event = AuditEvent.objects.get(action="campaign.cancel")
    admin_client.post(admin_url(AuditEvent, "change", event.pk), {"action": "tampered", "to_state": "draft"})
    event.refresh_from_db()
    assert (event.action, event.to_state) == ("campaign.cancel", "cancelled")
    page = admin_client.get(admin_url(AuditEvent, "changelist"), {"q": "campaign.cancel"}).content.decode()
    assert "campaign.cancel" in page


def test_admin_cancel_action_goes_through_the_service_and_is_audited(admin_client, admin_user, officer):
    campaign = CampaignFactory(author=officer, status=Campaign.Status.APPROVED)
    response = admin_client.post(
        admin_url(Campaign, "changelist"), {"action": "cancel", "_selected_action": [campaign.pk]}, follow=True
    )
    assert response.status_code == 200
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.CANCELLED
    event = AuditEvent.objects.get(action="campaign.cancel", object_id=str(campaign.pk))
    assert (event.actor, event.from_state, event.to_state) == (admin_user, "approved", "cancelled")


def operator_form(**overrides) -> dict:
    data = {
        "name": "Telkomsel",
        "slug": "telkomsel",
        "active": "on",
        "prefixes": "62811, +62812,62813\n62811",
        "adapter": "http_batch_v1",
        "base_url": "http://127.0.0.1:9100",
        "api_key": "",
        "signing_secret": "",
        "segments_per_second": "100",
        "batch_size": "1000",
        "tariff_per_segment": "250",
        "vertex_limit": "250",
    }
    data.update(overrides)
    return data


def test_operator_prefixes_are_edited_as_a_comma_list(admin_client):
    response = admin_client.post(admin_url(Operator, "add"), operator_form(api_key="tsel-key-123456"))
    assert response.status_code == 302, response.content.decode()[:2000]
    operator = Operator.objects.get(slug="telkomsel")
    assert operator.prefixes == ["62811", "62812", "62813"]
    page = admin_client.get(admin_url(Operator, "change", operator.pk)).content.decode()
    assert "62811, 62812, 62813" in page


@pytest.mark.django_db(transaction=True)
def test_two_admins_giving_one_prefix_to_two_operators_at_once_route_it_to_one_the_other_is_told(admin_user):
    """The check that a prefix is free holds until the save commits: of two saves at once, the second is refused."""
    import threading

    from django.test import Client

    from smsblast.services import subscriber_routing_lock
    from tests.concurrency import skip_unless_postgresql, start_in_thread, wait_until_blocked_on_a_lock

    skip_unless_postgresql()
    indosat = OperatorFactory(slug="indosat", name="Indosat", prefixes=["62814"])
    xl = OperatorFactory(slug="xl-axiata", name="XL Axiata", prefixes=["62817"])
    holding, release, errors, answers = threading.Event(), threading.Event(), [], {}

    def hold_the_routing_lock():
        with transaction.atomic():
            subscriber_routing_lock()
            holding.set()
            release.wait(30)

    def save(operator, name, slug, prefixes):
        client = Client()
        client.force_login(admin_user)
        form = operator_form(name=name, slug=slug, prefixes=prefixes, base_url="http://127.0.0.1:9101")
        answers[slug] = client.post(admin_url(Operator, "change", operator.pk), form).status_code

    holder = start_in_thread(hold_the_routing_lock, errors)
    holding.wait(30)
    first = start_in_thread(lambda: save(indosat, "Indosat", "indosat", "62814, 62859"), errors)
    wait_until_blocked_on_a_lock(1)
    second = start_in_thread(lambda: save(xl, "XL Axiata", "xl-axiata", "62817, 62859"), errors)
    wait_until_blocked_on_a_lock(2)
    release.set()
    for thread in (holder, first, second):
        thread.join(30)

    assert errors == []
    assert sorted(answers.values()) == [200, 302], "one save is refused with the form's message"
    holders = [slug for slug, prefixes in Operator.objects.values_list("slug", "prefixes") if "62859" in prefixes]
    assert len(holders) == 1


def test_operator_prefix_that_is_not_digits_is_refused(admin_client):
    response = admin_client.post(admin_url(Operator, "add"), operator_form(prefixes="62811, abc"))
    assert response.status_code == 200
    assert "bukan awalan berupa angka E.164" in response.content.decode()
    assert not Operator.objects.exists()


# Full-width, Arabic-Indic and superscript digits: str.isdigit() takes each of them.
@pytest.mark.parametrize("prefix", ["\uff16\uff12\uff18\uff11\uff11", "\u0666\u0662\u0668\u0661\u0661", "628\u00b9"])
def test_operator_prefix_of_digits_other_than_ascii_is_refused_not_a_server_error(admin_client, prefix):
    response = admin_client.post(admin_url(Operator, "add"), operator_form(prefixes=prefix))
    assert response.status_code == 200
    assert "bukan awalan berupa angka E.164" in response.content.decode()
    assert not Operator.objects.exists()


@pytest.mark.parametrize(("prefix", "written"), [("0812", "62812"), ("812", "62812"), ("+0856", "62856")])
def test_an_operator_prefix_written_without_the_country_code_is_refused_showing_how_to_write_it(
    admin_client, prefix, written
):
    """A prefix such as 0812 matches no stored number (they are +62…): saved, its numbers would go to no operator."""
    SubscriberFactory(msisdn=f"+{written}12345678", operator=None)
    response = admin_client.post(admin_url(Operator, "add"), operator_form(prefixes=f"62811, {prefix}"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "kode negara" in page and written in page
    assert not Operator.objects.exists()

    response = admin_client.post(admin_url(Operator, "add"), operator_form(prefixes=f"62811, {written}"))
    assert response.status_code == 302
    assert Subscriber.objects.get().operator == Operator.objects.get()


def test_an_admin_action_seeds_the_selected_operators_prefixes_from_phonenumbers_audited(admin_client, admin_user):
    telkomsel = OperatorFactory(slug="telkomsel", name="Telkomsel", prefixes=[])
    xl = OperatorFactory(slug="xl-axiata", name="XL Axiata", prefixes=["62817"])
    OperatorFactory(slug="byu", name="by.U", prefixes=["62851"])  # one of Telkomsel's, routed elsewhere here
    local = OperatorFactory(slug="lokal", name="Operator Lokal", prefixes=[])
    unrouted = SubscriberFactory(msisdn="+6281234567890", operator=None)

    response = admin_client.post(
        admin_url(Operator, "changelist"),
        {"action": "add_known_prefixes", "_selected_action": [telkomsel.pk, xl.pk, local.pk]},
        follow=True,
    )

    assert response.status_code == 200
    for operator in (telkomsel, xl, local):
        operator.refresh_from_db()
    assert {"62811", "62812", "62813", "62821", "62852"} <= set(telkomsel.prefixes)
    assert "62851" not in telkomsel.prefixes and "62817" not in telkomsel.prefixes
    assert {"62817", "62818", "62819", "62859", "62877"} <= set(xl.prefixes)
    assert local.prefixes == []
    unrouted.refresh_from_db()
    assert unrouted.operator == telkomsel
    event = AuditEvent.objects.get(action="operator.update", object_id=str(telkomsel.pk))
    assert event.actor == admin_user and event.details["changed"]["prefixes"]["to"] == telkomsel.prefixes
    page = response.content.decode()
    assert "Telkomsel" in page and "Operator Lokal" in page  # what was added, and to which one nothing


def test_a_staff_user_who_may_only_view_operators_cannot_seed_their_prefixes(client):
    from django.contrib.auth.models import Permission

    telkomsel = OperatorFactory(slug="telkomsel", name="Telkomsel", prefixes=[])
    viewer = User.objects.create_user("viewer", password="pw-viewer-1", is_staff=True)  # noqa: S106
    viewer.user_permissions.add(Permission.objects.get(codename="view_operator"))
    client.force_login(viewer)

    response = client.post(
        admin_url(Operator, "changelist"), {"action": "add_known_prefixes", "_selected_action": [telkomsel.pk]}
    )

    assert response.status_code in (200, 302)
    telkomsel.refresh_from_db()
    assert telkomsel.prefixes == []
    assert not AuditEvent.objects.filter(action="operator.update").exists()


def test_a_prefix_another_operator_routes_is_refused_naming_that_operator(admin_client):
    xl = OperatorFactory(slug="xl", name="XL Axiata", prefixes=["62817", "62859"])
    response = admin_client.post(admin_url(Operator, "add"), operator_form(prefixes="62811, 62859"))
    assert response.status_code == 200
    assert "62859" in response.content.decode() and "XL Axiata" in response.content.decode()
    assert list(Operator.objects.all()) == [xl]
    # Its own prefixes, saved again with the rest of its form, are no conflict.
    form = operator_form(name=xl.name, slug="xl", prefixes="62817, 62859, 62818")
    assert admin_client.post(admin_url(Operator, "change", xl.pk), form).status_code == 302


def test_operator_secrets_are_masked_and_kept_when_left_blank(admin_client):
    operator = OperatorFactory(slug="xl", api_key="xl-api-key-secret-9876", signing_secret="hmac-secret-value-4321")
    change_page = admin_client.get(admin_url(Operator, "change", operator.pk)).content.decode()
    list_page = admin_client.get(admin_url(Operator, "changelist")).content.decode()
    for page in (change_page, list_page):
        assert "xl-api-key-secret-9876" not in page
        assert "hmac-secret-value-4321" not in page
    assert "9876" in change_page and "4321" in change_page

    form = operator_form(name=operator.name, slug="xl", prefixes="62817")
    assert admin_client.post(admin_url(Operator, "change", operator.pk), form).status_code == 302
    operator.refresh_from_db()
    assert (operator.api_key, operator.signing_secret, operator.prefixes) == (
        "xl-api-key-secret-9876",
        "hmac-secret-value-4321",
        ["62817"],
    )

    form["api_key"] = "rotated-key-0001"
    admin_client.post(admin_url(Operator, "change", operator.pk), form)
    operator.refresh_from_db()
    assert operator.api_key == "rotated-key-0001"
    assert operator.signing_secret == "hmac-secret-value-4321"


# A zero-width space or a curly quote copied with the key, and a line break: no HTTP header can carry them.
@pytest.mark.parametrize("field", ["api_key", "signing_secret"])
@pytest.mark.parametrize("pasted", ["tsel-key-123456\u200b", "tsel-\u2019key\u2019", "tsel-key\n123456"])
def test_an_operator_credential_holding_a_character_no_request_can_carry_is_refused_without_showing_it(
    admin_client, field, pasted
):
    operator = OperatorFactory(slug="telkomsel", api_key="stored-key-0001", signing_secret="stored-secret-0001")
    form = operator_form(**{field: pasted})
    response = admin_client.post(admin_url(Operator, "change", operator.pk), form)
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert "123456" not in response.content.decode() and "key\u2019" not in response.content.decode()
    operator.refresh_from_db()
    assert (operator.api_key, operator.signing_secret) == ("stored-key-0001", "stored-secret-0001")


@pytest.mark.parametrize("field", ["api_key", "signing_secret"])
def test_an_operator_credential_longer_than_200_characters_is_refused_and_the_stored_one_kept(admin_client, field):
    operator = OperatorFactory(slug="telkomsel", api_key="stored-key-0001", signing_secret="stored-secret-0001")
    # Refused, not cut to fit by the browser unseen.
    page = admin_client.get(admin_url(Operator, "change", operator.pk)).content.decode()
    assert "maxlength" not in page.split(f'name="{field}"')[1].split(">")[0]
    response = admin_client.post(admin_url(Operator, "change", operator.pk), operator_form(**{field: "k" * 201}))
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    operator.refresh_from_db()
    assert (operator.api_key, operator.signing_secret) == ("stored-key-0001", "stored-secret-0001")

    response = admin_client.post(admin_url(Operator, "change", operator.pk), operator_form(**{field: "k" * 200}))
    assert response.status_code == 302
    operator.refresh_from_db()
    assert getattr(operator, field) == "k" * 200


def test_subscriber_admin_filters_opted_out(admin_client, records):
    SubscriberFactory(msisdn="+6281299990000", opted_out_at=timezone.now())
    opted_out = admin_client.get(admin_url(Subscriber, "changelist"), {"opted_out": "yes"}).content.decode()
    assert "+6281299990000" in opted_out
    receiving = admin_client.get(admin_url(Subscriber, "changelist"), {"opted_out": "no"}).content.decode()
    assert "+6281299990000" not in receiving


def test_subscriber_admin_filters_by_language_without_reading_every_subscribers_language(admin_client, records):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    SubscriberFactory(msisdn="+6281299990001", language="en")
    SubscriberFactory(msisdn="+6281299990002", language="jv")  # set by hand in the admin form
    url = admin_url(Subscriber, "changelist")
    with CaptureQueriesContext(connection) as captured:
        page = admin_client.get(url).content.decode()
    assert '"?language=en"' in page and '"?language=id"' in page
    assert [query["sql"] for query in captured if "DISTINCT" in query["sql"]] == []
    english = admin_client.get(url, {"language": "en"}).content.decode()
    assert "+6281299990001" in english and "+6281299990002" not in english
    assert "+6281299990002" in admin_client.get(url, {"language": "jv"}).content.decode()


def test_subscriber_admin_filters_by_language_whatever_its_case_as_campaign_audiences_do(admin_client, records):
    SubscriberFactory(msisdn="+6281299990001", language="Jawa")
    SubscriberFactory(msisdn="+6281299990002", language="jawa")
    SubscriberFactory(msisdn="+6281299990003", language="EN")
    SubscriberFactory(msisdn="+6281299990004", language="id")
    url = admin_url(Subscriber, "changelist")

    def language_choices(page):
        """Return the language filter's choices as (shown, selected)."""
        block = re.search(r'<details data-filter-title="bahasa".*?</details>', page, re.S).group(0)
        return re.findall(r'<li( class="selected")?>\s*<a href="[^"]*">([^<]*)</a>', block)

    for value in ("Jawa", "jawa", "JAWA"):
        page = admin_client.get(url, {"language": value}).content.decode()
        assert "+6281299990001" in page and "+6281299990002" in page and "+6281299990004" not in page
        # One choice for the language, however it was asked for, and it is the one selected.
        assert [shown for selected, shown in language_choices(page) if "jawa" in shown.lower()] == ["jawa"]
        assert (' class="selected"', "jawa") in language_choices(page)
    page = admin_client.get(url, {"language": "EN"}).content.decode()
    assert "+6281299990003" in page and "+6281299990004" not in page
    assert (' class="selected"', "Bahasa Inggris (en)") in language_choices(page)
    assert len(language_choices(page)) == 3  # all, id and en: no "EN" of its own


def test_changing_an_operators_prefixes_in_the_admin_routes_its_numbers_again(admin_client):
    smartfren = OperatorFactory(slug="smartfren", name="Smartfren", prefixes=["62881"])
    telkomsel = OperatorFactory(slug="telkomsel", name="Telkomsel", prefixes=["62812"])
    unrouted = SubscriberFactory(msisdn="+6288512345678", operator=None)
    routed = SubscriberFactory(msisdn="+6281234567890", operator=telkomsel)
    elsewhere = SubscriberFactory(msisdn="+6288112345678", operator=smartfren)
    form = {
        "name": "Smartfren",
        "slug": "smartfren",
        "active": "on",
        "prefixes": "62881, 62885, 628123",
        "adapter": smartfren.adapter,
        "base_url": smartfren.base_url,
        "segments_per_second": smartfren.segments_per_second,
        "batch_size": smartfren.batch_size,
        "tariff_per_segment": smartfren.tariff_per_segment,
        "vertex_limit": smartfren.vertex_limit,
    }

    response = admin_client.post(admin_url(Operator, "change", smartfren.pk), form)

    assert response.status_code == 302
    unrouted.refresh_from_db()
    routed.refresh_from_db()
    elsewhere.refresh_from_db()
    assert (unrouted.operator, routed.operator, elsewhere.operator) == (smartfren, smartfren, smartfren)

    form["prefixes"] = "62881"
    admin_client.post(admin_url(Operator, "change", smartfren.pk), form)

    unrouted.refresh_from_db()
    routed.refresh_from_db()
    assert (unrouted.operator, routed.operator) == (None, telkomsel)


@pytest.mark.parametrize("how", ["delete_view", "delete_selected"])
def test_deleting_an_operator_in_the_admin_routes_its_numbers_to_the_operator_the_table_now_gives(admin_client, how):
    telkomsel = OperatorFactory(slug="telkomsel", name="Telkomsel", prefixes=["62812"])
    byu = OperatorFactory(slug="byu", name="by.U", prefixes=["628129", "62899"])
    moved = SubscriberFactory(msisdn="+6281291234567", operator=byu)
    unrouted = SubscriberFactory(msisdn="+6289912345678", operator=byu)

    if how == "delete_view":
        response = admin_client.post(admin_url(Operator, "delete", byu.pk), {"post": "yes"})
    else:
        form = {"action": "delete_selected", "_selected_action": [byu.pk], "post": "yes"}
        response = admin_client.post(admin_url(Operator, "changelist"), form)

    assert response.status_code == 302
    assert not Operator.objects.filter(slug="byu").exists()
    moved.refresh_from_db()
    unrouted.refresh_from_db()
    # Under Telkomsel's 62812 again, so later runs send to it instead of skipping the number.
    assert (moved.operator, unrouted.operator) == (telkomsel, None)


def test_the_subscriber_form_cannot_undo_an_opt_out_without_the_audited_action(admin_client):
    subscriber = SubscriberFactory(msisdn="+6281299990000", opted_out_at=timezone.now(), name="Siti")
    form = {
        "msisdn": subscriber.msisdn,
        "name": "Siti Rahayu",
        "language": "id",
        "opted_out_at_0": "",
        "opted_out_at_1": "",
    }

    response = admin_client.post(admin_url(Subscriber, "change", subscriber.pk), form)

    assert response.status_code == 302
    subscriber.refresh_from_db()
    assert (subscriber.name, subscriber.opted_out_at is not None) == ("Siti Rahayu", True)


def test_the_subscriber_form_cannot_move_an_opt_out_to_another_number(admin_client):
    subscriber = SubscriberFactory(msisdn="+6281299990000", opted_out_at=timezone.now(), name="Siti")
    form = {"msisdn": "081299990001", "name": "Siti", "language": "id"}

    response = admin_client.post(admin_url(Subscriber, "change", subscriber.pk), form)

    # Renamed, the opted-out number would be gone, and a later import of it would make it reachable again.
    assert response.status_code == 200
    assert "sudah berhenti berlangganan dan disimpan apa adanya" in response.content.decode()
    subscriber.refresh_from_db()
    assert subscriber.msisdn == "+6281299990000"
    assert not Subscriber.objects.filter(msisdn="+6281299990001").exists()


@pytest.mark.parametrize(
    ("msisdn", "stored"), [("0812-3456-7890", "+6281234567890"), ("021 555 1234", None), ("+6281299990000", None)]
)
def test_a_subscriber_added_in_the_admin_is_stored_in_e164_once(admin_client, msisdn, stored):
    SubscriberFactory(msisdn="+6281299990000")

    response = admin_client.post(admin_url(Subscriber, "add"), {"msisdn": msisdn, "name": "", "language": "id"})

    assert response.status_code == (302 if stored else 200)
    assert Subscriber.objects.count() == (2 if stored else 1)
    if stored:
        assert Subscriber.objects.filter(msisdn=stored).exists()


@pytest.mark.parametrize("query", ["0812-3456-7890", "0812 3456 7890", "+62 812 3456 7890", "81234567890", "0812 345"])
def test_the_subscriber_admin_finds_a_number_typed_as_it_is_written_at_home(admin_client, query):
    SubscriberFactory(msisdn="+6281234567890", name="Siti", area=area_tree(kecamatan=1)[2])
    SubscriberFactory(msisdn="+6285600812345", name="Budi")

    def found(query: str) -> list[str]:
        page = admin_client.get(admin_url(Subscriber, "changelist"), {"q": query}).content.decode()
        return [msisdn for msisdn in ("+6281234567890", "+6285600812345") if msisdn in page]

    assert found(query) == ["+6281234567890"]
    # Names and area codes are still searched.
    assert found("siti") == found("35.05.01") == ["+6281234567890"]


def test_a_subscriber_added_in_the_admin_without_an_operator_is_routed_by_its_prefix(admin_client):
    telkomsel = Operator.objects.create(name="Telkomsel", slug="telkomsel", prefixes=["62812"])

    admin_client.post(admin_url(Subscriber, "add"), {"msisdn": "0812-3456-7890", "name": "", "language": "id"})
    admin_client.post(admin_url(Subscriber, "add"), {"msisdn": "0899-1234-5678", "name": "", "language": "id"})

    assert dict(Subscriber.objects.values_list("msisdn", "operator")) == {
        "+6281234567890": telkomsel.pk,
        "+6289912345678": None,  # no operator has this prefix
    }


def test_an_operator_adapter_no_send_can_use_is_refused_when_the_operator_is_saved(admin_client):
    response = admin_client.post(admin_url(Operator, "add"), operator_form(adapter="http_batch_v2"))
    assert response.status_code == 200
    assert "adapter" in response.context["adminform"].form.errors
    assert not Operator.objects.exists()


@pytest.mark.parametrize("adapter", ["http_batch_v1", "log", "pull"])
def test_an_operator_can_use_every_registered_adapter_and_pull_mode(admin_client, adapter):
    response = admin_client.post(admin_url(Operator, "add"), operator_form(adapter=adapter))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Operator.objects.get(slug="telkomsel").adapter == adapter


@pytest.mark.parametrize(
    ("base_url", "says"),
    [
        ("", "isikan URL dasarnya"),
        ("ftp://sms.telkomsel.example/smsblast", "http:// atau https://"),
        ("https://sms.telkomsel.example/smsblast?token=1", "tanpa ?… atau #…"),
        ("https://sms.telkomsel.example/smsblast#batches", "tanpa ?… atau #…"),
        ("https://smsblast:s3cret-pass@sms.telkomsel.example/smsblast", "tanpa nama pengguna atau kata sandi"),
        ("https://sms.telkomsel.example/smsblast/v1/batches", "sebelum /v1/batches"),
    ],
)
def test_a_base_url_no_batch_could_be_pushed_to_is_refused_when_the_operator_is_saved(admin_client, base_url, says):
    response = admin_client.post(admin_url(Operator, "add"), operator_form(base_url=base_url))
    assert response.status_code == 200
    (message,) = response.context["adminform"].form.errors["base_url"]
    assert says in message
    assert not Operator.objects.exists()


def test_an_operator_switched_from_pull_to_push_without_a_base_url_is_refused(admin_client):
    operator = OperatorFactory(slug="telkomsel", name="Telkomsel", adapter="pull", base_url="", prefixes=["62811"])
    response = admin_client.post(
        admin_url(Operator, "change", operator.pk), operator_form(adapter="http_batch_v1", base_url="")
    )
    assert response.status_code == 200
    assert "base_url" in response.context["adminform"].form.errors
    operator.refresh_from_db()
    assert operator.adapter == "pull"


@pytest.mark.parametrize("adapter", ["pull", "log"])
def test_an_operator_that_is_never_pushed_to_over_http_needs_no_base_url(admin_client, adapter):
    response = admin_client.post(admin_url(Operator, "add"), operator_form(adapter=adapter, base_url=""))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Operator.objects.get(slug="telkomsel").base_url == ""


def test_a_base_url_ending_in_a_slash_is_pushed_to_below_it(admin_client):
    response = admin_client.post(
        admin_url(Operator, "add"), operator_form(base_url="https://sms.telkomsel.example/smsblast/")
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Operator.objects.get(slug="telkomsel").base_url == "https://sms.telkomsel.example/smsblast/"


@pytest.mark.parametrize("adapter", ["pull", "log"])
def test_an_operator_holding_a_live_area_broadcast_cannot_be_switched_to_an_adapter_that_could_not_cancel_it(
    admin_client, adapter
):
    from operators.models import AreaBroadcast
    from tests.campaigns.factories import CampaignRunFactory

    operator = OperatorFactory(slug="telkomsel", name="Telkomsel", adapter="http_batch_v1", prefixes=["62811"])
    broadcast = AreaBroadcast.objects.create(
        run=CampaignRunFactory(), operator=operator, state=AreaBroadcast.State.ACKNOWLEDGED
    )
    response = admin_client.post(admin_url(Operator, "change", operator.pk), operator_form(adapter=adapter))
    assert response.status_code == 200
    (message,) = response.context["adminform"].form.errors["adapter"]
    assert "siaran wilayah" in message
    operator.refresh_from_db()
    assert operator.adapter == "http_batch_v1"

    AreaBroadcast.objects.filter(pk=broadcast.pk).update(state=AreaBroadcast.State.COMPLETED)
    response = admin_client.post(admin_url(Operator, "change", operator.pk), operator_form(adapter=adapter))
    assert response.status_code == 302, response.content.decode()[:2000]
    operator.refresh_from_db()
    assert operator.adapter == adapter


def test_an_operator_linked_to_a_user_outside_the_operator_role_is_refused_naming_the_role(admin_client, officer):
    from tests.conftest import make_user

    response = admin_client.post(admin_url(Operator, "add"), operator_form(user=str(officer.pk)))
    assert response.status_code == 200
    (message,) = response.context["adminform"].form.errors["user"]
    assert "officer1" in message and "create_user" in message
    assert not Operator.objects.exists()

    byu = make_user("byu", "operator")
    response = admin_client.post(admin_url(Operator, "add"), operator_form(user=str(byu.pk)))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Operator.objects.get().user == byu


def test_an_operators_slug_named_by_an_area_broadcast_not_over_cannot_be_changed_which_would_leave_it_out(
    admin_client,
):
    from campaigns.models import Mode

    operator = OperatorFactory(slug="telkomsel", name="Telkomsel", prefixes=["62811"])
    alert = CampaignFactory(
        title="Peringatan banjir",
        mode=Mode.AREA_BROADCAST,
        operator_slugs=["telkomsel"],
        status=Campaign.Status.SCHEDULED,
    )
    response = admin_client.post(admin_url(Operator, "change", operator.pk), operator_form(slug="tsel"))
    assert response.status_code == 200
    (message,) = response.context["adminform"].form.errors["slug"]
    assert "Peringatan banjir" in message
    operator.refresh_from_db()
    assert operator.slug == "telkomsel"

    Campaign.objects.filter(pk=alert.pk).update(status=Campaign.Status.COMPLETED)
    response = admin_client.post(admin_url(Operator, "change", operator.pk), operator_form(slug="tsel"))
    assert response.status_code == 302, response.content.decode()[:2000]
    operator.refresh_from_db()
    assert operator.slug == "tsel"


def test_a_users_jurisdiction_is_set_in_the_admin_when_adding_and_editing(admin_client, officer):
    from smsblast.models import User

    area_tree("35.05", kecamatan=1)
    added = admin_client.post(
        admin_url(User, "add"),
        {
            "username": "kominfo-blitar",
            "usable_password": "true",
            "password1": "Blitar-pass-2021",
            "password2": "Blitar-pass-2021",
            "jurisdiction": "35.05",
        },
    )
    assert added.status_code == 302, added.context["adminform"].form.errors if added.context else added
    assert User.objects.get(username="kominfo-blitar").jurisdiction_id == "35.05"

    page = admin_client.get(admin_url(User, "change", officer.pk)).content.decode()
    assert 'name="jurisdiction"' in page


def test_an_operator_created_in_the_admin_is_audited_without_its_credentials(admin_client, admin_user):
    response = admin_client.post(admin_url(Operator, "add"), operator_form(api_key="tsel-key-123456"))
    assert response.status_code == 302, response.content.decode()[:2000]
    operator = Operator.objects.get(slug="telkomsel")

    event = AuditEvent.objects.get(action="operator.create", object_id=str(operator.pk))

    assert (event.actor, event.object_type, event.from_state, event.to_state) == (
        admin_user,
        "operators.operator",
        "",
        "active",
    )
    assert event.details["changed"]["prefixes"] == {"to": ["62811", "62812", "62813"]}
    assert event.details["credentials_replaced"] == ["api_key"]
    assert "tsel-key-123456" not in str(event.details)


def test_an_admin_edit_of_an_operator_audits_each_changed_setting_from_and_to(admin_client, admin_user):
    operator = OperatorFactory(
        name="Telkomsel",
        slug="telkomsel",
        prefixes=["62811"],
        base_url="http://127.0.0.1:9100",
        api_key="old-key-0000",
        signing_secret="old-secret-1111",
        segments_per_second=100,
        batch_size=1000,
        tariff_per_segment=250,
        vertex_limit=250,
    )
    form = operator_form(
        prefixes="62811, 62812",
        base_url="https://sms.telkomsel.example",
        signing_secret="new-secret-2222",
        segments_per_second="40",
        tariff_per_segment="300",
    )
    form.pop("active")  # unticked: deactivated

    response = admin_client.post(admin_url(Operator, "change", operator.pk), form)

    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="operator.update", object_id=str(operator.pk))
    assert (event.actor, event.from_state, event.to_state) == (admin_user, "active", "inactive")
    assert event.details["changed"] == {
        "active": {"from": True, "to": False},
        "prefixes": {"from": ["62811"], "to": ["62811", "62812"]},
        "base_url": {"from": "http://127.0.0.1:9100", "to": "https://sms.telkomsel.example"},
        "segments_per_second": {"from": 100, "to": 40},
        "tariff_per_segment": {"from": 250, "to": 300},
    }
    assert event.details["credentials_replaced"] == ["signing_secret"]
    assert "new-secret-2222" not in str(event.details) and "old-secret-1111" not in str(event.details)


@pytest.mark.django_db(transaction=True)
def test_two_admins_saving_an_operator_at_once_each_audit_the_settings_they_replaced(admin_user):
    from django.test import Client

    from tests.concurrency import race_behind_a_row, skip_unless_postgresql

    skip_unless_postgresql()
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel", prefixes=["62811"], segments_per_second=100)
    subscriber = SubscriberFactory(msisdn="+6281212345678")

    def save(segments_per_second: str, prefixes: str):
        client = Client()
        client.force_login(admin_user)
        form = operator_form(segments_per_second=segments_per_second, prefixes=prefixes)
        response = client.post(admin_url(Operator, "change", operator.pk), form)
        assert response.status_code == 302, response.content.decode()[:2000]

    # Both forms were opened on 100 segments a second and prefix 62811; the first saved adds 62812.
    errors = race_behind_a_row(operator, lambda: save("50", "62811, 62812"), lambda: save("200", "62811"))

    assert errors == []
    events = AuditEvent.objects.filter(action="operator.update", object_id=str(operator.pk)).order_by("id")
    assert [event.details["changed"] for event in events] == [
        {
            "segments_per_second": {"from": 100, "to": 50},
            "prefixes": {"from": ["62811"], "to": ["62811", "62812"]},
        },
        {
            "segments_per_second": {"from": 50, "to": 200},
            "prefixes": {"from": ["62811", "62812"], "to": ["62811"]},
        },
    ]
    subscriber.refresh_from_db()
    assert subscriber.operator is None, "62812 left the table with the second save: its numbers are routed again"


def test_an_operator_saved_unchanged_in_the_admin_writes_no_event(admin_client):
    operator = OperatorFactory(
        name="Telkomsel",
        slug="telkomsel",
        prefixes=["62811"],
        base_url="http://127.0.0.1:9100",
        segments_per_second=100,
        batch_size=1000,
        tariff_per_segment=250,
        vertex_limit=250,
    )
    form = operator_form(prefixes="62811", adapter=operator.adapter)

    assert admin_client.post(admin_url(Operator, "change", operator.pk), form).status_code == 302

    assert not AuditEvent.objects.filter(object_type="operators.operator").exists()


def test_an_operator_deleted_in_the_admin_is_audited(admin_client, admin_user):
    operator = OperatorFactory(slug="smartfren", name="Smartfren", prefixes=["62881"])

    form = {"action": "delete_selected", "_selected_action": [operator.pk], "post": "yes"}
    response = admin_client.post(admin_url(Operator, "changelist"), form)

    assert response.status_code == 302
    assert not Operator.objects.exists()
    event = AuditEvent.objects.get(action="operator.delete")
    assert (event.actor, event.object_id, event.from_state, event.to_state) == (
        admin_user,
        str(operator.pk),
        "active",
        "deleted",
    )
    assert event.details["prefixes"] == ["62881"]


def test_a_role_given_or_taken_in_the_user_admin_is_audited(admin_client, admin_user, officer):
    from django.contrib.auth.models import Group

    form = {
        "username": officer.username,
        "is_active": "on",
        "is_staff": "on",
        "groups": [Group.objects.get(name="approver").pk],
        "date_joined_0": "2026-01-05",
        "date_joined_1": "08:00:00",
    }

    response = admin_client.post(admin_url(User, "change", officer.pk), form)

    assert response.status_code == 302, response.content.decode()[:3000]
    event = AuditEvent.objects.get(action="user.access", object_id=str(officer.pk))
    assert (event.actor, event.object_type, event.from_state, event.to_state) == (
        admin_user,
        "smsblast.user",
        "officer",
        "approver",
    )
    assert event.details["changed"]["groups"] == {"from": ["officer"], "to": ["approver"]}
    assert event.details["changed"]["is_staff"] == {"from": False, "to": True}


@pytest.mark.django_db(transaction=True)
def test_two_admins_saving_a_user_at_once_each_audit_the_access_they_replaced(admin_user, officer):
    from django.contrib.auth.models import Group
    from django.test import Client

    from tests.concurrency import race_behind_a_row, skip_unless_postgresql

    skip_unless_postgresql()
    officers, approvers = Group.objects.get(name="officer"), Group.objects.get(name="approver")

    def save(**fields):
        client = Client()
        client.force_login(admin_user)
        form = {"username": officer.username, "date_joined_0": "2026-01-05", "date_joined_1": "08:00:00", **fields}
        response = client.post(admin_url(User, "change", officer.pk), form)
        assert response.status_code == 302, response.content.decode()[:3000]

    # Both forms were opened on an active officer: the first makes them an approver, the second deactivates them.
    errors = race_behind_a_row(
        officer, lambda: save(is_active="on", groups=[approvers.pk]), lambda: save(groups=[officers.pk])
    )

    assert errors == []
    events = AuditEvent.objects.filter(action="user.access", object_id=str(officer.pk)).order_by("id")
    assert [(event.from_state, event.to_state, event.details["changed"]) for event in events] == [
        (
            "officer",
            "approver",
            {"role": {"from": "officer", "to": "approver"}, "groups": {"from": ["officer"], "to": ["approver"]}},
        ),
        (
            "approver",
            "officer",
            {
                "role": {"from": "approver", "to": "officer"},
                "groups": {"from": ["approver"], "to": ["officer"]},
                "is_active": {"from": True, "to": False},
            },
        ),
    ]


def test_a_user_deactivated_in_the_admin_is_audited(admin_client, admin_user, officer):
    form = {
        "username": officer.username,
        "groups": [officer.groups.get().pk],
        "date_joined_0": "2026-01-05",
        "date_joined_1": "08:00:00",
    }

    response = admin_client.post(admin_url(User, "change", officer.pk), form)

    assert response.status_code == 302, response.content.decode()[:3000]
    event = AuditEvent.objects.get(action="user.access", object_id=str(officer.pk))
    assert event.actor == admin_user
    assert event.details["changed"] == {"is_active": {"from": True, "to": False}}


def test_a_jurisdiction_widened_or_narrowed_in_the_user_admin_is_audited(admin_client, admin_user, officer):
    area_tree("35.05", kecamatan=1)
    officer.jurisdiction_id = "35.05"
    officer.save()
    form = {
        "username": officer.username,
        "is_active": "on",
        "groups": [officer.groups.get().pk],
        "date_joined_0": "2026-01-05",
        "date_joined_1": "08:00:00",
        "jurisdiction": "",
    }

    response = admin_client.post(admin_url(User, "change", officer.pk), form)

    assert response.status_code == 302, response.content.decode()[:3000]
    event = AuditEvent.objects.get(action="user.access", object_id=str(officer.pk))
    assert event.actor == admin_user
    assert event.details["changed"] == {"jurisdiction": {"from": "35.05", "to": ""}}


def test_an_api_token_cannot_be_deleted_in_the_admin_only_revoked_audited(admin_client, admin_user, officer):
    from smsblast.authentication import api_token_create
    from smsblast.models import ApiToken

    api_token_create(user=officer, name="script")
    token = ApiToken.objects.get(user=officer)

    assert admin_client.post(admin_url(ApiToken, "delete", token.pk), {"post": "yes"}).status_code == 403
    form = {"action": "delete_selected", "_selected_action": [token.pk], "post": "yes"}
    admin_client.post(admin_url(ApiToken, "changelist"), form)
    assert ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).exists()

    admin_client.post(admin_url(ApiToken, "changelist"), {"action": "revoke", "_selected_action": [token.pk]})

    token.refresh_from_db()
    assert token.revoked_at is not None
    event = AuditEvent.objects.get(action="api_token.revoke", object_id=str(token.pk))
    assert (event.actor, event.from_state, event.to_state) == (admin_user, "active", "revoked")


def test_subscribers_deleted_in_the_admin_are_audited_and_opted_out_numbers_are_kept(admin_client, admin_user):
    receiving = SubscriberFactory(msisdn="+6281234567890")
    opted_out = SubscriberFactory(msisdn="+6281299990000", opted_out_at=timezone.now())

    assert admin_client.post(admin_url(Subscriber, "delete", opted_out.pk), {"post": "yes"}).status_code == 403
    both = {"action": "delete_selected", "_selected_action": [receiving.pk, opted_out.pk], "post": "yes"}
    admin_client.post(admin_url(Subscriber, "changelist"), both)
    assert Subscriber.objects.count() == 2
    assert not AuditEvent.objects.filter(action="subscriber.delete").exists()

    form = {"action": "delete_selected", "_selected_action": [receiving.pk], "post": "yes"}
    admin_client.post(admin_url(Subscriber, "changelist"), form)

    assert list(Subscriber.objects.values_list("msisdn", flat=True)) == ["+6281299990000"]
    event = AuditEvent.objects.get(action="subscriber.delete")
    assert (event.actor, event.object_id, event.from_state, event.to_state) == (
        admin_user,
        str(receiving.pk),
        "subscribed",
        "deleted",
    )
    assert event.details["msisdn"] == "+6281234567890"


def test_a_user_deleted_in_the_admin_is_audited_once_its_tokens_are_revoked(admin_client, admin_user):
    from smsblast.authentication import api_token_create
    from smsblast.models import ApiToken
    from tests.conftest import make_user

    retired = make_user("retired-officer", "officer")
    api_token_create(user=retired, name="script")
    # A token in use would end with the user, unrevoked: the deletion waits for its audited revoke.
    assert admin_client.post(admin_url(User, "delete", retired.pk), {"post": "yes"}).status_code == 403
    token = ApiToken.objects.get(user=retired)
    admin_client.post(admin_url(ApiToken, "changelist"), {"action": "revoke", "_selected_action": [token.pk]})

    response = admin_client.post(admin_url(User, "delete", retired.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not User.objects.filter(username="retired-officer").exists()
    event = AuditEvent.objects.get(action="user.delete")
    assert (event.actor, event.object_id, event.from_state, event.to_state) == (
        admin_user,
        str(retired.pk),
        "officer",
        "deleted",
    )
    assert event.details == {"username": "retired-officer"}


def test_a_password_set_in_the_user_admin_is_audited_without_the_password(admin_client, admin_user, officer):
    url = reverse("admin:auth_user_password_change", args=[officer.pk])
    form = {"password1": "Fresh-pass-2026!", "password2": "Fresh-pass-2026!", "usable_password": "true"}

    response = admin_client.post(url, form)

    assert response.status_code == 302
    officer.refresh_from_db()
    assert officer.check_password("Fresh-pass-2026!")
    event = AuditEvent.objects.get(action="user.password_set")
    assert (event.actor, event.object_id) == (admin_user, str(officer.pk))
    assert event.details == {"username": officer.username, "usable": True}
    mismatched = {"password1": "Other-pass-2026!", "password2": "Not-the-same-1!", "usable_password": "true"}
    admin_client.post(url, mismatched)
    assert AuditEvent.objects.filter(action="user.password_set").count() == 1


def test_the_subscriber_import_page_and_its_refusals_speak_indonesian(admin_client):
    url = reverse("admin:smsblast_subscriber_import")
    admin_client.cookies["django_language"] = "id"

    body = admin_client.get(url).content.decode()
    assert "Impor pelanggan dari CSV" in body
    assert "Satu pelanggan per baris" in body
    assert "Each row is one subscriber" not in body
    assert 'value="Impor"' in body
    assert "Impor CSV" in admin_client.get(admin_url(Subscriber, "changelist")).content.decode()

    workbook = SimpleUploadedFile("nomor.xlsx", b"PK\x03\x04" + b"\x00" * 64)
    body = admin_client.post(url, {"file": workbook}).content.decode()
    assert "Ini buku kerja spreadsheet, bukan berkas CSV." in body
    assert "spreadsheet workbook" not in body

    long_header = SimpleUploadedFile("nomor.csv", b"msisdn," + b"x" * (64 * 1024) + b"\n081234567890,a\n")
    body = admin_client.post(url, {"file": long_header}).content.decode()
    assert "Baris pertama berkas lebih panjang daripada yang mungkin untuk sebuah header" in body


def test_the_subscriber_opt_out_action_reports_in_indonesian(admin_client):
    subscriber = SubscriberFactory()
    admin_client.cookies["django_language"] = "id"
    form = {"action": "opt_out", "_selected_action": [subscriber.pk]}

    response = admin_client.post(admin_url(Subscriber, "changelist"), form, follow=True)

    assert "1 nomor berhenti berlangganan." in response.content.decode()


def area_form(**overrides) -> dict:
    data = {"code": "35.05.04", "name": "Kecamatan Baru", "level": "kecamatan", "parent": "35.05", "population": ""}
    data.update(overrides)
    return data


def test_an_area_created_edited_and_deleted_in_the_admin_is_audited_from_and_to(admin_client, admin_user):
    area_tree("35.05", kecamatan=1)
    square = {"type": "Polygon", "coordinates": [[[112.0, -8.0], [112.1, -8.0], [112.1, -8.1], [112.0, -8.0]]]}

    response = admin_client.post(admin_url(Area, "add"), area_form())

    assert response.status_code == 302, response.content.decode()[:2000]
    created = AuditEvent.objects.get(action="area.create", object_id="35.05.04")
    assert (created.actor, created.object_type) == (admin_user, "smsblast.area")
    assert created.details["changed"]["parent_id"] == {"to": "35.05"}

    form = area_form(name="Kecamatan Sutojayan", parent="35.05.01", population="51000", boundary=json.dumps(square))
    response = admin_client.post(admin_url(Area, "change", "35.05.04"), form)

    assert response.status_code == 302, response.content.decode()[:2000]
    changed = AuditEvent.objects.get(action="area.update", object_id="35.05.04").details["changed"]
    assert set(changed) == {"name", "parent_id", "population", "boundary"}
    assert changed["name"] == {"from": "Kecamatan Baru", "to": "Kecamatan Sutojayan"}
    assert changed["parent_id"] == {"from": "35.05", "to": "35.05.01"}
    assert changed["population"] == {"from": None, "to": 51000}
    # A boundary is recorded by its digest, not copied whole into the trail.
    assert changed["boundary"]["from"] is None and changed["boundary"]["to"].startswith("sha256:")

    assert admin_client.post(admin_url(Area, "change", "35.05.04"), form).status_code == 302
    assert AuditEvent.objects.filter(action="area.update").count() == 1  # saved unchanged: nothing to record

    response = admin_client.post(admin_url(Area, "delete", "35.05.04"), {"post": "yes"})

    assert response.status_code == 302
    assert not Area.objects.filter(code="35.05.04").exists()
    deleted = AuditEvent.objects.get(action="area.delete")
    assert (deleted.actor, deleted.object_id, deleted.to_state) == (admin_user, "35.05.04", "deleted")
    assert deleted.details["name"] == "Kecamatan Sutojayan"


def test_a_subscribers_area_or_operator_changed_in_the_admin_is_audited_from_and_to(admin_client, admin_user):
    area_tree("35.05", kecamatan=2)
    telkomsel = OperatorFactory(slug="telkomsel", name="Telkomsel", prefixes=["62812"])
    indosat = OperatorFactory(slug="indosat", name="Indosat", prefixes=["62815"])
    subscriber = SubscriberFactory(msisdn="+6281234567890", area_id="35.05.01", operator=telkomsel, name="Siti")
    form = {"msisdn": subscriber.msisdn, "area": "35.05.02", "operator": indosat.pk, "name": "Siti", "language": "id"}

    response = admin_client.post(admin_url(Subscriber, "change", subscriber.pk), form)

    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="subscriber.update", object_id=str(subscriber.pk))
    assert (event.actor, event.from_state, event.to_state) == (admin_user, "subscribed", "subscribed")
    assert event.details["changed"] == {
        "area_id": {"from": "35.05.01", "to": "35.05.02"},
        "operator_id": {"from": telkomsel.pk, "to": indosat.pk},
    }

    admin_client.post(admin_url(Subscriber, "change", subscriber.pk), {**form, "name": "Siti Rahayu"})
    assert AuditEvent.objects.filter(action="subscriber.update").count() == 1  # a name alone sends nothing else


def test_a_subscriber_added_in_the_admin_is_audited_with_its_routing(admin_client, admin_user):
    area_tree("35.05", kecamatan=1)
    telkomsel = OperatorFactory(slug="telkomsel", name="Telkomsel", prefixes=["62812"])

    form = {"msisdn": "0812-3456-7890", "area": "35.05.01", "name": "", "language": "id"}
    assert admin_client.post(admin_url(Subscriber, "add"), form).status_code == 302

    subscriber = Subscriber.objects.get()
    event = AuditEvent.objects.get(action="subscriber.create")
    assert (event.actor, event.object_id, event.from_state, event.to_state) == (
        admin_user,
        str(subscriber.pk),
        "",
        "subscribed",
    )
    assert event.details["changed"]["msisdn"] == {"to": "+6281234567890"}
    assert event.details["changed"]["operator_id"] == {"to": telkomsel.pk}


def test_broadcast_settings_changed_in_the_admin_are_audited_from_and_to(admin_client, admin_user):
    response = admin_client.post(
        admin_url(BroadcastSettings, "add"), {"phone_ownership_rate": "0.850", "max_import_segments": "3"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert AuditEvent.objects.get(action="broadcast_settings.create").actor == admin_user

    form = {"phone_ownership_rate": "0.700", "max_import_segments": "3"}
    response = admin_client.post(admin_url(BroadcastSettings, "change", 1), form)

    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="broadcast_settings.update")
    assert (event.actor, event.object_type, event.object_id) == (admin_user, "operators.broadcastsettings", "1")
    assert event.details["changed"] == {"phone_ownership_rate": {"from": "0.850", "to": "0.700"}}


def test_a_role_group_renamed_or_deleted_in_the_admin_is_audited_with_its_members(admin_client, admin_user, approver):
    from django.contrib.auth.models import Group, Permission

    group = Group.objects.get(name="approver")
    permissions = list(group.permissions.values_list("pk", flat=True))

    form = {"name": "approvers", "permissions": permissions}
    response = admin_client.post(admin_url(Group, "change", group.pk), form)

    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="group.update", object_id=str(group.pk))
    # Renamed, the group is no longer the approver role: its members cannot approve any more.
    assert (event.actor, event.from_state, event.to_state) == (admin_user, "approver", "")
    assert event.details["changed"] == {"name": {"from": "approver", "to": "approvers"}}
    form["permissions"] = permissions[1:]
    admin_client.post(admin_url(Group, "change", group.pk), form)
    dropped = Permission.objects.get(pk=permissions[0])
    changed = AuditEvent.objects.filter(action="group.update").last().details["changed"]
    assert set(changed["permissions"]["from"]) - set(changed["permissions"]["to"]) == {
        f"{dropped.content_type.app_label}.{dropped.codename}"
    }

    response = admin_client.post(admin_url(Group, "delete", group.pk), {"post": "yes"})

    assert response.status_code == 302
    deleted = AuditEvent.objects.get(action="group.delete")
    assert (deleted.actor, deleted.object_id, deleted.to_state) == (admin_user, str(group.pk), "deleted")
    assert deleted.details["members"] == [approver.username]


def test_the_admin_names_models_and_their_fields_in_indonesian(admin_client, records):
    admin_client.cookies["django_language"] = "id"

    index = admin_client.get(reverse("admin:index")).content.decode()
    for name in ["Kampanye", "Pengiriman kampanye", "Batch pengiriman", "Pelanggan", "Wilayah", "Pengaturan siaran"]:
        assert f">{name}<" in index, name
    assert ">Dispatch batches<" not in index and ">Subscribers<" not in index

    subscriber = Subscriber.objects.get()
    page = admin_client.get(admin_url(Subscriber, "change", subscriber.pk)).content.decode()
    assert "Berhenti berlangganan pada" in page and "Opted out at" not in page
    listing = admin_client.get(admin_url(Campaign, "changelist")).content.decode()
    assert "Judul" in listing and "Penulis" in listing and "Batalkan kampanye yang dipilih" in listing
    operator = admin_client.get(admin_url(Operator, "change", Operator.objects.get().pk)).content.decode()
    assert "Batas dan tarif" in operator and "Kosongkan untuk tetap memakai kunci yang sekarang." in operator
    assert "Limits and tariff" not in operator
    user = admin_client.get(admin_url(User, "change", User.objects.get(username="officer1").pk)).content.decode()
    assert "Wilayah kerja" in user and "Jurisdiction" not in user


def test_the_audit_trail_list_offers_the_actions_of_its_latest_events_without_reading_every_row(
    admin_client, officer, monkeypatch
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from smsblast import admin as smsblast_admin
    from smsblast.audit import audit_record

    monkeypatch.setattr(smsblast_admin, "RECENT_AUDIT_EVENTS", 3)
    audit_record(actor=None, action="operator.delete", obj=officer)
    for _ in range(3):
        audit_record(actor=None, action="user.access", obj=officer)
    url = admin_url(AuditEvent, "changelist")
    with CaptureQueriesContext(connection) as captured:
        page = admin_client.get(url).content.decode()
    assert '"?action=user.access"' in page
    assert '"?action=operator.delete"' not in page  # older than the latest 3 events
    # A value found only in older events still filters, from a link or the address.
    older = admin_client.get(url, {"action": "operator.delete"}).content.decode()
    assert '"?action=operator.delete"' in older and older.count('class="field-action"') == 1
    # Distinct values (of a column, or of the months in a date hierarchy) are read from the latest events only.
    unbounded = [query["sql"] for query in captured if "DISTINCT" in query["sql"] and '"id" >' not in query["sql"]]
    assert unbounded == []


def test_the_audit_trail_list_names_a_load_of_the_area_table_in_indonesian(admin_client, tmp_path):
    from django.core.management import call_command

    path = tmp_path / "wilayah.csv"
    path.write_text("kode,nama,tingkat,induk\n35,Jawa Timur,provinsi,\n", encoding="utf-8")
    call_command("load_areas", str(path), "--no-population")
    admin_client.cookies["django_language"] = "id"

    page = admin_client.get(admin_url(AuditEvent, "changelist")).content.decode()

    assert "tabel wilayah dimuat dari berkas" in page
    assert "area.load" in page  # the recorded action stays beside its name, as the filters offer it


def test_subscriber_imports_deleted_in_the_admin_are_audited(admin_client, admin_user):
    from smsblast.models import SubscriberImport

    one = SubscriberImport.objects.create(file_path="/nowhere/a.csv", original_name="a.csv", area_scope="35.05")
    other = SubscriberImport.objects.create(file_path="/nowhere/b.csv", original_name="b.csv")

    admin_client.post(admin_url(SubscriberImport, "delete", one.pk), {"post": "yes"})
    form = {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"}
    admin_client.post(admin_url(SubscriberImport, "changelist"), form)

    assert not SubscriberImport.objects.exists()
    events = {event.object_id: event for event in AuditEvent.objects.filter(action="subscriber_import.delete")}
    assert set(events) == {str(one.pk), str(other.pk)}
    event = events[str(one.pk)]
    assert (event.actor, event.from_state, event.to_state) == (admin_user, "pending", "deleted")
    assert (event.details["file"], event.details["area_scope"]) == ("a.csv", "35.05")


def test_an_import_deleted_in_the_admin_takes_its_upload_and_rejected_rows_off_the_disk_but_not_a_servers_file(
    admin_client, settings, tmp_path, django_capture_on_commit_callbacks
):
    from smsblast.models import SubscriberImport

    settings.MEDIA_ROOT = tmp_path / "media"
    uploads = tmp_path / "media" / "imports"
    uploads.mkdir(parents=True)
    files = {
        "upload": uploads / "1f2e3d.csv",
        "rejected": uploads / "7-rejected-abc.csv",
        "bulk_upload": uploads / "4a5b6c.csv",
        "server": tmp_path / "given-on-the-command-line.csv",
    }
    for path in files.values():
        path.write_text("msisdn,nama\n081234567890,Budi\n")
    one = SubscriberImport.objects.create(
        file_path=str(files["upload"]), rejected_path=str(files["rejected"]), original_name="warga.csv"
    )
    other = SubscriberImport.objects.create(file_path=str(files["bulk_upload"]), original_name="warga2.csv")
    from_server = SubscriberImport.objects.create(file_path=str(files["server"]), original_name="server.csv")

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(admin_url(SubscriberImport, "delete", one.pk), {"post": "yes"})
    form = {"action": "delete_selected", "_selected_action": [other.pk, from_server.pk], "post": "yes"}
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(admin_url(SubscriberImport, "changelist"), form)

    assert not SubscriberImport.objects.exists()
    assert {name for name, path in files.items() if path.exists()} == {"server"}


def test_a_campaigns_admin_page_lists_its_latest_runs_and_links_to_all_of_them(admin_client):
    import re
    from datetime import timedelta

    from campaigns.admin import CampaignRunInline
    from campaigns.models import CampaignRun
    from tests.campaigns.factories import CampaignRunFactory

    admin_client.cookies["django_language"] = "en"
    shown = CampaignRunInline.shown
    campaign = CampaignFactory(status=Campaign.Status.SCHEDULED)
    now = timezone.now()
    runs = [CampaignRunFactory(campaign=campaign, scheduled_for=now - timedelta(days=day)) for day in range(shown + 5)]
    page = admin_client.get(admin_url(Campaign, "change", campaign.pk)).content.decode()
    assert len(re.findall(r'id="runs-\d+"', page)) == shown
    assert admin_url(CampaignRun, "change", runs[0].pk) in page  # the latest run
    assert admin_url(CampaignRun, "change", runs[shown - 1].pk) in page
    assert admin_url(CampaignRun, "change", runs[shown].pk) not in page
    assert f"The latest {shown} of {shown + 5} runs are shown." in page
    every_run = f"{admin_url(CampaignRun, 'changelist')}?campaign__id__exact={campaign.pk}"
    assert f'href="{every_run}"' in page
    listing = admin_client.get(every_run).content.decode()
    assert all(admin_url(CampaignRun, "change", run.pk) in listing for run in runs)


def test_a_campaigns_admin_page_with_few_runs_lists_them_all_without_a_note(admin_client):
    import re

    from tests.campaigns.factories import CampaignRunFactory

    admin_client.cookies["django_language"] = "en"
    campaign = CampaignFactory(status=Campaign.Status.SCHEDULED)
    CampaignRunFactory.create_batch(3, campaign=campaign)
    page = admin_client.get(admin_url(Campaign, "change", campaign.pk)).content.decode()
    assert len(re.findall(r'id="runs-\d+"', page)) == 3
    assert "runs are shown" not in page


def test_an_imports_admin_page_lists_its_first_rejected_rows_and_links_to_the_rejected_file(admin_client, tmp_path):
    import re

    from smsblast.admin import SubscriberImportRejectionInline
    from smsblast.models import SubscriberImport, SubscriberImportRejection

    admin_client.cookies["django_language"] = "en"
    shown = SubscriberImportRejectionInline.shown
    rejected = tmp_path / "rejected.csv"
    rejected.write_text("line,reason,raw\n", encoding="utf-8")
    job = SubscriberImport.objects.create(
        file_path="/nowhere/a.csv", original_name="a.csv", rejected_path=str(rejected), rejected=shown + 10
    )
    SubscriberImportRejection.objects.bulk_create(
        SubscriberImportRejection(subscriber_import=job, line=line, raw=f"row {line}", reason="INVALID_MSISDN")
        for line in range(2, shown + 12)
    )
    page = admin_client.get(admin_url(SubscriberImport, "change", job.pk)).content.decode()
    assert len(re.findall(r'id="rejections-\d+"', page)) == shown
    assert "row 2<" in page and f"row {shown + 1}<" in page and f"row {shown + 2}<" not in page
    assert f"The first {shown} of {shown + 10} rejected rows are shown." in page
    assert f'href="/api/v1/subscribers/imports/{job.pk}/rejected.csv"' in page
    assert admin_client.get(f"/api/v1/subscribers/imports/{job.pk}/rejected.csv").status_code == 200


def test_an_area_broadcasts_admin_page_lists_its_latest_events_and_links_to_all_of_them(admin_client):
    import re

    from operators.admin import AreaBroadcastEventInline
    from operators.models import AreaBroadcast, AreaBroadcastEvent
    from tests.campaigns.factories import CampaignRunFactory

    admin_client.cookies["django_language"] = "en"
    shown = AreaBroadcastEventInline.shown
    broadcast = AreaBroadcast.objects.create(run=CampaignRunFactory(), operator=OperatorFactory())
    AreaBroadcastEvent.objects.bulk_create(
        AreaBroadcastEvent(broadcast=broadcast, state="error", details={"attempt": f"try {number}"})
        for number in range(1, shown + 11)
    )
    page = admin_client.get(admin_url(AreaBroadcast, "change", broadcast.pk)).content.decode()
    assert len(re.findall(r'id="events-\d+"', page)) == shown
    assert f"try {shown + 10}&quot;" in page and "try 11&quot;" in page  # the latest events
    assert "try 10&quot;" not in page and "try 1&quot;" not in page
    assert f"The latest {shown} of {shown + 10} events are shown." in page
    every_event = f"{admin_url(AreaBroadcastEvent, 'changelist')}?broadcast__id__exact={broadcast.pk}"
    assert f'href="{every_event}"' in page
    listing = admin_client.get(every_event)
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == shown + 10


def test_deleting_an_import_confirms_by_counts_without_listing_its_rejected_rows_and_is_audited(
    admin_client, admin_user
):
    import re

    from smsblast.models import SubscriberImport, SubscriberImportRejection

    admin_client.cookies["django_language"] = "en"
    job = SubscriberImport.objects.create(file_path="/nowhere/a.csv", original_name="a.csv", rejected=60)
    SubscriberImportRejection.objects.bulk_create(
        SubscriberImportRejection(subscriber_import=job, line=line, raw=f"row {line}", reason="invalid")
        for line in range(2, 62)
    )
    for url, form in [
        (admin_url(SubscriberImport, "delete", job.pk), None),
        (admin_url(SubscriberImport, "changelist"), {"action": "delete_selected", "_selected_action": [job.pk]}),
    ]:
        response = admin_client.post(url, form) if form else admin_client.get(url)
        page = response.content.decode()
        assert response.status_code == 200
        assert "Subscriber import rejections: 60" in page  # Django's summary, per model
        assert "row 2" not in page and "row 61" not in page
        assert page.count("Subscriber import rejection:") == 0
        assert len(re.findall(r"<li>Subscriber import: ", page)) == 1

    admin_client.post(admin_url(SubscriberImport, "delete", job.pk), {"post": "yes"})
    assert not SubscriberImport.objects.exists() and not SubscriberImportRejection.objects.exists()
    event = AuditEvent.objects.get(action="subscriber_import.delete")
    assert (event.actor, event.object_id, event.to_state) == (admin_user, str(job.pk), "deleted")


def test_deleting_an_operator_with_sending_records_is_refused_by_counts_without_listing_them(admin_client):
    operator = OperatorFactory(slug="telkomsel", name="Telkomsel")
    batches = DispatchBatchFactory.create_batch(60, operator=operator)
    for batch in batches:
        DeliveryFactory(run=batch.run, batch=batch, operator=operator)

    admin_client.cookies["django_language"] = "en"
    for url, form in [
        (admin_url(Operator, "delete", operator.pk), None),
        (admin_url(Operator, "changelist"), {"action": "delete_selected", "_selected_action": [operator.pk]}),
    ]:
        response = admin_client.post(url, form) if form else admin_client.get(url)
        page = response.content.decode()
        assert response.status_code == 200
        assert "protected related objects" in page
        assert "Dispatch batches: 60" in page and "Deliveries: 60" in page
        assert str(batches[0].pk) not in page and "Dispatch batch:" not in page and "Delivery:" not in page

    admin_client.post(admin_url(Operator, "delete", operator.pk), {"post": "yes"})
    assert Operator.objects.filter(pk=operator.pk).exists()
    assert not AuditEvent.objects.filter(action="operator.delete").exists()


def test_deleting_an_area_that_homes_subscribers_is_refused_by_counts_without_listing_them(admin_client):
    area = area_tree(kecamatan=1)[-1]
    subscribers = SubscriberFactory.create_batch(60, area=area)

    admin_client.cookies["django_language"] = "en"
    page = admin_client.get(admin_url(Area, "delete", area.pk)).content.decode()
    assert "protected related objects" in page and "Subscribers: 60" in page
    assert subscribers[0].msisdn not in page and "Subscriber:" not in page

    admin_client.post(admin_url(Area, "delete", area.pk), {"post": "yes"})
    assert Area.objects.filter(pk=area.pk).exists()
    assert not AuditEvent.objects.filter(action="area.delete").exists()


def test_the_admin_shows_states_levels_and_roles_in_indonesian_and_keeps_the_stored_values(
    admin_client, records, officer
):
    import re

    from campaigns.models import DispatchBatch

    admin_client.cookies["django_language"] = "id"
    campaigns = admin_client.get(admin_url(Campaign, "changelist")).content.decode()
    assert re.search(r'href="\?status__exact=pending_approval"[^>]*>menunggu persetujuan<', campaigns)
    assert re.search(r'href="\?mode__exact=area_broadcast"[^>]*>siaran wilayah<', campaigns)
    assert '<td class="field-status">dibatalkan</td>' in campaigns
    assert "Pending Approval" not in campaigns and "Area Broadcast" not in campaigns
    batches = admin_client.get(admin_url(DispatchBatch, "changelist")).content.decode()
    assert re.search(r'href="\?status__exact=retry_wait"[^>]*>menunggu dicoba lagi<', batches)
    assert "Retry Wait" not in batches and "In Flight" not in batches
    areas = admin_client.get(admin_url(Area, "changelist")).content.decode()
    assert re.search(r'href="\?level__exact=kabupaten"[^>]*>kabupaten/kota<', areas)
    users = admin_client.get(admin_url(User, "changelist")).content.decode()
    assert '<td class="field-role_name">petugas</td>' in users
    subscribers = admin_client.get(admin_url(Subscriber, "changelist")).content.decode()
    assert "Bahasa Inggris (en)" in subscribers and "English (en)" not in subscribers
    trail = admin_client.get(admin_url(AuditEvent, "changelist")).content.decode()
    assert " tindakan " in trail and " jenis objek " in trail and " object type " not in trail

    assert Campaign.objects.get(pk=records.pk).status == "cancelled"
    assert admin_client.get(admin_url(Campaign, "changelist"), {"status__exact": "cancelled"}).status_code == 200


def _choices():
    from campaigns.models import Approval, CampaignRun, Delivery, DispatchBatch, Mode, Priority, RepeatPolicy
    from operators.models import AreaBroadcast
    from smsblast.models import SubscriberImport

    return [
        Mode,
        Priority,
        RepeatPolicy,
        Campaign.Status,
        Approval.Decision,
        CampaignRun.Status,
        DispatchBatch.Status,
        Delivery.Status,
        AreaBroadcast.State,
        SubscriberImport.State,
    ]


@pytest.mark.parametrize("choices", _choices(), ids=lambda choices: choices.__qualname__)
@pytest.mark.parametrize("language", ["id", "en"])
def test_the_admin_labels_each_state_as_the_pages_do(choices, language):
    from django.utils import translation

    from smsblast.templatetags.ui import status_label

    with translation.override(language):
        labels = {value: str(label) for value, label in choices.choices}
        assert labels == {value: status_label(value) for value in labels}


@pytest.mark.parametrize("language", ["id", "en"])
def test_the_admin_labels_area_levels_and_roles_as_the_pages_do(language):
    from django.utils import translation

    from smsblast.models import AreaLevel, Role
    from smsblast.templatetags.ui import area_level_label, role_label

    with translation.override(language):
        assert {value: str(label) for value, label in AreaLevel.choices} == {
            value: area_level_label(value) for value in AreaLevel.values
        }
        assert {value: str(label) for value, label in Role.choices} == {
            value: role_label(value) for value in Role.values
        }


def test_the_admin_names_every_app_in_indonesian(admin_client):
    page = admin_client.get(reverse("admin:index"), HTTP_ACCEPT_LANGUAGE="id").content.decode()
    for english in ("Campaigns", "Operators", "smsblast core"):
        assert f">{english}<" not in page
    assert ">Kampanye<" in page
    assert reverse("admin:app_list", args=["campaigns"]) in page


@pytest.mark.parametrize("model_name", ["approval", "dispatchbatch", "delivery", "areabroadcastreach"])
def test_a_record_is_named_by_what_it_is_not_as_an_english_object_number(model_name):
    from django.apps import apps

    from operators.models import AreaBroadcast, AreaBroadcastReach
    from tests.campaigns.factories import CampaignRunFactory

    approval = ApprovalFactory()
    delivery = DeliveryFactory(batch=DispatchBatchFactory(), msisdn="+6281300000001")
    broadcast = AreaBroadcast.objects.create(run=CampaignRunFactory(), operator=OperatorFactory())
    reach = AreaBroadcastReach.objects.create(broadcast=broadcast, handsets_reached=40, at=timezone.now())
    record = {"approval": approval, "dispatchbatch": delivery.batch, "delivery": delivery, "areabroadcastreach": reach}
    model = [m for m in apps.get_models() if m._meta.model_name == model_name][0]
    assert " object (" not in str(record[model_name]), model.__name__


def test_an_area_broadcast_event_is_named_by_its_state_in_the_page_language(admin_client):
    from operators.models import AreaBroadcast, AreaBroadcastEvent
    from tests.campaigns.factories import CampaignRunFactory

    broadcast = AreaBroadcast.objects.create(run=CampaignRunFactory(), operator=OperatorFactory())
    event = AreaBroadcastEvent.objects.create(broadcast=broadcast, state="error", details={"status": 503})

    admin_client.cookies["django_language"] = "id"
    page = admin_client.get(admin_url(AreaBroadcastEvent, "change", event.pk)).content.decode()
    listed = admin_client.get(admin_url(AreaBroadcast, "change", broadcast.pk)).content.decode()

    assert f"<title>{broadcast.pk} galat, dicoba lagi |" in page
    assert f"{broadcast.pk} error" not in page and f"{broadcast.pk} error" not in listed
    assert AreaBroadcastEvent.objects.get(pk=event.pk).state == "error"


def test_an_email_address_changed_in_the_user_admin_is_audited_from_and_to(admin_client, admin_user, officer):
    # Where the user's notifications go (runs ended, approvals asked): create_user audits a new address, the admin too.
    officer.email = "petugas@blitarkab.go.id"
    officer.save()
    form = {
        "username": officer.username,
        "email": "pribadi@example.com",
        "is_active": "on",
        "groups": [officer.groups.get().pk],
        "date_joined_0": "2026-01-05",
        "date_joined_1": "08:00:00",
    }

    response = admin_client.post(admin_url(User, "change", officer.pk), form)

    assert response.status_code == 302, response.content.decode()[:3000]
    event = AuditEvent.objects.get(action="user.access", object_id=str(officer.pk))
    assert event.actor == admin_user
    assert event.details["changed"] == {"email": {"from": "petugas@blitarkab.go.id", "to": "pribadi@example.com"}}


def test_an_admin_issues_an_api_token_shown_once_that_works_and_is_audited(admin_client, admin_user, officer):
    from rest_framework.test import APIClient

    from smsblast.models import ApiToken

    response = admin_client.post(
        admin_url(User, "changelist"), {"action": "issue_api_token", "_selected_action": [officer.pk]}
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get(user=officer)
    key = re.search(r'class="api-token">([^<]+)<', response.content.decode()).group(1)
    assert key.startswith(token.prefix)
    assert len(key) > 30
    assert key not in token.key_hash
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.get("/api/v1/campaigns/").status_code == 200
    event = AuditEvent.objects.get(action="api_token.create", object_id=str(token.pk))
    assert (event.actor, event.details["user"], event.details["name"]) == (admin_user, officer.username, "admin")
    # Shown once: the token list never shows the key again.
    assert key not in admin_client.get(admin_url(ApiToken, "changelist")).content.decode()


def test_no_api_token_is_issued_for_an_inactive_user_nor_by_a_staff_user_without_the_right(
    admin_client, client, officer
):
    from smsblast.models import ApiToken
    from tests.conftest import make_user

    officer.is_active = False
    officer.save(update_fields=["is_active"])
    response = admin_client.post(
        admin_url(User, "changelist"),
        {"action": "issue_api_token", "_selected_action": [officer.pk]},
        follow=True,
    )
    assert f"{officer.username} tidak dapat masuk (nonaktif)" in response.content.decode()
    assert not ApiToken.objects.filter(user=officer).exists()

    clerk = make_user("clerk", "officer")
    clerk.is_staff = True
    clerk.save(update_fields=["is_staff"])
    client.force_login(clerk)
    officer.is_active = True
    officer.save(update_fields=["is_active"])
    client.post(admin_url(User, "changelist"), {"action": "issue_api_token", "_selected_action": [officer.pk]})
    assert not ApiToken.objects.filter(user=officer).exists()
