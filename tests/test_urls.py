"""Every URL refuses whoever may not use it: a view added without its permission fails here.

The URLs are read from the URL configuration, not listed by hand, and their parameters name objects that do not
exist: a refusal must come before any object is looked up, so it tells nobody what exists.
"""

import re
import uuid

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from smsblast.authentication import api_token_create

# Open to anyone: the log-in steps, log-out and the language switch.
PUBLIC = {"login", "login_code", "login_enrol", "logout", "set_language", "admin:login", "admin:logout", None}
# The API map is for every API user, operators included.
ANY_API_USER = {"schema", "swagger-ui"}
# An object that is nobody's, for each kind of parameter (and a number for a number).
PARAMETERS = {
    "int": "987654",
    "uuid": str(uuid.UUID(int=987654)),
    "slug": "submit",
    "str": "35.05",
    "path": "987654",
    "msisdn": "+6281298765432",
}


def url_paths() -> list[tuple[str, str]]:
    """Return (namespaced URL name, a path it matches) for every URL, admin included."""
    found = []

    def walk(patterns, prefix: str, namespace: str | None) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = pattern.namespace or namespace
                if inner and namespace and pattern.namespace:
                    inner = f"{namespace}:{pattern.namespace}"
                walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
            elif isinstance(pattern, URLPattern):
                name = f"{namespace}:{pattern.name}" if namespace and pattern.name else pattern.name
                found.append((name, "/" + _filled(prefix + str(pattern.pattern))))

    walk(get_resolver().url_patterns, "", None)
    return found


def _filled(route: str) -> str:
    """Return `route` (path() converters, the router's and the admin's regular expressions) with objects filled in."""
    route = re.sub(r"\(\?P<app_label>[^)]*\)", "smsblast", route)
    route = re.sub(r"\(\?P<format>[^)]*\)\??", "", route)
    route = re.sub(r"\(\?P<\w+>[^)]*\)", PARAMETERS["int"], route)
    route = re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: PARAMETERS.get(m[2]) or PARAMETERS[m[1] or "str"], route)
    return route.replace("^", "").replace("\\Z", "").replace("$", "").replace("\\.", ".")


URLS = url_paths()
API = [(name, path) for name, path in URLS if path.startswith("/api/")]
OPERATOR_API = [(name, path) for name, path in API if path.startswith("/api/v1/operator/")]
STAFF_API = [(name, path) for name, path in API if (name, path) not in OPERATOR_API and name not in ANY_API_USER]
ADMIN = [(name, path) for name, path in URLS if path.startswith("/admin/") and name not in PUBLIC]
PAGES = [(name, path) for name, path in URLS if not path.startswith(("/api/", "/admin/")) and name not in PUBLIC]


def test_the_walk_finds_every_kind_of_url():
    names = {name for name, _ in URLS}
    assert {"campaign-detail", "operator-batch-claim", "campaigns:action", "subscribers"} <= names
    assert "admin:smsblast_subscriber_changelist" in names
    assert all("<" not in path and "(" not in path for _, path in URLS), URLS


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize(("name", "path"), API, ids=[f"{name}:{path}" for name, path in API])
def test_every_api_path_refuses_an_anonymous_caller_with_401_and_a_detail(name, path, method):
    answer = getattr(APIClient(), method)(path)
    assert answer.status_code == 401, answer.content
    assert answer["WWW-Authenticate"] == "Bearer"
    if name != "swagger-ui":  # a page for a browser
        assert b"detail" in answer.content  # JSON, or the schema's own format for the schema


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize(("name", "path"), PAGES, ids=[f"{name}:{path}" for name, path in PAGES])
def test_every_page_sends_an_anonymous_visitor_to_log_in(name, path, method):
    answer = getattr(Client(), method)(path)
    # A page that takes only a POST may say so first: that tells nothing of what exists.
    if answer.status_code != 405:
        assert answer.status_code == 302, answer.content
        assert answer["Location"].startswith("/login/?next=")


@pytest.mark.django_db
# The admin's gate is the staff flag, which no role but admin gives: one of them stands for all.
@pytest.mark.parametrize("role", [None, "approver"])
@pytest.mark.parametrize(("name", "path"), ADMIN, ids=[f"{name}:{path}" for name, path in ADMIN])
def test_every_admin_page_sends_whoever_is_not_an_admin_to_the_admins_log_in(name, path, role):
    from tests.conftest import make_user

    client = Client()
    if role:
        client.force_login(make_user(f"{role}-x", role))
    for method in ("get", "post"):
        answer = getattr(client, method)(path)
        assert answer.status_code == 302, (method, answer.content)
        assert answer["Location"].startswith("/admin/login/?next=")


@pytest.fixture
def operator_client(db):
    """An operator's token, of a user linked to a pulling operator."""
    from tests.conftest import make_user
    from tests.operators.factories import OperatorFactory

    user = make_user("telco", "operator")
    OperatorFactory(user=user, adapter="pull")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user)}")
    return client, user


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize(("name", "path"), STAFF_API, ids=[f"{name}:{path}" for name, path in STAFF_API])
def test_an_operators_token_is_refused_on_every_api_path_of_the_staff(operator_client, name, path, method):
    client, _ = operator_client
    answer = getattr(client, method)(path)
    assert answer.status_code == 403, answer.content
    assert answer.json()["detail"]


@pytest.mark.parametrize(("name", "path"), PAGES, ids=[f"{name}:{path}" for name, path in PAGES])
def test_an_operator_signed_in_is_refused_every_page(operator_client, name, path):
    _, user = operator_client
    client = Client()
    client.force_login(user)
    for method in ("get", "post"):
        answer = client.get(path) if method == "get" else client.post(path)
        assert answer.status_code in (403, 405), (method, answer.status_code)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["officer", "approver", "admin"])
@pytest.mark.parametrize(("name", "path"), OPERATOR_API, ids=[f"{name}:{path}" for name, path in OPERATOR_API])
def test_a_staff_token_is_refused_on_every_operator_path(name, path, role):
    from tests.conftest import make_user

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=make_user(f'{role}-x', role))}")
    for method in ("get", "post"):
        answer = getattr(client, method)(path)
        assert answer.status_code == 403, (method, answer.content)
        assert answer.json()["detail"]
