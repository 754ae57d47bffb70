"""Campaign REST API: the role × action matrix, the approval journey, and 4xx answers that carry `detail`."""

import pytest
from rest_framework.test import APIClient

from campaigns.models import Campaign
from campaigns.services import campaign_content_hash
from smsblast.models import Area, Role
from tests.campaigns.factories import CampaignFactory
from tests.operators.factories import OperatorFactory
from tests.smsblast.factories import AreaFactory, SubscriberFactory, UserFactory, area_tree

pytestmark = pytest.mark.django_db

Status = Campaign.Status
DRAFT_BODY = {
    "title": "Covid-19 Blitar",
    "text": "Tetap pakai masker dan jaga jarak.",
    "sender": "PEMKAB",
    "mode": "targeted",
    "area_codes": ["35.05"],
    "priority": "normal",
}


@pytest.fixture
def areas():
    return area_tree()


@pytest.fixture
def author(areas):
    return UserFactory(username="author", role=Role.OFFICER)


def client_for(role: str | None, api_client_for, author):
    """Return a client for the role: the author for officer, a fresh user otherwise, or anonymous."""
    if role is None:
        return APIClient()
    if role == Role.OFFICER:
        return api_client_for(author)
    return api_client_for(UserFactory(role=role))


# (action, campaign state needed, expected status per role: officer (the author), approver, operator, admin, anon)
MATRIX = {
    "list": (None, [200, 200, 403, 200, 401]),
    "create": (None, [201, 403, 403, 201, 401]),
    "retrieve": (Status.DRAFT, [200, 200, 403, 200, 401]),
    "update": (Status.DRAFT, [200, 403, 403, 200, 401]),
    "submit": (Status.DRAFT, [200, 403, 403, 200, 401]),
    "approve": (Status.PENDING_APPROVAL, [403, 200, 403, 403, 401]),
    "reject": (Status.PENDING_APPROVAL, [403, 200, 403, 403, 401]),
    "cancel": (Status.DRAFT, [200, 200, 403, 200, 401]),
    "analyze": (None, [200, 200, 403, 200, 401]),
}
ROLES = [Role.OFFICER, Role.APPROVER, Role.OPERATOR, Role.ADMIN, None]
MATRIX_CASES = [(action, role, expected[i]) for action, (_, expected) in MATRIX.items() for i, role in enumerate(ROLES)]


def call(client, action: str, campaign: Campaign | None):
    url = f"/api/v1/campaigns/{campaign.pk}/" if campaign else "/api/v1/campaigns/"
    if action == "list":
        return client.get("/api/v1/campaigns/")
    if action == "create":
        return client.post("/api/v1/campaigns/", DRAFT_BODY, format="json")
    if action == "retrieve":
        return client.get(url)
    if action == "update":
        return client.patch(url, {"title": "Renamed"}, format="json")
    if action == "approve":
        return client.post(f"{url}approve/", {"content_hash": campaign_content_hash(campaign)}, format="json")
    if action == "reject":
        return client.post(f"{url}reject/", {"reason": "Tambahkan hotline."}, format="json")
    if action in {"submit", "cancel"}:
        return client.post(f"{url}{action}/", {}, format="json")
    if action == "analyze":
        return client.post("/api/v1/sms/analyze/", {"text": "Halo"}, format="json")
    raise AssertionError(action)


@pytest.mark.parametrize(
    ("action", "role", "expected"),
    MATRIX_CASES,
    ids=[f"{action}-{role or 'anonymous'}-{expected}" for action, role, expected in MATRIX_CASES],
)
def test_role_action_matrix(action, role, expected, author, api_client_for):
    state = MATRIX[action][0]
    campaign = CampaignFactory(author=author, status=state) if state else None
    response = call(client_for(role, api_client_for, author), action, campaign)
    assert response.status_code == expected, response.content
    if expected >= 400:
        assert response.json()["detail"]


def test_another_officer_sees_but_cannot_edit_submit_or_cancel(author, officer2, api_client_for):
    campaign = CampaignFactory(author=author)
    client = api_client_for(officer2)
    assert client.get(f"/api/v1/campaigns/{campaign.pk}/").status_code == 200
    assert [row["id"] for row in client.get("/api/v1/campaigns/").json()["results"]] == [campaign.pk]
    for response in (
        client.patch(f"/api/v1/campaigns/{campaign.pk}/", {"title": "x"}, format="json"),
        client.post(f"/api/v1/campaigns/{campaign.pk}/submit/"),
        client.post(f"/api/v1/campaigns/{campaign.pk}/cancel/"),
    ):
        assert response.status_code == 403
        assert "author" in response.json()["detail"]


