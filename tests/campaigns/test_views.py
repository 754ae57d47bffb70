"""Officer and approver pages through the Django test client: roles, forms, stale hashes, both languages."""

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone, translation

from campaigns.models import Approval, Campaign, CampaignRun, Delivery, DispatchBatch
from campaigns.services import campaign_content_hash, campaign_reject, campaign_submit, campaign_update
from operators import broadcasts
from operators.broadcasts import broadcast_estimate
from operators.gateways.base import AreaBroadcastResult, Outcome
from operators.models import AreaBroadcast
from smsblast.models import AuditEvent, Role
from smsblast.sms import analyze
from smsblast.templatetags.ui import local_time
from tests.campaigns.factories import CampaignFactory, CampaignRunFactory, DeliveryFactory, DispatchBatchFactory
from tests.conftest import client_for, field_description
from tests.operators.area_scripted import ScriptedAreaAdapter, blitar_areas, broadcast_campaign
from tests.operators.factories import OperatorFactory
from tests.operators.scripted import approved_campaign
from tests.smsblast.factories import AreaFactory, SubscriberFactory, UserFactory, area_tree

pytestmark = pytest.mark.django_db

RING = [[112.1, -8.1], [112.3, -8.1], [112.3, -8.3], [112.1, -8.3], [112.1, -8.1]]
SQUARE = {"type": "Polygon", "coordinates": [RING]}


@pytest.fixture
def areas():
    tree = area_tree("35.05", kecamatan=2)
    tree[1].boundary = SQUARE
    tree[1].save()
    return tree


@pytest.fixture
def officer_user():
    return UserFactory(username="ofc", role=Role.OFFICER)


@pytest.fixture
def approver_user():
    return UserFactory(username="apr", role=Role.APPROVER)


@pytest.fixture
def pending(areas, officer_user):
    campaign = CampaignFactory(author=officer_user, area_codes=["35.05"])
    return campaign_submit(campaign=campaign, actor=officer_user)


def compose_data(**overrides) -> dict:
    data = {
        "title": "Update Covid-19",
        "text": "Tetap pakai masker dan jaga jarak.",
        "sender": "PEMKAB-BLTR",
        "mode": "targeted",
        "priority": "normal",
        "area_codes": ["35.05"],
        "schedule_kind": "now",
    }
    data.update(overrides)
    return data


def errors_not_tied_to_a_field(body: str) -> list[str]:
    """Return the error lists of a page that no field or group names in its aria-describedby."""
    described = {name for names in re.findall(r'aria-describedby="([^"]*)"', body) for name in names.split()}
    return [error for error in re.findall(r'<ul class="errorlist" id="([^"]+)"', body) if error not in described]


# --- roles --------------------------------------------------------------------------------


