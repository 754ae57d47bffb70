"""Pages in Chromium without the send pipeline: keyboard alone, a 360 px screen, htmx partials."""

import pytest
from playwright.sync_api import expect

from smsblast.models import Role, User
from tests.browser.conftest import LARGE_PHONE_VIEWPORT, PHONE_VIEWPORT, contrast, log_in
from tests.campaigns.factories import CampaignFactory
from tests.conftest import make_user
from tests.smsblast.factories import area_tree

pytestmark = pytest.mark.browser

TEXT = "Tetap “pakai masker” saat keluar rumah."

# The element keyboard focus is on: its outline, and the colour behind it (the nearest background drawn).
FOCUS_FACTS = """() => {
  const focused = document.activeElement;
  const style = getComputedStyle(focused);
  let behind = focused.parentElement;
  while (behind && /rgba\\(.*, 0\\)$/.test(getComputedStyle(behind).backgroundColor)) behind = behind.parentElement;
  return {
    element: focused.tagName + " " + (focused.id || focused.name || focused.textContent.trim().slice(0, 30)),
    style: style.outlineStyle, width: parseFloat(style.outlineWidth), colour: style.outlineColor,
    behind: behind ? getComputedStyle(behind).backgroundColor : "rgb(255, 255, 255)",
  };
}"""

