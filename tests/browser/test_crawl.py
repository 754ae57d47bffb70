"""Every page reachable from the dashboard, as each role, in Chromium: no script error, no missing file, no 5xx.

The crawl follows same-origin links and each page's GET forms (with their default values) three steps from the
dashboard, over the demo data and a campaign in every state, and also opens pages a role may not see.
"""

import datetime as dt
import time
from collections import defaultdict
from urllib.parse import urldefrag, urlparse

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun, Mode
from operators.models import AreaBroadcast, AreaBroadcastReach, Operator
from smsblast.models import Role, User
from tests.browser.conftest import CHROMIUM
from tests.campaigns.factories import (
    ApprovalFactory,
    CampaignFactory,
    CampaignRunFactory,
    DeliveryFactory,
    DispatchBatchFactory,
)
from tests.conftest import make_user

pytestmark = pytest.mark.browser

STATIC_TYPES = {"stylesheet", "script", "image", "font"}
# The browser reports the page's own intended 403/404 as a console error too; those are checked by status.
OWN_STATUS = "Failed to load resource: the server responded with a status of 4"
# Not pages: the log-out and language forms post, the schema is JSON.
SKIP = ("/logout/", "/admin/logout/", "/i18n/", "/static/", "/api/v1/schema/")

PAGE_FACTS = """() => {
  const out = {links: [], getForms: [], postWithoutCsrf: [], external: [], h1: ''};
  const outside = (u) => u.protocol.startsWith('http') && u.host !== location.host;
  for (const a of document.querySelectorAll('a[href]')) {
    const u = new URL(a.href, location.href);
    if (!outside(u) && u.protocol.startsWith('http')) out.links.push(u.href);
  }
  for (const el of document.querySelectorAll('script[src], link[href], img[src], iframe[src], source[src]')) {
    const u = new URL(el.getAttribute('src') || el.getAttribute('href'), location.href);
    if (outside(u)) out.external.push(el.tagName + ' ' + u.href);
  }
  for (const form of document.forms) {
    if ((form.getAttribute('method') || 'get').toLowerCase() === 'post') {
      if (!form.querySelector('input[name=csrfmiddlewaretoken]')) out.postWithoutCsrf.push(form.action);
      continue;
    }
    const query = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (typeof value === 'string') query.append(name, value);
    const u = new URL(form.action || location.href);
    u.search = query.toString();
    if (!outside(u)) out.getForms.push(u.href);
  }
  out.h1 = (document.querySelector('main h1') || {}).innerText || '';
  return out;
}"""