def test_figures_a_client_sends_with_a_draft_are_not_what_its_pages_show(author, api_client_for):
    telkomsel = OperatorFactory(slug="telkomsel", name="Telkomsel", tariff_per_segment=300)
    SubscriberFactory.create_batch(3, area_id="35.05.01", operator=telkomsel)
    officer_client = api_client_for(author)
    claimed = {"segments": 1, "encoding": "GSM7", "cost_estimate": 0, "analysis": {"segments": 1}}

    created = officer_client.post(
        "/api/v1/campaigns/", {**DRAFT_BODY, "text": "\u00e7" * 69 + "\U0001f637", **claimed}, format="json"
    )
    patched = officer_client.patch(
        f"/api/v1/campaigns/{created.json()['id']}/", {"text": "x" * 161, **claimed}, format="json"
    )
    audience = officer_client.get(f"/api/v1/campaigns/{created.json()['id']}/audience/")

    assert (created.status_code, patched.status_code) == (201, 200)
    assert (created.json()["analysis"]["encoding"], created.json()["analysis"]["segments"]) == ("UCS2", 2)
    assert created.json()["cost_estimate"] == 2 * 3 * 300
    assert (patched.json()["analysis"]["encoding"], patched.json()["analysis"]["segments"]) == ("GSM7", 2)
    assert patched.json()["cost_estimate"] == 2 * 3 * 300
    assert (audience.json()["segments_per_message"], audience.json()["cost"]) == (2, 2 * 3 * 300)


def test_officer_drafts_submits_and_approver_approves_through_the_api(author, api_client_for):
    telkomsel = OperatorFactory(slug="telkomsel", name="Telkomsel", tariff_per_segment=300)
    indosat = OperatorFactory(slug="indosat", name="Indosat", tariff_per_segment=200)
    SubscriberFactory.create_batch(3, area_id="35.05.01", operator=telkomsel)
    SubscriberFactory(area_id="35.05.02", operator=indosat)
    SubscriberFactory(area_id="35.05.02", operator=indosat, opted_out_at="2021-07-01T00:00:00Z")
    officer_client = api_client_for(author)
    approver_client = api_client_for(UserFactory(role=Role.APPROVER))

    created = officer_client.post(
        "/api/v1/campaigns/", {**DRAFT_BODY, "text": "Pakai masker “sekarang”."}, format="json"
    )
    assert created.status_code == 201, created.content
    detail = created.json()
    campaign_id = detail["id"]
    assert detail["status"] == "draft"
    assert detail["analysis"]["encoding"] == "UCS2"
    assert detail["analysis"]["suggestion"] == 'Pakai masker "sekarang".'
    assert detail["audience"]["total"] == 4
    assert detail["audience"]["opted_out"] == 1
    assert {row["slug"]: row["recipients"] for row in detail["audience"]["by_operator"]} == {
        "telkomsel": 3,
        "indosat": 1,
    }
    assert detail["cost_estimate"] == 3 * 300 + 1 * 200
    assert detail["allowed_actions"] == ["update", "submit", "cancel"]

    patched = officer_client.patch(
        f"/api/v1/campaigns/{campaign_id}/", {"text": detail["analysis"]["suggestion"]}, format="json"
    )
    assert patched.json()["analysis"]["encoding"] == "GSM7"
    assert officer_client.post(f"/api/v1/campaigns/{campaign_id}/submit/").json()["status"] == "pending_approval"

    reviewed = approver_client.get(f"/api/v1/campaigns/{campaign_id}/").json()
    assert reviewed["allowed_actions"] == ["approve", "reject", "cancel"]
    approved = approver_client.post(
        f"/api/v1/campaigns/{campaign_id}/approve/", {"content_hash": reviewed["content_hash"]}, format="json"
    )
    assert approved.status_code == 200, approved.content
    body = approved.json()
    assert body["status"] == "approved"
    assert body["approval"]["decision"] == "approved"
    assert body["approval"]["valid"] is True
    assert body["approval"]["content_hash"] == reviewed["content_hash"]
    assert [(e["action"], e["from"], e["to"]) for e in body["history"]] == [
        ("campaign.create", "", "draft"),
        ("campaign.update", "draft", "draft"),
        ("campaign.submit", "draft", "pending_approval"),
        ("campaign.approve", "pending_approval", "approved"),
    ]
    assert body["history"][0]["actor"] == "author"
    assert body["history"][0]["at"]


def test_editing_an_approved_campaign_through_the_api_voids_the_approval(author, api_client_for):
    approver = UserFactory(role=Role.APPROVER)
    campaign = CampaignFactory(author=author, status=Status.PENDING_APPROVAL)
    api_client_for(approver).post(
        f"/api/v1/campaigns/{campaign.pk}/approve/", {"content_hash": campaign_content_hash(campaign)}, format="json"
    )
    response = api_client_for(author).patch(
        f"/api/v1/campaigns/{campaign.pk}/", {"text": "Teks yang diubah."}, format="json"
    )
    body = response.json()
    assert body["status"] == "draft"
    assert body["approval"]["voided_at"] is not None
    assert body["approval"]["valid"] is False


