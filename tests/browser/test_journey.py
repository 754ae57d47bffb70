"""The whole journey in Chromium: compose with the counter, submit, approve on a phone, watch the run finish.

The run is real: Celery workers and the operator simulator of the integration harness send it, and the
campaign page follows it by htmx polling until the progress bar shows 100%.
"""

import pytest
from playwright.sync_api import expect

from campaigns.models import Campaign
from smsblast.models import Role
from tests.browser.conftest import PHONE_VIEWPORT, log_in
from tests.conftest import make_user
from tests.integration.scenario import all_final, operators_create, run_finished, run_of, subscribers_create

pytestmark = [pytest.mark.browser, pytest.mark.integration]

TEXT = (
    "Warga Kab. Blitar, tetap “pakai masker” dan jaga jarak. "
    "Vaksinasi gratis di puskesmas terdekat setiap Sabtu pukul 08.00 WIB."
)
SUGGESTED = TEXT.replace("“", '"').replace("”", '"')
RECIPIENTS = 400


def test_officer_composes_approver_approves_from_a_phone_and_the_run_reaches_100_percent(stack, new_page, live_server):
    operators = operators_create(stack, segments_per_second=50_000, batch_size=100)
    subscribers_create(operators, RECIPIENTS)
    make_user("officer-web", Role.OFFICER)
    make_user("approver-web", Role.APPROVER)
    stack.start_workers("w1")
    url = live_server.url

    # The officer composes a 2-part UCS-2 message, takes the GSM-7 suggestion and sees 1 part.
    page = new_page()
    log_in(page, url, "officer-web")
    page.goto(f"{url}/campaigns/new/")
    page.fill("#id_title", "Vaksinasi Sabtu")
    page.fill("#id_text", TEXT)
    counter = page.locator("[data-sms-counter]")
    expect(counter.locator('[data-sms-out="encoding"]')).to_have_text("UCS-2")
    expect(counter.locator('[data-sms-out="segments"]')).to_have_text("2")
    expect(counter.locator('[data-sms-out="nongsm"] mark')).to_have_count(2)
    expect(counter.locator('[data-sms-out="preview"] mark')).to_have_text(["“", "”"])
    expect(counter.locator('[data-sms-out="preview"] .bubble')).to_have_count(2)
    page.click("button:has-text('Pakai saran')")
    expect(counter.locator('[data-sms-out="segments"]')).to_have_text("1")
    expect(counter.locator('[data-sms-out="encoding"]')).to_have_text("GSM-7")
    expect(counter.locator("mark")).to_have_count(0)
    expect(page.locator("#id_text")).to_have_value(SUGGESTED)
    page.fill("#id_sender", "PEMKAB-BLTR")
    # Area picker: search, tick; the map and the audience follow.
    page.fill("#id_area_q", "blitar")
    page.locator('#area-results input[value="35.05"]').check()
    expect(page.locator('[data-picked] input[value="35.05"]')).to_be_checked()
    expect(page.locator("[data-audience-total]")).to_have_text(str(RECIPIENTS))
    page.click("button:has-text('Simpan draf')")
    expect(page.locator("h1")).to_contain_text("Vaksinasi Sabtu")
    campaign = Campaign.objects.get(title="Vaksinasi Sabtu")
    assert campaign.text == SUGGESTED
    assert campaign.area_codes == ["35.05"]
    page.click("button:has-text('Ajukan untuk persetujuan')")
    expect(page.locator("h1 .badge")).to_have_text("menunggu persetujuan")

    # The approver approves from a 360 px wide phone screen.
    phone = new_page(viewport=PHONE_VIEWPORT)
    log_in(phone, url, "approver-web")
    expect(phone.locator("[data-inbox-count]")).to_have_text("1")
    phone.click("a:has-text('Vaksinasi Sabtu')")
    expect(phone.locator(".phone .bubble")).to_have_count(1)
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]
    phone.check("input[name=confirm]")
    phone.click("#approve-button")
    expect(phone.locator("h1 .badge")).to_have_text("disetujui")

    # The officer starts the schedule; the beat tick starts the run and the page follows it live.
    page.reload()
    page.check("form:has(button:has-text('Jalankan jadwal')) input[name=confirm]")
    page.click("button:has-text('Jalankan jadwal')")
    expect(page.locator("h1 .badge")).to_have_text("terjadwal")
    stack.drive(lambda: run_of(campaign) is not None, timeout=30)
    page.reload()
    expect(page.locator("[data-progress-percent]")).to_be_visible()
    stack.drive(lambda: all_final(campaign) and run_finished(campaign), timeout=90)
    # No reload: htmx polling brings the bar to 100% within a few seconds.
    expect(page.locator("[data-progress-percent]")).to_have_text("100", timeout=10_000)
    expect(page.locator("[data-run-status]")).to_have_attribute("data-run-status", run_of(campaign).status)

    # A forbidden action: the officer opening the approve URL is refused with a message.
    response = page.goto(f"{url}/campaigns/{campaign.pk}/review/")
    assert response.status == 403
    expect(page.locator("h1")).to_have_text("Tidak diizinkan")
    expect(page.locator("main")).to_contain_text("Peran Anda tidak boleh membuka halaman ini.")
