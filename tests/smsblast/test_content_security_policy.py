"""Pages run only the site's own scripts: a Content-Security-Policy on every answer, and no inline script to allow."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from tests.conftest import client_for

pytestmark = pytest.mark.django_db

TEMPLATES = Path(settings.BASE_DIR) / "templates"


def _directives(response) -> dict[str, list[str]]:
    policy = response.headers.get("Content-Security-Policy", "")
    pairs = [part.split() for part in policy.split(";") if part.strip()]
    return {words[0]: words[1:] for words in pairs}


@pytest.mark.parametrize("path", ["/login/", "/campaigns/", "/admin/login/", "/api/docs/", "/api/v1/areas/"])
def test_every_answer_allows_scripts_from_this_site_only_and_no_framing(admin_user, path):
    response = client_for(admin_user).get(path)
    assert response.status_code in (200, 302), (path, response.status_code)
    directives = _directives(response)
    assert directives["script-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'self'"]
    assert directives["form-action"] == ["'self'"]


def test_the_api_docs_load_their_script_from_a_url_rather_than_inline(admin_user):
    body = client_for(admin_user).get("/api/docs/").content.decode()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", body) == []


def test_no_template_holds_an_inline_script_or_event_handler_the_policy_would_block():
    offending = []
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text()
        for pattern in (r"<script(?![^>]*\bsrc=)[^>]*>", r"\son[a-z]+\s*=", r"\bhx-on[:-]", r"javascript:"):
            offending += [f"{template.relative_to(TEMPLATES)}: {match}" for match in re.findall(pattern, text)]
    assert offending == []


def test_the_policy_can_be_set_from_the_environment_and_is_sent_as_set(settings):
    settings.CONTENT_SECURITY_POLICY = "default-src 'self'; report-uri /csp-reports"
    response = Client().get("/login/")
    assert response.headers["Content-Security-Policy"] == "default-src 'self'; report-uri /csp-reports"
