import pytest

pytestmark = pytest.mark.django_db


def test_the_api_answers_in_the_language_its_client_asks_for(api_client_for, officer):
    client = api_client_for(officer)
    english = client.post("/api/v1/campaigns/", {}, format="json", HTTP_ACCEPT_LANGUAGE="en")
    default = client.post("/api/v1/campaigns/", {}, format="json")
    assert english.status_code == default.status_code == 400
    assert "This field is required." in str(english.json())
    assert "Bidang ini harus diisi." in str(default.json())


def test_a_refused_item_of_a_list_is_named_in_words_in_the_detail(officer, api_client_for):
    client = api_client_for(officer)
    body = {"title": "Covid-19", "area_codes": ["35.05", ""]}
    for url in ("/api/v1/campaigns/", "/api/v1/audience/preview/"):
        response = client.post(url, body, format="json", HTTP_ACCEPT_LANGUAGE="en")
        assert response.status_code == 400
        assert response.json()["detail"] == "area_codes: 1: This field may not be blank."


def test_json_nested_too_deeply_is_a_400_with_detail(officer, api_client_for):
    client = api_client_for(officer)
    for url in ("/api/v1/sms/analyze/", "/api/v1/campaigns/"):
        response = client.post(url, data="[" * 100_000, content_type="application/json")
        assert response.status_code == 400
        assert "nested too deeply" in response.json()["detail"]


@pytest.mark.parametrize(
    "path", ["/api/v1/no-such-thing/", "/api/v1/campaigns/1/no-such-action/", "/api/v2/campaigns/"]
)
def test_an_unknown_api_path_is_a_404_with_detail(officer, api_client_for, path):
    response = api_client_for(officer).get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "/api/v1/schema/" in response.json()["detail"]


@pytest.mark.parametrize("body", [["Tetap pakai masker."], "Tetap pakai masker.", 5])
def test_an_api_body_that_is_not_a_json_object_is_a_400_saying_an_object_was_expected(officer, api_client_for, body):
    response = api_client_for(officer).post("/api/v1/sms/analyze/", body, format="json")
    assert response.status_code == 400
    assert "Expected a dictionary" in response.json()["detail"]


def test_an_unknown_api_path_is_json_also_under_debug_as_make_run_serves_it(officer, api_client_for, settings):
    # Under DEBUG Django answers a path no URL matches with its HTML debug page, not handler404.
    settings.DEBUG = True
    response = api_client_for(officer).get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "/api/v1/schema/" in response.json()["detail"]


def test_an_unknown_page_is_still_the_404_page(officer):
    from tests.conftest import client_for

    response = client_for(officer).get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 160, ("GSM7", 160, 1, 160, 0)),
        ("a" * 159 + "\u20ac", ("GSM7", 161, 2, 153, 145)),  # the euro sign takes two septets
        ("a" * 152 + "[" + "a" * 152, ("GSM7", 306, 3, 153, 152)),  # the escape pair may not straddle a part
        ("\u00e7" * 70, ("UCS2", 70, 1, 70, 0)),
        ("\u00e7" * 69 + "\U0001f489", ("UCS2", 71, 2, 67, 63)),  # an emoji is a surrogate pair
        ("\u00e7" * 66 + "\U0001f489" + "\u00e7" * 66, ("UCS2", 134, 3, 67, 66)),  # and may not straddle a part
    ],
)
def test_analyze_counts_units_and_parts_as_a_handset_sends_them(officer, api_client_for, text, expected):
    body = api_client_for(officer).post("/api/v1/sms/analyze/", {"text": text}, format="json").json()

    assert (body["encoding"], body["units"], body["segments"], body["per_segment"], body["remaining"]) == expected
    assert "".join(body["parts"]) == text


def test_analyze_names_what_turns_a_text_ucs2_and_offers_the_gsm7_text(officer, api_client_for):
    text = "Vaksin \u201cbooster\u201d\u00a0gratis \u2013 Sabtu\u2026 Info: Dinkes\u2019s"
    body = api_client_for(officer).post("/api/v1/sms/analyze/", {"text": text}, format="json").json()

    assert body["encoding"] == "UCS2"
    assert [(item["char"], item["position"], item["name"], item["replacement"]) for item in body["non_gsm"]] == [
        ("\u201c", 7, "LEFT DOUBLE QUOTATION MARK", '"'),
        ("\u201d", 15, "RIGHT DOUBLE QUOTATION MARK", '"'),
        ("\u00a0", 16, "NO-BREAK SPACE", " "),
        ("\u2013", 24, "EN DASH", "-"),
        ("\u2026", 31, "HORIZONTAL ELLIPSIS", "..."),
        ("\u2019", 45, "RIGHT SINGLE QUOTATION MARK", "'"),
    ]
    assert body["suggestion"] == 'Vaksin "booster" gratis - Sabtu... Info: Dinkes\'s'
    assert (body["suggestion_encoding"], body["suggestion_segments"]) == ("GSM7", 1)


def test_analyze_composes_a_decomposed_accent_into_the_gsm7_letter(officer, api_client_for):
    text = "Posyandu Cafe\u0301 Melati"
    body = api_client_for(officer).post("/api/v1/sms/analyze/", {"text": text}, format="json").json()

    assert body["encoding"] == "UCS2"
    assert body["non_gsm"] == [
        {"char": "\u0301", "position": 13, "start": 12, "name": "COMBINING ACUTE ACCENT", "replacement": "\u00e9"}
    ]
    assert (body["suggestion"], body["suggestion_encoding"]) == ("Posyandu Caf\u00e9 Melati", "GSM7")
