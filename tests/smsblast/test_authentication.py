"""API tokens: a malformed Authorization header is refused with 401, never a 500."""

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("header", ["B\xe9arer abc", "\xff\xfe abc", "\xe9"])
def test_an_authorization_scheme_that_is_not_utf8_is_ignored_not_a_server_error(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/campaigns/")
    assert response.status_code in (401, 403)
    assert "detail" in response.json()


def test_a_token_that_is_not_utf8_is_refused_with_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer \xe9\xe9")
    response = client.get("/api/v1/campaigns/")
    assert response.status_code == 401