def test_an_edit_made_on_an_older_version_answers_409_and_saves_nothing(author, api_client_for):
    campaign = CampaignFactory(author=author, status=Status.DRAFT, text="Versi pertama.")
    client = api_client_for(author)
    opened = client.get(f"/api/v1/campaigns/{campaign.pk}/").json()["content_hash"]
    client.patch(f"/api/v1/campaigns/{campaign.pk}/", {"text": "Versi kedua."}, format="json")

    stale = client.patch(
        f"/api/v1/campaigns/{campaign.pk}/", {"text": "Versi ketiga.", "content_hash": opened}, format="json"
    )

    assert stale.status_code == 409
    assert "changed after you opened it" in stale.json()["detail"]
    campaign.refresh_from_db()
    assert campaign.text == "Versi kedua."
    current = client.get(f"/api/v1/campaigns/{campaign.pk}/").json()["content_hash"]
    fresh = client.patch(
        f"/api/v1/campaigns/{campaign.pk}/", {"text": "Versi ketiga.", "content_hash": current}, format="json"
    )
    assert fresh.status_code == 200
    assert fresh.json()["text"] == "Versi ketiga."
    assert "content_hash" in fresh.json()  # the detail's own hash, read back for the next edit


def test_an_edit_content_hash_that_is_not_a_hash_answers_400(author, api_client_for):
    campaign = CampaignFactory(author=author, status=Status.DRAFT)
    response = api_client_for(author).patch(
        f"/api/v1/campaigns/{campaign.pk}/", {"text": "Baru.", "content_hash": "abc"}, format="json"
    )
    assert response.status_code == 400
    assert "content_hash" in response.json()["errors"]


def test_stale_hash_answers_409_with_detail(author, api_client_for):
    campaign = CampaignFactory(author=author, status=Status.PENDING_APPROVAL)
    response = api_client_for(UserFactory(role=Role.APPROVER)).post(
        f"/api/v1/campaigns/{campaign.pk}/approve/", {"content_hash": "0" * 64}, format="json"
    )
    assert response.status_code == 409
    assert "changed since you reviewed it" in response.json()["detail"]
    campaign.refresh_from_db()
    assert campaign.status == Status.PENDING_APPROVAL


def test_author_who_is_an_approver_cannot_approve_through_the_api(author, api_client_for):
    campaign = CampaignFactory(author=author, status=Status.PENDING_APPROVAL)
    from smsblast.roles import user_role_set

    user_role_set(user=author, role=Role.APPROVER)
    response = api_client_for(author).post(
        f"/api/v1/campaigns/{campaign.pk}/approve/", {"content_hash": campaign_content_hash(campaign)}, format="json"
    )
    assert response.status_code == 403
    assert "another approver" in response.json()["detail"]


def test_approving_a_pending_text_with_a_direction_override_is_refused_with_400_and_nothing_changes(
    author, api_client_for
):
    # Submitted before submission refused such characters, or pending through any other way: approving it would
    # approve a text the approver's screen and the handsets read differently.
    campaign = CampaignFactory(author=author, status=Status.PENDING_APPROVAL, text="Transfer Rp 1\u202e0001 ke dinas")
    response = api_client_for(UserFactory(role=Role.APPROVER)).post(
        f"/api/v1/campaigns/{campaign.pk}/approve/", {"content_hash": campaign_content_hash(campaign)}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert "U+202E RIGHT-TO-LEFT OVERRIDE at character 14" in body["errors"]["text"]
    assert "Reject it" in body["detail"]
    campaign.refresh_from_db()
    assert campaign.status == Status.PENDING_APPROVAL
    assert not campaign.approvals.exists()


def test_approving_a_pending_campaign_whose_instruction_holds_a_direction_override_is_refused(author, api_client_for):
    campaign = CampaignFactory(author=author, status=Status.PENDING_APPROVAL, instruction="Hubungi \u202e112")
    response = api_client_for(UserFactory(role=Role.APPROVER)).post(
        f"/api/v1/campaigns/{campaign.pk}/approve/", {"content_hash": campaign_content_hash(campaign)}, format="json"
    )
    assert response.status_code == 400
    assert "U+202E RIGHT-TO-LEFT OVERRIDE at character 9" in response.json()["errors"]["instruction"]
    campaign.refresh_from_db()
    assert campaign.status == Status.PENDING_APPROVAL
    assert not campaign.approvals.exists()


@pytest.mark.parametrize(
    ("action", "state"),
    [
        ("submit", Status.PENDING_APPROVAL),
        ("approve", Status.DRAFT),
        ("reject", Status.APPROVED),
        ("cancel", Status.COMPLETED),
        ("update", Status.PENDING_APPROVAL),
        ("update", Status.SENDING),
    ],
)
def test_wrong_state_answers_409_with_detail(action, state, author, api_client_for):
    campaign = CampaignFactory(author=author, status=state)
    role_user = UserFactory(role=Role.APPROVER) if action in {"approve", "reject"} else author
    response = call(api_client_for(role_user), action, campaign)
    assert response.status_code == 409
    assert state.replace("_", " ") in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body", "needle"),
    [
        ("post", "/api/v1/campaigns/", "{not json", "JSON"),
        ("post", "/api/v1/campaigns/", [1, 2], "dictionary"),
        ("post", "/api/v1/campaigns/", {**DRAFT_BODY, "area_codes": "35.05"}, "area_codes"),
        ("post", "/api/v1/campaigns/", {**DRAFT_BODY, "area_codes": ["99.99"]}, "Unknown area codes: 99.99"),
        ("post", "/api/v1/campaigns/", {**DRAFT_BODY, "sender": "PEMKAB-BLITAR-JTM"}, "sender"),
        ("post", "/api/v1/campaigns/", {**DRAFT_BODY, "title": 42, "mode": "fax"}, "mode"),
        ("post", "/api/v1/campaigns/", {**DRAFT_BODY, "priority": ["urgent"]}, "priority"),
        ("post", "/api/v1/campaigns/", {**DRAFT_BODY, "polygon": "Blitar"}, "polygon"),
        ("post", "/api/v1/campaigns/", {**DRAFT_BODY, "audience_filter": []}, "audience_filter"),
        ("post", "/api/v1/campaigns/", {**DRAFT_BODY, "validity_minutes": "soon"}, "validity_minutes"),
        ("post", "/api/v1/campaigns/", {"text": "no title"}, "title"),
        ("get", "/api/v1/campaigns/?status=bogus", None, "status"),
        ("post", "/api/v1/sms/analyze/", {"text": ""}, "empty"),
        ("post", "/api/v1/sms/analyze/", {"text": "x" * 1600}, "segments"),
        ("post", "/api/v1/sms/analyze/", {"text": 12}, "text"),
        ("post", "/api/v1/sms/analyze/", {}, "text"),
        ("post", "/api/v1/sms/analyze/", "{oops", "JSON"),
    ],
)
def test_bad_input_answers_400_with_detail(method, path, body, needle, author, api_client_for):
    client = api_client_for(author)
    if isinstance(body, str):
        response = client.generic(method.upper(), path, body, content_type="application/json")
    else:
        response = getattr(client, method)(path, body, format="json")
    assert response.status_code == 400, response.content
    assert needle in response.json()["detail"]
    assert not Campaign.objects.exists()


