import pytest

pytestmark = pytest.mark.django_db


def test_the_api_answers_in_the_language_its_client_asks_for(api_client_for, officer):
    client = api_client_for(officer)
    english = client.post("/api/v1/campaigns/", {}, format="json", HTTP_ACCEPT_LANGUAGE="en")
    default = client.post("/api/v1/campaigns/", {}, format="json")
    assert english.status_code == default.status_code == 400
    assert "This field is required." in str(english.json())
    assert "Bidang ini harus diisi." in str(default.json())
