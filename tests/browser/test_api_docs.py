"""The API documentation in Chromium with no internet: Swagger UI from the app's own files, every operation shown."""

import json

import pytest
from playwright.sync_api import expect

from smsblast.models import Role
from tests.browser.conftest import log_in
from tests.conftest import make_user

pytestmark = pytest.mark.browser


@pytest.fixture
def offline_page(transactional_db, live_server, new_page):
    """Return a signed-in officer's page that can reach the live server only, and the addresses it was refused."""
    make_user("officer-docs", Role.OFFICER)
    page = new_page()
    refused = []

    def only_the_app(route):
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.context.route("**/*", only_the_app)
    log_in(page, live_server.url, "officer-docs")
    return page, refused


def test_swagger_ui_shows_every_operation_from_the_apps_own_files(offline_page, live_server):
    page, refused = offline_page
    schema = json.loads(page.request.get(f"{live_server.url}/api/v1/schema/?format=json").text())
    operations = sum(1 for item in schema["paths"].values() for method in item if method in ("get", "post", "patch"))

    page.goto(f"{live_server.url}/api/docs/")

    expect(page.locator(".opblock")).to_have_count(operations)
    assert refused == []
    assets = page.eval_on_selector_all("script[src], link[href]", "nodes => nodes.map(n => n.src || n.href)")
    # Static files, and Swagger UI's start-up script, served by the docs page itself (no inline script).
    own = (f"{live_server.url}/static/", f"{live_server.url}/api/docs/?script=")
    assert assets and all(url.startswith(own) for url in assets), assets
    assert f"{live_server.url}/api/docs/?script=" in assets


def test_try_it_out_with_the_signed_in_session_posts_with_its_csrf_token(offline_page, live_server):
    page, _refused = offline_page
    page.goto(f"{live_server.url}/api/docs/")
    operation = page.locator(".opblock", has=page.locator(".opblock-summary-path", has_text="/api/v1/sms/analyze/"))
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("textarea.body-param__text").fill('{"text": "Pakai “masker”"}')

    operation.locator("button.execute").click()

    answer = operation.locator(".live-responses-table .response .response-col_status")
    expect(answer).to_have_text("200")
    assert (
        '"encoding": "UCS2"'
        in operation.locator(".live-responses-table .response-col_description pre").first.inner_text()
    )