@pytest.mark.parametrize(
    ("schedule", "needle"),
    [
        pytest.param({"kind": "daily", "time": "25:00"}, "'25:00' is not a time", id="bad-time"),
        pytest.param({"kind": "hourly"}, "kind must be one of", id="unknown-kind"),
        pytest.param({"kind": "daily", "time": "13:00", "weekday_times": {"7": "10:00"}}, "weekday", id="weekday-7"),
        pytest.param({"kind": "daily", "time": "13:00", "until": "2021-12-31"}, "before today", id="until-passed"),
    ],
)
def test_an_invalid_schedule_answers_400_on_create_and_on_edit(schedule, needle, author, api_client_for):
    client = api_client_for(author)
    response = client.post("/api/v1/campaigns/", {**DRAFT_BODY, "schedule": schedule}, format="json")
    assert response.status_code == 400, response.content
    assert needle in response.json()["detail"]
    assert not Campaign.objects.exists()
    created = client.post("/api/v1/campaigns/", DRAFT_BODY, format="json").json()
    response = client.patch(f"/api/v1/campaigns/{created['id']}/", {"schedule": schedule}, format="json")
    assert response.status_code == 400, response.content
    assert needle in response.json()["detail"]
    assert Campaign.objects.get().schedule == {}


@pytest.mark.parametrize(
    ("action", "body", "needle"),
    [
        ("approve", {}, "content_hash"),
        ("approve", {"content_hash": 5}, "content_hash"),
        ("approve", {"content_hash": "abc"}, "content_hash"),
        ("reject", {}, "reason"),
        ("reject", {"reason": "   "}, "reason"),
    ],
)
def test_bad_decision_input_answers_400_and_leaves_the_campaign_pending(action, body, needle, author, api_client_for):
    campaign = CampaignFactory(author=author, status=Status.PENDING_APPROVAL)
    response = api_client_for(UserFactory(role=Role.APPROVER)).post(
        f"/api/v1/campaigns/{campaign.pk}/{action}/", body, format="json"
    )
    assert response.status_code == 400
    assert needle in response.json()["detail"]
    campaign.refresh_from_db()
    assert campaign.status == Status.PENDING_APPROVAL


def test_submitting_an_incomplete_draft_answers_400_as_the_schema_documents(author, api_client_for):
    from tests.schema_check import answer_mismatches

    campaign = CampaignFactory(author=author, text="", area_codes=[])
    client = api_client_for(author)
    response = client.post(f"/api/v1/campaigns/{campaign.pk}/submit/")
    assert response.status_code == 400
    assert response.json()["errors"].keys() == {"text", "area_codes"}
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/submit/", "post", response) == []


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("polygon", {"type": "Polygon", "coordinates": [[112.1, -8.1]]}, "Unreadable Polygon coordinates"),
        ("polygon", {"type": "Polygon", "coordinates": [[[112.1, -8.1], [112.1, -8.1], [112.1, -8.1]]]}, "polygon"),
        ("audience_filter", {"language": ["jv"]}, "Unknown audience filters: language"),
        ("audience_filter", {"languages": "jv"}, "languages must be a list"),
        ("audience_filter", {"operators": [7]}, "operators must be a list"),
        ("audience_filter", {"languages": ["jv\x00"]}, "NUL"),
        ("starts_at", "0001-01-01T00:00:00+07:00", "starts_at:"),
        # Without an offset the server's zone would be guessed, not the area's: WIB for a window meant in WIT.
        ("starts_at", "2030-11-25T10:00:00", "offset"),
        ("ends_at", "2030-11-25T11:00", "offset"),
    ],
)
def test_a_bad_polygon_audience_or_time_is_refused_and_nothing_is_saved(author, api_client_for, field, value, needle):
    client = api_client_for(author)
    created = client.post("/api/v1/campaigns/", {**DRAFT_BODY, field: value}, format="json")
    assert created.status_code == 400, created.content
    assert needle in created.json()["detail"]
    assert not Campaign.objects.exists()

    campaign = CampaignFactory(author=author)
    edited = client.patch(f"/api/v1/campaigns/{campaign.pk}/", {field: value}, format="json")
    assert edited.status_code == 400, edited.content
    campaign.refresh_from_db()
    assert (campaign.polygon, campaign.audience) == (None, {})
    assert client.get(f"/api/v1/campaigns/{campaign.pk}/").status_code == 200