def test_anonymous_visitor_is_sent_to_the_login_page():
    response = Client().get(reverse("campaigns:list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_login_page_renders_in_indonesian_by_default():
    response = Client().get(reverse("login"))
    assert response.status_code == 200
    assert "Masuk" in response.content.decode()


def test_a_wrong_password_keeps_the_username_typed(officer_user):
    response = Client().post(reverse("login"), {"username": "ofc", "password": "not-the-password"})
    body = response.content.decode()
    assert "Nama pengguna atau kata sandi salah" in body
    assert 'id="id_username" name="username" value="ofc"' in body


def test_a_refused_log_in_is_read_out_on_the_field_the_page_puts_the_focus_in(officer_user):
    body = Client().post(reverse("login"), {"username": "ofc", "password": "not-the-password"}).content.decode()

    username, said = field_description(body, "id_username")
    assert "autofocus" in username
    assert 'aria-invalid="true"' in username
    assert "Nama pengguna atau kata sandi salah" in said
    password, said = field_description(body, "id_password")
    assert 'aria-invalid="true"' in password
    assert "Nama pengguna atau kata sandi salah" in said


@pytest.mark.parametrize("name", ["dashboard", "campaigns:list", "campaigns:create", "subscribers", "operators"])
def test_operator_api_identity_gets_a_403_page_with_a_message(name):
    user = UserFactory(username="telco", role=Role.OPERATOR)
    response = client_for(user).get(reverse(name))
    assert response.status_code == 403
    body = response.content.decode()
    assert "Tidak diizinkan" in body


def test_officer_opening_the_approve_url_is_refused_with_403_in_their_language(pending, officer_user):
    url = reverse("campaigns:review", args=[pending.pk])
    response = client_for(officer_user, "id").get(url)
    assert response.status_code == 403
    assert "Peran Anda tidak boleh membuka halaman ini." in response.content.decode()
    response = client_for(officer_user, "en").get(url)
    assert response.status_code == 403
    assert "Your role may not open this page." in response.content.decode()


def test_officer_posting_an_approval_is_refused_and_nothing_changes(pending, officer_user):
    url = reverse("campaigns:review", args=[pending.pk])
    response = client_for(officer_user).post(
        url, {"decision": "approve", "content_hash": campaign_content_hash(pending)}
    )
    assert response.status_code == 403
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.PENDING_APPROVAL


def test_approver_may_not_compose(approver_user):
    response = client_for(approver_user).get(reverse("campaigns:create"))
    assert response.status_code == 403


def test_operators_page_is_for_admins_only(officer_user):
    assert client_for(officer_user).get(reverse("operators")).status_code == 403
    admin = UserFactory(username="adm", role=Role.ADMIN)
    OperatorFactory(name="Telkomsel", slug="telkomsel")
    response = client_for(admin).get(reverse("operators"))
    assert response.status_code == 200
    assert "Telkomsel" in response.content.decode()


def test_another_officer_may_not_edit_someone_elses_draft(pending, areas):
    other = UserFactory(username="ofc2", role=Role.OFFICER)
    draft = CampaignFactory(author=pending.author, area_codes=["35.05"])
    response = client_for(other).post(reverse("campaigns:edit", args=[draft.pk]), compose_data(title="Mine now"))
    assert response.status_code == 403
    draft.refresh_from_db()
    assert draft.title != "Mine now"


def test_officer_may_not_cancel_someone_elses_campaign(pending):
    other = UserFactory(username="ofc2", role=Role.OFFICER)
    response = client_for(other).post(reverse("campaigns:action", args=[pending.pk, "cancel"]), {"confirm": "on"})
    assert response.status_code == 403
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.PENDING_APPROVAL


# --- dashboard ----------------------------------------------------------------------------


def test_approver_dashboard_shows_the_inbox_with_its_count(pending, approver_user):
    response = client_for(approver_user).get(reverse("dashboard"))
    body = response.content.decode()
    assert response.status_code == 200
    assert "data-inbox-count>1<" in body
    assert pending.title in body


def test_the_campaign_page_says_which_subscribers_its_audience_filters_keep(officer_user, areas):
    # Set through the API; the compose form has no field for them, and an edit keeps them.
    campaign = CampaignFactory(
        author=officer_user, area_codes=["35.05"], audience={"languages": ["jv"], "operators": ["telkomsel"]}
    )
    body = client_for(officer_user).get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "Hanya pelanggan berbahasa: jv" in body
    assert "Hanya pelanggan operator: telkomsel" in body
    body = client_for(officer_user).get(reverse("campaigns:edit", args=[campaign.pk])).content.decode()
    assert "Hanya pelanggan berbahasa: jv" in body


def test_officer_dashboard_shows_a_running_campaign_with_its_progress(officer_user, areas):
    run = CampaignRunFactory(campaign=CampaignFactory(author=officer_user, status=Campaign.Status.SENDING))
    DeliveryFactory(run=run, status=Delivery.Status.DELIVERED)
    DeliveryFactory(run=run, status=Delivery.Status.QUEUED)
    body = client_for(officer_user).get(reverse("dashboard")).content.decode()
    assert 'aria-valuenow="50"' in body
    assert 'hx-select="#running" hx-trigger="every 5s"' in body


def test_an_officer_watching_the_dashboard_sees_a_scheduled_campaign_start_sending_without_reloading(
    officer_user, areas
):
    campaign = CampaignFactory(
        author=officer_user, status=Campaign.Status.SCHEDULED, next_run_at=timezone.now() + timedelta(minutes=1)
    )
    client = client_for(officer_user)
    body = client.get(reverse("dashboard")).content.decode()
    assert "Tidak ada kampanye yang sedang dikirim" in body
    # The page polls while something is scheduled, and each poll brings the running and scheduled lists.
    assert 'hx-select="#running" hx-trigger="every 5s"' in body
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING, next_run_at=None)
    run = CampaignRunFactory(campaign=campaign)
    DeliveryFactory(run=run, status=Delivery.Status.DELIVERED)
    DeliveryFactory(run=run, status=Delivery.Status.QUEUED)
    poll = client.get(reverse("dashboard"), HTTP_HX_REQUEST="true").content.decode()
    running = poll[poll.index('id="running"') :]
    assert campaign.title in running and 'aria-valuenow="50"' in running
    scheduled = poll[poll.index('id="scheduled"') : poll.index('id="running"')]
    assert campaign.title not in scheduled and "Tidak ada yang terjadwal" in scheduled
    assert 'hx-select-oob="#scheduled,#health"' in poll


def test_an_approver_watching_the_dashboard_sees_a_campaign_submitted_meanwhile_without_reloading(
    officer_user, approver_user, areas
):
    client = client_for(approver_user)
    body = client.get(reverse("dashboard")).content.decode()
    assert "data-inbox-count>0<" in body
    assert 'hx-select="#running" hx-trigger="every 5s"' in body
    submitted = campaign_submit(campaign=CampaignFactory(author=officer_user, area_codes=["35.05"]), actor=officer_user)
    poll = client.get(reverse("dashboard"), HTTP_HX_REQUEST="true").content.decode()
    inbox = poll[poll.index('id="inbox"') : poll.index('id="running"')]
    assert "data-inbox-count>1<" in inbox and submitted.title in inbox
    assert 'hx-select-oob="#inbox,#health"' in poll


def test_the_polled_dashboard_counts_its_running_campaigns_with_the_same_queries_however_many_are_sending(
    officer_user, areas
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = client_for(officer_user)
    queries = []
    for count in (1, 4):
        for _ in range(count):
            campaign = CampaignFactory(author=officer_user, status=Campaign.Status.SENDING)
            CampaignRunFactory(campaign=campaign, scheduled_for=timezone.now() - timedelta(days=1))
            run = CampaignRunFactory(campaign=campaign)  # the latest run is the one shown
            DeliveryFactory(run=run, status=Delivery.Status.DELIVERED)
            DeliveryFactory(run=run, status=Delivery.Status.QUEUED)
        with CaptureQueriesContext(connection) as captured:
            body = client.get(reverse("dashboard")).content.decode()
        queries.append(len(captured))
    assert body.count('aria-valuenow="50"') == 5
    assert queries[1] == queries[0]


def test_the_dashboard_poll_of_another_tab_leaves_a_message_to_the_page_it_was_meant_for(officer_user, areas):
    running = CampaignFactory(author=officer_user, status=Campaign.Status.SENDING)
    CampaignRunFactory(campaign=running)
    draft = CampaignFactory(author=officer_user, area_codes=["35.05"])
    client = client_for(officer_user)
    submitted = client.post(reverse("campaigns:action", args=[draft.pk, "submit"]))
    # The dashboard open in another tab polls before this tab follows the redirect.
    poll = client.get(reverse("dashboard"), HTTP_HX_REQUEST="true").content.decode()
    assert running.title in poll
    assert "Terkirim untuk persetujuan" not in poll
    assert "Terkirim untuk persetujuan" in client.get(submitted["Location"]).content.decode()


# --- compose ------------------------------------------------------------------------------


def test_compose_creates_a_draft_through_the_service_with_its_schedule(officer_user, areas):
    data = compose_data(
        schedule_kind="daily", schedule_time="13:00", override_4="10:00", quiet_start="21:00", quiet_end="06:00"
    )
    response = client_for(officer_user).post(reverse("campaigns:create"), data)
    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert campaign.status == Campaign.Status.DRAFT
    assert campaign.author == officer_user
    assert campaign.schedule == {
        "kind": "daily",
        "time": "13:00",
        "weekday_times": {"4": "10:00"},
        "quiet_hours": {"start": "21:00", "end": "06:00"},
    }
    assert AuditEvent.objects.filter(action="campaign.create", object_id=str(campaign.pk)).exists()


@pytest.mark.parametrize(
    ("overrides", "field_message"),
    [
        ({"text": "   "}, "Tulis isi pesan."),
        # Zero-width spaces alone show nothing on a phone: the text is empty, not too long.
        ({"text": "\u200b\u200b"}, "Tulis isi pesan."),
        ({"text": "a" * 1531}, "terlalu panjang"),
        ({"sender": "12345"}, "setidaknya satu huruf"),
        ({"area_codes": ["99.99"]}, "Kode wilayah tidak dikenal"),
        ({"area_codes": []}, "Pilih setidaknya satu wilayah."),
        ({"schedule_kind": "once"}, "Isi tanggal dan jam pengiriman."),
        ({"schedule_kind": "weekly", "schedule_time": "09:00"}, "Pilih setidaknya satu hari."),
        ({"quiet_start": "21:00"}, "jam tenang"),
        ({"schedule_kind": "sometimes"}, "Pilih"),
        ({"schedule_kind": "once", "schedule_at": "2020-01-01T10:00"}, "Waktu ini sudah lewat di WIB"),
        ({"schedule_kind": "once", "schedule_at": "9999-12-31T23:59"}, "antara tahun 2000 dan 9998"),
        ({"quiet_start": "21:00", "quiet_end": "21:00"}, "Jam tenang tidak boleh mulai dan selesai"),
        (
            {"mode": "area_broadcast", "schedule_kind": "daily", "schedule_time": "09:00"},
            "Siaran wilayah dikirim dalam jangka waktunya",
        ),
        (
            {"schedule_kind": "daily", "schedule_time": "09:00", "schedule_until": "2020-01-01"},
            "Tanggal ini sudah lewat di WIB",
        ),
    ],
)
def test_compose_refuses_bad_input_with_a_message_and_creates_nothing(officer_user, areas, overrides, field_message):
    response = client_for(officer_user).post(reverse("campaigns:create"), compose_data(**overrides))
    assert response.status_code == 200
    assert field_message in response.content.decode()
    assert not Campaign.objects.exists()


def test_compose_accepts_the_design_example_sender_of_13_characters_and_warns_handsets_show_11(
    officer_user, approver_user, areas
):
    client = client_for(officer_user)
    blank = client.get(reverse("campaigns:create")).content.decode()
    # The warning is there for the page's script to show as a long ID is typed, hidden while it is short.
    assert re.search(r'<p class="msg warning" data-sender-warning role="status" hidden>', blank)
    assert 'data-sender-shown="11"' in blank and 'maxlength="16"' in blank
    assert client.post(reverse("campaigns:create"), compose_data(sender="PEMKAB-BLITAR")).status_code == 302
    campaign = Campaign.objects.get()
    assert campaign.sender == "PEMKAB-BLITAR"
    warning = "Ponsel GSM menampilkan paling banyak 11 karakter ID pengirim alfanumerik"
    edit = client.get(reverse("campaigns:edit", args=[campaign.pk])).content.decode()
    assert re.search(r'data-sender-warning role="status">Ponsel GSM', edit)
    detail = client_for(officer_user, "en").get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "GSM handsets show at most 11 characters of an alphanumeric sender ID" in detail
    campaign_submit(campaign=campaign, actor=officer_user)
    review = client_for(approver_user).get(reverse("campaigns:review", args=[campaign.pk])).content.decode()
    assert warning in review and "data-sender-warning" in review


def test_pages_of_a_campaign_whose_sender_handsets_show_whole_carry_no_warning(pending, officer_user, approver_user):
    assert len(pending.sender) <= 11
    for user, name in ((officer_user, "campaigns:detail"), (approver_user, "campaigns:review")):
        assert "data-sender-warning" not in client_for(user).get(reverse(name, args=[pending.pk])).content.decode()


def test_compose_refuses_a_sender_of_17_characters_saying_the_limit(officer_user, areas):
    response = client_for(officer_user).post(reverse("campaigns:create"), compose_data(sender="PEMKAB-BLITAR-JTM"))
    assert response.status_code == 200
    assert "paling banyak 16 karakter (sekarang 17 karakter)" in response.content.decode()
    assert not Campaign.objects.exists()


def test_a_line_break_costs_the_one_septet_the_counter_shows_not_the_two_a_browser_submits(officer_user, areas):
    typed = "Info Covid-19\n" + "a" * 146  # 160 characters: one SMS on the page's counter
    # A browser submits each line break of a text box as CR LF, though the box (and its counter) holds LF alone.
    data = compose_data(text=typed.replace("\n", "\r\n"))
    assert client_for(officer_user).post(reverse("campaigns:create"), data).status_code == 302
    campaign = Campaign.objects.get()
    assert campaign.text == typed
    assert analyze(campaign.text).segments == 1


def test_compose_takes_a_once_schedule_later_today_in_the_areas_zone(officer_user, areas):
    later = (timezone.now() + timedelta(minutes=30)).astimezone(ZoneInfo("Asia/Jakarta"))
    data = compose_data(schedule_kind="once", schedule_at=later.strftime("%Y-%m-%dT%H:%M"))
    assert client_for(officer_user).post(reverse("campaigns:create"), data).status_code == 302
    assert Campaign.objects.get().schedule == {"kind": "once", "at": later.strftime("%Y-%m-%dT%H:%M")}


def test_compose_page_renders_the_counter_and_the_area_picker(officer_user):
    body = client_for(officer_user).get(reverse("campaigns:create")).content.decode()
    assert "js/sms-counter.js" in body
    assert "data-sms-input" in body
    assert reverse("campaigns:area_search") in body


def test_every_field_on_the_compose_and_review_pages_is_described_by_help_that_exists(officer_user, approver_user):
    pending = CampaignFactory(author=officer_user, status=Campaign.Status.PENDING_APPROVAL)
    pages = [
        client_for(officer_user).get(reverse("campaigns:create")),
        client_for(approver_user).post(reverse("campaigns:review", args=[pending.pk]), {"decision": "reject"}),
    ]
    for response in pages:
        body = response.content.decode()
        described = re.findall(r'aria-describedby="([^"]+)"', body)
        assert described
        for ref in " ".join(described).split():
            assert f'id="{ref}"' in body, ref


def test_area_search_finds_areas_by_name_and_code(officer_user, areas):
    client = client_for(officer_user)
    body = client.get(reverse("campaigns:area_search"), {"area_q": "blitar"}).content.decode()
    assert 'value="35.05"' in body
    assert "WIB" in body
    body = client.get(reverse("campaigns:area_search"), {"area_q": "35.05.0"}).content.decode()
    assert 'value="35.05.01"' in body and 'value="35.05.02"' in body


def test_area_search_and_browsing_read_no_boundary(officer_user, areas):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = client_for(officer_user)
    for params in ({"parent": "35.05"}, {"area_q": "blitar"}, {"area_q": "35.05"}):
        with CaptureQueriesContext(connection) as captured:
            body = client.get(reverse("campaigns:area_search"), params).content.decode()
        assert 'value="35.05.01"' in body or 'value="35.05"' in body
        # A province's boundary is hundreds of kilobytes, and each result would carry its parent's.
        assert [query["sql"] for query in captured if '"boundary"' in query["sql"]] == []


def test_area_search_reads_kab_as_kabupaten(officer_user, areas):
    body = client_for(officer_user).get(reverse("campaigns:area_search"), {"area_q": "Kab. Blitar"}).content.decode()

    assert 'value="35.05"' in body


@pytest.mark.parametrize(
    ("language", "province", "regency"), [("id", "provinsi", "kabupaten/kota"), ("en", "province", "regency or city")]
)
def test_area_search_names_each_level_in_the_users_language(officer_user, areas, language, province, regency):
    body = client_for(officer_user, language).get(reverse("campaigns:area_search"), {"area_q": "35"}).content.decode()
    assert f"35 · {province} · WIB" in body
    assert f"35.05 · {regency} · Jawa Timur · WIB" in body


def test_compose_preview_draws_the_map_and_counts_audience_and_cost(officer_user, areas):
    telkomsel = OperatorFactory(name="Telkomsel", slug="telkomsel", tariff_per_segment=250)
    for _ in range(3):
        SubscriberFactory(area=areas[2], operator=telkomsel)
    SubscriberFactory(area=areas[2], operator=telkomsel, opted_out_at="2021-01-01T00:00:00Z")
    response = client_for(officer_user).post(
        reverse("campaigns:preview"), {"area_codes": ["35.05"], "text": "a" * 161, "mode": "targeted"}
    )
    body = response.content.decode()
    assert "<svg" in body and "<path" in body
    assert "data-audience-total>3<" in body
    assert "Rp 1.500" in body  # 3 recipients x 2 parts x Rp 250


def test_compose_preview_counts_a_line_break_submitted_as_cr_lf_as_the_saved_draft_will(officer_user, areas):
    telkomsel = OperatorFactory(name="Telkomsel", slug="telkomsel", tariff_per_segment=250)
    for _ in range(3):
        SubscriberFactory(area=areas[2], operator=telkomsel)
    # 159 letters and a line break: 160 septets, one SMS part, as the page's counter and the saved draft count it.
    text = "a" * 100 + "\r\n" + "a" * 59

    body = (
        client_for(officer_user)
        .post(reverse("campaigns:preview"), {"area_codes": ["35.05"], "text": text, "mode": "targeted"})
        .content.decode()
    )
    client_for(officer_user).post(reverse("campaigns:create"), compose_data(text=text))

    assert analyze(Campaign.objects.get().text).segments == 1
    assert "1 bagian SMS per penerima" in body
    assert "Rp 750" in body  # 3 recipients x 1 part x Rp 250


@pytest.mark.parametrize(("kind", "per_run"), [("daily", True), ("weekly", True), ("once", False), ("now", False)])
def test_compose_preview_says_the_cost_of_a_recurring_campaign_is_per_run(officer_user, areas, kind, per_run):
    telkomsel = OperatorFactory(name="Telkomsel", slug="telkomsel", tariff_per_segment=250)
    SubscriberFactory(area=areas[2], operator=telkomsel)
    data = {"area_codes": ["35.05"], "text": "Halo", "mode": "targeted", "schedule_kind": kind}

    body = client_for(officer_user).post(reverse("campaigns:preview"), data).content.decode()
    page = client_for(officer_user).get(reverse("campaigns:create")).content.decode()

    assert "Rp 250" in body
    assert ("data-cost-per-run" in body) is per_run
    # The preview is asked again when the kind of schedule changes.
    assert "change from:input[name=schedule_kind]" in page


def test_compose_preview_counts_the_audience_and_cost_of_every_area_a_campaign_may_target(officer_user, areas):
    telkomsel = OperatorFactory(name="Telkomsel", slug="telkomsel", tariff_per_segment=250)
    desa = [AreaFactory(code=f"35.05.01.{2001 + n}", name=f"Desa {n}") for n in range(250)]
    for area in desa:
        SubscriberFactory(area=area, operator=telkomsel)
    data = {"area_codes": [area.code for area in desa], "text": "Halo", "mode": "targeted"}

    body = client_for(officer_user).post(reverse("campaigns:preview"), data).content.decode()
    client_for(officer_user).post(reverse("campaigns:create"), compose_data(area_codes=data["area_codes"]))

    assert len(Campaign.objects.get().area_codes) == 250
    assert "data-audience-total>250<" in body
    assert "Rp 62.500" in body  # 250 recipients x 1 part x Rp 250


def test_compose_preview_leaves_out_and_names_numbers_of_an_inactive_or_no_known_operator(officer_user, areas):
    telkomsel = OperatorFactory(name="Telkomsel", slug="telkomsel", tariff_per_segment=250)
    indosat = OperatorFactory(name="Indosat", slug="indosat", tariff_per_segment=250, active=False)
    SubscriberFactory(area=areas[2], operator=telkomsel)
    SubscriberFactory.create_batch(2, area=areas[2], operator=indosat)
    SubscriberFactory(area=areas[2], operator=None)
    response = client_for(officer_user).post(
        reverse("campaigns:preview"), {"area_codes": ["35.05"], "text": "a", "mode": "targeted"}
    )
    body = response.content.decode()
    assert "data-audience-total>1<" in body
    assert 'Indosat <span class="muted">(nonaktif)</span>' in body
    assert "2 nomor dari operator nonaktif, 1 tanpa operator yang dikenal" in body


@pytest.fixture
def blitar_population(areas):
    """Give Kab. Blitar a census population; its two kecamatan share it."""
    areas[1].population = 1_200_000
    areas[1].save()
    return areas


def test_compose_preview_of_an_area_broadcast_shows_the_handsets_estimate_per_area(officer_user, blitar_population):
    data = {"area_codes": ["35.05.01", "35.05.02"], "text": "Tetap pakai masker.", "mode": "area_broadcast"}
    body = client_for(officer_user).post(reverse("campaigns:preview"), data).content.decode()
    assert "data-broadcast-estimate" in body
    # 1,200,000 shared by two kecamatan, 85% of residents with a phone: 510,000 each, 1,020,000 in all.
    assert "data-handsets>1.020.000<" in body
    assert "85% penduduk memiliki ponsel" in body
    assert '<tr data-area="35.05.01"><td>Kecamatan 1' in body and '<tr data-area="35.05.02">' in body
    assert '<td class="num">600.000</td><td class="num">510.000</td>' in body
    assert "Jangkauan sel melewati batas wilayah" in body


def test_compose_preview_of_a_targeted_campaign_has_no_broadcast_estimate(officer_user, blitar_population):
    data = {"area_codes": ["35.05"], "text": "Tetap pakai masker.", "mode": "targeted"}
    body = client_for(officer_user).post(reverse("campaigns:preview"), data).content.decode()
    assert "data-audience-total" in body
    assert "data-broadcast-estimate" not in body


def test_compose_preview_says_when_no_population_is_known(officer_user, areas):
    data = {"area_codes": ["35.05"], "text": "Tetap pakai masker.", "mode": "area_broadcast"}
    body = client_for(officer_user).post(reverse("campaigns:preview"), data).content.decode()
    assert "data-handsets>tidak diketahui<" in body
    assert "Data jumlah penduduk untuk wilayah ini belum dimuat." in body


def test_edit_page_of_an_area_broadcast_loads_the_preview_when_areas_change(officer_user, areas):
    campaign = CampaignFactory(author=officer_user, mode="area_broadcast", area_codes=["35.05"])
    body = client_for(officer_user).get(reverse("campaigns:edit", args=[campaign.pk])).content.decode()
    assert f'hx-post="{reverse("campaigns:preview")}"' in body
    assert "areas-changed from:body" in body


def test_review_page_of_an_area_broadcast_shows_the_estimate_and_the_spill_over_note(
    officer_user, approver_user, blitar_population
):
    campaign = CampaignFactory(
        author=officer_user, mode="area_broadcast", area_codes=["35.05"], status=Campaign.Status.PENDING_APPROVAL
    )
    body = client_for(approver_user, "en").get(reverse("campaigns:review", args=[campaign.pk])).content.decode()
    assert "data-handsets>1,020,000<" in body
    assert "assuming 85% of residents own a phone" in body
    assert '<tr data-area="35.05"><td>Kabupaten Blitar' in body
    assert '<td class="num">1,200,000</td><td class="num">1,020,000</td>' in body
    # The page shows the service's own note, word for word.
    assert broadcast_estimate(campaign)["note"] in body
    body = client_for(approver_user).get(reverse("campaigns:review", args=[campaign.pk])).content.decode()
    assert "Perkiraan ponsel yang terjangkau" in body


def test_review_page_of_a_targeted_campaign_has_no_broadcast_estimate(pending, approver_user):
    body = client_for(approver_user).get(reverse("campaigns:review", args=[pending.pk])).content.decode()
    assert "data-audience-total" in body
    assert "data-broadcast-estimate" not in body


@pytest.mark.parametrize(
    ("schedule", "per_run"),
    [
        ({"kind": "daily", "time": "13:00"}, True),
        ({"kind": "weekly", "time": "08:00", "weekdays": [0]}, True),
        ({}, False),
    ],
)
def test_review_page_says_a_recurring_campaigns_cost_is_spent_again_at_every_run(
    areas, officer_user, approver_user, schedule, per_run
):
    campaign = CampaignFactory(author=officer_user, area_codes=["35.05"], schedule=schedule)
    campaign = campaign_submit(campaign=campaign, actor=officer_user)
    body = client_for(approver_user).get(reverse("campaigns:review", args=[campaign.pk])).content.decode()
    assert "data-audience-total" in body
    assert ("data-cost-per-run" in body) is per_run
    assert ("lagi di setiap pengiriman" in body) is per_run


def test_compose_preview_survives_nonsense_input(officer_user):
    response = client_for(officer_user).post(reverse("campaigns:preview"), {"area_codes": ["<x>"], "text": ""})
    assert response.status_code == 200


def test_editing_an_approved_campaign_voids_the_approval_and_says_so(officer_user, approver_user, pending):
    from campaigns.services import campaign_approve

    campaign_approve(campaign=pending, approver=approver_user, content_hash=campaign_content_hash(pending))
    response = client_for(officer_user).post(
        reverse("campaigns:edit", args=[pending.pk]), compose_data(text="Teks baru."), follow=True
    )
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.DRAFT
    assert "persetujuan dibatalkan" in response.content.decode()


def loaded_hash(response) -> str:
    """Return the version an edit page was loaded at, as its form will post it back."""
    match = re.search(r'name="loaded_hash" value="([0-9a-f]{64})"', response.content.decode())
    assert match, "the edit form carries the version it was loaded at"
    return match.group(1)


def test_an_edit_from_a_page_opened_before_another_tabs_edit_is_refused_and_keeps_both_versions(officer_user, areas):
    draft = CampaignFactory(author=officer_user, area_codes=["35.05"], text="Versi awal.")
    client, url = client_for(officer_user, "en"), reverse("campaigns:edit", args=[draft.pk])
    first_tab, second_tab = loaded_hash(client.get(url)), loaded_hash(client.get(url))
    client.post(url, compose_data(text="Jam malam mulai 21.00.", loaded_hash=second_tab))

    response = client.post(url, compose_data(text="Jam malam mulai 22.00.", loaded_hash=first_tab))
    assert response.status_code == 409
    page = response.content.decode()
    assert "changed after you opened this page" in page
    assert "Jam malam mulai 22.00." in page  # what this tab typed is still in the form
    draft.refresh_from_db()
    assert draft.text == "Jam malam mulai 21.00."  # the other tab's edit is not silently lost
    assert AuditEvent.objects.filter(object_id=str(draft.pk), action="campaign.update").count() == 1

    # Saving again, now knowingly over the current version, goes through.
    client.post(url, compose_data(text="Jam malam mulai 22.00.", loaded_hash=loaded_hash(response)))
    draft.refresh_from_db()
    assert draft.text == "Jam malam mulai 22.00."


def test_an_edit_posted_after_another_tab_submitted_the_campaign_says_so_and_keeps_the_text(officer_user, areas):
    draft = CampaignFactory(author=officer_user, area_codes=["35.05"])
    client, url = client_for(officer_user, "en"), reverse("campaigns:edit", args=[draft.pk])
    opened = loaded_hash(client.get(url))
    campaign_submit(campaign=draft, actor=officer_user)

    response = client.post(url, compose_data(text="Teks yang belum tersimpan.", loaded_hash=opened))
    assert response.status_code == 409
    page = response.content.decode()
    assert "This cannot be done in the campaign&#x27;s current state." in page
    assert "Teks yang belum tersimpan." in page
    draft.refresh_from_db()
    assert draft.status == Campaign.Status.PENDING_APPROVAL
    assert draft.text != "Teks yang belum tersimpan."


# --- campaign page ------------------------------------------------------------------------


def test_submit_from_the_campaign_page_goes_through_the_service(officer_user, areas):
    draft = CampaignFactory(author=officer_user, area_codes=["35.05"])
    response = client_for(officer_user).post(reverse("campaigns:action", args=[draft.pk, "submit"]), follow=True)
    draft.refresh_from_db()
    assert draft.status == Campaign.Status.PENDING_APPROVAL
    assert "Terkirim untuk persetujuan" in response.content.decode()


def test_a_submit_refused_for_a_direction_override_says_so_in_the_users_language(officer_user, areas):
    draft = CampaignFactory(author=officer_user, area_codes=["35.05"], text="Transfer Rp 1\u202e0001")
    response = client_for(officer_user).post(reverse("campaigns:action", args=[draft.pk, "submit"]), follow=True)
    draft.refresh_from_db()
    assert draft.status == Campaign.Status.DRAFT
    body = response.content.decode()
    assert "Teks memuat karakter yang mengubah urutan teks yang tampil" in body
    assert "[U+202E]" in body  # marked on the page the message sends the officer to


def test_a_submit_refused_for_a_direction_override_in_the_title_says_so_in_the_users_language(officer_user, areas):
    draft = CampaignFactory(author=officer_user, area_codes=["35.05"], title="Vaksin \u202egratis")
    response = client_for(officer_user).post(reverse("campaigns:action", args=[draft.pk, "submit"]), follow=True)
    draft.refresh_from_db()
    assert draft.status == Campaign.Status.DRAFT
    assert "Judul memuat karakter yang mengubah urutan teks yang tampil" in response.content.decode()


def test_a_refused_submit_names_the_wrong_fields_by_their_labels_in_the_users_language(officer_user, areas):
    started = timezone.now() - timedelta(hours=1)
    draft = broadcast_campaign(
        approved=False, author=officer_user, starts_in=timedelta(hours=-1), ends_at=started + timedelta(hours=2)
    )
    response = client_for(officer_user).post(reverse("campaigns:action", args=[draft.pk, "submit"]), follow=True)
    body = response.content.decode()
    draft.refresh_from_db()
    assert draft.status == Campaign.Status.DRAFT
    fields = re.search(r"Beberapa isian kosong atau salah \(([^)]*)\)", body).group(1).split(", ")
    assert "Siaran mulai" in fields
    assert "starts_at" not in fields


def test_submitting_twice_shows_a_state_message_not_an_error(pending, officer_user):
    response = client_for(officer_user).post(reverse("campaigns:action", args=[pending.pk, "submit"]), follow=True)
    assert response.status_code == 200
    assert "tidak dapat dilakukan" in response.content.decode()


def test_cancel_needs_the_confirmation_box(pending, officer_user):
    client = client_for(officer_user)
    client.post(reverse("campaigns:action", args=[pending.pk, "cancel"]))
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.PENDING_APPROVAL
    client.post(reverse("campaigns:action", args=[pending.pk, "cancel"]), {"confirm": "on"})
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.CANCELLED


def test_starting_the_schedule_needs_the_confirmation_box():
    campaign = approved_campaign(schedule={"kind": "now"})
    client = client_for(campaign.author)
    body = client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    start = re.search(r'<form method="post" action="[^"]*/schedule/".*?</form>', body, re.S).group(0)
    assert 'name="confirm" required' in start
    response = client.post(reverse("campaigns:action", args=[campaign.pk, "schedule"]), follow=True)
    assert "Centang kotak konfirmasi dulu; tidak ada yang diubah." in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED
    client.post(reverse("campaigns:action", args=[campaign.pk, "schedule"]), {"confirm": "on"})
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED


def test_unknown_action_is_404_not_500(pending, officer_user):
    response = client_for(officer_user).post(reverse("campaigns:action", args=[pending.pk, "explode"]))
    assert response.status_code == 404


def test_starting_a_one_off_schedule_whose_time_passed_during_approval_says_what_to_do():
    campaign = approved_campaign(schedule={"kind": "once", "at": "2021-07-07T09:30"})
    url = reverse("campaigns:action", args=[campaign.pk, "schedule"])
    response = client_for(campaign.author).post(url, {"confirm": "on"}, follow=True)
    assert "Jadwal ini tidak punya waktu kirim setelah sekarang." in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED


def test_scheduling_from_a_page_loaded_before_an_edit_voided_the_approval_says_nothing_was_scheduled():
    campaign = approved_campaign(schedule={"kind": "now"})
    campaign_update(campaign=campaign, actor=campaign.author, data={"text": "Teks baru."})
    url = reverse("campaigns:action", args=[campaign.pk, "schedule"])
    response = client_for(campaign.author, "en").post(url, {"confirm": "on"}, follow=True)
    page = response.content.decode()
    assert "Scheduled. It will run at the times shown." not in page
    assert "This cannot be done in the campaign&#x27;s current state." in page
    campaign.refresh_from_db()
    assert (campaign.status, campaign.next_run_at) == (Campaign.Status.DRAFT, None)


def test_scheduling_a_pending_campaign_from_its_page_says_only_an_approved_one_can_be(pending, officer_user):
    url = reverse("campaigns:action", args=[pending.pk, "schedule"])
    indonesian = client_for(officer_user).post(url, {"confirm": "on"}, follow=True).content.decode()
    english = client_for(officer_user, "en").post(url, {"confirm": "on"}, follow=True).content.decode()
    assert "Hanya kampanye yang sudah disetujui yang dapat dijadwalkan." in indonesian
    assert "Only an approved campaign can be scheduled." in english
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.PENDING_APPROVAL


def test_a_scheduled_campaigns_page_reloads_itself_once_its_run_starts(officer_user, areas):
    campaign = CampaignFactory(author=officer_user, area_codes=["35.05"], status=Campaign.Status.SCHEDULED)
    client = client_for(officer_user)
    body = client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    poll = re.search(r'<div hidden data-state-poll hx-get="([^"]+)" hx-trigger="every 3s"', body)
    assert poll
    url = poll.group(1).replace("&amp;", "&")
    waiting = client.get(url)
    assert waiting.status_code == 204
    assert "HX-Refresh" not in waiting
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    assert client.get(url)["HX-Refresh"] == "true"
    body = client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "data-state-poll" not in body


def test_a_recurring_campaigns_page_reloads_itself_when_the_next_occurrence_starts_beside_the_run_shown(
    officer_user, areas
):
    campaign = CampaignFactory(
        author=officer_user,
        area_codes=["35.05"],
        status=Campaign.Status.SENDING,
        schedule={"kind": "daily", "time": "13:00"},
        next_run_at=timezone.now() + timedelta(days=1),
    )
    CampaignRunFactory(campaign=campaign, scheduled_for=timezone.now() - timedelta(hours=1), status="sending")
    client = client_for(officer_user)
    body = client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    poll = re.search(r'<div hidden data-state-poll hx-get="([^"]+)" hx-trigger="every 3s"', body)
    assert poll
    url = poll.group(1).replace("&amp;", "&")
    assert "HX-Refresh" not in client.get(url)

    # The next occurrence starts while the run shown still awaits its delivery reports.
    CampaignRunFactory(campaign=campaign, scheduled_for=timezone.now(), status="fanning_out")
    assert client.get(url)["HX-Refresh"] == "true"


def test_campaign_page_shows_the_history_timeline_and_parts(pending, officer_user):
    body = client_for(officer_user).get(reverse("campaigns:detail", args=[pending.pk])).content.decode()
    assert "diajukan untuk persetujuan" in body
    assert "menunggu persetujuan" in body
    assert "WIB" in body


def test_run_progress_partial_polls_until_the_run_is_final(officer_user, areas):
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel")
    run = CampaignRunFactory(campaign=CampaignFactory(author=officer_user, status=Campaign.Status.SENDING))
    DeliveryFactory(run=run, operator=operator, status=Delivery.Status.DELIVERED, done_at="2021-07-01T06:00:00Z")
    DeliveryFactory(run=run, operator=operator, status=Delivery.Status.UNDELIVERED, reason="absent subscriber")
    DeliveryFactory(run=run, operator=operator, status=Delivery.Status.QUEUED)
    url = reverse("campaigns:run_progress", args=[run.campaign_id, run.pk])
    client = client_for(officer_user)
    body = client.get(url).content.decode()
    assert 'hx-trigger="every 2s"' in body
    assert 'aria-valuenow="66"' in body
    assert "absent subscriber" in body
    assert "<polyline" in body
    CampaignRun.objects.filter(pk=run.pk).update(status=CampaignRun.Status.COMPLETED_WITH_FAILURES)
    Delivery.objects.filter(run=run, status=Delivery.Status.QUEUED).update(status=Delivery.Status.DELIVERED)
    body = client.get(url).content.decode()
    assert "every 2s" not in body
    assert 'aria-valuenow="100"' in body


def test_a_cancelled_run_is_watched_while_the_messages_already_with_the_operator_are_reported(officer_user, areas):
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel")
    campaign = CampaignFactory(author=officer_user, status=Campaign.Status.CANCELLED)
    run = CampaignRunFactory(campaign=campaign, status=CampaignRun.Status.CANCELLED, fanout_done=True)
    # A batch the operator took before the cancel: its messages are delivered or expire on their own.
    accepted = DispatchBatchFactory(run=run, operator=operator, size=2, status=DispatchBatch.Status.ACCEPTED)
    DeliveryFactory(run=run, operator=operator, batch=accepted, status=Delivery.Status.DELIVERED)
    waiting = DeliveryFactory(run=run, operator=operator, batch=accepted, status=Delivery.Status.QUEUED)
    DeliveryFactory(run=run, operator=operator, status=Delivery.Status.CANCELLED, reason="campaign_cancelled")
    url = reverse("campaigns:run_progress", args=[campaign.pk, run.pk])
    client = client_for(officer_user, "en")

    body = client.get(url).content.decode()

    assert 'hx-trigger="every 2s"' in body
    assert "so far" in body

    Delivery.objects.filter(pk=waiting.pk).update(status=Delivery.Status.DELIVERED)
    polled = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TRIGGER=f"run-{run.pk}")
    assert polled["HX-Refresh"] == "true"
    body = polled.content.decode()
    assert "every 2s" not in body
    assert "in all" in body


@pytest.mark.parametrize(
    ("language", "no_report", "validity_passed"),
    [
        ("id", "operator tidak melaporkan hasilnya", "masa berlaku habis sebelum operator menerima batch"),
        (
            "en",
            "the operator never reported the outcome",
            "the validity window passed before the operator took the batch",
        ),
    ],
)
def test_run_progress_names_the_systems_own_failure_reasons_in_the_users_language(
    officer_user, areas, language, no_report, validity_passed
):
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel")
    run = CampaignRunFactory(campaign=CampaignFactory(author=officer_user, status=Campaign.Status.SENDING))
    DeliveryFactory(run=run, operator=operator, status=Delivery.Status.EXPIRED, reason="no_report")
    DeliveryFactory(run=run, operator=operator, status=Delivery.Status.FAILED, reason="validity_passed")
    url = reverse("campaigns:run_progress", args=[run.campaign_id, run.pk])
    body = client_for(officer_user, language).get(url).content.decode()
    assert f"<td>{no_report}</td>" in body
    assert f"<td>{validity_passed}</td>" in body


def test_the_campaign_page_reloads_once_the_run_it_watches_ends(officer_user, areas):
    run = CampaignRunFactory(campaign=CampaignFactory(author=officer_user, status=Campaign.Status.SENDING))
    url = reverse("campaigns:run_progress", args=[run.campaign_id, run.pk])
    client = client_for(officer_user)
    poll = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TRIGGER": f"run-{run.pk}"}
    assert "HX-Refresh" not in client.get(url, **poll)
    CampaignRun.objects.filter(pk=run.pk).update(status=CampaignRun.Status.COMPLETED)
    Campaign.objects.filter(pk=run.campaign_id).update(status=Campaign.Status.COMPLETED)
    # The poll that sees the end reloads the page, so its state, actions and history follow;
    # the first load of an ended run's block does not, or the page would reload for ever.
    assert client.get(url, **poll)["HX-Refresh"] == "true"
    assert "HX-Refresh" not in client.get(url, HTTP_HX_REQUEST="true")


def test_run_progress_lists_the_recipients_of_a_failed_batch_once_among_the_failures(officer_user, areas):
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel")
    run = CampaignRunFactory(campaign=CampaignFactory(author=officer_user, status=Campaign.Status.SENDING))
    batch = DispatchBatchFactory(
        run=run, operator=operator, size=3, status=DispatchBatch.Status.FAILED, last_error="HTTP 401: bad key"
    )
    for _ in range(3):
        DeliveryFactory(
            run=run, operator=operator, batch=batch, status=Delivery.Status.FAILED, reason="HTTP 401: bad key"
        )
    DeliveryFactory(run=run, operator=operator, status=Delivery.Status.UNDELIVERED, reason="absent subscriber")
    url = reverse("campaigns:run_progress", args=[run.campaign_id, run.pk])
    body = client_for(officer_user, "en").get(url).content.decode()
    failures = body[body.index("<h4>Failures</h4>") :]
    listed = [int(n) for n in re.findall(r'<td class="num">([\d,]+)</td></tr>', failures)]
    # Four recipients failed, as the progress counts them: the batch's three are not listed a second time.
    assert "4 failed" in body
    assert sorted(listed) == [1, 3]


@pytest.mark.parametrize(
    ("language", "shown"),
    [("en", "6 SMS parts sent · Rp 1,200 so far"), ("id", "6 bagian SMS terkirim · Rp 1.200 sejauh ini")],
)
def test_run_progress_shows_the_parts_sent_and_their_cost_at_the_tariffs_of_the_runs_start(
    officer_user, areas, language, shown
):
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel", tariff_per_segment=250)
    campaign = CampaignFactory(author=officer_user, status=Campaign.Status.SENDING)
    run = CampaignRunFactory(campaign=campaign, segments=3, frozen={"tariffs": {str(operator.pk): 200}})
    batch = DispatchBatchFactory(
        run=run, operator=operator, size=3, status=DispatchBatch.Status.ACCEPTED, accepted_count=2
    )
    DeliveryFactory.create_batch(2, run=run, operator=operator, batch=batch, status=Delivery.Status.QUEUED)
    DeliveryFactory(run=run, operator=operator, batch=batch, status=Delivery.Status.REJECTED, reason="barred")
    url = reverse("campaigns:run_progress", args=[run.campaign_id, run.pk])
    body = client_for(officer_user, language).get(url).content.decode()
    # Two messages the operator took × 3 parts × Rp 200 frozen at the start (today Rp 250).
    assert shown in body


def test_run_progress_partial_counts_a_queued_message_of_an_accepted_batch_as_submitted(officer_user, areas):
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel")
    run = CampaignRunFactory(campaign=CampaignFactory(author=officer_user, status=Campaign.Status.SENDING))
    batch = DispatchBatchFactory(run=run, operator=operator, size=2, status=DispatchBatch.Status.ACCEPTED)
    DeliveryFactory(run=run, operator=operator, batch=batch, status=Delivery.Status.QUEUED)
    DeliveryFactory(run=run, operator=operator, batch=batch, status=Delivery.Status.QUEUED)
    DeliveryFactory(run=run, status=Delivery.Status.SKIPPED, reason="no operator")
    url = reverse("campaigns:run_progress", args=[run.campaign_id, run.pk])
    body = client_for(officer_user).get(url).content.decode()
    assert '<td>diteruskan</td><td class="num">2</td>' in body
    assert "dalam antrean" not in body
    assert '<td>Tanpa operator</td><td class="num">1</td>' in body
    assert 'aria-valuenow="33"' in body


def _delivery_reads(captured) -> int:
    """Return how many of the captured queries read the deliveries table."""
    return sum('"campaigns_delivery"' in query["sql"] for query in captured)


def _chart_and_failures_read_query_by_query(run: CampaignRun) -> tuple[str | None, list[dict]]:
    """Return the chart (SVG) and failures of a run's progress block, each read by its own queries as in the past."""
    from collections import defaultdict

    from django.db.models import Count, Max, Min
    from django.db.models.functions import TruncMinute, TruncSecond

    from smsblast.templatetags.svg import line_chart_svg
    from smsblast.templatetags.ui import thousands

    span = run.deliveries.aggregate(first=Min("done_at"), last=Max("done_at"))
    first, last = span["first"], span["last"]
    failures = list(
        run.deliveries.filter(status__in=["undelivered", "expired", "rejected", "failed"])
        .values("status", "reason", "error_code", "operator__name")
        .annotate(n=Count("id"))
        .order_by("-n", "status", "reason", "error_code", "operator__name")[:20]
    )
    if first is None:
        return None, failures
    bucket = TruncSecond if last - first < timedelta(minutes=10) else TruncMinute
    rows = (
        run.deliveries.filter(status=Delivery.Status.DELIVERED, done_at__isnull=False)
        .annotate(slot=bucket("done_at"))
        .values_list("operator__name", "slot")
        .annotate(n=Count("id"))
        .order_by("slot", "operator__name")
    )
    series, running = defaultdict(list), defaultdict(int)
    for name, slot, n in rows:
        running[name or "–"] += n
        series[name or "–"].append(((slot - first.replace(microsecond=0)).total_seconds(), running[name or "–"]))
    if not series:
        return None, failures
    code = run.campaign.area_codes[0]
    labels = (local_time(first, code), local_time(last, code))
    with translation.override("en"):
        svg = line_chart_svg(series, title="Deliveries over time per operator", x_labels=labels, y_format=thousands)
    return svg, failures


@pytest.mark.parametrize(
    ("started", "outcomes_over", "reads"),
    [
        (timedelta(minutes=3), timedelta(minutes=2), 1),  # counted by the second
        (timedelta(hours=2), timedelta(minutes=40), 1),  # by the minute
        (None, timedelta(minutes=40), 1),  # counted by the second, shown by the minute
        (timedelta(hours=2), timedelta(minutes=4), 2),  # reports stopped within minutes: by the second
    ],
)
def test_the_polled_progress_block_reads_the_runs_deliveries_once_and_shows_what_reading_them_apart_showed(
    officer_user, areas, started, outcomes_over, reads
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from campaigns.dispatch_selectors import run_progress

    now = timezone.now()
    tsel = OperatorFactory(name="Telkomsel", slug="telkomsel")
    isat = OperatorFactory(name="Indosat", slug="indosat")
    campaign = CampaignFactory(author=officer_user, status=Campaign.Status.SENDING, area_codes=["35.05"])
    run = CampaignRunFactory(campaign=campaign, started_at=now - started if started else None)
    accepted = DispatchBatchFactory(run=run, operator=tsel, size=9, status=DispatchBatch.Status.ACCEPTED)
    failed = DispatchBatchFactory(run=run, operator=isat, size=4, status=DispatchBatch.Status.FAILED)
    first = now - outcomes_over
    DeliveryFactory(run=run, status=Delivery.Status.SKIPPED, reason="opted_out", done_at=first)
    for index, operator, batch in [(1, tsel, accepted), (1, tsel, accepted), (2, isat, failed), (3, tsel, accepted)]:
        done_at = first + outcomes_over * index / 4 + timedelta(microseconds=index * 1000)
        DeliveryFactory(run=run, operator=operator, batch=batch, status=Delivery.Status.DELIVERED, done_at=done_at)
    DeliveryFactory.create_batch(3, run=run, operator=tsel, batch=accepted, status=Delivery.Status.QUEUED)
    DeliveryFactory.create_batch(3, run=run, operator=isat, batch=failed, status="failed", reason="HTTP 401")
    DeliveryFactory.create_batch(2, run=run, operator=tsel, batch=accepted, status="rejected", reason="barred")
    DeliveryFactory(run=run, operator=tsel, batch=accepted, status="undelivered", error_code="27", done_at=now)
    DeliveryFactory(run=run, operator=isat, status="expired", reason="no_report")

    with CaptureQueriesContext(connection) as captured:
        response = client_for(officer_user, "en").get(reverse("campaigns:run_progress", args=[campaign.pk, run.pk]))

    # Polled every 2 s while a run of up to millions sends: each read counts all of the run's deliveries.
    assert _delivery_reads(captured) == reads
    svg, failures = _chart_and_failures_read_query_by_query(run)
    assert response.context["chart"]["svg"] == svg
    assert [dict(row) for row in response.context["failures"]] == failures
    assert response.context["progress"] == run_progress(run)
    assert response.context["progress"]["counts"]["submitted"] == 3


def test_the_delivery_chart_of_a_campaign_drawn_over_papua_gives_its_times_in_wit_as_the_run_does(officer_user):
    from tests.smsblast.test_preview import box

    AreaFactory(code="94", name="Papua Tengah", boundary=box(135.0, -4.5, 137.0, -3.0))
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel")
    campaign = CampaignFactory(
        author=officer_user, status=Campaign.Status.SENDING, area_codes=[], polygon=box(135.2, -3.8, 135.6, -3.4)
    )
    now = timezone.now()
    run = CampaignRunFactory(campaign=campaign, started_at=now - timedelta(minutes=3))
    batch = DispatchBatchFactory(run=run, operator=operator, size=2, status=DispatchBatch.Status.ACCEPTED)
    for minutes in (2, 1):
        done_at = now - timedelta(minutes=minutes)
        DeliveryFactory(run=run, operator=operator, batch=batch, status=Delivery.Status.DELIVERED, done_at=done_at)

    response = client_for(officer_user, "en").get(reverse("campaigns:run_progress", args=[campaign.pk, run.pk]))

    svg = response.context["chart"]["svg"]
    first = run.deliveries.order_by("done_at").first().done_at
    assert local_time(first, campaign) in svg
    assert local_time(first, campaign).endswith(" WIT")
    assert " WIB" not in svg


@pytest.mark.parametrize(
    ("language", "said"),
    [
        ("en", "No subscriber was in the area and audience when this run started: it had no one to send to."),
        ("id", "Tidak ada pelanggan di wilayah dan penerima ini saat pengiriman dimulai: tidak ada yang dikirimi."),
    ],
)
def test_a_run_that_found_no_recipient_says_so_instead_of_showing_empty_tables(officer_user, areas, language, said):
    campaign = CampaignFactory(author=officer_user, status=Campaign.Status.COMPLETED, area_codes=["35.05"])
    run = CampaignRunFactory(
        campaign=campaign, status=CampaignRun.Status.COMPLETED, fanout_done=True, finished_at=timezone.now()
    )

    body = client_for(officer_user, language).get(reverse("campaigns:run_progress", args=[campaign.pk, run.pk]))

    text = body.content.decode()
    assert said in text
    assert "<tbody></tbody>" not in text


def test_a_run_still_preparing_its_recipients_does_not_say_it_found_none(officer_user, areas):
    campaign = CampaignFactory(author=officer_user, status=Campaign.Status.SENDING, area_codes=["35.05"])
    run = CampaignRunFactory(campaign=campaign, status=CampaignRun.Status.FANNING_OUT, fanout_done=False)

    body = client_for(officer_user, "en").get(reverse("campaigns:run_progress", args=[campaign.pk, run.pk]))

    assert "no one to send to" not in body.content.decode()


def _broadcast_run_with_reach(officer_user) -> CampaignRun:
    """Start an area broadcast for Kab. Blitar at two operators and let one report 1,234 handsets reached."""
    blitar_areas()
    for slug in ("telkomsel", "xl"):
        OperatorFactory(slug=slug, name=slug.title(), adapter="scripted_area", base_url=f"http://sim/{slug}")
    campaign = broadcast_campaign(author=officer_user)
    run = broadcasts.area_broadcast_run_start(campaign_id=campaign.pk, now=campaign.starts_at + timedelta(seconds=1))
    telkomsel = AreaBroadcast.objects.get(run=run, operator__slug="telkomsel")
    broadcasts.area_broadcast_report(
        operator=telkomsel.operator, broadcast_id=telkomsel.pk, handsets_reached=1234, at=timezone.now()
    )
    return run


def test_area_broadcast_run_progress_shows_each_operators_state_and_the_handsets_reached(officer_user):
    run = _broadcast_run_with_reach(officer_user)
    url = reverse("campaigns:run_progress", args=[run.campaign_id, run.pk])
    client = client_for(officer_user, language="en")
    body = client.get(url).content.decode()
    assert 'hx-trigger="every 2s"' in body
    assert "data-handsets-reached>1,234<" in body
    assert re.search(r'data-operator="telkomsel">.*?<td class="num">1,234</td>', body)
    assert re.search(r'data-operator="xl">.*?<td class="num">0</td>', body)
    assert "0 of 0 recipients" not in body
    CampaignRun.objects.filter(pk=run.pk).update(status=CampaignRun.Status.COMPLETED)
    body = client.get(url).content.decode()
    assert "every 2s" not in body
    assert "handsets reached, as the operators reported them" in body


def test_a_cancelled_area_broadcast_run_is_watched_until_every_operator_confirmed_the_cancel(officer_user):
    from campaigns.services import campaign_cancel

    run = _broadcast_run_with_reach(officer_user)
    for row in AreaBroadcast.objects.filter(run=run):
        broadcasts.area_broadcast_send(broadcast_id=row.pk)
    campaign_cancel(campaign=run.campaign, actor=officer_user, reason="Salah wilayah")
    url = reverse("campaigns:run_progress", args=[run.campaign_id, run.pk])
    client = client_for(officer_user, language="en")
    body = client.get(url).content.decode()
    # The cancel is on its way to the operators: the page keeps showing whether they confirmed it.
    assert 'hx-trigger="every 2s"' in body
    assert body.count("<td>cancelling</td>") == 2

    for row in AreaBroadcast.objects.filter(run=run):
        broadcasts.area_broadcast_cancel_send(broadcast_id=row.pk)
    polled = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TRIGGER=f"run-{run.pk}")
    assert polled["HX-Refresh"] == "true"
    body = polled.content.decode()
    assert "every 2s" not in body
    assert body.count("<td>cancelled</td>") == 2


def test_the_polled_reach_of_an_area_broadcast_reads_the_highest_report_of_each_operator_not_every_report(
    officer_user,
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    run = _broadcast_run_with_reach(officer_user)
    client = client_for(officer_user, language="en")
    for url in (reverse("campaigns:run_progress", args=[run.campaign_id, run.pk]), reverse("dashboard")):
        with CaptureQueriesContext(connection) as captured:
            body = client.get(url).content.decode()
        assert "1,234" in body
        # A window of days gathers reports by the hundred thousand; the pages poll every few seconds.
        reads = [query["sql"] for query in captured if '"operators_areabroadcastreach"' in query["sql"]]
        assert reads and all("MAX(" in read.upper() for read in reads)


def test_dashboard_shows_the_reach_of_a_running_area_broadcast(officer_user):
    _broadcast_run_with_reach(officer_user)
    body = client_for(officer_user, language="en").get(reverse("dashboard")).content.decode()
    assert "1,234 handsets reached so far" in body
    assert "0 of 0 recipients" not in body


def test_area_broadcast_history_names_the_start_of_its_window_in_the_users_language(officer_user):
    run = _broadcast_run_with_reach(officer_user)
    body = client_for(officer_user).get(reverse("campaigns:detail", args=[run.campaign_id])).content.decode()
    assert '<b>pengiriman dimulai</b> <span class="muted">(campaign.start)</span>' in body


def test_area_broadcast_history_names_an_operators_refusal_in_the_users_language(officer_user):
    run = _broadcast_run_with_reach(officer_user)
    xl = AreaBroadcast.objects.get(run=run, operator__slug="xl")
    refused = AreaBroadcastResult(outcome=Outcome.FAILED, status_code=422, error="HTTP 422: polygon too large")
    ScriptedAreaAdapter.reset(xl=[refused])
    broadcasts.area_broadcast_send(broadcast_id=xl.pk)
    body = client_for(officer_user).get(reverse("campaigns:detail", args=[run.campaign_id])).content.decode()
    assert '<b>operator tidak menerima siaran</b> <span class="muted">(area_broadcast.failed)</span>' in body


def test_area_broadcast_run_says_in_the_users_language_why_an_operator_never_acknowledged(officer_user):
    run = _broadcast_run_with_reach(officer_user)
    xl = AreaBroadcast.objects.get(run=run, operator__slug="xl")
    ScriptedAreaAdapter.reset(
        xl=[AreaBroadcastResult(outcome=Outcome.RETRY, status_code=503, error="HTTP 503: maintenance")]
    )
    broadcasts.area_broadcast_send(broadcast_id=xl.pk, now=run.campaign.ends_at - timedelta(seconds=1))
    url = reverse("campaigns:run_progress", args=[run.campaign_id, run.pk])
    body = client_for(officer_user).get(url).content.decode()
    assert "Tidak diterima operator sebelum jangka waktu siaran berakhir: HTTP 503: maintenance" in body
    assert "Not acknowledged" not in body


def test_a_schedule_that_ended_before_its_missed_runs_could_start_says_so_in_the_history():
    from datetime import UTC, datetime

    from campaigns import dispatch

    until_sunday = dispatch.scheduling.schedule_normalize({"kind": "daily", "time": "13:00", "until": "2021-07-11"})
    campaign = approved_campaign(schedule=until_sunday)
    saturday = datetime(2021, 7, 10, tzinfo=UTC)
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=until_sunday, now=saturday)
    # The scheduler was down from before Saturday 13:00 WIB until Tuesday.
    assert dispatch.run_start(campaign_id=campaign.pk, now=datetime(2021, 7, 13, tzinfo=UTC)) is None
    body = client_for(campaign.author).get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "<b>jadwal berakhir: pengiriman yang terlewat tidak dikirim</b>" in body


def test_a_scheduled_area_broadcast_shows_when_its_window_opens_not_when_it_was_armed(officer_user):
    blitar_areas()
    campaign = broadcast_campaign(author=officer_user, status=Campaign.Status.SCHEDULED)
    Campaign.objects.filter(pk=campaign.pk).update(next_run_at=timezone.now() - timedelta(minutes=3))
    client = client_for(officer_user, language="en")
    page = client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "Next run" not in page
    dashboard = client.get(reverse("dashboard")).content.decode()
    with translation.override("en"):
        assert f"broadcast from {local_time(campaign.starts_at, campaign)}" in dashboard
    assert "next run" not in dashboard


def test_a_sending_area_broadcast_offers_cancel_but_not_a_pause_that_would_be_refused(officer_user):
    run = _broadcast_run_with_reach(officer_user)
    body = client_for(officer_user).get(reverse("campaigns:detail", args=[run.campaign_id])).content.decode()
    assert f"/campaigns/{run.campaign_id}/cancel/" in body
    assert f"/campaigns/{run.campaign_id}/pause/" not in body


def test_campaign_page_links_the_cap_export_once_an_approval_covers_the_campaign(officer_user):
    blitar_areas()
    approved = broadcast_campaign(author=officer_user)
    draft = broadcast_campaign(author=officer_user, approved=False)
    client = client_for(officer_user)
    page = client.get(reverse("campaigns:detail", args=[approved.pk])).content.decode()
    link = f'href="/api/v1/campaigns/{approved.pk}/cap.xml"'
    assert link in page
    assert "Unduh peringatan CAP (XML)" in page
    assert client.get(f"/api/v1/campaigns/{approved.pk}/cap.xml").status_code == 200
    assert "cap.xml" not in client.get(reverse("campaigns:detail", args=[draft.pk])).content.decode()


def test_campaign_page_links_the_cap_cancel_of_a_campaign_cancelled_after_an_unapproved_edit(officer_user):
    from campaigns.services import campaign_cancel, campaign_update

    blitar_areas()
    campaign = broadcast_campaign(author=officer_user)
    campaign_update(campaign=campaign, actor=officer_user, data={"text": "Teks yang belum disetujui."})
    campaign_cancel(campaign=campaign, actor=officer_user, reason="Salah wilayah")
    client = client_for(officer_user)
    page = client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert f'href="/api/v1/campaigns/{campaign.pk}/cap.xml"' in page
    assert client.get(f"/api/v1/campaigns/{campaign.pk}/cap.xml").status_code == 200


# --- approval -----------------------------------------------------------------------------


def test_approver_approves_the_hash_on_the_page(pending, approver_user):
    client = client_for(approver_user)
    body = client.get(reverse("campaigns:review", args=[pending.pk])).content.decode()
    content_hash = campaign_content_hash(pending)
    assert f'value="{content_hash}"' in body
    response = client.post(
        reverse("campaigns:review", args=[pending.pk]),
        {"decision": "approve", "content_hash": content_hash, "confirm": "on"},
    )
    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.APPROVED
    assert Approval.objects.get().content_hash == content_hash


def test_an_approval_without_the_confirmation_tick_approves_nothing_and_says_to_tick_it(pending, approver_user):
    client = client_for(approver_user)
    body = client.get(reverse("campaigns:review", args=[pending.pk])).content.decode()
    assert 'name="confirm" required' in body
    response = client.post(
        reverse("campaigns:review", args=[pending.pk]),
        {"decision": "approve", "content_hash": campaign_content_hash(pending)},
    )
    assert response.status_code == 400
    assert "Centang kotak konfirmasi dulu; tidak ada yang disetujui." in response.content.decode()
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.PENDING_APPROVAL
    assert not Approval.objects.exists()


def test_a_change_made_during_review_is_refused_with_a_clear_message(pending, approver_user):
    client = client_for(approver_user)
    reviewed = campaign_content_hash(pending)
    Campaign.objects.filter(pk=pending.pk).update(text="Teks diubah diam-diam.")
    response = client.post(
        reverse("campaigns:review", args=[pending.pk]),
        {"decision": "approve", "content_hash": reviewed, "confirm": "on"},
    )
    assert response.status_code == 409
    body = response.content.decode()
    assert "diubah saat Anda memeriksanya" in body
    assert "Teks diubah diam-diam." in body
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.PENDING_APPROVAL
    assert not Approval.objects.exists()


def test_approving_a_pending_title_with_a_control_character_is_refused_telling_the_approver_to_reject(
    pending, approver_user
):
    Campaign.objects.filter(pk=pending.pk).update(title="Vaksin\x07 gratis")
    pending.refresh_from_db()
    response = client_for(approver_user).post(
        reverse("campaigns:review", args=[pending.pk]),
        {"decision": "approve", "content_hash": campaign_content_hash(pending), "confirm": "on"},
    )
    body = response.content.decode()
    assert response.status_code == 400
    assert "Tolak kampanye ini" in body
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.PENDING_APPROVAL
    assert not Approval.objects.exists()


def test_reject_needs_a_reason(pending, approver_user):
    response = client_for(approver_user).post(
        reverse("campaigns:review", args=[pending.pk]), {"decision": "reject", "reason": "   "}
    )
    assert response.status_code == 400
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.PENDING_APPROVAL


def test_the_approver_rejects_on_the_review_page_and_the_officer_reads_the_reason(pending, approver_user, officer_user):
    response = client_for(approver_user).post(
        reverse("campaigns:review", args=[pending.pk]),
        {"decision": "reject", "content_hash": campaign_content_hash(pending), "reason": "Sebutkan nomor hotline."},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("campaigns:detail", args=[pending.pk])
    assert "Ditolak. Petugas dapat melihat alasan Anda." in response.content.decode()
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.REJECTED
    assert (
        "Sebutkan nomor hotline."
        in client_for(officer_user).get(reverse("campaigns:detail", args=[pending.pk])).content.decode()
    )


def test_rejecting_a_version_changed_during_review_is_refused_and_keeps_the_reason_typed(pending, approver_user):
    reviewed = campaign_content_hash(pending)
    Campaign.objects.filter(pk=pending.pk).update(text="Teks diubah diam-diam.")
    response = client_for(approver_user).post(
        reverse("campaigns:review", args=[pending.pk]),
        {"decision": "reject", "content_hash": reviewed, "reason": "Sebutkan nomor hotline."},
    )
    assert response.status_code == 409
    body = response.content.decode()
    assert "diubah saat Anda memeriksanya, sehingga belum ditolak" in body
    assert "tidak ada yang disetujui" not in body
    assert "Teks diubah diam-diam." in body
    assert "Sebutkan nomor hotline." in body
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.PENDING_APPROVAL


def test_a_review_post_without_a_decision_changes_nothing_and_asks_for_one(pending, approver_user):
    response = client_for(approver_user).post(
        reverse("campaigns:review", args=[pending.pk]), {"content_hash": campaign_content_hash(pending)}
    )
    assert response.status_code == 400
    assert "Pilih setujui atau tolak." in response.content.decode()
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.PENDING_APPROVAL
    assert not Approval.objects.exists()


def test_resubmitted_campaign_shows_a_diff_against_the_rejected_version(pending, approver_user, officer_user):
    campaign_reject(campaign=pending, approver=approver_user, reason="Sebutkan nomor hotline.")
    client_for(officer_user).post(
        reverse("campaigns:edit", args=[pending.pk]), compose_data(text="Tetap pakai masker. Hotline 119.")
    )
    pending.refresh_from_db()
    campaign_submit(campaign=pending, actor=officer_user)
    body = client_for(approver_user).get(reverse("campaigns:review", args=[pending.pk])).content.decode()
    assert "Sebutkan nomor hotline." in body
    assert '<span class="add">+Isi pesan: Tetap pakai masker. Hotline 119.</span>' in body
    assert '<span class="del">-Isi pesan: Tetap pakai masker, jaga jarak dan cuci tangan.' in body


def test_the_diff_since_the_rejection_names_fields_by_their_labels_and_shows_values_as_people_read_them(
    pending, approver_user, officer_user
):
    campaign_reject(campaign=pending, approver=approver_user, reason="Terlalu lama berlaku.")
    pending.refresh_from_db()
    starts = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=2)
    campaign_update(
        campaign=pending,
        actor=officer_user,
        data={
            "validity_minutes": 90,
            "area_codes": ["35.05.01", "35.05.02"],
            "starts_at": starts,
            "exercise": False,
            "schedule": {"kind": "daily", "time": "07:00"},
            "audience": {"languages": ["jv"]},
        },
    )
    campaign_submit(campaign=pending, actor=officer_user)
    body = client_for(approver_user).get(reverse("campaigns:review", args=[pending.pk])).content.decode()
    diff = re.search(r"<pre class=\"diff\" data-diff>(.*?)</pre>", body, re.S).group(1)
    for key in ("validity_minutes", "starts_at", "area_codes", "audience", "schedule", "null", "{"):
        assert key not in diff
    assert '<span class="del">-Wilayah cakupan: Kabupaten Blitar (35.05)</span>' in diff
    assert '<span class="add">+Wilayah cakupan: Kecamatan 1 (35.05.01), Kecamatan 2 (35.05.02)</span>' in diff
    assert '<span class="del">-Berlaku selama: 1 hari</span>' in diff
    assert '<span class="add">+Berlaku selama: 1 jam 30 menit</span>' in diff
    assert '<span class="del">-Jadwal: Sekali, segera' in diff
    assert '<span class="add">+Jadwal: Setiap hari pukul 07:00 WIB.</span>' in diff
    assert '<span class="del">-Penerima: —</span>' in diff
    assert '<span class="add">+Penerima: Hanya pelanggan berbahasa: jv</span>' in diff
    assert '<span class="del">-Siaran mulai: —</span>' in diff
    assert f'<span class="add">+Siaran mulai: {local_time(starts, "35.05")}</span>' in diff  # "… 07:00 WIB"
    assert '<span class=""> Latihan: tidak</span>' in diff  # unchanged context, by its label and in words


def test_the_diff_since_the_rejection_shows_a_moved_corner_of_the_drawn_area_and_an_added_operator_filter(
    areas, officer_user, approver_user
):
    OperatorFactory(name="XL Axiata", slug="xl")
    drawn = {"type": "Polygon", "coordinates": [[[112.0, -8.0], [112.05, -8.0], [112.05, -8.05], [112.0, -8.0]]]}
    campaign = CampaignFactory(author=officer_user, area_codes=[], polygon=drawn)
    campaign_submit(campaign=campaign, actor=officer_user)
    campaign_reject(campaign=campaign, approver=approver_user, reason="Perkecil areanya.")
    campaign.refresh_from_db()
    moved = {"type": "Polygon", "coordinates": [[[112.0, -8.0], [112.04, -8.0], [112.05, -8.05], [112.0, -8.0]]]}
    campaign_update(campaign=campaign, actor=officer_user, data={"polygon": moved, "audience": {"operators": ["xl"]}})
    campaign_submit(campaign=campaign, actor=officer_user)
    body = client_for(approver_user).get(reverse("campaigns:review", args=[campaign.pk])).content.decode()
    diff = re.search(r"<pre class=\"diff\" data-diff>(.*?)</pre>", body, re.S).group(1)
    assert "coordinates" not in diff and "{" not in diff
    assert '<span class="del">-Area yang digambar: -8.0, 112.0; -8.0, 112.05; -8.05, 112.05; -8.0, 112.0</span>' in diff
    assert '<span class="add">+Area yang digambar: -8.0, 112.0; -8.0, 112.04; -8.05, 112.05; -8.0, 112.0</span>' in diff
    assert '<span class="add">+Penerima: Hanya pelanggan operator: xl</span>' in diff


def test_review_page_shows_the_drawn_area_and_the_audience_filters_the_approval_binds(
    areas, officer_user, approver_user
):
    """What the approval's hash covers is on the page: a drawn polygon on the map, the language and operator filters."""
    drawn = {"type": "Polygon", "coordinates": [[[112.0, -8.0], [112.05, -8.0], [112.05, -8.05], [112.0, -8.0]]]}
    campaign = CampaignFactory(
        author=officer_user, area_codes=[], polygon=drawn, audience={"languages": ["jv"], "operators": ["xl"]}
    )
    campaign_submit(campaign=campaign, actor=officer_user)
    body = client_for(approver_user).get(reverse("campaigns:review", args=[campaign.pk])).content.decode()
    assert '<svg class="map"' in body
    assert "<title>Area yang digambar</title>" in body
    assert "jv" in body and "xl" in body


def test_review_page_of_an_area_broadcast_says_whether_it_is_an_exercise_and_to_which_operators(
    approver_user, blitar_population
):
    campaign = broadcast_campaign(
        approved=False, status=Campaign.Status.PENDING_APPROVAL, exercise=True, operator_slugs=["telkomsel"]
    )
    body = client_for(approver_user).get(reverse("campaigns:review", args=[campaign.pk])).content.decode()
    assert "Latihan" in body
    assert "telkomsel" in body


def test_approver_may_not_review_their_own_campaign(areas):
    # An admin author cannot also be the approver, but a user's role can change after writing.
    author = UserFactory(username="switcher", role=Role.OFFICER)
    campaign = campaign_submit(campaign=CampaignFactory(author=author, area_codes=["35.05"]), actor=author)
    from smsblast.roles import user_role_set

    user_role_set(user=author, role=Role.APPROVER)
    response = client_for(author).get(reverse("campaigns:review", args=[campaign.pk]))
    assert response.status_code == 403


def test_approver_may_not_review_a_campaign_whose_text_they_rewrote(pending, officer_user):
    # An admin who edited the text wrote part of what would be approved, even after becoming an approver.
    editor = UserFactory(username="rewriter", role=Role.ADMIN)
    campaign_reject(campaign=pending, approver=UserFactory(username="chair", role=Role.APPROVER), reason="Ubah.")
    from campaigns.services import campaign_update
    from smsblast.roles import user_role_set

    campaign_update(campaign=pending, actor=editor, data={"text": "Pakai masker. Hotline 119."})
    campaign_submit(campaign=pending, actor=officer_user)
    user_role_set(user=editor, role=Role.APPROVER)
    client = client_for(editor)
    assert client.get(reverse("campaigns:review", args=[pending.pk])).status_code == 403
    response = client.post(
        reverse("campaigns:review", args=[pending.pk]),
        {"decision": "approve", "content_hash": campaign_content_hash(pending)},
    )
    assert response.status_code == 403
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.PENDING_APPROVAL


# --- language and pages -------------------------------------------------------------------


@pytest.mark.parametrize(("language", "phrase"), [("id", "Kampanye"), ("en", "Campaigns")])
def test_pages_render_in_indonesian_and_english(pending, officer_user, approver_user, language, phrase):
    officer = client_for(officer_user, language)
    for url in [
        reverse("dashboard"),
        reverse("campaigns:list"),
        reverse("campaigns:create"),
        reverse("campaigns:detail", args=[pending.pk]),
        reverse("subscribers"),
    ]:
        response = officer.get(url)
        assert response.status_code == 200, url
        assert phrase in response.content.decode(), url
    assert client_for(approver_user, language).get(reverse("campaigns:review", args=[pending.pk])).status_code == 200


def test_language_switcher_sets_english(officer_user):
    client = client_for(officer_user)
    client.cookies.pop("django_language")
    response = client.post(reverse("set_language"), {"language": "en", "next": reverse("dashboard")}, follow=True)
    assert "Dashboard" in response.content.decode()
    assert "Log out" in response.content.decode()


def test_approval_without_the_reviewed_hash_is_refused_with_a_message(pending, approver_user):
    response = client_for(approver_user).post(reverse("campaigns:review", args=[pending.pk]), {"decision": "approve"})
    assert response.status_code == 400
    assert "tidak ada yang disetujui" in response.content.decode()
    pending.refresh_from_db()
    assert pending.status == Campaign.Status.PENDING_APPROVAL


def test_missing_campaign_is_a_404_page_in_the_users_language(officer_user):
    response = client_for(officer_user).get(reverse("campaigns:detail", args=[987654]))
    assert response.status_code == 404
    assert "Tidak ditemukan" in response.content.decode()


def test_an_english_browser_still_gets_indonesian_until_the_user_switches(officer_user):
    client = Client()
    client.force_login(officer_user)
    body = client.get(reverse("dashboard"), HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").content.decode()
    assert "Dasbor" in body
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    body = client.get(reverse("dashboard"), HTTP_ACCEPT_LANGUAGE="id").content.decode()
    assert "Dashboard" in body


def test_area_search_lists_larger_areas_first(officer_user, areas):
    body = client_for(officer_user).get(reverse("campaigns:area_search"), {"area_q": "35"}).content.decode()
    assert body.index('value="35"') < body.index('value="35.05"') < body.index('value="35.05.01"')


def test_a_form_without_its_csrf_token_is_refused_with_a_page_in_the_users_language(officer_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(officer_user)
    response = client.post(reverse("campaigns:create"), compose_data())
    assert response.status_code == 403
    assert "Formulir kedaluwarsa" in response.content.decode()
    assert not Campaign.objects.exists()


def test_pause_and_resume_from_the_campaign_page_go_through_the_pipeline_services(officer_user, areas):
    campaign = CampaignFactory(author=officer_user, area_codes=["35.05"], status=Campaign.Status.SENDING)
    CampaignRunFactory(campaign=campaign, status=CampaignRun.Status.SENDING)
    client = client_for(officer_user)
    assert "Ya, jeda pengiriman" in client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    client.post(reverse("campaigns:action", args=[campaign.pk, "pause"]), {"confirm": "on"})
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PAUSED
    assert AuditEvent.objects.filter(action="campaign.pause", object_id=str(campaign.pk)).exists()
    client.post(reverse("campaigns:action", args=[campaign.pk, "resume"]), {"confirm": "on"})
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENDING


def test_another_officer_sees_no_pause_button_and_is_refused(officer_user, areas):
    campaign = CampaignFactory(author=officer_user, area_codes=["35.05"], status=Campaign.Status.SENDING)
    other = client_for(UserFactory(username="ofc2", role=Role.OFFICER))
    assert "Ya, jeda pengiriman" not in other.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    response = other.post(reverse("campaigns:action", args=[campaign.pk, "pause"]), {"confirm": "on"})
    assert response.status_code == 403
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENDING


def test_area_picker_browses_the_tree_below_an_area(officer_user, areas):
    body = client_for(officer_user).get(reverse("campaigns:area_search"), {"parent": "35.05"}).content.decode()
    assert 'value="35.05.01"' in body and 'value="35.05.02"' in body
    assert 'value="35.05"' not in body


def test_area_picker_offers_an_officer_with_a_jurisdiction_only_the_areas_they_may_target(officer_user, areas):
    # Kota Blitar (35.72) is a city of its own beside Kabupaten Blitar: ticked by mistake, the draft was refused.
    AreaFactory(code="35.72", name="Kota Blitar", parent=areas[0])
    limited = client_for(UserFactory(role=Role.OFFICER, jurisdiction_id="35.05"))
    searched = limited.get(reverse("campaigns:area_search"), {"area_q": "blitar"}).content.decode()
    assert 'value="35.05"' in searched
    assert 'value="35.72"' not in searched
    by_code = limited.get(reverse("campaigns:area_search"), {"area_q": "35"}).content.decode()
    assert 'value="35.05.01"' in by_code
    assert 'value="35"' not in by_code and 'value="35.72"' not in by_code
    browsed = limited.get(reverse("campaigns:area_search"), {"parent": "35"}).content.decode()
    assert 'value="35.05"' in browsed and 'value="35.72"' not in browsed
    unlimited = client_for(officer_user).get(reverse("campaigns:area_search"), {"area_q": "blitar"}).content.decode()
    assert 'value="35.05"' in unlimited and 'value="35.72"' in unlimited


def test_area_broadcast_window_is_read_in_the_areas_zone(officer_user):
    from datetime import UTC, datetime

    from tests.smsblast.factories import AreaFactory

    AreaFactory(code="51", name="Bali")
    AreaFactory(code="51.71", name="Kota Denpasar")
    data = compose_data(
        mode="area_broadcast",
        area_codes=["51.71"],
        broadcast_starts="2030-01-01T08:00",
        broadcast_ends="2030-01-01T20:00",
    )
    response = client_for(officer_user).post(reverse("campaigns:create"), data)
    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert campaign.starts_at == datetime(2030, 1, 1, 0, 0, tzinfo=UTC)  # 08:00 WITA
    assert campaign.ends_at == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    body = client_for(officer_user).get(reverse("campaigns:edit", args=[campaign.pk])).content.decode()
    assert 'value="2030-01-01T08:00"' in body
    body = client_for(officer_user).get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "1 Jan 2030 08:00 WITA – 1 Jan 2030 20:00 WITA" in body


@pytest.mark.parametrize(
    ("starts", "ends", "message"),
    [
        ("0001-01-01T00:00", "0001-01-01T05:00", "Waktu ini sudah lewat di WIB"),
        ("9999-12-31T20:00", "9999-12-31T23:00", "(Siaran mulai, Siaran sampai)"),  # the fields named in the error
    ],
)
def test_an_area_broadcast_window_in_an_impossible_year_is_refused_and_the_list_still_opens(
    officer_user, areas, starts, ends, message
):
    client = client_for(officer_user)
    data = compose_data(mode="area_broadcast", broadcast_starts=starts, broadcast_ends=ends)
    response = client.post(reverse("campaigns:create"), data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Campaign.objects.exists()
    assert client.get(reverse("campaigns:list")).status_code == 200


@pytest.mark.parametrize(
    ("starts_in", "lasts", "message"),
    [
        (timedelta(hours=-3), timedelta(minutes=10), "Waktu ini sudah lewat di WIB"),
        (timedelta(hours=1), timedelta(minutes=2), "paling singkat 5 menit"),
        (timedelta(hours=1), timedelta(hours=30), "paling lama 24 jam"),
    ],
)
def test_compose_refuses_an_area_broadcast_window_submit_would_refuse(officer_user, areas, starts_in, lasts, message):
    starts = (timezone.now() + starts_in).astimezone(ZoneInfo("Asia/Jakarta"))
    data = compose_data(
        mode="area_broadcast",
        broadcast_starts=starts.strftime("%Y-%m-%dT%H:%M"),
        broadcast_ends=(starts + lasts).strftime("%Y-%m-%dT%H:%M"),
    )
    response = client_for(officer_user).post(reverse("campaigns:create"), data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Campaign.objects.exists()


def test_area_broadcast_without_a_window_is_refused(officer_user, areas):
    response = client_for(officer_user).post(reverse("campaigns:create"), compose_data(mode="area_broadcast"))
    assert response.status_code == 200
    assert "memerlukan awal dan akhir" in response.content.decode()
    assert not Campaign.objects.exists()


def test_an_area_broadcast_window_over_two_zones_is_read_in_the_zone_it_is_shown_in(officer_user, areas):
    from datetime import UTC, datetime

    from tests.smsblast.factories import AreaFactory

    AreaFactory(code="51", name="Bali")
    AreaFactory(code="51.71", name="Kota Denpasar")
    data = compose_data(
        mode="area_broadcast",
        area_codes=["51.71", "35.05"],  # ticked Denpasar (WITA) first, Blitar (WIB) second
        broadcast_starts="2030-01-01T08:00",
        broadcast_ends="2030-01-01T20:00",
    )
    response = client_for(officer_user).post(reverse("campaigns:create"), data)
    assert response.status_code == 302
    campaign = Campaign.objects.get()
    body = client_for(officer_user).get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "1 Jan 2030 08:00 WIB – 1 Jan 2030 20:00 WIB" in body
    assert campaign.starts_at == datetime(2030, 1, 1, 1, 0, tzinfo=UTC)


def test_compose_preview_names_the_zone_the_times_are_entered_in(officer_user, areas):
    from tests.smsblast.factories import AreaFactory

    AreaFactory(code="94", name="Papua Tengah")
    AreaFactory(code="94.01", name="Kabupaten Nabire")
    body = client_for(officer_user).get(reverse("campaigns:create")).content.decode()
    assert 'id="schedule-zone"' in body
    response = client_for(officer_user).post(
        reverse("campaigns:preview"), {"area_codes": ["94.01"], "text": "Halo", "mode": "targeted"}
    )
    body = response.content.decode()
    assert '<span id="schedule-zone" hx-swap-oob="true">WIT</span>' in body
    assert '<span id="window-zone" hx-swap-oob="true">WIT</span>' in body


def test_a_campaign_drawn_only_over_papua_is_shown_in_wit_and_its_edit_preview_keeps_the_polygon(officer_user):
    from datetime import UTC, datetime

    from tests.smsblast.factories import AreaFactory
    from tests.smsblast.test_preview import box

    AreaFactory(code="94", name="Papua Tengah", boundary=box(135.0, -4.5, 137.0, -3.0))
    AreaFactory(code="94.01", name="Kabupaten Nabire", boundary=box(135.0, -4.0, 136.0, -3.0))
    AreaFactory(code="94.02", name="Kabupaten Paniai", boundary=box(136.0, -4.0, 137.0, -3.0))
    operator = OperatorFactory()
    SubscriberFactory(area_id="94.01", operator=operator)  # reached by the polygon
    SubscriberFactory(area_id="94.02", operator=operator)  # in the area ticked while editing
    campaign = CampaignFactory(
        author=officer_user,
        mode="area_broadcast",
        area_codes=[],
        polygon=box(135.2, -3.8, 135.6, -3.4),
        starts_at=datetime(2030, 1, 1, 0, 0, tzinfo=UTC),
        ends_at=datetime(2030, 1, 1, 3, 0, tzinfo=UTC),
    )
    client = client_for(officer_user)
    body = client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "1 Jan 2030 09:00 WIT – 1 Jan 2030 12:00 WIT" in body
    body = client.get(reverse("campaigns:edit", args=[campaign.pk])).content.decode()
    assert '<span id="schedule-zone">WIT</span>' in body
    assert 'value="2030-01-01T09:00"' in body
    assert " WIT</td>" in client.get(reverse("campaigns:list")).content.decode()  # its last change, in WIT

    # The edit form names its campaign, so the preview counts the polygon it keeps besides the ticked area.
    assert f'name="campaign" value="{campaign.pk}"' in body
    form = {"area_codes": ["94.02"], "text": "Halo", "mode": "targeted"}
    editing = client.post(reverse("campaigns:preview"), {**form, "campaign": str(campaign.pk)})
    composing = client.post(reverse("campaigns:preview"), form)
    assert editing.context["audience"]["total"] == 2
    assert composing.context["audience"]["total"] == 1
    assert '<span id="schedule-zone" hx-swap-oob="true">WIT</span>' in editing.content.decode()


def test_the_edit_preview_counts_the_audience_filter_the_campaign_keeps_as_its_page_and_run_do(officer_user, areas):
    operator = OperatorFactory(tariff_per_segment=250)
    SubscriberFactory.create_batch(3, area=areas[2], operator=operator, language="id")
    SubscriberFactory(area=areas[2], operator=operator, language="jv")
    # Audience filters are set through the API; the edit form has no field for them and keeps them.
    campaign = CampaignFactory(author=officer_user, area_codes=["35.05"], audience={"languages": ["jv"]})
    client = client_for(officer_user)
    shown = client.get(reverse("campaigns:detail", args=[campaign.pk])).context["audience"]

    form = {"area_codes": ["35.05"], "text": campaign.text, "mode": "targeted", "campaign": str(campaign.pk)}
    previewed = client.post(reverse("campaigns:preview"), form).context["audience"]

    assert (shown["total"], shown["cost"]) == (1, 250)
    assert (previewed["total"], previewed["cost"]) == (shown["total"], shown["cost"])


def test_the_phone_preview_names_the_encoding_as_people_write_it(pending, approver_user):
    body = client_for(approver_user).get(reverse("campaigns:review", args=[pending.pk])).content.decode()
    assert "GSM-7 ·" in body or "UCS-2 ·" in body
    assert "GSM7 ·" not in body and "UCS2 ·" not in body


def test_the_review_page_writes_schedule_dates_as_people_do(areas, officer_user, approver_user):
    once = CampaignFactory(
        author=officer_user, area_codes=["35.05"], schedule={"kind": "once", "at": "2030-01-07T10:00"}
    )
    daily = CampaignFactory(
        author=officer_user, area_codes=["35.05"], schedule={"kind": "daily", "time": "13:00", "until": "2030-12-31"}
    )
    for campaign in (once, daily):
        campaign_submit(campaign=campaign, actor=officer_user)
    client = client_for(approver_user)
    assert (
        "Sekali, pada 7 Jan 2030 10:00 WIB." in client.get(reverse("campaigns:review", args=[once.pk])).content.decode()
    )
    body = client.get(reverse("campaigns:review", args=[daily.pk])).content.decode()
    assert "Sampai 31 Des 2030." in body and "2030-12-31" not in body


def test_a_draft_offers_its_cancel_under_that_name_not_pause_or_resume(areas, officer_user):
    campaign = CampaignFactory(author=officer_user, area_codes=["35.05"])
    body = client_for(officer_user).get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "<summary>Batalkan kampanye</summary>" in body
    assert "Jeda, lanjutkan atau batalkan" not in body


def test_a_sent_campaigns_audience_is_marked_as_todays_beside_its_runs(areas, officer_user):
    campaign = CampaignFactory(author=officer_user, area_codes=["35.05"], status=Campaign.Status.COMPLETED)
    note = "Ini pelanggan di wilayah ini hari ini"
    client = client_for(officer_user)
    assert note not in client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    CampaignRunFactory(campaign=campaign)
    assert note in client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()


def test_only_a_targeted_campaign_offers_the_per_recipient_report(areas, officer_user):
    client = client_for(officer_user)
    for mode, offered in (("targeted", True), ("area_broadcast", False)):
        campaign = CampaignFactory(
            author=officer_user, area_codes=["35.05"], mode=mode, status=Campaign.Status.COMPLETED
        )
        CampaignRunFactory(campaign=campaign)
        body = client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
        assert (f"/api/v1/campaigns/{campaign.pk}/report.csv" in body) is offered, mode


def test_a_campaign_page_offers_each_runs_report_and_counts_the_runs_it_does_not_list(areas, officer_user):
    campaign = CampaignFactory(author=officer_user, area_codes=["35.05"], status=Campaign.Status.SCHEDULED)
    start = timezone.now() - timedelta(days=20)
    runs = [CampaignRunFactory(campaign=campaign, scheduled_for=start + timedelta(days=n)) for n in range(3)]
    client = client_for(officer_user)
    body = client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert body.count("report.csv?run=") == 3 and f'report.csv?run={runs[0].pk}"' in body
    assert "dari 3" not in body
    runs += [CampaignRunFactory(campaign=campaign, scheduled_for=start + timedelta(days=n)) for n in range(3, 12)]
    body = client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert body.count("report.csv?run=") == 10
    assert f'report.csv?run={runs[-1].pk}"' in body and f'report.csv?run={runs[0].pk}"' not in body
    assert "Ditampilkan 10 pengiriman terakhir dari 12" in body


def test_a_campaign_page_offers_its_reports_separated_by_semicolons_for_excel_set_to_indonesian(areas, officer_user):
    campaign = CampaignFactory(author=officer_user, area_codes=["35.05"], status=Campaign.Status.COMPLETED)
    run = CampaignRunFactory(campaign=campaign)
    body = client_for(officer_user).get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()

    base = f"/api/v1/campaigns/{campaign.pk}"
    for url in (
        f"{base}/report.csv",
        f"{base}/areas.csv",
        f"{base}/report.csv?sep=semicolon",
        f"{base}/areas.csv?sep=semicolon",
        f"{base}/report.csv?sep=semicolon&amp;run={run.pk}",
        f"{base}/areas.csv?sep=semicolon&amp;run={run.pk}",
    ):
        assert f'href="{url}"' in body, url
    assert "Excel berbahasa Indonesia" in body


def test_review_page_says_quiet_hours_hold_in_every_zone_the_campaign_reaches(officer_user, approver_user):
    campaign = CampaignFactory(
        author=officer_user,
        area_codes=["35.05", "91.71"],
        schedule={"kind": "now", "quiet_hours": {"start": "21:00", "end": "06:00"}},
        status=Campaign.Status.PENDING_APPROVAL,
    )
    body = client_for(approver_user, "en").get(reverse("campaigns:review", args=[campaign.pk])).content.decode()
    assert "Quiet hours 21:00–06:00 WIB/WIT" in body


def test_saving_an_approved_campaign_unchanged_keeps_its_approval_when_it_was_approved_without_a_schedule():
    # Created through the API without a schedule: stored empty, which means "once, as soon as approved".
    campaign = approved_campaign(schedule={})
    data = compose_data(title=campaign.title, text=campaign.text, sender=campaign.sender)
    response = client_for(campaign.author).post(reverse("campaigns:edit", args=[campaign.pk]), data)
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED
    assert Approval.objects.get(campaign=campaign).voided_at is None


def _broadcast_with_subscribers(**fields) -> Campaign:
    """Return an area broadcast for Kab. Blitar at Telkomsel, where registered subscribers would cost SMS."""
    blitar_areas()
    telkomsel = OperatorFactory(slug="telkomsel", name="Telkomsel", tariff_per_segment=350)
    OperatorFactory(slug="xl", name="XL Axiata", tariff_per_segment=250)
    for _ in range(3):
        SubscriberFactory(area_id="35.05.01", operator=telkomsel)
    return broadcast_campaign(**fields)


def test_campaign_page_of_an_area_broadcast_shows_its_operators_and_reach_not_an_sms_cost(officer_user):
    campaign = _broadcast_with_subscribers(author=officer_user, operator_slugs=["telkomsel"])
    body = client_for(officer_user, "en").get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "data-audience" not in body
    assert "Rp " not in body  # an amount; "Rp" alone can stand in the random CSRF token
    assert re.search(r"data-broadcast-operators>\s*Telkomsel\s*<", body)
    assert "XL Axiata" not in body
    assert "data-exercise>No" in body
    assert "data-handsets>1,072,444<" in body
    with translation.override("en"):
        window = f"{local_time(campaign.starts_at, campaign)} – {local_time(campaign.ends_at, campaign)}"
    assert window in body


def test_campaign_page_of_an_area_broadcast_to_every_operator_says_so_and_names_them(officer_user):
    campaign = _broadcast_with_subscribers(author=officer_user)
    body = client_for(officer_user).get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert re.search(r"data-broadcast-operators>\s*semua operator aktif: Telkomsel, XL Axiata\s*<", body)
    assert "data-audience" not in body


def test_review_page_of_an_area_broadcast_shows_no_sms_cost_and_its_window_as_the_schedule(approver_user):
    campaign = _broadcast_with_subscribers(approved=False, status=Campaign.Status.PENDING_APPROVAL, exercise=True)
    body = client_for(approver_user, "en").get(reverse("campaigns:review", args=[campaign.pk])).content.decode()
    assert "data-audience" not in body
    assert "Rp " not in body
    assert "Audience per operator and cost" not in body
    assert "data-exercise>Yes" in body
    assert "data-handsets>1,072,444<" in body
    assert "as soon as it is scheduled" not in body
    schedule = re.search(r"<ul data-schedule>(.*?)</ul>", body, re.S).group(1)
    with translation.override("en"):
        window = f"{local_time(campaign.starts_at, campaign)} – {local_time(campaign.ends_at, campaign)}"
    assert window in schedule
    assert "once per handset in the window" in schedule
    body = client_for(approver_user).get(reverse("campaigns:review", args=[campaign.pk])).content.decode()
    assert "Sekali, segera setelah dijadwalkan" not in body
    assert "Jangka waktu siaran" in re.search(r"<ul data-schedule>(.*?)</ul>", body, re.S).group(1)


def test_compose_preview_of_an_area_broadcast_shows_its_operators_and_reach_not_an_sms_cost(officer_user):
    campaign = _broadcast_with_subscribers(author=officer_user, operator_slugs=["telkomsel"], exercise=True)
    data = {"area_codes": ["35.05"], "text": "Tetap pakai masker.", "mode": "area_broadcast"}
    client = client_for(officer_user, "en")
    body = client.post(reverse("campaigns:preview"), data).content.decode()
    assert "data-audience" not in body and "Rp " not in body
    assert "Audience and cost" not in body and "Operators and estimated reach" in body
    # A new campaign goes to every active operator as a real alert.
    assert re.search(r"data-broadcast-operators>\s*every active operator: Telkomsel, XL Axiata\s*<", body)
    assert "data-exercise>No" in body
    assert "data-handsets>1,072,444<" in body
    assert "it has no SMS cost" in body
    # Editing the saved one keeps its operators and exercise flag, which the form has no field for: an exercise
    # goes only to test endpoints, which Telkomsel has not.
    body = client.post(reverse("campaigns:preview"), {**data, "campaign": campaign.pk}).content.decode()
    assert "data-exercise>Yes" in body
    assert "data-broadcast-left-out>telkomsel" in body
    assert "XL Axiata" not in body
    assert "data-audience" not in body and "Rp " not in body
    # The same areas composed as a targeted send still show the subscribers and their SMS cost.
    body = client.post(reverse("campaigns:preview"), {**data, "mode": "targeted"}).content.decode()
    assert "data-audience-total>3<" in body and "data-broadcast-plan" not in body


def test_campaign_and_review_pages_of_a_targeted_campaign_still_show_the_audience_and_its_cost(
    pending, approver_user, officer_user
):
    for user, name in ((officer_user, "campaigns:detail"), (approver_user, "campaigns:review")):
        body = client_for(user).get(reverse(name, args=[pending.pk])).content.decode()
        assert "data-cost-total" in body
        assert "data-broadcast-operators" not in body


# --- jurisdiction ------------------------------------------------------------------------------


@pytest.fixture
def blora():
    from tests.smsblast.factories import AreaFactory

    AreaFactory(code="33", name="Jawa Tengah")
    return AreaFactory(code="33.16", name="Kabupaten Blora")


def test_the_compose_page_starts_from_the_officers_jurisdiction(areas):
    limited = UserFactory(role=Role.OFFICER, jurisdiction_id="35.05")
    body = client_for(limited).get(reverse("campaigns:create")).content.decode()
    assert 'name="area_codes" value="35.05" checked' in body
    body = client_for(UserFactory(role=Role.OFFICER)).get(reverse("campaigns:create")).content.decode()
    assert 'name="area_codes" value=' not in body


def test_compose_outside_the_jurisdiction_names_the_area_and_creates_nothing(areas, blora):
    limited = UserFactory(role=Role.OFFICER, jurisdiction_id="35.05")
    response = client_for(limited).post(reverse("campaigns:create"), compose_data(area_codes=["35.05", "33.16"]))
    assert response.status_code == 200
    assert "Di luar wilayah kerja Anda (35.05 Kabupaten Blitar): 33.16 Kabupaten Blora" in response.content.decode()
    assert not Campaign.objects.exists()


def test_the_approval_inbox_holds_only_campaigns_of_the_approvers_jurisdiction(pending, blora):
    blitar_inbox = client_for(UserFactory(role=Role.APPROVER, jurisdiction_id="35.05")).get(reverse("dashboard"))
    blora_inbox = client_for(UserFactory(role=Role.APPROVER, jurisdiction_id="33.16")).get(reverse("dashboard"))
    assert list(blitar_inbox.context["inbox"]) == [pending]
    assert list(blora_inbox.context["inbox"]) == []
    assert blora_inbox.context["inbox_count"] == 0


def test_a_campaign_page_counts_the_progress_of_its_runs_with_the_same_queries_however_many_it_lists(officer_user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    operator = OperatorFactory()
    client = client_for(officer_user)
    queries = []
    for count in (1, 8):
        campaign = CampaignFactory(author=officer_user, status=Campaign.Status.SENDING)
        for day in range(count):
            run = CampaignRunFactory(campaign=campaign, scheduled_for=timezone.now() - timedelta(days=day))
            DeliveryFactory(run=run, operator=operator, status=Delivery.Status.DELIVERED)
        with CaptureQueriesContext(connection) as captured:
            response = client.get(reverse("campaigns:detail", args=[campaign.pk]))
        assert response.status_code == 200
        queries.append(len(captured))
    assert response.content.decode().count('aria-valuenow="100"') == 8
    assert queries[1] == queries[0]


def test_a_recurring_campaigns_page_shows_its_latest_history_and_counts_the_rest(officer_user):
    from campaigns.views import HISTORY_SHOWN
    from smsblast.audit import audit_record

    campaign = CampaignFactory(author=officer_user, status=Campaign.Status.SCHEDULED)
    runs = [
        CampaignRunFactory(campaign=campaign, scheduled_for=timezone.now() - timedelta(days=day), status="completed")
        for day in range(HISTORY_SHOWN)
    ]
    for run in runs[::-1]:
        audit_record(actor=None, action="run.start", obj=run, to_state="fanning_out")
        audit_record(actor=None, action="run.complete", obj=run, from_state="sending", to_state="completed")
    audit_record(actor=officer_user, action="campaign.pause", obj=campaign, from_state="sending", to_state="paused")
    body = client_for(officer_user, "en").get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    history = body[body.index('<ol class="timeline">') :]
    assert history.count("<li>") == HISTORY_SHOWN
    assert "(campaign.pause)" in history  # the latest event is shown, last
    assert f"The latest {HISTORY_SHOWN} of {2 * HISTORY_SHOWN + 1} events are shown." in body


def test_the_campaign_list_reaches_every_campaign_page_by_page_keeping_its_filter(officer_user, monkeypatch):
    from campaigns import views

    monkeypatch.setattr(views, "CAMPAIGNS_PER_PAGE", 2)
    titles = [CampaignFactory(author=officer_user, title=f"Vaksinasi {n}").title for n in range(5)]
    CampaignFactory(author=officer_user, title="Banjir", status=Campaign.Status.CANCELLED)
    client = client_for(officer_user, "en")
    url, seen = reverse("campaigns:list") + "?status=draft", []
    while url:
        body = client.get(url).content.decode()
        seen += re.findall(r">(Vaksinasi \d)</a>", body)
        older = re.search(r'href="([^"]+)" rel="next"', body)
        url = reverse("campaigns:list") + older.group(1).replace("&amp;", "&") if older else None
    assert sorted(seen) == sorted(titles)
    assert "Page 3 of 3 (5 campaigns)" in body
    assert "Banjir" not in body
    # A page number out of range or not a number shows the nearest page, never an error.
    assert "Vaksinasi 0" in client.get(reverse("campaigns:list"), {"status": "draft", "page": "99"}).content.decode()
    assert client.get(reverse("campaigns:list"), {"page": "x"}).status_code == 200


# --- copy ---------------------------------------------------------------------------------


def test_an_officer_copies_a_finished_campaign_into_a_new_draft_and_edits_it(officer_user, approver_user, areas):
    source = CampaignFactory(
        author=officer_user, status=Campaign.Status.COMPLETED, schedule={"kind": "once", "at": "2021-07-01T13:00"}
    )
    officer = client_for(officer_user)
    page = officer.get(reverse("campaigns:detail", args=[source.pk])).content.decode()
    assert reverse("campaigns:copy", args=[source.pk]) in page
    assert (
        reverse("campaigns:copy", args=[source.pk])
        not in client_for(approver_user).get(reverse("campaigns:detail", args=[source.pk])).content.decode()
    )

    response = officer.post(reverse("campaigns:copy", args=[source.pk]), follow=True)

    copy = Campaign.objects.exclude(pk=source.pk).get()
    assert response.redirect_chain == [(reverse("campaigns:edit", args=[copy.pk]), 302)]
    assert (copy.status, copy.text, copy.schedule) == (Campaign.Status.DRAFT, source.text, {})
    page = response.content.decode()
    assert "Disalin ke draf baru" in page
    assert "Waktu yang disalin sudah lewat" in page
    assert source.text in page


def test_copying_needs_a_post_by_an_officer_or_admin_who_sees_the_campaign(officer_user, approver_user, areas):
    source = CampaignFactory(author=officer_user, area_codes=["35.05"])
    url = reverse("campaigns:copy", args=[source.pk])
    AreaFactory(code="35.07", name="Kabupaten Malang")
    elsewhere = UserFactory(username="ofc-malang", role=Role.OFFICER, jurisdiction_id="35.07")

    assert client_for(officer_user).get(url).status_code == 405
    assert client_for(approver_user).post(url).status_code == 403
    assert client_for(elsewhere).post(url).status_code == 404
    assert Client().post(url).status_code == 302  # to the log-in page
    assert Campaign.objects.count() == 1


def test_editing_a_daily_campaign_whose_run_waits_for_reports_says_the_approval_was_voided(officer_user, areas):
    campaign = CampaignFactory(
        author=officer_user,
        area_codes=["35.05"],
        status=Campaign.Status.SENDING,
        schedule={"kind": "daily", "time": "13:00"},
    )
    run = CampaignRunFactory(campaign=campaign, status=CampaignRun.Status.SENDING, fanout_done=True)
    DispatchBatchFactory(run=run, status=DispatchBatch.Status.ACCEPTED)

    response = client_for(officer_user, "en").post(
        reverse("campaigns:edit", args=[campaign.pk]),
        compose_data(text="Teks baru.", schedule_kind="daily", schedule_time="13:00"),
        follow=True,
    )
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert "the approval was voided" in response.content.decode()


def operator_limited_broadcast(author, *, exercise: bool) -> Campaign:
    """Return a draft area broadcast of Kab. Blitar limited to telkomsel, an exercise or not."""
    OperatorFactory(slug="telkomsel")
    return CampaignFactory(
        author=author, mode="area_broadcast", area_codes=["35.05"], operator_slugs=["telkomsel"], exercise=exercise
    )


def test_an_area_broadcast_limited_to_operators_turned_targeted_on_the_edit_page_can_be_submitted(officer_user, areas):
    broadcast = operator_limited_broadcast(officer_user, exercise=True)
    response = client_for(officer_user).post(reverse("campaigns:edit", args=[broadcast.pk]), compose_data())
    assert response.status_code == 302
    broadcast.refresh_from_db()
    assert (broadcast.mode, broadcast.operator_slugs, broadcast.exercise) == ("targeted", [], False)
    campaign_submit(campaign=broadcast, actor=officer_user)
    assert broadcast.status == Campaign.Status.PENDING_APPROVAL


def test_an_exercise_made_targeted_on_the_edit_page_tells_the_officer_it_is_no_longer_an_exercise(officer_user, areas):
    broadcast = operator_limited_broadcast(officer_user, exercise=True)
    edit = reverse("campaigns:edit", args=[broadcast.pk])
    page = client_for(officer_user).post(edit, compose_data(), follow=True).content.decode()
    assert "bukan latihan lagi" in page
    assert "semua operator" in page.split("bukan latihan lagi", 1)[1].split("</li>", 1)[0]


def test_changing_the_mode_of_a_campaign_that_has_runs_on_the_edit_page_says_to_copy_it(officer_user, areas):
    broadcast = CampaignFactory(author=officer_user, mode="area_broadcast", area_codes=["35.05"])
    CampaignRunFactory(campaign=broadcast, status=CampaignRun.Status.COMPLETED)
    edit = reverse("campaigns:edit", args=[broadcast.pk])

    response = client_for(officer_user).post(edit, compose_data())
    assert response.status_code == 409
    assert "Salin ke draf baru" in response.content.decode()
    english = client_for(officer_user, "en").post(edit, compose_data()).content.decode()
    assert "its mode cannot change" in english and "Copy into a new draft" in english
    broadcast.refresh_from_db()
    assert broadcast.mode == "area_broadcast"


def test_a_broadcast_limited_to_operators_made_targeted_on_the_edit_page_says_it_reaches_every_operator(
    officer_user, areas
):
    broadcast = operator_limited_broadcast(officer_user, exercise=False)
    edit = reverse("campaigns:edit", args=[broadcast.pk])
    page = client_for(officer_user).post(edit, compose_data(), follow=True).content.decode()
    assert "tidak lagi terbatas" in page
    assert "semua operator" in page.split("tidak lagi terbatas", 1)[1].split("</li>", 1)[0]
    again = client_for(officer_user).post(edit, compose_data(text="Teks baru."), follow=True).content.decode()
    assert "tidak lagi terbatas" not in again


def test_review_and_campaign_pages_mark_every_character_not_seen_as_it_is_sent(areas, officer_user, approver_user):
    """A reordering override, a zero-width space, a Cyrillic look-alike and a trailing blank each show their code
    point where they stand and are listed with why; the override no longer reorders the page's own text."""
    text = "Transfer Rp 1\u202e0001 ke blit\u0430rkab.go.id\u200b "
    campaign = CampaignFactory(
        author=officer_user, area_codes=["35.05"], text=text, status=Campaign.Status.PENDING_APPROVAL
    )
    for user, page in ((approver_user, "campaigns:review"), (officer_user, "campaigns:detail")):
        body = client_for(user).get(reverse(page, args=[campaign.pk])).content.decode()
        bubble = re.search(r'<div class="bubble">(.*?)</div>', body, re.S).group(1)
        assert "\u202e" not in bubble and "\u200b" not in bubble
        for code, name in (
            ("U+202E", "RIGHT-TO-LEFT OVERRIDE"),
            ("U+0430", "CYRILLIC SMALL LETTER A"),
            ("U+200B", "ZERO WIDTH SPACE"),
            ("U+0020", "SPACE"),
        ):
            assert f'[{code}]<span class="visually-hidden"> {name}</span></mark>' in bubble
        listed = re.search(r"<div class=\"msg warning\" data-hidden-chars role=\"status\">(.*?)</div>", body, re.S)
        assert "<code>U+202E</code> RIGHT-TO-LEFT OVERRIDE, karakter 14" in listed.group(1)
        assert "<code>U+0430</code> CYRILLIC SMALL LETTER A, karakter 27" in listed.group(1)


def test_pages_of_a_plain_text_mark_nothing(pending, officer_user, approver_user):
    for user, page in ((approver_user, "campaigns:review"), (officer_user, "campaigns:detail")):
        body = client_for(user).get(reverse(page, args=[pending.pk])).content.decode()
        assert "hidden-char" not in body and "data-hidden-chars" not in body
        assert pending.text in body


def _submitted_review(campaign, officer, approver) -> str:
    """Submit the campaign and return its review page as the approver reads it."""
    campaign_submit(campaign=campaign, actor=officer)
    return client_for(approver).get(reverse("campaigns:review", args=[campaign.pk])).content.decode()


def _also_approved(body: str) -> str:
    """Return the review page's list of the fields the approval binds besides the text."""
    return re.search(r"<dl class=\"facts\" data-also-approved>(.*?)</dl>", body, re.S).group(1)


def test_review_page_shows_the_validity_and_the_alert_fields_the_approval_binds(areas, officer_user, approver_user):
    """How long operators try to deliver, and the instruction and fields heading the CAP alert, are hashed."""
    campaign = CampaignFactory(
        author=officer_user,
        area_codes=["35.05"],
        validity_minutes=90,
        instruction="Segera menuju titik evakuasi terdekat.",
        cap_event="Banjir",
        cap_severity="Severe",
    )
    facts = _also_approved(_submitted_review(campaign, officer_user, approver_user))
    assert "<dt>Berlaku selama</dt><dd>1 jam 30 menit</dd>" in facts
    assert "<dd>Segera menuju titik evakuasi terdekat.</dd>" in facts
    assert "<dd>Banjir</dd>" in facts and "<dd>Parah (Severe)</dd>" in facts and "<dd>Kesehatan (Health)</dd>" in facts


def test_review_page_marks_hidden_characters_in_the_title_and_the_alert_fields_the_approval_binds(
    areas, officer_user, approver_user
):
    """The heading's title and the instruction and event heading the CAP alert are approved as the text is."""
    campaign = CampaignFactory(
        author=officer_user,
        area_codes=["35.05"],
        title="Vaksin\u200b gratis",
        instruction="Hubungi 0812\u200b3456 atau blit\u0430rkab.go.id",
        cap_event="Banjir\u2060",
    )
    body = _submitted_review(campaign, officer_user, approver_user)
    heading = re.search(r"<h1>(.*?)</h1>", body, re.S).group(1)
    assert '[U+200B]<span class="visually-hidden"> ZERO WIDTH SPACE</span></mark>' in heading
    assert "\u200b" not in heading
    facts = _also_approved(body)
    for code in ("U+200B", "U+0430", "U+2060"):
        assert f'data-hidden-char="{code}"' in facts
    assert "\u200b" not in facts and "\u2060" not in facts


def test_review_page_gives_a_domain_in_letters_outside_ascii_the_form_handsets_open(areas, officer_user, approver_user):
    """An all-Cyrillic "асе.com" has no Latin letter beside it to look alike with, yet is not ace.com."""
    campaign = CampaignFactory(author=officer_user, area_codes=["35.05"], text="Daftar di \u0430\u0441\u0435.com")
    campaign_submit(campaign=campaign, actor=officer_user)
    body = client_for(approver_user).get(reverse("campaigns:review", args=[campaign.pk])).content.decode()
    hosts = re.search(r'<div class="msg warning" data-link-hosts role="status">(.*?)</div>', body, re.S).group(1)
    assert "\u0430\u0441\u0435.com dibuka sebagai xn--80ak9a.com" in hosts


def test_the_diff_since_the_rejection_marks_a_change_made_only_with_a_zero_width_character(
    pending, approver_user, officer_user
):
    campaign_reject(campaign=pending, approver=approver_user, reason="Periksa lagi.")
    campaign_update(campaign=pending, actor=officer_user, data={"text": pending.text.replace(" ", " \u200b", 1)})
    campaign_submit(campaign=pending, actor=officer_user)
    body = client_for(approver_user).get(reverse("campaigns:review", args=[pending.pk])).content.decode()
    added = re.search(r'<span class="add">\+Isi pesan: (.*?)</span>\n?<', body, re.S)
    assert added and 'data-hidden-char="U+200B"' in added.group(1)


# --- importing a CAP alert from a page -------------------------------------------------------


def _cap_page_officer(**fields):
    from tests.operators.area_scripted import blitar_areas as cap_areas

    cap_areas()
    OperatorFactory(slug="telkomsel")
    return UserFactory(role=Role.OFFICER, **fields)


def _alert(description: str = "Mulai 3 Juli 2021.") -> str:
    from tests.campaigns.test_cap import GEOCODES

    return GEOCODES.format(description=description)


def test_an_officer_uploads_a_cap_file_and_lands_on_the_draft_with_what_the_import_noted():
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = client_for(_cap_page_officer())
    upload = SimpleUploadedFile("peringatan.xml", _alert().encode(), content_type="application/xml")
    response = client.post(reverse("campaigns:cap_import"), {"file": upload}, follow=True)
    assert response.status_code == 200
    campaign = Campaign.objects.get()
    assert response.redirect_chain == [(reverse("campaigns:detail", args=[campaign.pk]), 302)]
    assert (campaign.mode, campaign.status, campaign.title) == (
        "area_broadcast",
        Campaign.Status.DRAFT,
        "PPKM Darurat berlaku",
    )
    page = response.content.decode()
    assert "Diimpor sebagai draf siaran wilayah" in page
    assert "Dari peringatan: Wilayah diambil dari &lt;geocode&gt; peringatan." in page


def test_an_officer_pastes_the_xml_of_an_alert_and_then_of_its_cancel():
    from tests.campaigns.test_cap import CANCEL

    client = client_for(_cap_page_officer())
    created = client.post(reverse("campaigns:cap_import"), {"document": _alert()})
    campaign = Campaign.objects.get()
    assert created.status_code == 302 and created["Location"] == reverse("campaigns:detail", args=[campaign.pk])
    cancelled = client.post(reverse("campaigns:cap_import"), {"document": CANCEL}, follow=True)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.CANCELLED
    assert "Pembatalan dari penerbit membatalkan kampanye ini." in cancelled.content.decode()


@pytest.mark.parametrize(
    "pasted",
    [
        _alert().replace('encoding="UTF-8"', 'encoding="ISO-8859-1"'),
        _alert().replace('encoding="UTF-8"', 'encoding="windows-1252"'),
        _alert().replace('encoding="UTF-8"', "encoding='UTF-16'"),
        "\r\n\r\n" + _alert(),  # a blank line copied above the declaration
    ],
    ids=["latin-1", "windows-1252", "utf-16", "blank-line-first"],
)
def test_pasted_xml_is_imported_as_it_reads_on_the_page_whatever_encoding_its_declaration_names(pasted):
    client = client_for(_cap_page_officer())
    pasted = pasted.replace("PPKM Darurat berlaku", "Suhu udara capai 38°C, kurangi aktivitas di luar")
    response = client.post(reverse("campaigns:cap_import"), {"document": pasted})
    assert response.status_code == 302, response.content.decode()
    assert Campaign.objects.get().title == "Suhu udara capai 38°C, kurangi aktivitas di luar"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "Pilih berkas CAP atau tempelkan XML-nya."),
        ({"document": "   "}, "Pilih berkas CAP atau tempelkan XML-nya."),
        ({"document": "<alert>", "with_file": True}, "Berikan berkas atau XML yang ditempelkan, jangan keduanya."),
        ({"document": "x" * (1024 * 1024 + 1)}, "Peringatan ini lebih besar dari 1 MB"),
        (
            {"document": "<alert>not closed"},
            "Peringatan tidak diimpor: Dokumen ini bukan XML yang tersusun dengan benar",
        ),
    ],
    ids=["nothing", "blank", "both", "too-large", "not-xml"],
)
def test_a_cap_import_page_refuses_what_it_cannot_import_with_a_message_and_creates_nothing(data, message):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = client_for(_cap_page_officer())
    if data.pop("with_file", False):
        data["file"] = SimpleUploadedFile("a.xml", _alert().encode())
    response = client.post(reverse("campaigns:cap_import"), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Campaign.objects.exists()
    assert not AuditEvent.objects.filter(action="campaign.cap_import").exists()


def test_the_cap_import_page_says_in_the_users_language_why_an_alert_outside_the_jurisdiction_or_again_is_refused():
    AreaFactory(code="35.04", name="Kabupaten Tulungagung")
    tulungagung = client_for(_cap_page_officer(jurisdiction_id="35.04"))
    outside = tulungagung.post(reverse("campaigns:cap_import"), {"document": _alert()})
    assert outside.status_code == 400
    assert (
        "Wilayah peringatan ini berada di luar yurisdiksi Anda (35.04 Kabupaten Tulungagung): 35.05 Kabupaten Blitar"
        in outside.content.decode()
    )
    officer = client_for(UserFactory(role=Role.OFFICER))
    assert officer.post(reverse("campaigns:cap_import"), {"document": _alert()}).status_code == 302
    again = officer.post(reverse("campaigns:cap_import"), {"document": _alert()})
    assert again.status_code == 400
    assert "Tidak ada yang diimpor: Peringatan CAP ini sudah diimpor sebagai kampanye" in again.content.decode()
    assert Campaign.objects.count() == 1


@pytest.mark.parametrize(
    ("document", "indonesian", "english"),
    [
        (
            "<rss><channel/></rss>",
            "Peringatan tidak diimpor: Ini bukan peringatan CAP: elemen akarnya &#x27;rss&#x27;",
            "The alert was not imported: Not a CAP alert: the root element is &#x27;rss&#x27;",
        ),
        (
            _alert().replace("<value>3505</value>", "<value>9999</value>").replace("35.05.01", "99.01.01"),
            "Peringatan tidak diimpor: Peringatan CAP ini tidak memiliki wilayah yang dapat dipakai",
            "The alert was not imported: The CAP alert has no usable area",
        ),
        (
            _alert()
            .replace("<value>3505</value>", "<value>9999</value>")
            .replace("35.05.01", "99.01.01")
            .replace("<geocode>", "<polygon>-100,100 -100,101 -101,101 -101,100 -100,100</polygon><geocode>", 1),
            "Sebuah &lt;polygon&gt; dari Kab. Blitar dan Kec. 1 dilewati: Sebuah titik &lt;polygon&gt; CAP berada di "
            "luar rentang lintang/bujur.",
            "Skipped a polygon of Kab. Blitar dan Kec. 1: A CAP polygon point lies outside latitude/longitude range.",
        ),
        (
            _alert().replace("<urgency>", "<expires>2021-07-01T18:00:00+07:00</expires><urgency>"),
            "Peringatan tidak diimpor: Peringatan CAP ini sudah kedaluwarsa pada 2021-07-01T18:00:00+07:00",
            "The alert was not imported: The CAP alert expired at 2021-07-01T18:00:00+07:00",
        ),
        (
            _alert().replace("<scope>Public</scope>", ""),
            "Peringatan CAP ini tidak menyebut &lt;scope&gt;; hanya peringatan Public yang boleh disiarkan.",
            "The CAP alert names no scope; only Public alerts may be broadcast.",
        ),
    ],
    ids=["not-cap", "no-usable-area", "polygon-out-of-range", "expired", "no-scope"],
)
def test_the_cap_import_page_says_why_an_alert_is_refused_in_the_pages_language(document, indonesian, english):
    officer = _cap_page_officer()
    in_indonesian = client_for(officer).post(reverse("campaigns:cap_import"), {"document": document})
    in_english = client_for(officer, language="en").post(reverse("campaigns:cap_import"), {"document": document})
    assert in_indonesian.status_code == in_english.status_code == 400
    assert indonesian in in_indonesian.content.decode()
    assert english in in_english.content.decode()
    assert not Campaign.objects.exists()


def test_what_the_import_noted_shows_in_the_pages_language():
    officer = _cap_page_officer()
    indonesian = client_for(officer).post(reverse("campaigns:cap_import"), {"document": _alert()}, follow=True)
    Campaign.objects.all().delete()
    english = client_for(officer, language="en").post(
        reverse("campaigns:cap_import"), {"document": _alert()}, follow=True
    )
    assert "Dari peringatan: Wilayah diambil dari &lt;geocode&gt; peringatan." in indonesian.content.decode()
    assert "From the alert: Area from the alert&#x27;s geocodes." in english.content.decode()


def test_only_officers_and_admins_reach_the_cap_import_page_and_it_is_in_their_menu():
    officer = client_for(_cap_page_officer())
    assert reverse("campaigns:cap_import") in officer.get(reverse("dashboard")).content.decode()
    assert officer.get(reverse("campaigns:cap_import")).status_code == 200
    approver = client_for(UserFactory(role=Role.APPROVER))
    assert reverse("campaigns:cap_import") not in approver.get(reverse("dashboard")).content.decode()
    assert approver.post(reverse("campaigns:cap_import"), {"document": _alert()}).status_code == 403
    assert Client().get(reverse("campaigns:cap_import")).status_code == 302
    assert not Campaign.objects.exists()


def test_dashboard_warns_that_nothing_is_sent_while_redis_cannot_be_reached(settings, redis_url, redis_client):
    from smsblast.devtools import free_port

    admin = UserFactory(username="adm", role=Role.ADMIN)
    settings.REDIS_URL = redis_url
    redis_client.set("smsblast:health:reconciled", "1", ex=60)  # as after the reconciler's last pass
    redis_client.set("smsblast:health:dispatch_worker", "1", ex=60)  # and with a worker running
    body = client_for(admin, language="en").get(reverse("dashboard")).content.decode()
    assert "data-health" not in body

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    for language, words in (("en", "Redis cannot be reached"), ("id", "Redis tidak dapat dihubungi")):
        body = client_for(admin, language=language).get(reverse("dashboard")).content.decode()
        assert re.search(rf'data-health="redis"[^>]*>[^<]*{words}', body)


def test_dashboard_warns_that_due_runs_do_not_start_while_the_scheduler_is_not_running(
    settings, redis_url, redis_client, officer_user
):
    settings.REDIS_URL = redis_url
    redis_client.delete("smsblast:health:reconciled")  # no pass of the reconciler for a minute: beat or control down
    body = client_for(officer_user, language="en").get(reverse("dashboard")).content.decode()
    assert re.search(r'data-health="scheduler"[^>]*>[^<]*scheduled runs do not start', body)
    assert 'data-health="redis"' not in body


def test_dashboard_warns_that_no_batch_leaves_while_no_worker_runs(settings, redis_url, redis_client, officer_user):
    from smsblast.health import health_mark_dispatch_worker, health_mark_reconciled

    settings.REDIS_URL = redis_url
    health_mark_reconciled()  # beat and the control process are up; no sending worker marked itself
    body = client_for(officer_user, language="en").get(reverse("dashboard")).content.decode()
    assert re.search(r'data-health="workers"[^>]*>[^<]*No worker is running', body)
    assert 'data-health="scheduler"' not in body

    health_mark_dispatch_worker()  # as a running worker does every few seconds
    body = client_for(officer_user, language="id").get(reverse("dashboard")).content.decode()
    assert "data-health" not in body


def test_an_officer_watching_the_dashboard_sees_an_outage_warning_appear_and_go_without_reloading(
    settings, redis_url, redis_client, officer_user, areas
):
    from smsblast.devtools import free_port

    def health_block(html):
        return html[html.index('id="health"') : html.index('id="running"')]

    CampaignRunFactory(campaign=CampaignFactory(author=officer_user, status=Campaign.Status.SENDING))
    settings.REDIS_URL = redis_url
    redis_client.set("smsblast:health:reconciled", "1", ex=60)
    redis_client.set("smsblast:health:dispatch_worker", "1", ex=60)
    client = client_for(officer_user, language="en")
    body = client.get(reverse("dashboard")).content.decode()
    assert "data-health" not in body
    # Each poll brings the warnings along with the running campaigns.
    assert re.search(r'id="running"[^>]*hx-select-oob="[^"]*#health', body)

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # Redis goes down while the page is open
    poll = client.get(reverse("dashboard"), HTTP_HX_REQUEST="true").content.decode()
    # The warning is news, said in the page's live region (its text, as the block's data-news is empty).
    assert re.search(r'<div id="health" data-news>\s*<p class="msg error" data-health="redis"', poll)
    assert "Redis cannot be reached" in health_block(poll)

    settings.REDIS_URL = redis_url  # back
    poll = client.get(reverse("dashboard"), HTTP_HX_REQUEST="true").content.decode()
    assert "data-health" not in poll
    assert "Sending works again" in re.search(r'<div id="health" data-news="([^"]*)"', poll).group(1)


def test_a_dashboard_showing_an_outage_warning_polls_until_it_is_over_though_nothing_sends(
    settings, redis_url, redis_client, officer_user
):
    from smsblast.health import health_mark_reconciled

    settings.REDIS_URL = redis_url
    health_mark_reconciled()  # no sending worker marked itself
    body = client_for(officer_user, language="en").get(reverse("dashboard")).content.decode()
    assert 'data-health="workers"' in body
    assert re.search(r'id="running" hx-get="[^"]+" hx-select="#running" hx-trigger="every 5s"', body)


def test_the_campaign_page_shows_its_schedule_so_the_officer_can_check_it_before_submitting(areas, officer_user):
    campaign = CampaignFactory(
        author=officer_user,
        area_codes=["35.05"],
        schedule={
            "kind": "daily",
            "time": "13:00",
            "weekday_times": {"4": "10:00"},
            "until": "2030-12-31",
            "quiet_hours": {"start": "21:00", "end": "06:00"},
        },
    )
    body = client_for(officer_user).get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "<dt>Jadwal</dt>" in body
    for line in ("Setiap hari pukul 13:00 WIB.", "pukul 10:00 sebagai gantinya.", "Sampai 31 Des 2030.", "21:00–06:00"):
        assert line in body


def test_compose_names_every_missing_part_of_the_schedule_at_once_not_one_per_save(officer_user, areas):
    data = compose_data(schedule_kind="weekly", schedule_until="2020-01-01", quiet_start="21:00")
    body = client_for(officer_user).post(reverse("campaigns:create"), data).content.decode()
    assert "Isi jam pengiriman" in body
    assert "Tanggal ini sudah lewat di WIB" in body
    assert "Pilih setidaknya satu hari." in body
    assert "Isi awal dan akhir jam tenang" in body
    assert not Campaign.objects.exists()


def test_review_page_names_the_alert_fields_in_the_approvers_language_beside_their_cap_value(
    areas, officer_user, approver_user
):
    campaign = CampaignFactory(
        author=officer_user,
        area_codes=["35.05"],
        cap_category="Met",
        cap_urgency="Immediate",
        cap_severity="Extreme",
        cap_certainty="Observed",
    )
    facts = _also_approved(_submitted_review(campaign, officer_user, approver_user))
    for shown in ("Meteorologi (Met)", "Segera (Immediate)", "Ekstrem (Extreme)", "Teramati (Observed)"):
        assert f"<dd>{shown}</dd>" in facts
    client = client_for(approver_user)
    client.post(reverse("set_language"), {"language": "en"})
    english = _also_approved(client.get(reverse("campaigns:review", args=[campaign.pk])).content.decode())
    assert "<dd>Meteorological (Met)</dd>" in english and "<dd>Immediate</dd>" in english


@pytest.mark.parametrize(
    ("language", "shown"),
    [("en", "3 SMS parts sent · Rp 600 in all"), ("id", "3 bagian SMS terkirim · Rp 600 seluruhnya")],
)
def test_a_finished_runs_cost_is_its_total_not_a_figure_so_far(officer_user, areas, language, shown):
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel", tariff_per_segment=200)
    campaign = CampaignFactory(author=officer_user, status=Campaign.Status.COMPLETED)
    run = CampaignRunFactory(
        campaign=campaign,
        segments=3,
        status=CampaignRun.Status.COMPLETED,
        frozen={"tariffs": {str(operator.pk): 200}},
    )
    batch = DispatchBatchFactory(
        run=run, operator=operator, size=1, status=DispatchBatch.Status.ACCEPTED, accepted_count=1
    )
    DeliveryFactory(run=run, operator=operator, batch=batch, status=Delivery.Status.DELIVERED)
    url = reverse("campaigns:run_progress", args=[run.campaign_id, run.pk])
    body = client_for(officer_user, language).get(url).content.decode()
    assert shown in body
    assert "so far" not in body and "sejauh ini" not in body


def test_one_sms_part_sent_is_said_in_the_singular(officer_user, areas):
    operator = OperatorFactory(name="Telkomsel", slug="telkomsel", tariff_per_segment=200)
    campaign = CampaignFactory(author=officer_user, status=Campaign.Status.SENDING)
    run = CampaignRunFactory(campaign=campaign, segments=1, frozen={"tariffs": {str(operator.pk): 200}})
    batch = DispatchBatchFactory(
        run=run, operator=operator, size=2, status=DispatchBatch.Status.ACCEPTED, accepted_count=1
    )
    DeliveryFactory(run=run, operator=operator, batch=batch, status=Delivery.Status.DELIVERED)
    DeliveryFactory(run=run, operator=operator, batch=batch, status=Delivery.Status.QUEUED)
    url = reverse("campaigns:run_progress", args=[run.campaign_id, run.pk])
    assert "1 SMS part sent · Rp 200 so far" in client_for(officer_user, "en").get(url).content.decode()


def test_the_schedule_in_words_names_weekdays_in_full(areas, officer_user, approver_user):
    daily = CampaignFactory(
        author=officer_user,
        area_codes=["35.05"],
        schedule={"kind": "daily", "time": "13:00", "weekday_times": {"4": "10:00"}},
    )
    weekly = CampaignFactory(
        author=officer_user, area_codes=["35.05"], schedule={"kind": "weekly", "time": "07:30", "weekdays": [0, 4]}
    )
    assert "Pada hari Jumat pukul 10:00 sebagai gantinya." in _submitted_review(daily, officer_user, approver_user)
    assert "Setiap Senin, Jumat pukul 07:30 WIB." in _submitted_review(weekly, officer_user, approver_user)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"area_codes": []}, "id_area_codes_error"),
        ({"schedule_kind": "weekly", "schedule_time": "13:00"}, "id_schedule_weekdays_error"),
        ({"schedule_kind": "bogus"}, "id_schedule_kind_error"),
    ],
)
def test_a_refused_area_or_schedule_choice_is_named_by_the_fields_that_make_it(areas, officer_user, overrides, error):
    body = client_for(officer_user).post(reverse("campaigns:create"), compose_data(**overrides)).content.decode()

    assert f'id="{error}"' in body
    assert errors_not_tied_to_a_field(body) == []