def campaigns_in_every_state() -> dict[str, int]:
    """Load the demo (Kab. Blitar) and a campaign in every state by its officer; return their ids by state."""
    call_command("seed_demo", subscribers=200, verbosity=0)
    make_user("officer-all", Role.OFFICER)  # no jurisdiction: all of Indonesia
    officer = User.objects.get(username="officer")
    approver = User.objects.get(username="approver")
    operators = list(Operator.objects.order_by("slug"))
    now = timezone.now()

    def campaign(status, approved=True, **fields):
        made = CampaignFactory(author=officer, status=status, area_codes=["35.05.01"], **fields)
        if approved:
            ApprovalFactory(campaign=made, approver=approver)
        return made

    ids = {
        "draft": campaign(Campaign.Status.DRAFT, approved=False).pk,
        "pending": campaign(Campaign.Status.PENDING_APPROVAL, approved=False).pk,
        "approved": campaign(Campaign.Status.APPROVED).pk,
        "scheduled": campaign(
            Campaign.Status.SCHEDULED,
            schedule={"kind": "once", "at": (now + dt.timedelta(days=1)).isoformat()},
            next_run_at=now + dt.timedelta(days=1),
        ).pk,
        "cancelled": campaign(Campaign.Status.CANCELLED).pk,
    }
    rejected = campaign(Campaign.Status.REJECTED, approved=False)
    ApprovalFactory(campaign=rejected, approver=approver, decision="rejected", reason="Perbaiki teks.")
    ids["rejected"] = rejected.pk
    for status in ("sending", "paused", "completed", "completed_with_failures"):
        made = campaign(status)
        run = CampaignRunFactory(campaign=made, status=status, started_at=now, fanout_done=True)
        for index, batch_status in enumerate(("accepted", "pending", "failed")):
            batch = DispatchBatchFactory(run=run, operator=operators[index], status=batch_status, size=3, segments=3)
            for number, delivery_status in enumerate(("delivered", "queued", "undelivered")):
                DeliveryFactory(
                    run=run,
                    batch=batch,
                    operator=operators[index],
                    status=delivery_status,
                    msisdn=f"+62812{made.pk:03d}{index}{number:04d}",
                )
        ids[status] = made.pk
    daily = campaign(
        Campaign.Status.SCHEDULED, schedule={"kind": "daily", "time": "13:00"}, next_run_at=now + dt.timedelta(hours=3)
    )
    for days in (1, 2):
        CampaignRunFactory(
            campaign=daily,
            status=CampaignRun.Status.COMPLETED,
            scheduled_for=now - dt.timedelta(days=days),
            started_at=now - dt.timedelta(days=days),
            finished_at=now - dt.timedelta(days=days) + dt.timedelta(hours=1),
            fanout_done=True,
        )
    ids["daily"] = daily.pk
    broadcast = campaign(
        Campaign.Status.SENDING,
        mode=Mode.AREA_BROADCAST,
        starts_at=now - dt.timedelta(hours=1),
        ends_at=now + dt.timedelta(hours=5),
    )
    run = CampaignRunFactory(campaign=broadcast, status=CampaignRun.Status.SENDING, started_at=now, fanout_done=True)
    for operator in operators:
        sent = AreaBroadcast.objects.create(
            run=run, operator=operator, state=AreaBroadcast.State.ACKNOWLEDGED, acknowledged_at=now, handsets_reached=9
        )
        AreaBroadcastReach.objects.create(broadcast=sent, handsets_reached=9, at=now)
    ids["broadcast"] = broadcast.pk
    # Another regency's campaign: the Kab. Blitar users must not find it.
    ids["outside"] = CampaignFactory(author=User.objects.get(username="officer-all"), area_codes=["35.06"]).pk
    return ids


def signed_in(chromium, base_url: str, username: str):
    """Return a browser context holding `username`'s session."""
    client = Client()
    client.force_login(User.objects.get(username=username))
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, locale="id-ID")
    context.set_default_timeout(15_000)
    host = urlparse(base_url).hostname
    context.add_cookies([{"name": k, "value": v.value, "domain": host, "path": "/"} for k, v in client.cookies.items()])
    return context


def crawl(context, base_url: str, starts: list[str], depth: int) -> tuple[dict[str, int], dict[str, list]]:
    """Visit pages breadth-first from `starts`; return each path's status and what went wrong, by kind."""
    host = urlparse(base_url).netloc
    problems: dict[str, list] = defaultdict(list)
    where = {"path": ""}

    def note(kind, what):
        problems[kind].append((where["path"], what))

    context.on(
        "request", lambda r: urlparse(r.url).netloc != host and r.url.startswith("http") and note("outside", r.url)
    )
    context.on(
        "response",
        lambda r: r.status >= 400 and r.request.resource_type in STATIC_TYPES and note("static", f"{r.status} {r.url}"),
    )

    def failed(request):
        # Going to the next page aborts a poll still on its way (net::ERR_ABORTED): the crawler's doing, not the page's.
        aborted = request.resource_type in ("xhr", "fetch") and "ERR_ABORTED" in (request.failure or "")
        if request.resource_type in STATIC_TYPES | {"xhr", "fetch"} and not aborted:
            note("failed", f"{request.failure} {request.url}")

    context.on("requestfailed", failed)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and not m.text.startswith(OWN_STATUS) and note("console", m.text))
    page.on("pageerror", lambda error: note("script", str(error)))

    statuses: dict[str, int] = {}
    per_path: dict[str, int] = defaultdict(int)
    queue = [(base_url + start, 0) for start in starts]
    while queue:
        url, level = queue.pop(0)
        url = urldefrag(url)[0]
        parsed = urlparse(url)
        path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        if path in statuses or parsed.path.startswith(SKIP):
            continue
        per_path[parsed.path] += 1
        if per_path[parsed.path] > 4:  # sort orders and filters of one list: a few are enough
            continue
        where["path"] = path
        if parsed.path.endswith((".csv", ".xml")):  # a file download (report, CAP alert) is no page
            statuses[path] = context.request.get(url).status
            continue
        response = page.goto(url, wait_until="load")
        statuses[path] = response.status
        if "html" not in response.headers.get("content-type", ""):
            continue
        page.wait_for_timeout(200)  # the blocks a page loads by htmx on "load"
        facts = page.evaluate(PAGE_FACTS)
        for url_outside in facts["external"]:
            note("outside", url_outside)
        for action in facts["postWithoutCsrf"]:
            note("csrf", action)
        if response.status in (403, 404) and not facts["h1"]:
            note("bare error", response.status)
        if level < depth and response.status < 400:
            queue += [(link, level + 1) for link in facts["links"] + facts["getForms"]]
    return statuses, problems