# The live regions a screen reader follows, taken at load: one a refresh replaced is no longer followed.
LIVE_REGIONS_KEPT = """() => { window.liveRegions = Array.from(
  document.querySelectorAll("[aria-live]:not([aria-live=off]), [role=status], [role=alert], [role=log]")
); }"""
# Every text a live region comes to hold while the test goes on: what a screen reader would say unasked.
LIVE_REGIONS_RECORDED = """() => {
  window.spoken = [];
  const live = "[aria-live]:not([aria-live=off]), [role=status], [role=alert], [role=log]";
  new MutationObserver((records) => {
    for (const record of records) {
      const node = record.target.nodeType === Node.ELEMENT_NODE ? record.target : record.target.parentElement;
      const region = node && node.closest(live);
      if (region && !region.closest("[hidden]")) window.spoken.push(region.textContent.replace(/\\s+/g, " ").trim());
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def expect_said(page, words: str) -> None:
    """Check that a live region kept since load comes to say `words`, waiting for it: the page tells its live
    region once htmx has settled a refreshed block, a moment after the block itself shows."""
    page.wait_for_function(
        "(words) => window.liveRegions.some((region) => region.isConnected && region.textContent.includes(words))",
        arg=words,
        timeout=5_000,
    )


@pytest.fixture
def officer_page(transactional_db, live_server, new_page):
    area_tree("35.05", kecamatan=2)
    make_user("officer-kb", Role.OFFICER)

    def build(viewport=None):
        page = new_page(viewport=viewport)
        page.goto(f"{live_server.url}/login/")
        # Keyboard only: the username field takes focus by itself (autofocus); type, Tab, type, Enter.
        # Typing before that focus lands would type into the page, so wait for it first.
        expect(page.locator("#id_username")).to_be_focused()
        page.keyboard.type("officer-kb")
        page.keyboard.press("Tab")
        page.keyboard.type("pw-secret-123")
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text("Dasbor")
        return page

    return build


def test_compose_by_keyboard_alone_with_a_visible_focus(officer_page, live_server):
    page = officer_page()
    page.goto(f"{live_server.url}/campaigns/new/")
    page.focus("#id_text")
    page.keyboard.type(TEXT)
    expect(page.locator('[data-sms-out="encoding"]')).to_have_text("UCS-2")
    # From the text box, Tab reaches the two one-click replacements and then the suggestion button.
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused.startswith("Ganti dengan")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Enter")
    expect(page.locator('[data-sms-out="nongsm"] li')).to_have_count(1)
    page.focus("[data-sms-accept]")
    page.keyboard.press("Enter")
    expect(page.locator('[data-sms-out="encoding"]')).to_have_text("GSM-7")
    expect(page.locator("#id_text")).to_have_value('Tetap "pakai masker" saat keluar rumah.')
    # The area picker by keyboard: type a search, Tab into the results, Space ticks the area.
    page.focus("#id_area_q")
    page.keyboard.type("blitar")
    expect(page.locator('#area-results input[value="35.05"]')).to_be_visible()
    page.focus('#area-results input[value="35.05"]')
    page.keyboard.press("Space")
    expect(page.locator('[data-picked] input[value="35.05"]')).to_be_checked()


@pytest.mark.parametrize(
    "path", ["/", "/campaigns/", "/campaigns/new/", "/campaigns/import-cap/", "/campaigns/{pk}/", "/subscribers/"]
)
def test_pages_fit_a_360_px_screen_without_sideways_scrolling(officer_page, live_server, path):
    page = officer_page(viewport=PHONE_VIEWPORT)
    campaign = CampaignFactory(author=User.objects.get(username="officer-kb"), area_codes=["35.05"])
    page.goto(live_server.url + path.format(pk=campaign.pk))
    expect(page.locator("h1")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]


def test_an_area_ticked_into_the_chosen_list_offers_no_drilling_down(officer_page, live_server):
    page = officer_page(viewport=LARGE_PHONE_VIEWPORT)
    page.goto(f"{live_server.url}/campaigns/new/")
    page.fill("#id_area_q", "blitar")
    result = page.locator("#area-results li", has=page.locator('input[value="35.05"]'))
    expect(result.get_by_role("button", name="Tampilkan wilayah di bawah")).to_be_visible()
    result.locator("input").check()
    chosen = page.locator("[data-picked] li", has=page.locator('input[value="35.05"]'))
    expect(chosen.locator("input")).to_be_checked()
    # Chosen is chosen: the areas below it are searched for in the results, not from the chosen list.
    expect(chosen.get_by_role("button")).to_have_count(0)
    assert page.evaluate("document.documentElement.scrollWidth") <= LARGE_PHONE_VIEWPORT["width"]


def test_a_second_click_on_save_while_the_first_is_on_its_way_creates_one_draft(officer_page, live_server):
    from campaigns.models import Campaign

    page = officer_page()
    page.goto(f"{live_server.url}/campaigns/new/")
    page.fill("#id_title", "Sekali saja")
    page.fill("#id_text", "Vaksinasi gratis di Puskesmas.")
    page.fill("#id_sender", "BLITARKAB")
    page.fill("#id_area_q", "blitar")
    page.check('#area-results input[value="35.05"]')
    # An impatient officer clicks Save again before the first answer arrives.
    page.evaluate(
        """() => { const save = document.querySelector('#campaign-form .actions button[type=submit]');
                   save.click(); setTimeout(() => save.click(), 20); }"""
    )
    expect(page.locator(".messages")).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert Campaign.objects.filter(title="Sekali saja").count() == 1


@pytest.mark.parametrize("path", ["/", "/campaigns/{pk}/"])
def test_a_title_with_a_long_hashtag_wraps_on_a_360_px_screen(officer_page, live_server, path):
    page = officer_page(viewport=PHONE_VIEWPORT)
    campaign = CampaignFactory(
        author=User.objects.get(username="officer-kb"),
        area_codes=["35.05"],
        title="Jadwal #VaksinasiGotongRoyongKabupatenBlitarTahapKetiga",
    )
    page.goto(live_server.url + path.format(pk=campaign.pk))
    expect(page.get_by_text("#VaksinasiGotongRoyong").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]


@pytest.mark.parametrize("path", ["/", "/campaigns/"])
def test_a_long_title_leaves_the_state_of_every_campaign_in_view_on_a_desktop_screen(officer_page, live_server, path):
    page = officer_page()
    author = User.objects.get(username="officer-kb")
    CampaignFactory(
        author=author, area_codes=["35.05"], title="Jadwal #VaksinasiGotongRoyongKabupatenBlitarTahapKetiga"
    )
    CampaignFactory(author=author, area_codes=["35.05"], title="Posko banjir")
    page.goto(live_server.url + path)
    table = page.locator(".table-wrap").first
    expect(table.get_by_text("#VaksinasiGotongRoyong")).to_be_visible()
    # No column is pushed out of the card, to be reached only by scrolling the table sideways.
    assert table.evaluate("wrap => wrap.scrollWidth <= wrap.clientWidth")


def test_the_approver_sees_each_line_of_the_diff_since_the_rejection_on_its_own_line(
    officer_page, live_server, new_page
):
    from campaigns.services import campaign_reject, campaign_submit, campaign_update

    officer = User.objects.get(username="officer-kb")
    approver = make_user("approver-kb", Role.APPROVER)
    campaign = CampaignFactory(author=officer, area_codes=["35.05"], text="Baris satu.\nBaris dua.\nBaris tiga.")
    campaign_submit(campaign=campaign, actor=officer)
    campaign_reject(campaign=campaign, approver=approver, reason="Ubah baris dua.")
    campaign_update(campaign=campaign, actor=officer, data={"text": "Baris satu.\nBaris dua diubah.\nBaris tiga."})
    campaign_submit(campaign=campaign, actor=officer)

    page = new_page()
    log_in(page, live_server.url, "approver-kb")
    page.goto(f"{live_server.url}/campaigns/{campaign.pk}/review/")
    lines = page.locator("[data-diff] span")
    expect(lines.filter(has_text="+Isi pesan: Baris dua diubah.")).to_be_visible()
    expect(lines.filter(has_text="-Isi pesan: Baris dua.")).to_be_visible()
    tops = [box["y"] for box in (lines.nth(i).bounding_box() for i in range(lines.count()))]
    # Unchanged context lines too: none may run on after the line before it.
    assert len(set(tops)) == len(tops) == lines.count()


def test_the_suggestion_does_not_promise_gsm7_when_a_character_without_replacement_stays(officer_page, live_server):
    page = officer_page()
    page.goto(f"{live_server.url}/campaigns/new/")
    page.fill("#id_text", "Vaksin “gratis” di Puskesmas \U0001f637")
    box = page.locator('[data-sms-out="suggestion-box"]')
    expect(box).to_be_visible()
    expect(box).not_to_contain_text("tetap GSM-7", use_inner_text=True)
    expect(box).to_contain_text("tetap UCS-2", use_inner_text=True)

    page.fill("#id_text", "Vaksin “gratis” di Puskesmas")
    expect(box).to_contain_text("tetap GSM-7", use_inner_text=True)


def test_the_compose_page_warns_as_a_sender_longer_than_handsets_show_is_typed(officer_page, live_server):
    page = officer_page()
    page.goto(f"{live_server.url}/campaigns/new/")
    warning = page.locator("[data-sender-warning]")
    page.fill("#id_sender", "PEMKAB-BLTR")
    expect(page.locator("[data-sender-preview]")).to_have_text("PEMKAB-BLTR")
    expect(warning).to_be_hidden()
    page.fill("#id_sender", "PEMKAB-BLITAR")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("paling banyak 11 karakter")
    page.fill("#id_sender", "PEMKAB")
    expect(warning).to_be_hidden()


def test_the_compose_page_names_characters_not_seen_as_they_are_sent_while_the_text_is_typed(officer_page, live_server):
    page = officer_page()
    page.goto(f"{live_server.url}/campaigns/new/")
    box = page.locator('[data-sms-out="hidden-box"]')
    page.fill("#id_text", "Transfer Rp 1000 ke rekening dinas")
    expect(box).to_be_hidden()
    page.fill("#id_text", "Transfer Rp 1\u202e0001 ke blit\u0430rkab.go.id")
    expect(box).to_be_visible()
    expect(box).to_have_attribute("role", "status")
    items = box.locator("li")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_have_text(
        "U+202E karakter 14: mengubah urutan teks yang tampil di sekitarnya, sehingga layar dan ponsel bisa "
        "menampilkan bacaan berbeda; pengajuan menolaknya"
    )
    expect(items.nth(1)).to_contain_text("U+0430 karakter 27: mirip huruf atau angka biasa tetapi bukan")
    page.fill("#id_text", "Transfer Rp 1000 ke blitarkab.go.id")
    expect(box).to_be_hidden()


def test_a_saved_multi_line_text_has_the_parts_the_counter_showed(officer_page, live_server):
    from campaigns.models import Campaign
    from smsblast.sms import analyze

    page = officer_page()
    page.goto(f"{live_server.url}/campaigns/new/")
    page.fill("#id_title", "Dua baris")
    page.fill("#id_text", "Info Covid-19\n" + "a" * 146)  # 160 characters
    expect(page.locator('[data-sms-out="segments"]')).to_have_text("1")
    page.fill("#id_sender", "BLITARKAB")
    page.fill("#id_area_q", "blitar")
    page.check('#area-results input[value="35.05"]')
    page.locator("#campaign-form .actions button[type=submit]").click()
    expect(page.locator(".messages")).to_be_visible()
    assert analyze(Campaign.objects.get(title="Dua baris").text).segments == 1


def test_the_approver_sees_the_cost_column_without_scrolling_on_a_desktop_screen(officer_page, live_server, new_page):
    from campaigns.services import campaign_submit
    from tests.operators.factories import OperatorFactory
    from tests.smsblast.factories import SubscriberFactory

    officer = User.objects.get(username="officer-kb")
    make_user("approver-kb", Role.APPROVER)
    names = ("Indosat Ooredoo Hutchison", "Smartfren", "Telkomsel", "XL Axiata (incl. AXIS)")
    for index, name in enumerate(names):
        operator = OperatorFactory(name=name, prefixes=[f"62{881 + index}"], tariff_per_segment=250_000)
        for number in range(10):
            SubscriberFactory(msisdn=f"+62{881 + index}{number:08d}", area_id="35.05.01", operator=operator)
    campaign = CampaignFactory(author=officer, area_codes=["35.05"])
    campaign_submit(campaign=campaign, actor=officer)

    page = new_page(viewport={"width": 1280, "height": 900})
    log_in(page, live_server.url, "approver-kb")
    page.goto(f"{live_server.url}/campaigns/{campaign.pk}/review/")
    expect(page.locator("[data-cost-total]")).to_have_text("Rp 10.000.000")
    wrap = page.locator(".table-wrap:has([data-audience])")
    assert wrap.evaluate("element => element.scrollWidth <= element.clientWidth")


def test_the_replacement_of_a_no_break_space_names_the_space_it_puts_in(officer_page, live_server):
    page = officer_page()
    page.goto(f"{live_server.url}/campaigns/new/")
    page.fill("#id_text", "Harga\u00a0Rp 10.000")
    button = page.locator('[data-sms-out="nongsm"] li button')
    expect(button).to_have_count(1)
    expect(button).to_have_text("Ganti dengan spasi")
    button.click()
    expect(page.locator("#id_text")).to_have_value("Harga Rp 10.000")


def test_the_replacement_of_a_line_separator_names_the_line_break_it_puts_in(officer_page, live_server):
    page = officer_page()
    page.goto(f"{live_server.url}/campaigns/new/")
    page.fill("#id_text", "Jadwal vaksin:\u2028Senin 08.00")
    button = page.locator('[data-sms-out="nongsm"] li button')
    expect(button).to_have_count(1)
    expect(button).to_have_text("Ganti dengan baris baru")
    button.click()
    expect(page.locator("#id_text")).to_have_value("Jadwal vaksin:\nSenin 08.00")
    expect(page.locator('[data-sms-out="encoding"]')).to_have_text("GSM-7")


def test_the_suggestion_counts_one_sms_part_in_the_singular(officer_page, live_server):
    page = officer_page()
    page.select_option("select[name=language]", "en")
    page.locator("select[name=language] ~ button").click()
    expect(page.locator("h1")).to_have_text("Dashboard")
    page.goto(f"{live_server.url}/campaigns/new/")
    page.fill("#id_text", "Tetap “pakai masker”.")
    parts = page.locator('[data-sms-out="suggestion-box"] b')
    expect(parts).to_have_text("1 SMS part")
    page.fill("#id_text", "“" + "a" * 170)
    expect(parts).to_have_text("2 SMS parts")


def test_the_compose_preview_says_the_cost_is_per_run_once_a_recurring_schedule_is_chosen(officer_page, live_server):
    page = officer_page()
    page.goto(f"{live_server.url}/campaigns/new/")
    page.fill("#id_area_q", "blitar")
    page.check('#area-results input[value="35.05"]')
    expect(page.locator("#preview [data-audience]")).to_be_visible()
    expect(page.locator("#preview [data-cost-per-run]")).to_have_count(0)

    page.check('input[name="schedule_kind"][value="daily"]')

    expect(page.locator("#preview [data-cost-per-run]")).to_be_visible()
    page.check('input[name="schedule_kind"][value="once"]')
    expect(page.locator("#preview [data-cost-per-run]")).to_have_count(0)


def test_an_area_broadcast_hides_the_schedule_and_saves_whatever_targeted_schedule_was_chosen_before(
    officer_page, live_server
):
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from django.utils import timezone

    from campaigns.models import Campaign

    page = officer_page()
    page.goto(f"{live_server.url}/campaigns/new/")
    page.fill("#id_title", "Peringatan banjir")
    page.fill("#id_text", "Air sungai naik, menjauh dari bantaran.")
    page.fill("#id_sender", "BPBD")
    page.fill("#id_area_q", "blitar")
    page.check('#area-results input[value="35.05"]')
    # A daily send with quiet hours first, then the officer decides on an area broadcast.
    page.check('input[name="schedule_kind"][value="daily"]')
    page.fill("#id_schedule_time", "13:00")
    page.fill("#id_quiet_start", "21:00")
    page.fill("#id_quiet_end", "06:00")
    page.select_option("#id_mode", "area_broadcast")
    expect(page.locator("#id_quiet_start")).to_be_hidden()
    expect(page.locator('input[name="schedule_kind"][value="daily"]')).to_be_hidden()
    # Back to targeted and again: what was chosen for the targeted send is still there.
    page.select_option("#id_mode", "targeted")
    expect(page.locator('input[name="schedule_kind"][value="daily"]')).to_be_checked()
    expect(page.locator("#id_quiet_start")).to_have_value("21:00")
    page.select_option("#id_mode", "area_broadcast")
    starts = (timezone.now() + timedelta(hours=1)).astimezone(ZoneInfo("Asia/Jakarta"))
    page.fill("#id_broadcast_starts", starts.strftime("%Y-%m-%dT%H:%M"))
    page.fill("#id_broadcast_ends", (starts + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"))
    page.click("button:has-text('Simpan draf')")
    expect(page.locator("main .msg.success")).to_be_visible()
    campaign = Campaign.objects.get()
    assert campaign.mode == "area_broadcast"
    assert campaign.schedule == {"kind": "now"}


def test_keyboard_focus_stays_where_it_was_when_the_progress_refreshes(officer_page, live_server):
    from campaigns.models import Campaign, Delivery
    from tests.campaigns.factories import CampaignRunFactory, DeliveryFactory

    page = officer_page()
    campaign = CampaignFactory(
        author=User.objects.get(username="officer-kb"), area_codes=["35.05"], status=Campaign.Status.SENDING
    )
    run = CampaignRunFactory(campaign=campaign)
    DeliveryFactory(run=run, status=Delivery.Status.DELIVERED)
    DeliveryFactory(run=run, status=Delivery.Status.QUEUED)
    scheduled = CampaignFactory(
        author=campaign.author, area_codes=["35.05"], status=Campaign.Status.SCHEDULED, next_run_at=run.scheduled_for
    )
    # On the dashboard, refreshed every 5 s: a keyboard user on a campaign's link.
    page.goto(live_server.url + "/")
    for section, title in (("#running", campaign.title), ("#scheduled", scheduled.title)):
        page.locator(section).get_by_role("link", name=title).focus()
        with page.expect_response(lambda response: response.url == f"{live_server.url}/"):
            pass
        page.wait_for_timeout(300)  # the swap follows the answer
        expect(page.locator(section).get_by_role("link", name=title)).to_be_focused()
    # On the campaign page, refreshed every 2 s: a keyboard user scrolling a table of the run's figures.
    page.goto(f"{live_server.url}/campaigns/{campaign.pk}/")
    table = page.locator(f"#run-{run.pk} .table-wrap").first
    table.focus()
    with page.expect_response(lambda response: "/progress/" in response.url):
        pass
    page.wait_for_timeout(300)
    expect(page.locator(f"#run-{run.pk} .table-wrap").first).to_be_focused()


@pytest.mark.parametrize("path", ["/", "/campaigns/new/"])
def test_every_keyboard_focus_stop_has_a_ring_standing_out_3_to_1_from_what_surrounds_it(
    officer_page, live_server, path
):
    page = officer_page(viewport=LARGE_PHONE_VIEWPORT)
    page.goto(live_server.url + path)
    stops, faint = 0, []
    for _ in range(40):
        page.keyboard.press("Tab")
        stop = page.evaluate(FOCUS_FACTS)
        if stop["element"].startswith("BODY"):
            continue
        stops += 1
        if stop["style"] == "none" or stop["width"] < 2 or contrast(stop["colour"], stop["behind"]) < 3:
            faint.append(stop)

    assert stops > 5
    assert faint == []


def test_the_edge_of_every_field_stands_out_3_to_1_from_the_card_it_is_on(officer_page, live_server):
    page = officer_page(viewport=LARGE_PHONE_VIEWPORT)
    page.goto(f"{live_server.url}/campaigns/new/")
    fields = page.evaluate(
        """() => Array.from(document.querySelectorAll(
            "main input:not([type=hidden], [type=checkbox], [type=radio]), main select, main textarea"
          )).map((field) => [
            field.id, getComputedStyle(field).borderTopColor, getComputedStyle(field.closest(".card")).backgroundColor,
          ])"""
    )
    faint = [field for field, edge, card in fields if contrast(edge, card) < 3]

    assert len(fields) > 5
    assert faint == []


def test_the_approver_on_a_phone_confirms_an_approval_by_keyboard_before_it_is_made(
    officer_page, live_server, new_page
):
    from campaigns.models import Campaign
    from campaigns.services import campaign_submit

    officer = User.objects.get(username="officer-kb")
    make_user("approver-kb", Role.APPROVER)
    campaign = campaign_submit(campaign=CampaignFactory(author=officer, area_codes=["35.05"]), actor=officer)
    page = new_page(viewport=LARGE_PHONE_VIEWPORT)
    log_in(page, live_server.url, "approver-kb")
    page.goto(f"{live_server.url}/campaigns/{campaign.pk}/review/")

    # Enter on Approve alone approves nothing: the browser points at the confirmation tick instead.
    page.locator("#approve-button").focus()
    page.keyboard.press("Enter")
    confirm = page.get_by_label("Ya, setujui versi ini untuk dikirim")
    expect(confirm).to_be_focused()
    page.wait_for_timeout(300)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PENDING_APPROVAL
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    expect(page.locator("#approve-button")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("h1 .badge")).to_have_text("disetujui")
    assert page.evaluate("document.documentElement.scrollWidth") <= LARGE_PHONE_VIEWPORT["width"]


def test_a_campaign_submitted_while_the_approver_watches_the_dashboard_is_announced_without_moving_the_focus(
    officer_page, live_server, new_page
):
    from campaigns.services import campaign_submit

    officer = User.objects.get(username="officer-kb")
    make_user("approver-kb", Role.APPROVER)
    page = new_page(viewport=LARGE_PHONE_VIEWPORT)
    log_in(page, live_server.url, "approver-kb")
    expect(page.locator("[data-inbox-count]")).to_have_text("0")
    page.evaluate(LIVE_REGIONS_KEPT)
    page.get_by_role("link", name="Kampanye").focus()

    campaign_submit(campaign=CampaignFactory(author=officer, area_codes=["35.05"]), actor=officer)
    expect(page.locator("[data-inbox-count]")).to_have_text("1", timeout=10_000)  # polled every 5 s

    expect_said(page, "1 kampanye menunggu persetujuan Anda")
    expect(page.get_by_role("link", name="Kampanye")).to_be_focused()


def test_redis_going_down_and_coming_back_while_the_officer_watches_the_dashboard_is_shown_and_said(
    officer_page, live_server, settings, redis_url, redis_client
):
    from campaigns.models import Campaign
    from smsblast.devtools import free_port
    from tests.campaigns.factories import CampaignRunFactory

    settings.REDIS_URL = redis_url
    redis_client.set("smsblast:health:reconciled", "1", ex=60)
    redis_client.set("smsblast:health:dispatch_worker", "1", ex=60)
    officer = User.objects.get(username="officer-kb")
    CampaignRunFactory(campaign=CampaignFactory(author=officer, status=Campaign.Status.SENDING))
    page = officer_page(viewport=LARGE_PHONE_VIEWPORT)
    expect(page.locator("#running[hx-trigger]")).to_have_count(1)
    expect(page.locator("[data-health]")).to_have_count(0)
    page.evaluate(LIVE_REGIONS_KEPT)
    page.get_by_role("link", name="Kampanye", exact=True).focus()

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    expect(page.locator('[data-health="redis"]')).to_be_visible(timeout=10_000)  # polled every 5 s
    expect_said(page, "Redis tidak dapat dihubungi")
    expect(page.get_by_role("link", name="Kampanye", exact=True)).to_be_focused()

    settings.REDIS_URL = redis_url
    expect(page.locator("[data-health]")).to_have_count(0, timeout=10_000)
    expect_said(page, "Pengiriman berjalan lagi")
    expect(page.get_by_role("link", name="Kampanye", exact=True)).to_be_focused()


def test_a_run_paused_elsewhere_is_announced_on_the_campaign_page_without_moving_the_focus(officer_page, live_server):
    from campaigns.models import Campaign, CampaignRun, Delivery
    from tests.campaigns.factories import CampaignRunFactory, DeliveryFactory

    page = officer_page(viewport=LARGE_PHONE_VIEWPORT)
    campaign = CampaignFactory(
        author=User.objects.get(username="officer-kb"), area_codes=["35.05"], status=Campaign.Status.SENDING
    )
    run = CampaignRunFactory(campaign=campaign, status=CampaignRun.Status.SENDING)
    DeliveryFactory(run=run, status=Delivery.Status.DELIVERED)
    DeliveryFactory(run=run, status=Delivery.Status.QUEUED)
    page.goto(f"{live_server.url}/campaigns/{campaign.pk}/")
    expect(page.locator(f"#run-{run.pk}")).to_have_attribute("data-run-status", "sending")
    page.evaluate(LIVE_REGIONS_KEPT)
    table = page.locator(f"#run-{run.pk} .table-wrap").first
    table.focus()

    # Paused through the API, say, by another officer: the block refreshed every 2 s shows it.
    CampaignRun.objects.filter(pk=run.pk).update(status=CampaignRun.Status.PAUSED)
    expect(page.locator(f"#run-{run.pk}")).to_have_attribute("data-run-status", "paused", timeout=10_000)

    expect_said(page, "dijeda")
    expect(page.locator(f"#run-{run.pk} .table-wrap").first).to_be_focused()


def test_typing_the_message_is_not_interrupted_by_the_count_at_every_key_but_a_change_of_encoding_is_said(
    officer_page, live_server
):
    page = officer_page(viewport=LARGE_PHONE_VIEWPORT)
    page.goto(f"{live_server.url}/campaigns/new/")
    page.evaluate(LIVE_REGIONS_RECORDED)
    page.focus("#id_text")
    page.keyboard.type("Vaksinasi gratis")
    expect(page.locator('[data-sms-out="chars"]')).to_have_text("16")
    counted = [said for said in page.evaluate("window.spoken") if "Karakter" in said]
    page.keyboard.type(" “Sabtu”")
    expect(page.locator('[data-sms-out="encoding"]')).to_have_text("UCS-2")

    assert counted == []
    assert any("UCS-2" in said for said in page.evaluate("window.spoken"))


def test_the_compose_preview_says_its_audience_in_a_sentence_not_its_whole_table_at_every_pause_in_typing(
    officer_page, live_server
):
    page = officer_page(viewport=LARGE_PHONE_VIEWPORT)
    page.goto(f"{live_server.url}/campaigns/new/")
    page.evaluate(LIVE_REGIONS_RECORDED)
    page.fill("#id_area_q", "blitar")
    page.check('#area-results input[value="35.05"]')
    expect(page.locator("#preview [data-audience]")).to_be_visible()
    with page.expect_response(lambda response: "/preview/" in response.url):
        page.fill("#id_text", "Vaksinasi gratis di Puskesmas.")
    # The swap follows the answer: wait until the sentence is said, then look at everything said by then.
    page.wait_for_function("(said) => window.spoken.includes(said)", arg="Penerima: 0, biaya Rp 0", timeout=5_000)
    spoken = page.evaluate("window.spoken")

    assert [said for said in spoken if "Operator" in said] == []  # the table's heading row
    assert "Penerima: 0, biaya Rp 0" in spoken


def test_the_controls_to_pause_or_cancel_a_sending_campaign_are_big_enough_to_tap_on_a_phone(officer_page, live_server):
    from campaigns.models import Campaign
    from tests.campaigns.factories import CampaignRunFactory

    page = officer_page(viewport=LARGE_PHONE_VIEWPORT)
    campaign = CampaignFactory(
        author=User.objects.get(username="officer-kb"), area_codes=["35.05"], status=Campaign.Status.SENDING
    )
    CampaignRunFactory(campaign=campaign)
    page.goto(f"{live_server.url}/campaigns/{campaign.pk}/")
    page.locator("section.actions summary").click()
    expect(page.get_by_label("Ya, jeda pengiriman")).to_be_visible()
    # WCAG 2.2 AA: a target at least 24 by 24 CSS pixels.
    sizes = page.evaluate(
        """() => Array.from(document.querySelectorAll("section.actions summary, section.actions label"))
          .map((target) => [target.textContent.trim(), Math.round(target.getBoundingClientRect().height)])"""
    )

    assert len(sizes) == 3
    assert [(name, height) for name, height in sizes if height < 24] == []
