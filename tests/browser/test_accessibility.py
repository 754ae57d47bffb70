"""Accessibility of every page a role reaches, by axe-core in Chromium: no serious or critical violation.

axe-core checks what a screen reader or keyboard user meets (names of controls and images, labels of fields,
ARIA used as allowed, colour contrast, document language and title). The pages are crawled from the dashboard
two steps deep over a campaign in every state, at a desk and on a phone, and the forms also with their errors.
"""

import re
from urllib.parse import urldefrag, urlparse

import pytest
from django.test import override_settings
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun
from smsblast import totp
from smsblast.models import Role
from tests.browser.conftest import CHROMIUM, LARGE_PHONE_VIEWPORT, PHONE_VIEWPORT
from tests.browser.test_crawl import PAGE_FACTS, SKIP, campaigns_in_every_state, pages_of, signed_in
from tests.conftest import make_user

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]

BLOCKING = {"serious", "critical"}


def violations(page) -> list[str]:
    """Return the serious and critical axe-core violations of the page as it is now, one line each."""
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    return [
        f"{rule['id']}: {rule['help']} at {[node['target'] for node in rule['nodes']][:3]}"
        for rule in found
        if rule["impact"] in BLOCKING
    ]


def crawl_for_violations(page, base_url: str, starts: list[str], depth: int) -> dict[str, list[str]]:
    """Visit one page of each path breadth-first from `starts`; return the violations found, by path."""
    found: dict[str, list[str]] = {}
    seen: set[str] = set()
    queue = [(base_url + start, 0) for start in starts]
    while queue:
        url, level = queue.pop(0)
        parsed = urlparse(urldefrag(url)[0])
        # One page per path: a list's sort orders and filters share its template.
        if parsed.path in seen or parsed.path.startswith(SKIP) or parsed.path.endswith((".csv", ".xml")):
            continue
        seen.add(parsed.path)
        response = page.goto(urldefrag(url)[0], wait_until="load")
        if "html" not in response.headers.get("content-type", ""):
            continue
        page.wait_for_timeout(200)  # the blocks a page loads by htmx on "load"
        if problems := violations(page):
            found[parsed.path] = problems
        if level < depth and response.status < 400:
            queue += [(link, level + 1) for link in page.evaluate(PAGE_FACTS)["links"]]
    return found


@pytest.fixture
def world(transactional_db):
    return campaigns_in_every_state()


@pytest.mark.parametrize("username", ["officer", "approver", "admin"])
def test_every_page_a_role_reaches_has_no_serious_accessibility_violation(world, live_server, chromium, username):
    context = signed_in(chromium, live_server.url, username)
    found = crawl_for_violations(context.new_page(), live_server.url, ["/", *pages_of(world)], depth=2)
    context.close()

    assert found == {}


def test_the_officers_pages_on_a_phone_have_no_serious_accessibility_violation(world, live_server, chromium):
    context = signed_in(chromium, live_server.url, "officer")
    page = context.new_page()
    page.set_viewport_size(PHONE_VIEWPORT)
    found = crawl_for_violations(page, live_server.url, ["/", f"/campaigns/{world['sending']}/"], depth=1)
    context.close()

    assert found == {}


def test_forms_showing_their_errors_and_the_login_page_have_no_serious_accessibility_violation(
    world, live_server, chromium
):
    anonymous = chromium.new_context(locale="id-ID")
    page = anonymous.new_page()
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "officer")
    page.fill("#id_password", "not-the-password")
    page.click("main button[type=submit]")
    page.wait_for_load_state("load")
    login = violations(page)
    anonymous.close()

    context = signed_in(chromium, live_server.url, "officer")
    page = context.new_page()
    page.goto(f"{live_server.url}/campaigns/new/")
    page.evaluate("() => document.querySelector('main form[method=post]').noValidate = true")
    page.click("main form[method=post] button[type=submit]")
    page.wait_for_load_state("load")
    error_messages = page.locator(".errorlist, .error, [aria-invalid=true]").count()
    compose = violations(page)
    context.close()

    assert (login, compose) == ([], [])
    assert error_messages > 0  # the form was refused and shows why


def test_a_campaign_page_showing_the_message_of_an_edit_has_no_serious_accessibility_violation(
    world, live_server, chromium
):
    # A daily campaign sending, its runs waiting only for delivery reports: an edit voids its approval and says so.
    Campaign.objects.filter(pk=world["daily"]).update(status=Campaign.Status.SENDING)
    CampaignRun.objects.filter(campaign_id=world["daily"]).update(status=CampaignRun.Status.SENDING)
    context = signed_in(chromium, live_server.url, "officer")
    page = context.new_page()
    page.goto(f"{live_server.url}/campaigns/{world['daily']}/edit/")
    page.fill("#id_text", "Jadwal vaksinasi berubah: datang pukul 09.00.")
    page.click("main form[method=post] button[type=submit]")
    page.wait_for_url(f"{live_server.url}/campaigns/{world['daily']}/")
    message = page.locator("main [role=status]").inner_text()
    found = violations(page)
    context.close()

    assert "persetujuan dibatalkan" in message
    assert found == []


@override_settings(SMSBLAST_TWO_FACTOR_ROLES=["approver"])
def test_the_two_step_log_in_pages_have_no_serious_accessibility_violation_and_fetch_nothing_from_elsewhere(
    transactional_db, live_server, chromium
):
    from playwright.sync_api import expect

    make_user("chair", Role.APPROVER)
    context = chromium.new_context(locale="id-ID")
    requested = []
    context.on("request", lambda request: requested.append(request.url))
    page = context.new_page()
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "chair")
    page.fill("#id_password", "pw-secret-123")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{live_server.url}/login/enrol/")
    expect(page.locator("main svg.qr")).to_be_visible()
    secret = re.sub(r"\s", "", page.locator("code.secret").inner_text())
    enrolment = violations(page)
    page.fill("#id_code", "abcdef")
    page.click("main button[type=submit]")
    page.wait_for_load_state("load")
    refused = violations(page)
    page.fill("#id_code", totp.code_at(secret, timezone.now()))
    page.click("main button[type=submit]")
    expect(page.locator("h1")).to_have_text("Dasbor")
    page.click("header button:has-text('Keluar')")
    page.fill("#id_username", "chair")
    page.fill("#id_password", "pw-secret-123")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{live_server.url}/login/code/")
    code_step = violations(page)
    context.close()

    assert (enrolment, refused, code_step) == ([], [], [])
    assert [url for url in requested if not url.startswith((live_server.url, "data:"))] == []


def test_the_characters_marked_in_the_message_the_approver_reviews_are_legible(transactional_db, live_server, chromium):
    from tests.campaigns.factories import CampaignFactory
    from tests.smsblast.factories import area_tree

    area_tree("35.05", kecamatan=1)
    make_user("approver-hc", Role.APPROVER)
    # A Cyrillic "а" in the link and a zero-width space: each is marked in the preview with its code point.
    campaign = CampaignFactory(
        text="Daftar vaksin di blit\u0430rkab.go.id\u200b sebelum Sabtu.", status=Campaign.Status.PENDING_APPROVAL
    )
    context = signed_in(chromium, live_server.url, "approver-hc")
    page = context.new_page()
    page.set_viewport_size(LARGE_PHONE_VIEWPORT)
    page.goto(f"{live_server.url}/campaigns/{campaign.pk}/review/")
    marks = page.locator(".phone mark.hidden-char")
    marked = marks.count()
    found = violations(page)
    context.close()

    assert marked == 2
    assert found == []