def pages_of(ids: dict[str, int]) -> list[str]:
    """Return pages a role may or may not open: another regency's campaign, a missing one, refused actions."""
    return [
        "/campaigns/999999/",
        "/operators/",
        "/subscribers/",
        "/campaigns/new/",
        "/campaigns/import-cap/",
        "/subscribers/imports/999999/",
        *(f"/campaigns/{ids['outside']}/{page}" for page in ("", "edit/", "review/")),
        f"/campaigns/{ids['pending']}/review/",
        f"/campaigns/{ids['sending']}/edit/",
    ]


ROLES = {
    "officer": {"outside": 404},
    "approver": {"outside": 404},
    "admin": {"outside": 200},
}


@pytest.fixture
def world(transactional_db):
    return campaigns_in_every_state()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
@pytest.mark.parametrize("username", [*ROLES, "telkomsel"])
def test_every_page_a_role_reaches_loads_without_errors_and_only_from_this_server(
    world, live_server, chromium, username
):
    context = signed_in(chromium, live_server.url, username)
    statuses, problems = crawl(context, live_server.url, ["/", *pages_of(world)], depth=3)
    context.close()

    assert dict(problems) == {}
    assert [path for path, status in statuses.items() if status >= 500] == []
    if username == "telkomsel":
        # An operator uses the API only: every page refuses it, with a message page.
        assert {status for path, status in statuses.items() if not path.startswith("/api/")} == {403}
        return
    assert statuses["/"] == 200
    assert statuses[f"/campaigns/{world['sending']}/"] == 200
    assert statuses[f"/campaigns/{world['outside']}/"] == ROLES[username]["outside"]
    assert all(statuses.get(f"/campaigns/{pk}/") == 200 for key, pk in world.items() if key != "outside")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_the_progress_block_refreshes_without_script_errors_until_the_run_ends(world, live_server, chromium):
    from playwright.sync_api import expect

    context = signed_in(chromium, live_server.url, "officer")
    page = context.new_page()
    errors, polls = [], []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("response", lambda answer: "/progress/" in answer.url and polls.append(answer.status))
    page.goto(f"{live_server.url}/campaigns/{world['sending']}/")
    expect(page.locator("[data-run-status]")).to_have_attribute("data-run-status", "sending")
    # The block polls every 2 s; on a busy machine the first answer may take longer to come back.
    deadline = time.monotonic() + 15
    while not polls and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert polls and set(polls) == {200}

    campaign = Campaign.objects.get(pk=world["sending"])
    run = campaign.runs.get()
    run.deliveries.update(status="delivered")
    CampaignRun.objects.filter(pk=run.pk).update(status=CampaignRun.Status.COMPLETED, finished_at=timezone.now())
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.COMPLETED)
    # The next poll finds the run ended and reloads the page, which shows the campaign completed.
    expect(page.locator("h1 .badge")).to_have_text("selesai", timeout=10_000)
    expect(page.locator("[data-progress-percent]")).to_have_text("100")
    context.close()
    assert errors == []
