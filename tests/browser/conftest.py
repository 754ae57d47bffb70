"""Chromium from Debian driven by Playwright; tests here are marked `browser` and skip only without the binary."""

import os
import re
from pathlib import Path

import pytest

from tests.integration.conftest import pytest_collection_modifyitems, stack  # noqa: F401 - shared harness

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE_VIEWPORT = {"width": 360, "height": 740}
# The larger phones of today (and the approver's, in an emergency): 390 x 844 CSS pixels.
LARGE_PHONE_VIEWPORT = {"width": 390, "height": 844}


def contrast(first: str, second: str) -> float:
    """Return the WCAG 2 contrast ratio of two computed CSS colours ("rgb(r, g, b)" or "rgba(r, g, b, a)")."""

    def luminance(colour: str) -> float:
        channels = [float(value) / 255 for value in re.findall(r"[\d.]+", colour)[:3]]
        r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def log_in(page, base_url: str, username: str) -> None:
    """Log `username` in (demo password) through the log-in page and wait for the dashboard."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-secret-123")
    page.click("main button[type=submit]")
    expect(page.locator("h1")).to_have_text("Dasbor")


@pytest.fixture(scope="session")
def chromium():
    """Start Debian's Chromium once per session through Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package `chromium`)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the test are still synchronous.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    if previous is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def new_page(chromium):
    """Return a factory of pages, each in its own browser context (own cookies), closed after the test."""
    contexts = []

    def build(*, viewport: dict | None = None, language: str = "id-ID"):
        context = chromium.new_context(viewport=viewport or {"width": 1280, "height": 900}, locale=language)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield build
    for context in contexts:
        context.close()