def test_an_audience_filter_naming_an_operator_that_does_not_exist_is_refused_naming_it(author, api_client_for):
    """A misspelt operator (or its name for its slug) would filter out every subscriber: the run would reach nobody."""
    OperatorFactory(name="Telkomsel", slug="telkomsel")
    client = api_client_for(author)
    for audience, unknown in (
        ({"operators": ["telkomse"]}, "telkomse"),
        ({"operators": ["telkomsel", "Telkomsel"]}, "Telkomsel"),
    ):
        created = client.post("/api/v1/campaigns/", {**DRAFT_BODY, "audience_filter": audience}, format="json")
        assert created.status_code == 400, created.content
        assert created.json()["errors"]["audience"].startswith(f"Unknown operators: {unknown};")
    assert not Campaign.objects.exists()

    campaign = CampaignFactory(author=author)
    edited = client.patch(
        f"/api/v1/campaigns/{campaign.pk}/", {"audience_filter": {"operators": ["xl"]}}, format="json"
    )
    assert edited.status_code == 400
    campaign.refresh_from_db()
    assert campaign.audience == {}
    kept = client.patch(
        f"/api/v1/campaigns/{campaign.pk}/", {"audience_filter": {"operators": ["telkomsel"]}}, format="json"
    )
    assert kept.status_code == 200
    assert kept.json()["audience_filter"] == {"operators": ["telkomsel"]}


def test_unknown_campaign_answers_404_and_put_and_delete_are_not_offered(author, api_client_for):
    client = api_client_for(author)
    campaign = CampaignFactory(author=author)
    assert client.get("/api/v1/campaigns/999999/").status_code == 404
    assert client.get("/api/v1/campaigns/abc/").status_code == 404
    assert client.put(f"/api/v1/campaigns/{campaign.pk}/", DRAFT_BODY, format="json").status_code == 405
    assert client.delete(f"/api/v1/campaigns/{campaign.pk}/").status_code == 405


def test_list_filters_by_status_mode_and_words(author, api_client_for):
    flu = CampaignFactory(author=author, title="Vaksinasi lansia", status=Status.APPROVED)
    CampaignFactory(author=author, title="Banjir Wlingi", mode="area_broadcast")
    client = api_client_for(author)

    def ids(query):
        return [row["id"] for row in client.get(f"/api/v1/campaigns/?{query}").json()["results"]]

    assert ids("status=approved") == [flu.pk]
    assert ids("q=vaksinasi") == [flu.pk]
    assert ids("mode=targeted&q=banjir") == []
    assert len(ids("")) == 2


@pytest.mark.parametrize("author_id", ["abc", "\u00b2", "99999999999999999999"])
def test_an_author_filter_that_is_no_user_id_is_a_400(author, api_client_for, author_id):
    response = api_client_for(author).get("/api/v1/campaigns/", {"author": author_id})
    assert response.status_code == 400
    assert response.json()["detail"] == "author must be a user id."


def test_a_search_of_more_than_a_hundred_characters_is_a_400_not_a_server_error(author, api_client_for):
    client = api_client_for(author)
    assert client.get("/api/v1/campaigns/", {"q": " ".join(["a"] * 50)}).status_code == 200

    response = client.get("/api/v1/campaigns/", {"q": " ".join(["a"] * 1100)})

    assert response.status_code == 400
    assert "at most 100 characters" in response.json()["detail"]


def test_a_campaign_over_five_hundred_areas_is_created_with_its_audience_not_a_server_error(author, api_client_for):
    codes = [f"35.05.01.{2001 + n}" for n in range(500)]
    Area.objects.bulk_create([Area(code=code, name=code, search_name=code, level="desa") for code in codes])

    response = api_client_for(author).post("/api/v1/campaigns/", {**DRAFT_BODY, "area_codes": codes}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["audience"]["total"] == 0


def test_analyze_returns_encoding_segments_and_suggestion(author, api_client_for):
    response = api_client_for(author).post("/api/v1/sms/analyze/", {"text": "Jaga jarak – pakai masker"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["encoding"], body["segments"], body["per_segment"]) == ("UCS2", 1, 70)
    assert body["non_gsm"][0]["char"] == "–"
    assert body["suggestion"] == "Jaga jarak - pakai masker"


def test_analyze_warns_of_a_sender_longer_than_handsets_show_and_refuses_one_over_16(author, api_client_for):
    client = api_client_for(author)
    long = client.post("/api/v1/sms/analyze/", {"text": "Halo", "sender": "PEMKAB-BLITAR"}, format="json")
    assert long.status_code == 200
    assert "at most 11 characters" in long.json()["warnings"]["sender"]
    assert long.json()["segments"] == 1
    for body in ({"text": "Halo", "sender": "PEMKAB-BLTR"}, {"text": "Halo"}):
        assert client.post("/api/v1/sms/analyze/", body, format="json").json()["warnings"] == {}
    refused = client.post("/api/v1/sms/analyze/", {"text": "Halo", "sender": "PEMKAB-BLITAR-JTM"}, format="json")
    assert refused.status_code == 400
    assert "sender" in refused.json()["detail"]


@pytest.mark.parametrize("sender", ["PEMKAB_BLITAR", "112", "DINKES/BLT"])
def test_analyze_refuses_a_sender_id_that_submission_would_refuse_saying_the_rule(author, api_client_for, sender):
    client = api_client_for(author)
    refused = client.post("/api/v1/sms/analyze/", {"text": "Halo", "sender": sender}, format="json")
    assert refused.status_code == 400
    assert "letters, digits, spaces, dots or hyphens with at least one letter" in refused.json()["errors"]["sender"]

    campaign = client.post("/api/v1/campaigns/", {**DRAFT_BODY, "sender": sender}, format="json").json()
    submitted = client.post(f"/api/v1/campaigns/{campaign['id']}/submit/", format="json")
    assert submitted.status_code == 400
    assert "sender" in submitted.json()["errors"]


def test_session_login_works_for_the_api(author, client):
    client.force_login(author)
    assert client.get("/api/v1/campaigns/").status_code == 200


def test_schema_lists_the_campaign_actions(author, api_client_for):
    schema = api_client_for(author).get("/api/v1/schema/", {"format": "json"}).json()
    for path in ("/api/v1/campaigns/", "/api/v1/campaigns/{id}/approve/", "/api/v1/sms/analyze/"):
        assert path in schema["paths"]


def test_the_detail_shows_the_approver_every_field_the_content_hash_covers(author, api_client_for):
    from campaigns.services import CONTENT_FIELDS

    campaign = CampaignFactory(
        author=author,
        status=Status.PENDING_APPROVAL,
        instruction="Tetap di rumah bila sakit.",
        cap_event="Covid-19",
        cap_urgency="Immediate",
        cap_severity="Severe",
        cap_certainty="Observed",
    )
    detail = api_client_for(UserFactory(role=Role.APPROVER)).get(f"/api/v1/campaigns/{campaign.pk}/").json()
    shown = {"audience_filter" if name == "audience" else name for name in CONTENT_FIELDS}
    assert shown <= set(detail), sorted(shown - set(detail))
    assert (detail["instruction"], detail["cap_category"], detail["cap_urgency"]) == (
        "Tetap di rumah bila sakit.",
        "Health",
        "Immediate",
    )


def test_the_detail_is_documented_field_by_field_with_its_analysis_audience_approval_and_history(
    author, api_client_for
):
    from tests.operators.area_scripted import broadcast_campaign
    from tests.schema_check import answer_mismatches

    SubscriberFactory(area_id="35.05.01", operator=OperatorFactory(slug="telkomsel"))
    officer_client, approver_client = api_client_for(author), api_client_for(UserFactory(role=Role.APPROVER))
    schema = officer_client.get("/api/v1/schema/", {"format": "json"}).json()
    campaign_id = officer_client.post("/api/v1/campaigns/", DRAFT_BODY, format="json").json()["id"]
    officer_client.post(f"/api/v1/campaigns/{campaign_id}/submit/")
    content_hash = approver_client.get(f"/api/v1/campaigns/{campaign_id}/").json()["content_hash"]
    approved = approver_client.post(
        f"/api/v1/campaigns/{campaign_id}/approve/", {"content_hash": content_hash}, format="json"
    )
    assert approved.json()["approval"] and approved.json()["history"]
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/approve/", "post", approved) == []
    blank = officer_client.post("/api/v1/campaigns/", {"title": "Belum ada teks"}, format="json")
    assert "error" in blank.json()["analysis"]
    assert answer_mismatches(schema, "/api/v1/campaigns/", "post", blank) == []
    broadcast = officer_client.get(f"/api/v1/campaigns/{broadcast_campaign().pk}/")
    assert broadcast.json()["broadcast"]
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/", "get", broadcast) == []
    detail = schema["components"]["schemas"]["CampaignDetail"]["properties"]
    for name in ("analysis", "audience", "approval", "history", "broadcast"):
        assert detail[name].get("type") != "object" or "properties" in detail[name], name


def test_a_target_outside_the_callers_jurisdiction_answers_400_naming_the_area(areas, api_client_for):
    Area.objects.create(code="33", name="Jawa Tengah", search_name="jawa tengah", level="provinsi")
    Area.objects.create(code="33.16", name="Kabupaten Blora", search_name="kabupaten blora", level="kabupaten")
    blitar = api_client_for(UserFactory(role=Role.OFFICER, jurisdiction_id="35.05"))

    response = blitar.post("/api/v1/campaigns/", {**DRAFT_BODY, "area_codes": ["33.16"]}, format="json")
    assert response.status_code == 400
    assert "33.16 Kabupaten Blora" in response.json()["detail"]
    assert "area_codes" in response.json()["errors"]
    assert not Campaign.objects.exists()

    created = blitar.post("/api/v1/campaigns/", DRAFT_BODY, format="json")
    assert created.status_code == 201
    edited = blitar.patch(f"/api/v1/campaigns/{created.json()['id']}/", {"area_codes": ["33.16"]}, format="json")
    assert edited.status_code == 400
    assert "33.16 Kabupaten Blora" in edited.json()["detail"]
    assert Campaign.objects.get().area_codes == ["35.05"]


def test_the_design_example_sender_of_13_characters_is_accepted_with_a_warning_documented_in_the_schema(
    author, api_client_for
):
    from tests.schema_check import answer_mismatches

    client = api_client_for(author)
    created = client.post("/api/v1/campaigns/", {**DRAFT_BODY, "sender": "PEMKAB-BLITAR"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["sender"] == "PEMKAB-BLITAR"
    warning = created.json()["warnings"]["sender"]
    assert "at most 11 characters" in warning and "operator may shorten it" in warning
    submitted = client.post(f"/api/v1/campaigns/{created.json()['id']}/submit/")
    assert submitted.status_code == 200, submitted.content
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    assert answer_mismatches(schema, "/api/v1/campaigns/", "post", created) == []
    assert "11 characters" in schema["components"]["schemas"]["CampaignDetail"]["properties"]["warnings"]["description"]
    short = client.post("/api/v1/campaigns/", DRAFT_BODY, format="json")
    assert short.json()["warnings"] == {}


def test_a_sender_of_17_characters_is_refused_with_the_limit(author, api_client_for):
    response = api_client_for(author).post(
        "/api/v1/campaigns/", {**DRAFT_BODY, "sender": "PEMKAB-BLITAR-JTM"}, format="json"
    )
    assert response.status_code == 400
    assert "sender" in response.json()["errors"]
    assert "16" in response.json()["detail"]
    assert not Campaign.objects.exists()


def test_an_area_broadcast_detail_gives_no_sms_cost_and_its_audience_endpoint_refuses_saying_why(
    author, api_client_for
):
    from tests.operators.area_scripted import broadcast_campaign
    from tests.schema_check import answer_mismatches

    SubscriberFactory.create_batch(2, area_id="35.05.01", operator=OperatorFactory(slug="telkomsel"))
    client = api_client_for(author)
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    broadcast = broadcast_campaign(author=author)
    detail = client.get(f"/api/v1/campaigns/{broadcast.pk}/")
    assert (detail.json()["audience"], detail.json()["cost_estimate"]) == (None, None)
    assert detail.json()["broadcast"]["estimate"]
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/", "get", detail) == []
    documented = schema["components"]["schemas"]["CampaignDetail"]["properties"]
    assert "area broadcast" in documented["audience"]["description"]
    assert "area broadcast" in documented["cost_estimate"]["description"]

    refused = client.get(f"/api/v1/campaigns/{broadcast.pk}/audience/")
    assert refused.status_code == 409
    assert "area broadcast" in refused.json()["detail"]
    assert "no subscriber audience or SMS cost" in refused.json()["detail"]
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/audience/", "get", refused) == []

    targeted = CampaignFactory(author=author, area_codes=["35.05"])
    assert client.get(f"/api/v1/campaigns/{targeted.pk}/").json()["audience"]["total"] == 2
    assert client.get(f"/api/v1/campaigns/{targeted.pk}/audience/").json()["recipients"] == 2


def test_the_detail_of_a_recurring_campaign_carries_its_latest_history_and_counts_the_rest(author, api_client_for):
    from campaigns.selectors import HISTORY_SHOWN
    from smsblast.audit import audit_record
    from tests.schema_check import answer_mismatches

    campaign = CampaignFactory(author=author, status=Status.SCHEDULED)
    for day in range(HISTORY_SHOWN):
        audit_record(actor=None, action="campaign.run", obj=campaign, details={"day": day})
        audit_record(actor=None, action="campaign.schedule", obj=campaign, details={"day": day})
    audit_record(actor=author, action="campaign.pause", obj=campaign, from_state="sending", to_state="paused")
    client = api_client_for(author)
    answer = client.get(f"/api/v1/campaigns/{campaign.pk}/")
    body = answer.json()
    assert len(body["history"]) == HISTORY_SHOWN
    assert body["history_total"] == 2 * HISTORY_SHOWN + 1
    # Oldest first as before, ending with the latest event.
    assert body["history"][-1]["action"] == "campaign.pause"
    assert body["history"][0]["details"] == {"day": HISTORY_SHOWN // 2}
    assert [e["at"] for e in body["history"]] == sorted(e["at"] for e in body["history"])
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/", "get", answer) == []
    assert "history_total" in schema["components"]["schemas"]["CampaignDetail"]["required"]


def test_the_detail_of_a_new_campaign_carries_its_whole_history_and_its_count(author, api_client_for):
    client = api_client_for(author)
    campaign_id = client.post("/api/v1/campaigns/", DRAFT_BODY, format="json").json()["id"]
    body = client.get(f"/api/v1/campaigns/{campaign_id}/").json()
    assert [e["action"] for e in body["history"]] == ["campaign.create"]
    assert body["history_total"] == 1


@pytest.mark.parametrize("language", ["id", "en"])
def test_the_api_answers_stored_states_modes_and_priorities_not_their_labels(author, api_client_for, language):
    officer_client = api_client_for(author)
    campaign_id = officer_client.post("/api/v1/campaigns/", DRAFT_BODY, format="json").json()["id"]
    officer_client.post(f"/api/v1/campaigns/{campaign_id}/submit/", HTTP_ACCEPT_LANGUAGE=language)
    detail = officer_client.get(f"/api/v1/campaigns/{campaign_id}/", HTTP_ACCEPT_LANGUAGE=language).json()
    assert (detail["status"], detail["mode"], detail["priority"]) == ("pending_approval", "targeted", "normal")
    listed = officer_client.get("/api/v1/campaigns/", {"status": "pending_approval"}, HTTP_ACCEPT_LANGUAGE=language)
    assert [row["status"] for row in listed.json()["results"]] == ["pending_approval"]


def test_copy_answers_201_with_a_new_draft_and_is_refused_to_approvers_and_other_regencies(
    areas, author, api_client_for
):
    source = CampaignFactory(author=author, status=Campaign.Status.CANCELLED, area_codes=["35.05"])
    url = f"/api/v1/campaigns/{source.pk}/copy/"

    refused = api_client_for(UserFactory(role=Role.APPROVER)).post(url)
    AreaFactory(code="35.07", name="Kabupaten Malang")
    hidden = api_client_for(UserFactory(role=Role.OFFICER, jurisdiction_id="35.07")).post(url)
    response = api_client_for(author).post(url)

    assert (refused.status_code, hidden.status_code) == (403, 404)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["text"], body["id"] != source.pk) == ("draft", source.text, True)
    assert Campaign.objects.count() == 2


def test_the_detail_names_each_character_not_seen_as_it_is_sent(author, api_client_for):
    client = api_client_for(author)
    text = "Transfer Rp 1\u202e0001 ke blit\u0430rkab.go.id\u200b"
    created = client.post("/api/v1/campaigns/", {**DRAFT_BODY, "text": text}, format="json")
    assert created.status_code == 201, created.content
    detail = client.get(f"/api/v1/campaigns/{created.json()['id']}/").json()
    warning = detail["warnings"]["text"]
    assert "U+202E RIGHT-TO-LEFT OVERRIDE at character 14" in warning
    assert "U+0430 CYRILLIC SMALL LETTER A at character 27" in warning
    assert "U+200B ZERO WIDTH SPACE at character 38" in warning
    analyzed = client.post("/api/v1/sms/analyze/", {"text": text}, format="json").json()
    assert analyzed["warnings"]["text"] == warning
    assert client.post("/api/v1/campaigns/", DRAFT_BODY, format="json").json()["warnings"] == {}


def test_the_detail_gives_a_domain_in_letters_outside_ascii_the_form_handsets_open(author, api_client_for):
    client = api_client_for(author)
    created = client.post("/api/v1/campaigns/", {**DRAFT_BODY, "text": "Di \u0430\u0441\u0435.com"}, format="json")
    assert "\u0430\u0441\u0435.com opens as xn--80ak9a.com" in created.json()["warnings"]["text"]


def test_a_window_that_ends_before_it_starts_is_refused_at_once_on_create_and_on_edit(author, api_client_for):
    client = api_client_for(author)
    inverted = {"starts_at": "2030-11-25T10:00:00+07:00", "ends_at": "2030-11-25T09:30:00+07:00"}
    created = client.post("/api/v1/campaigns/", {**DRAFT_BODY, **inverted}, format="json")
    assert created.status_code == 400, created.content
    assert created.json()["errors"]["ends_at"] == "The broadcast window must end after it starts."
    assert not Campaign.objects.exists()

    window = {"starts_at": "2030-11-25T10:00:00+07:00", "ends_at": "2030-11-25T12:00:00+07:00"}
    campaign_id = client.post("/api/v1/campaigns/", {**DRAFT_BODY, **window}, format="json").json()["id"]
    # Moving only one end is checked against the other end as stored.
    for change in ({"ends_at": "2030-11-25T10:00:00+07:00"}, {"starts_at": "2030-11-25T13:00:00+07:00"}):
        edited = client.patch(f"/api/v1/campaigns/{campaign_id}/", change, format="json")
        assert edited.status_code == 400, edited.content
        assert "ends_at" in edited.json()["errors"]
    stored = Campaign.objects.get(pk=campaign_id)
    assert (stored.ends_at - stored.starts_at).total_seconds() == 2 * 3600
    # Both ends moved together into a valid window is fine.
    moved = {"starts_at": "2030-11-25T13:00:00+07:00", "ends_at": "2030-11-25T14:00:00+07:00"}
    assert client.patch(f"/api/v1/campaigns/{campaign_id}/", moved, format="json").status_code == 200
