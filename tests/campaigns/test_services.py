"""Campaign services: transitions, four-eyes approval bound to a content hash, audit trail."""

import datetime
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from campaigns.models import Approval, Campaign
from campaigns.services import (
    CAMPAIGN_TARGETS,
    CAMPAIGN_TRANSITIONS,
    campaign_allowed_actions,
    campaign_approval_is_valid,
    campaign_approve,
    campaign_cancel,
    campaign_content_hash,
    campaign_copy,
    campaign_create,
    campaign_current_approval,
    campaign_reject,
    campaign_submit,
    campaign_update,
    campaign_withdraw_by_issuer,
    sender_warning,
)
from smsblast.audit import audit_history
from smsblast.errors import ServiceConflict, ServiceForbidden, ServiceInvalid
from smsblast.models import AuditEvent, Role
from tests.campaigns.factories import CampaignFactory
from tests.smsblast.factories import UserFactory, area_tree

Status = Campaign.Status

pytestmark = pytest.mark.django_db


@pytest.fixture
def areas():
    return area_tree()


@pytest.fixture
def campaign(areas, officer):
    return campaign_create(
        author=officer,
        title="Covid-19 Blitar",
        text="Tetap pakai masker dan jaga jarak.",
        sender="PEMKAB",
        area_codes=["35.05"],
    )


def run_action(action: str, campaign: Campaign, *, author, approver):
    """Perform `action` as the user entitled to it; return the campaign."""
    if action == "update":
        return campaign_update(campaign=campaign, actor=author, data={"text": campaign.text + " Info: 112"})
    if action == "submit":
        return campaign_submit(campaign=campaign, actor=author)
    if action == "approve":
        return campaign_approve(campaign=campaign, approver=approver, content_hash=campaign_content_hash(campaign))
    if action == "reject":
        return campaign_reject(campaign=campaign, approver=approver, reason="Sebutkan nomor hotline.")
    if action == "cancel":
        return campaign_cancel(campaign=campaign, actor=author)
    raise AssertionError(action)


# The actions of these services; scheduling and run control are tested with the pipeline.
ACTIONS = ("update", "submit", "approve", "reject", "cancel")
TRANSITION_CASES = [
    (action, status, status in CAMPAIGN_TRANSITIONS[action]) for action in ACTIONS for status in Status.values
]


@pytest.mark.parametrize(
    ("action", "status", "allowed"),
    TRANSITION_CASES,
    ids=[f"{a}-from-{s}-{'ok' if ok else 'refused'}" for a, s, ok in TRANSITION_CASES],
)
def test_each_action_moves_only_from_its_allowed_states(action, status, allowed, areas, officer, approver):
    campaign = CampaignFactory(author=officer, status=status)
    events_before = AuditEvent.objects.count()
    if allowed:
        run_action(action, campaign, author=officer, approver=approver)
        campaign.refresh_from_db()
        assert campaign.status == CAMPAIGN_TARGETS[action]
        events = list(audit_history(campaign))
        assert len(events) == 1, "each transition writes exactly one audit event"
        assert (events[0].actor, events[0].action) == (
            approver if action in {"approve", "reject"} else officer,
            f"campaign.{action}",
        )
        assert (events[0].from_state, events[0].to_state) == (status, CAMPAIGN_TARGETS[action])
    else:
        with pytest.raises(ServiceConflict) as refused:
            run_action(action, campaign, author=officer, approver=approver)
        assert status.replace("_", " ") in str(refused.value)
        campaign.refresh_from_db()
        assert campaign.status == status
        assert AuditEvent.objects.count() == events_before


def test_transition_table_covers_every_state_and_cancel_stops_at_final_states():
    assert CAMPAIGN_TRANSITIONS["cancel"] == set(Status.values) - {
        Status.COMPLETED,
        Status.COMPLETED_WITH_FAILURES,
        Status.CANCELLED,
    }
    assert set(CAMPAIGN_TRANSITIONS) == set(CAMPAIGN_TARGETS)
    assert set(ACTIONS) <= set(CAMPAIGN_TRANSITIONS)


def test_create_writes_a_draft_and_a_creation_event(campaign, officer):
    assert campaign.status == Status.DRAFT
    [event] = audit_history(campaign)
    assert (event.actor, event.action, event.from_state, event.to_state) == (officer, "campaign.create", "", "draft")


def test_approver_and_operator_cannot_create(approver, operator_user, areas):
    for user in (approver, operator_user):
        with pytest.raises(ServiceForbidden):
            campaign_create(author=user, title="x", text="y", sender="PEMKAB", area_codes=["35.05"])


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"sender": "PEMKAB-BLITAR-JTM"}, "sender"),
        ({"area_codes": ["99.99"]}, "area_codes"),
        ({"area_codes": ["Blitar"]}, "area_codes"),
        ({"area_codes": "35.05"}, "area_codes"),
        ({"mode": "carrier_pigeon"}, "mode"),
        ({"priority": "extreme"}, "priority"),
        ({"polygon": {"type": "Point", "coordinates": [112, -8]}}, "polygon"),
        ({"title": "  "}, "title"),
        ({"validity_minutes": 0}, "validity_minutes"),
    ],
)
def test_create_refuses_malformed_fields_naming_the_field(officer, areas, fields, field):
    data = {"title": "Covid-19", "text": "Pakai masker.", "sender": "PEMKAB", "area_codes": ["35.05"], **fields}
    with pytest.raises(ServiceInvalid) as refused:
        campaign_create(author=officer, **data)
    assert field in refused.value.errors
    assert not Campaign.objects.exists()


def test_create_refuses_a_polygon_given_in_lat_lon_order(officer, areas):
    # GeoJSON positions are [longitude, latitude]; swapped, Kab. Blitar's latitudes read as 112 degrees.
    swapped = {"type": "Polygon", "coordinates": [[[-8.1, 112.1], [-8.1, 112.3], [-8.2, 112.3], [-8.1, 112.1]]]}
    with pytest.raises(ServiceInvalid) as refused:
        campaign_create(author=officer, title="Covid-19", text="Pakai masker.", sender="PEMKAB", polygon=swapped)
    assert "longitude" in refused.value.errors["polygon"]
    assert not Campaign.objects.exists()


def _days_from_today(days: int) -> str:
    return (timezone.now() + datetime.timedelta(days=days)).date().isoformat()


BAD_SCHEDULES = [
    pytest.param({"kind": "daily", "time": "25:00"}, "time", id="bad-time"),
    pytest.param({"kind": "fortnightly", "time": "09:00"}, "kind", id="unknown-kind"),
    pytest.param({"kind": "daily", "time": "13:00", "weekday_times": {"7": "10:00"}}, "weekday_times", id="weekday-7"),
    pytest.param({"kind": "weekly", "weekdays": [0, 9], "time": "09:00"}, "weekdays", id="weekday-9"),
    pytest.param({"kind": "daily", "time": "13:00", "until": _days_from_today(-2)}, "until", id="until-passed"),
]


@pytest.mark.parametrize(("schedule", "problem"), BAD_SCHEDULES)
def test_create_refuses_an_invalid_schedule_naming_the_problem(officer, areas, schedule, problem):
    data = {"title": "Covid-19", "text": "Pakai masker.", "sender": "PEMKAB", "area_codes": ["35.05"]}
    with pytest.raises(ServiceInvalid) as refused:
        campaign_create(author=officer, schedule=schedule, **data)
    assert problem in refused.value.errors["schedule"]
    assert not Campaign.objects.exists()


@pytest.mark.parametrize(("schedule", "problem"), BAD_SCHEDULES)
def test_update_refuses_an_invalid_schedule_and_keeps_the_old_one(campaign, officer, schedule, problem):
    campaign_update(campaign=campaign, actor=officer, data={"schedule": {"kind": "daily", "time": "13:00"}})
    with pytest.raises(ServiceInvalid) as refused:
        campaign_update(campaign=campaign, actor=officer, data={"schedule": schedule, "title": "Changed"})
    assert problem in refused.value.errors["schedule"]
    campaign.refresh_from_db()
    assert campaign.schedule == {"kind": "daily", "time": "13:00"}
    assert campaign.title == "Covid-19 Blitar"


def test_a_valid_schedule_is_stored_in_its_normal_form(officer, areas):
    until = _days_from_today(30)
    campaign = campaign_create(
        author=officer,
        title="Covid-19",
        area_codes=["35.05"],
        schedule={"kind": "weekly", "weekdays": ["fri", 0, 4], "time": "13:00:00", "until": until},
    )
    assert campaign.schedule == {"kind": "weekly", "weekdays": [0, 4], "time": "13:00", "until": until}


def test_an_empty_schedule_is_still_allowed_on_a_draft(officer, areas):
    assert campaign_create(author=officer, title="Covid-19", area_codes=["35.05"], schedule={}).schedule == {}


def test_an_edit_that_changes_nothing_writes_nothing(campaign, officer):
    campaign_update(campaign=campaign, actor=officer, data={"title": campaign.title, "area_codes": ["35.05"]})
    assert [e.action for e in audit_history(campaign)] == ["campaign.create"]


def test_area_codes_are_stored_sorted_and_without_duplicates(officer, areas):
    campaign = campaign_create(
        author=officer, title="t", text="x", sender="PEMKAB", area_codes=["35.05.02", "35.05.01", "35.05.02"]
    )
    assert campaign.area_codes == ["35.05.01", "35.05.02"]


def test_a_sender_of_17_characters_is_refused_saying_the_limit(officer, areas):
    with pytest.raises(ServiceInvalid) as refused:
        campaign_create(author=officer, title="t", text="x", sender="PEMKAB-BLITAR-JTM", area_codes=["35.05"])
    assert refused.value.errors["sender"] == "A sender ID has at most 16 characters; this one has 17."


def test_the_design_example_sender_of_13_characters_is_approved_with_a_warning_and_bound_by_the_hash(
    officer, approver, areas
):
    campaign = campaign_create(
        author=officer, title="Covid-19", text="Pakai masker.", sender="PEMKAB-BLITAR", area_codes=["35.05"]
    )
    assert "at most 11 characters" in sender_warning(campaign.sender)
    assert sender_warning("PEMKAB-BLTR") == ""
    campaign_submit(campaign=campaign, actor=officer)
    campaign_approve(campaign=campaign, approver=approver, content_hash=campaign_content_hash(campaign))
    assert campaign_approval_is_valid(campaign)
    # Shortening it afterwards is a change of what is sent: the approval no longer binds it.
    campaign_update(campaign=campaign, actor=officer, data={"sender": "PEMKAB-BLTR"})
    assert not campaign_approval_is_valid(campaign)


# --- submit validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"text": ""}, "text"),
        ({"text": "x" * 1531}, "text"),
        ({"sender": ""}, "sender"),
        ({"sender": "0812345"}, "sender"),
        ({"sender": "KOMINFO_BLT"}, "sender"),
        ({"area_codes": []}, "area_codes"),
    ],
)
def test_submit_refuses_an_incomplete_campaign(officer, areas, fields, field):
    campaign = CampaignFactory(author=officer, **fields)
    with pytest.raises(ServiceInvalid) as refused:
        campaign_submit(campaign=campaign, actor=officer)
    assert field in refused.value.errors
    campaign.refresh_from_db()
    assert campaign.status == Status.DRAFT


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("Transfer Rp 1\u202e0001 ke rekening dinas", "U+202E RIGHT-TO-LEFT OVERRIDE at character 14"),
        ("Hubungi \u20660812\u2069 sekarang", "U+2066 LEFT-TO-RIGHT ISOLATE at character 9"),
        ("Bayar\x07 sekarang", "U+0007 CONTROL CHARACTER at character 6"),
    ],
)
def test_submit_refuses_a_text_with_direction_overrides_or_control_characters_naming_them(officer, areas, text, named):
    """An approver's screen and each handset apply these differently, so no one can approve what handsets show."""
    campaign = CampaignFactory(author=officer, text=text)
    with pytest.raises(ServiceInvalid) as refused:
        campaign_submit(campaign=campaign, actor=officer)
    assert named in refused.value.errors["text"]
    campaign.refresh_from_db()
    assert campaign.status == Status.DRAFT


def test_submit_refuses_a_title_with_a_direction_override_naming_it(officer, areas):
    # The title heads the review page and the approver's email: an override there reorders what the approver reads.
    campaign = CampaignFactory(author=officer, title="Vaksin \u202egratis")
    with pytest.raises(ServiceInvalid) as refused:
        campaign_submit(campaign=campaign, actor=officer)
    assert "U+202E RIGHT-TO-LEFT OVERRIDE at character 8" in refused.value.errors["title"]
    assert "text" not in refused.value.errors
    campaign.refresh_from_db()
    assert campaign.status == Status.DRAFT


def test_submit_refuses_an_instruction_with_a_direction_override_and_keeps_its_line_breaks(officer, areas):
    # The instruction is approved with the campaign and carried by its CAP export: an override there reorders it.
    campaign = CampaignFactory(author=officer, instruction="Tetap di rumah.\nHubungi \u202e112")
    with pytest.raises(ServiceInvalid) as refused:
        campaign_submit(campaign=campaign, actor=officer)
    assert "U+202E RIGHT-TO-LEFT OVERRIDE at character 25" in refused.value.errors["instruction"]
    assert set(refused.value.errors) == {"instruction"}
    campaign.refresh_from_db()
    assert campaign.status == Status.DRAFT
    Campaign.objects.filter(pk=campaign.pk).update(instruction="Tetap di rumah.\nHubungi 112.")
    campaign.refresh_from_db()
    assert campaign_submit(campaign=campaign, actor=officer).status == Status.PENDING_APPROVAL


@pytest.mark.parametrize(
    "text",
    ["Harga\u00a0Rp 10.000 \U0001f468\u200d\U0001f469\u200d\U0001f467", "Jaga jarak\u200b, pakai masker.\tYa"],
)
def test_submit_accepts_no_break_spaces_emoji_and_marked_invisible_characters(officer, areas, text):
    campaign = CampaignFactory(author=officer, text=text)
    assert campaign_submit(campaign=campaign, actor=officer).status == Status.PENDING_APPROVAL


def test_submit_refuses_a_targeted_exercise_which_would_reach_real_subscribers(officer, areas):
    campaign = CampaignFactory(author=officer, mode="targeted", exercise=True)
    with pytest.raises(ServiceInvalid) as refused:
        campaign_submit(campaign=campaign, actor=officer)
    assert "exercise" in refused.value.errors
    campaign.refresh_from_db()
    assert campaign.status == Status.DRAFT


def test_submit_refuses_a_targeted_campaign_naming_operators_whose_run_would_send_to_every_operator(officer, areas):
    # A targeted run reaches its audience on every operator: the approver would approve operators it never limits.
    campaign = CampaignFactory(author=officer, mode="targeted", operator_slugs=["telkomsel"])
    with pytest.raises(ServiceInvalid) as refused:
        campaign_submit(campaign=campaign, actor=officer)
    assert "audience" in refused.value.errors["operator_slugs"]
    campaign.refresh_from_db()
    assert campaign.status == Status.DRAFT


@pytest.mark.parametrize(
    ("schedule", "refused"),
    [
        ({"kind": "daily", "time": "13:00"}, True),
        ({"kind": "once", "at": "2030-01-07T10:00"}, True),
        ({"kind": "now", "quiet_hours": {"start": "21:00", "end": "06:00"}}, True),
        ({"kind": "now"}, False),
        ({}, False),
    ],
)
def test_submit_refuses_an_area_broadcast_with_a_schedule_its_window_ignores(officer, areas, schedule, refused):
    # An area broadcast goes out once, in its window: a daily schedule or quiet hours would be approved and ignored.
    from tests.operators.area_scripted import broadcast_campaign

    campaign = broadcast_campaign(approved=False, author=officer, schedule=schedule)
    try:
        campaign_submit(campaign=campaign, actor=officer)
    except ServiceInvalid as exc:
        errors = exc.errors
    else:
        errors = {}
    assert ("schedule" in errors) is refused


def test_submit_accepts_a_polygon_without_area_codes(officer):
    polygon = {"type": "Polygon", "coordinates": [[[112.1, -8.1], [112.3, -8.1], [112.3, -8.2], [112.1, -8.1]]]}
    campaign = CampaignFactory(author=officer, area_codes=[], polygon=polygon)
    campaign_submit(campaign=campaign, actor=officer)
    assert campaign.status == Status.PENDING_APPROVAL


# --- who may do what -----------------------------------------------------------------------


def test_only_the_author_or_an_admin_may_edit_or_submit(campaign, officer2, admin_user, approver):
    for user in (officer2, approver):
        with pytest.raises(ServiceForbidden):
            campaign_update(campaign=campaign, actor=user, data={"title": "mine now"})
        with pytest.raises(ServiceForbidden):
            campaign_submit(campaign=campaign, actor=user)
    campaign_update(campaign=campaign, actor=admin_user, data={"title": "Fixed by admin"})
    campaign_submit(campaign=campaign, actor=admin_user)
    assert campaign.status == Status.PENDING_APPROVAL


def test_an_edit_naming_a_field_that_is_not_editable_is_refused_and_changes_nothing(campaign, officer):
    with pytest.raises(ServiceInvalid, match="These fields cannot be edited: author, status"):
        campaign_update(
            campaign=campaign, actor=officer, data={"text": "Teks baru.", "status": Status.APPROVED, "author": officer}
        )
    campaign.refresh_from_db()
    assert (campaign.status, campaign.text) == (Status.DRAFT, "Tetap pakai masker dan jaga jarak.")


def test_only_an_officer_or_an_admin_may_pass_on_an_issuers_cancellation(campaign, approver, operator_user):
    Campaign.objects.filter(pk=campaign.pk).update(cap_source_sender="bpbd@example.go.id", cap_source_identifier="A-1")
    campaign.refresh_from_db()
    for user in (approver, operator_user):
        with pytest.raises(ServiceForbidden):
            campaign_withdraw_by_issuer(
                campaign=campaign, actor=user, reason="Dibatalkan.", references=[("bpbd@example.go.id", "A-1")]
            )
    campaign.refresh_from_db()
    assert campaign.status == Status.DRAFT
    assert not audit_history(campaign).filter(action="campaign.cancel").exists()


def test_an_officer_cannot_approve_or_reject(campaign, officer, officer2):
    campaign_submit(campaign=campaign, actor=officer)
    with pytest.raises(ServiceForbidden):
        campaign_approve(campaign=campaign, approver=officer2, content_hash=campaign_content_hash(campaign))
    with pytest.raises(ServiceForbidden):
        campaign_reject(campaign=campaign, approver=officer2, reason="no")
    campaign.refresh_from_db()
    assert campaign.status == Status.PENDING_APPROVAL


def test_an_admin_cannot_approve(campaign, officer, admin_user):
    campaign_submit(campaign=campaign, actor=officer)
    with pytest.raises(ServiceForbidden):
        campaign_approve(campaign=campaign, approver=admin_user, content_hash=campaign_content_hash(campaign))


def test_the_author_cannot_approve_even_when_an_approver(areas):
    """Four eyes: an approver who wrote the campaign (e.g. as admin before a role change) cannot approve it."""
    author = UserFactory(role=Role.OFFICER)
    campaign = CampaignFactory(author=author, status=Status.PENDING_APPROVAL)
    from smsblast.roles import user_role_set

    user_role_set(user=author, role=Role.APPROVER)
    with pytest.raises(ServiceForbidden, match="another approver"):
        campaign_approve(campaign=campaign, approver=author, content_hash=campaign_content_hash(campaign))
    with pytest.raises(ServiceForbidden):
        campaign_reject(campaign=campaign, approver=author, reason="no")
    campaign.refresh_from_db()
    assert campaign.status == Status.PENDING_APPROVAL
    assert not Approval.objects.exists()


def test_an_approver_who_edited_the_content_cannot_approve_or_reject_it(campaign, officer, admin_user):
    """Four eyes: an admin who rewrote an officer's text and later became an approver did write what is reviewed."""
    from smsblast.roles import user_role_set

    campaign_update(campaign=campaign, actor=admin_user, data={"text": "Teks yang ditulis ulang oleh admin."})
    campaign_submit(campaign=campaign, actor=officer)
    user_role_set(user=admin_user, role=Role.APPROVER)

    with pytest.raises(ServiceForbidden, match="another approver"):
        campaign_approve(campaign=campaign, approver=admin_user, content_hash=campaign_content_hash(campaign))
    with pytest.raises(ServiceForbidden, match="another approver"):
        campaign_reject(campaign=campaign, approver=admin_user, reason="no")
    assert "approve" not in campaign_allowed_actions(campaign=campaign, user=admin_user)
    campaign.refresh_from_db()
    assert campaign.status == Status.PENDING_APPROVAL
    assert not Approval.objects.exists()


def test_an_edit_that_changed_no_content_does_not_bar_its_editor_from_approving(campaign, officer, admin_user):
    """Only writing content counts: an admin's save that changed nothing does not bar a later approval."""
    from smsblast.roles import user_role_set

    campaign_update(campaign=campaign, actor=admin_user, data={"text": campaign.text})
    campaign_submit(campaign=campaign, actor=officer)
    user_role_set(user=admin_user, role=Role.APPROVER)
    campaign_approve(campaign=campaign, approver=admin_user, content_hash=campaign_content_hash(campaign))
    assert campaign.status == Status.APPROVED


def test_another_officer_cannot_cancel_but_an_approver_can(campaign, officer2, approver):
    with pytest.raises(ServiceForbidden):
        campaign_cancel(campaign=campaign, actor=officer2)
    campaign_cancel(campaign=campaign, actor=approver)
    assert campaign.status == Status.CANCELLED


def test_reject_requires_a_reason(campaign, officer, approver):
    campaign_submit(campaign=campaign, actor=officer)
    for reason in ("", "   "):
        with pytest.raises(ServiceInvalid):
            campaign_reject(campaign=campaign, approver=approver, reason=reason)
    campaign.refresh_from_db()
    assert campaign.status == Status.PENDING_APPROVAL


def test_allowed_actions_follow_state_and_role(campaign, officer, officer2, approver):
    assert campaign_allowed_actions(campaign=campaign, user=officer) == ["update", "submit", "cancel"]
    assert campaign_allowed_actions(campaign=campaign, user=officer2) == []
    campaign_submit(campaign=campaign, actor=officer)
    assert campaign_allowed_actions(campaign=campaign, user=approver) == ["approve", "reject", "cancel"]
    assert campaign_allowed_actions(campaign=campaign, user=officer) == ["cancel"]


# --- invariant 1: the approval binds the content hash -----------------------------------------


def test_approval_binds_the_reviewed_hash_and_stores_a_snapshot(campaign, officer, approver):
    campaign_submit(campaign=campaign, actor=officer)
    reviewed = campaign_content_hash(campaign)
    campaign_approve(campaign=campaign, approver=approver, content_hash=reviewed)
    approval = campaign_current_approval(campaign)
    assert (approval.approver, approval.decision, approval.content_hash) == (approver, "approved", reviewed)
    assert approval.snapshot["text"] == campaign.text
    assert approval.snapshot["area_codes"] == ["35.05"]
    assert campaign_approval_is_valid(campaign)


def test_a_stale_hash_is_refused_with_a_conflict(campaign, officer, approver):
    campaign_submit(campaign=campaign, actor=officer)
    reviewed = campaign_content_hash(campaign)
    # The content changes behind the approver's back (e.g. a direct database fix).
    Campaign.objects.filter(pk=campaign.pk).update(text="Teks lain.")
    with pytest.raises(ServiceConflict, match="changed since you reviewed it"):
        campaign_approve(campaign=campaign, approver=approver, content_hash=reviewed)
    campaign.refresh_from_db()
    assert campaign.status == Status.PENDING_APPROVAL
    assert not campaign_approval_is_valid(campaign)


@pytest.mark.parametrize(
    "data",
    [
        {"text": "Teks baru yang berbeda."},
        {"sender": "DINKES"},
        {"mode": "area_broadcast"},
        {"area_codes": ["35.05.01"]},
        {"polygon": {"type": "Polygon", "coordinates": [[[112.1, -8.1], [112.3, -8.1], [112.3, -8.2], [112.1, -8.1]]]}},
        {"audience": {"languages": ["jv"]}},
        {"schedule": {"kind": "once", "at": "2021-07-01T13:00"}},
        {"priority": "urgent"},
        {"starts_at": datetime.datetime(2021, 7, 1, 6, tzinfo=datetime.UTC)},
        {"ends_at": datetime.datetime(2021, 7, 2, 6, tzinfo=datetime.UTC)},
        {"repeat_policy": "once_per_day"},
        {"operator_slugs": ["telkomsel"]},
        {"exercise": True},
        {"validity_minutes": 60},
        {"title": "Covid-19 Blitar (final)"},
        {"instruction": "Hubungi 119."},
        {"cap_category": "Safety"},
        {"cap_event": "Banjir"},
        {"cap_urgency": "Immediate"},
        {"cap_severity": "Extreme"},
        {"cap_certainty": "Observed"},
    ],
    ids=lambda data: next(iter(data)),
)
@pytest.mark.parametrize("status", [Status.APPROVED, Status.SCHEDULED])
def test_editing_content_after_approval_returns_to_draft_and_voids_the_approval(
    campaign, officer, approver, data, status
):
    campaign_submit(campaign=campaign, actor=officer)
    campaign_approve(campaign=campaign, approver=approver, content_hash=campaign_content_hash(campaign))
    Campaign.objects.filter(pk=campaign.pk).update(status=status)
    campaign.refresh_from_db()
    approval = campaign_current_approval(campaign)

    campaign_update(campaign=campaign, actor=officer, data=data)

    campaign.refresh_from_db()
    approval.refresh_from_db()
    assert campaign.status == Status.DRAFT
    assert approval.voided_at is not None
    assert campaign_current_approval(campaign) is None
    assert not campaign_approval_is_valid(campaign)
    event = list(audit_history(campaign))[-1]
    assert (event.action, event.from_state, event.to_state) == ("campaign.update", status, "draft")
    assert event.details["voided_approvals"] == [approval.pk]


def test_recording_where_an_imported_alert_came_from_keeps_the_approval(campaign, officer, approver):
    campaign_submit(campaign=campaign, actor=officer)
    campaign_approve(campaign=campaign, approver=approver, content_hash=campaign_content_hash(campaign))
    campaign_update(campaign=campaign, actor=officer, data={"cap_source_identifier": "BMKG-2021-07-01"})
    campaign.refresh_from_db()
    assert campaign.status == Status.APPROVED
    assert campaign_approval_is_valid(campaign)


def test_editing_a_rejected_campaign_returns_it_to_draft_for_resubmission(campaign, officer, approver):
    campaign_submit(campaign=campaign, actor=officer)
    campaign_reject(campaign=campaign, approver=approver, reason="Tambahkan nomor hotline.")
    assert campaign_current_approval(campaign).reason == "Tambahkan nomor hotline."
    campaign_update(campaign=campaign, actor=officer, data={"text": "Pakai masker. Hotline 112."})
    assert campaign.status == Status.DRAFT
    campaign_submit(campaign=campaign, actor=officer)
    campaign_approve(campaign=campaign, approver=approver, content_hash=campaign_content_hash(campaign))
    assert campaign_approval_is_valid(campaign)
    assert [e.action for e in audit_history(campaign)] == [
        "campaign.create",
        "campaign.submit",
        "campaign.reject",
        "campaign.update",
        "campaign.submit",
        "campaign.approve",
    ]


def test_a_rejection_is_not_a_valid_approval(campaign, officer, approver):
    campaign_submit(campaign=campaign, actor=officer)
    campaign_reject(campaign=campaign, approver=approver, reason="Belum lengkap.")
    assert not campaign_approval_is_valid(campaign)


def test_content_hash_ignores_order_of_area_codes_but_not_the_published_title(areas, officer):
    one = CampaignFactory(author=officer, area_codes=["35.05.01", "35.05.02"], title="A")
    two = CampaignFactory(author=officer, area_codes=["35.05.02", "35.05.01"], title="A")
    assert campaign_content_hash(one) == campaign_content_hash(two)
    two.title = "B"
    assert campaign_content_hash(one) != campaign_content_hash(two)
    two.title = "A"
    two.text += "!"
    assert campaign_content_hash(one) != campaign_content_hash(two)


def test_content_hash_is_the_same_for_equal_times_in_other_zones(officer):
    wib = datetime.timezone(datetime.timedelta(hours=7))
    one = CampaignFactory(author=officer, title="A", starts_at=datetime.datetime(2021, 7, 1, 13, tzinfo=wib))
    two = CampaignFactory(author=officer, title="A", starts_at=datetime.datetime(2021, 7, 1, 6, tzinfo=datetime.UTC))
    assert campaign_content_hash(one) == campaign_content_hash(two)
    one.refresh_from_db()
    assert campaign_content_hash(one) == campaign_content_hash(two)


def test_a_transition_lost_to_a_concurrent_one_is_refused(campaign, officer, approver):
    """The state is re-read under lock, so a stale instance cannot move a campaign twice."""
    campaign_submit(campaign=campaign, actor=officer)
    stale = Campaign.objects.get(pk=campaign.pk)
    campaign_cancel(campaign=campaign, actor=officer)
    with pytest.raises(ServiceConflict, match="cancelled"):
        campaign_approve(campaign=stale, approver=approver, content_hash=campaign_content_hash(stale))
    assert not Approval.objects.exists()


def test_an_edit_of_a_version_changed_since_it_was_read_is_refused_and_changes_nothing(campaign, officer):
    opened = campaign_content_hash(campaign)
    campaign_update(campaign=campaign, actor=officer, data={"text": "Teks dari tab lain."}, expected_hash=opened)
    events_before = AuditEvent.objects.count()
    with pytest.raises(ServiceConflict, match="changed after you opened"):
        campaign_update(campaign=campaign, actor=officer, data={"text": "Teks lama."}, expected_hash=opened)
    campaign.refresh_from_db()
    assert campaign.text == "Teks dari tab lain."
    assert AuditEvent.objects.count() == events_before


@pytest.mark.django_db(transaction=True)
def test_two_edits_from_the_same_version_at_once_save_one_and_refuse_the_other(areas, officer):
    from tests.concurrency import race_behind_a_row, skip_unless_postgresql

    skip_unless_postgresql()
    draft = campaign_create(author=officer, title="T", text="Awal.", sender="PEMKAB", area_codes=["35.05"])
    opened = campaign_content_hash(draft)

    def edit(text):
        fresh = Campaign.objects.get(pk=draft.pk)
        return lambda: campaign_update(campaign=fresh, actor=officer, data={"text": text}, expected_hash=opened)

    errors = race_behind_a_row(draft, edit("Tab satu."), edit("Tab dua."))
    assert [type(error) for error in errors] == [ServiceConflict]
    draft.refresh_from_db()
    assert draft.text == "Tab satu."
    assert AuditEvent.objects.filter(object_id=str(draft.pk), action="campaign.update").count() == 1


def test_campaign_move_changes_state_and_audits_only_when_it_wins_the_race():
    from campaigns.services import campaign_move

    campaign = CampaignFactory(status=Campaign.Status.SENDING)
    stale = Campaign.objects.get(pk=campaign.pk)
    moved = campaign_move(
        campaign=campaign,
        to_state=Campaign.Status.PAUSED,
        actor=None,
        action="campaign.pause",
        from_states=(Campaign.Status.SENDING,),
        details={"why": "test"},
    )
    assert moved
    # A second mover that read the old state loses cleanly: no change, no audit event.
    assert not campaign_move(campaign=stale, to_state=Campaign.Status.COMPLETED, actor=None, action="campaign.x")
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PAUSED
    events = list(audit_history(campaign).values_list("action", "from_state", "to_state", "details"))
    assert events == [("campaign.pause", "sending", "paused", {"why": "test"})]


def test_dispatch_refusal_returns_the_campaign_to_draft_once():
    from campaigns.services import campaign_dispatch_refuse

    campaign = CampaignFactory(status=Campaign.Status.SCHEDULED, next_run_at=timezone.now())
    assert campaign_dispatch_refuse(campaign=campaign)
    assert not campaign_dispatch_refuse(campaign=campaign)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT and campaign.next_run_at is None
    assert audit_history(campaign).filter(action="campaign.dispatch_refused").count() == 1


def test_a_campaign_dispatch_sent_back_to_draft_holds_no_approval_once_its_approved_text_is_restored(officer):
    from campaigns.services import campaign_dispatch_refuse
    from tests.campaigns.factories import ApprovalFactory

    campaign = CampaignFactory(author=officer, status=Campaign.Status.SCHEDULED, next_run_at=timezone.now())
    approval = ApprovalFactory(campaign=campaign)
    approved_text = campaign.text
    Campaign.objects.filter(pk=campaign.pk).update(text="Teks yang belum disetujui.")
    campaign.refresh_from_db()
    assert campaign_dispatch_refuse(campaign=campaign)

    campaign_update(campaign=campaign, actor=officer, data={"text": approved_text})

    campaign.refresh_from_db()
    approval.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert approval.voided_at is not None
    assert not campaign_approval_is_valid(campaign)
    refused = audit_history(campaign).get(action="campaign.dispatch_refused")
    assert refused.details["voided_approvals"] == [approval.pk]


# --- jurisdiction ------------------------------------------------------------------------------

# Stand-in boundary of Kab. Blitar, and polygons inside it and across its edge.
BLITAR_SQUARE = {
    "type": "Polygon",
    "coordinates": [[[112.1, -8.1], [112.3, -8.1], [112.3, -8.3], [112.1, -8.3], [112.1, -8.1]]],
}
INSIDE = {
    "type": "Polygon",
    "coordinates": [[[112.15, -8.15], [112.2, -8.15], [112.2, -8.2], [112.15, -8.2], [112.15, -8.15]]],
}
ACROSS = {
    "type": "Polygon",
    "coordinates": [[[112.25, -8.15], [112.4, -8.15], [112.4, -8.2], [112.25, -8.2], [112.25, -8.15]]],
}


@pytest.fixture
def blitar_and_blora(areas):
    from smsblast import selectors
    from tests.smsblast.factories import AreaFactory

    AreaFactory(code="33", name="Jawa Tengah")
    AreaFactory(code="33.16", name="Kabupaten Blora")
    selectors._boundary_cache.clear()
    yield
    selectors._boundary_cache.clear()


@pytest.fixture
def blitar_officer(blitar_and_blora):
    return UserFactory(role=Role.OFFICER, jurisdiction_id="35.05")


def test_a_target_outside_the_officers_jurisdiction_is_refused_naming_the_area(blitar_officer):
    with pytest.raises(
        ServiceInvalid, match=r"Outside your jurisdiction \(35\.05 Kabupaten Blitar\): 33\.16 Kabupaten Blora"
    ) as error:
        campaign_create(author=blitar_officer, title="Blora", area_codes=["35.05", "33.16"])
    assert set(error.value.errors) == {"area_codes"}
    with pytest.raises(ServiceInvalid, match="35 Jawa Timur"):
        campaign_create(author=blitar_officer, title="Province", area_codes=["35"])
    assert not Campaign.objects.exists()

    campaign = campaign_create(author=blitar_officer, title="Blitar", area_codes=["35.05.01", "35.05.02"])
    assert campaign.area_scope == "35.05"
    with pytest.raises(ServiceInvalid, match="33.16 Kabupaten Blora"):
        campaign_update(campaign=campaign, actor=blitar_officer, data={"area_codes": ["33.16"]})
    campaign.refresh_from_db()
    assert (campaign.area_codes, campaign.area_scope) == (["35.05.01", "35.05.02"], "35.05")
    assert AuditEvent.objects.filter(action="campaign.update").count() == 0


def test_an_admin_may_target_any_area_and_the_campaign_follows_its_target(blitar_and_blora, admin_user):
    admin_user.jurisdiction_id = "35.05"
    admin_user.save()
    campaign = campaign_create(author=admin_user, title="Dua provinsi", area_codes=["35.05", "33.16"])
    assert campaign.area_scope == ""
    campaign_update(campaign=campaign, actor=admin_user, data={"area_codes": ["33.16"]})
    campaign.refresh_from_db()
    assert campaign.area_scope == "33.16"


def test_a_drawn_polygon_must_lie_inside_the_known_boundary_of_the_jurisdiction(blitar_officer):
    with pytest.raises(ServiceInvalid, match="does not lie within the known boundary of your jurisdiction"):
        campaign_create(author=blitar_officer, title="Tanpa batas", polygon=INSIDE)  # no boundary known yet

    from smsblast.models import Area

    Area.objects.filter(code="35.05").update(boundary=BLITAR_SQUARE)
    campaign = campaign_create(author=blitar_officer, title="Di dalam", polygon=INSIDE)
    assert campaign.area_scope == "35.05"
    with pytest.raises(ServiceInvalid, match=r"35\.05 Kabupaten Blitar") as error:
        campaign_update(campaign=campaign, actor=blitar_officer, data={"polygon": ACROSS})
    assert set(error.value.errors) == {"polygon"}
    campaign.refresh_from_db()
    assert campaign.polygon == INSIDE


def test_a_drawn_polygon_reaching_the_homes_of_a_neighbouring_regency_is_refused(blitar_officer):
    from smsblast.models import Area, Subscriber
    from smsblast.selectors import subscribers_in_area
    from tests.smsblast.factories import AreaFactory, SubscriberFactory

    Area.objects.filter(code="35.05").update(boundary=BLITAR_SQUARE)
    # Kab. Tulungagung shares Blitar's western edge; its subscribers are known by their home area only.
    tulungagung = AreaFactory(
        code="35.04",
        name="Kabupaten Tulungagung",
        boundary={
            "type": "Polygon",
            "coordinates": [[[111.9, -8.1], [112.1, -8.1], [112.1, -8.3], [111.9, -8.3], [111.9, -8.1]]],
        },
    )
    neighbour = SubscriberFactory(area=tulungagung)
    # Blitar's own boundary lies within Blitar's boundary, yet its homes reach Tulungagung's along the edge.
    assert neighbour in subscribers_in_area([], polygon=BLITAR_SQUARE)

    with pytest.raises(ServiceInvalid, match=r"35\.04 Kabupaten Tulungagung") as error:
        campaign_create(author=blitar_officer, title="Sepanjang batas", polygon=BLITAR_SQUARE)
    assert set(error.value.errors) == {"polygon"}
    assert not Campaign.objects.exists()

    campaign = campaign_create(author=blitar_officer, title="Di dalam", polygon=INSIDE)
    with pytest.raises(ServiceInvalid, match=r"35\.04 Kabupaten Tulungagung"):
        campaign_update(campaign=campaign, actor=blitar_officer, data={"polygon": BLITAR_SQUARE})
    campaign.refresh_from_db()
    assert campaign.polygon == INSIDE and Subscriber.objects.count() == 1


def test_a_polygon_reaching_a_neighbours_homes_is_scoped_to_the_area_holding_both(blitar_and_blora, officer):
    from smsblast.models import Area
    from tests.smsblast.factories import AreaFactory

    Area.objects.filter(code="35.05").update(boundary=BLITAR_SQUARE)
    AreaFactory(
        code="35.04",
        name="Kabupaten Tulungagung",
        boundary={
            "type": "Polygon",
            "coordinates": [[[111.9, -8.1], [112.1, -8.1], [112.1, -8.3], [111.9, -8.3], [111.9, -8.1]]],
        },
    )
    # Sent to Tulungagung's homes too, so not for Blitar's officers and approvers alone to see and decide.
    along_the_edge = campaign_create(author=officer, title="Sepanjang batas", polygon=BLITAR_SQUARE)
    assert along_the_edge.area_scope == "35"
    inside = campaign_create(author=officer, title="Di dalam", polygon=INSIDE)
    assert inside.area_scope == "35.05"


# --- copy ---------------------------------------------------------------------------------


def test_a_copy_is_a_new_draft_by_the_copier_with_everything_the_approval_binds(areas, officer, officer2, approver):
    polygon = {"type": "Polygon", "coordinates": [[[112.1, -8.1], [112.3, -8.1], [112.3, -8.3], [112.1, -8.1]]]}
    source = CampaignFactory(
        author=officer,
        status=Status.COMPLETED,
        priority="urgent",
        polygon=polygon,
        audience={"languages": ["jv"]},
        validity_minutes=90,
        instruction="Hubungi 112.",
        cap_source_identifier="bnpb-2021-001",
        schedule={"kind": "daily", "time": "13:00", "weekday_times": {"4": "10:00"}},
    )

    copy, passed = campaign_copy(source=source, author=officer2)

    assert (copy.pk != source.pk, copy.status, copy.author, passed) == (True, Status.DRAFT, officer2, False)
    for field in ("title", "text", "sender", "mode", "area_codes", "polygon", "audience", "priority", "schedule"):
        assert getattr(copy, field) == getattr(source, field), field
    assert (copy.validity_minutes, copy.instruction, copy.cap_source_identifier) == (90, "Hubungi 112.", "")
    assert campaign_current_approval(copy) is None
    created = AuditEvent.objects.get(action="campaign.create", object_id=str(copy.pk))
    assert (created.actor, created.to_state, created.details) == (officer2, Status.DRAFT, {"copied_from": source.pk})
    source.refresh_from_db()
    assert (source.status, source.author) == (Status.COMPLETED, officer)


WIB = ZoneInfo("Asia/Jakarta")


@pytest.mark.parametrize(
    ("schedule_for", "kept"),
    [
        (lambda local: {"kind": "once", "at": f"{local - datetime.timedelta(minutes=1):%Y-%m-%dT%H:%M}"}, False),
        (lambda local: {"kind": "once", "at": f"{local + datetime.timedelta(days=1):%Y-%m-%dT%H:%M}"}, True),
        (
            lambda local: {"kind": "daily", "time": "13:00", "until": f"{local - datetime.timedelta(days=1):%Y-%m-%d}"},
            False,
        ),
        (lambda local: {"kind": "daily", "time": "13:00", "until": f"{local:%Y-%m-%d}"}, True),
        (lambda local: {"kind": "weekly", "weekdays": [0], "time": "09:00"}, True),
    ],
    ids=["once-past", "once-ahead", "ended-yesterday", "ends-today", "no-end"],
)
def test_a_copy_leaves_out_a_time_already_past_in_the_areas_zone(areas, officer, schedule_for, kept):
    now = timezone.now()
    schedule = schedule_for(now.astimezone(WIB))
    source = CampaignFactory(author=officer, status=Status.SCHEDULED, schedule=schedule)

    copy, passed = campaign_copy(source=source, author=officer, now=now)

    assert (copy.schedule, passed) == ((schedule, False) if kept else ({}, True))


def test_a_copy_of_an_area_broadcast_whose_window_ended_leaves_the_window_to_set(areas, officer):
    now = timezone.now()
    ended = CampaignFactory(
        author=officer,
        mode="area_broadcast",
        starts_at=now - datetime.timedelta(days=2),
        ends_at=now - datetime.timedelta(days=1),
    )
    later = CampaignFactory(
        author=officer,
        mode="area_broadcast",
        starts_at=now + datetime.timedelta(hours=1),
        ends_at=now + datetime.timedelta(hours=2),
    )

    copy_of_ended, passed = campaign_copy(source=ended, author=officer, now=now)
    copy_of_later, still = campaign_copy(source=later, author=officer, now=now)

    assert (copy_of_ended.starts_at, copy_of_ended.ends_at, passed) == (None, None, True)
    assert (copy_of_later.starts_at, copy_of_later.ends_at, still) == (later.starts_at, later.ends_at, False)


def test_a_copy_of_an_area_broadcast_under_way_leaves_out_the_window_a_submit_would_refuse_as_started(areas, officer):
    from operators.broadcasts import broadcast_errors

    now = timezone.now()
    running = CampaignFactory(
        author=officer,
        mode="area_broadcast",
        starts_at=now - datetime.timedelta(minutes=30),
        ends_at=now + datetime.timedelta(hours=2),
    )
    assert "starts_at" in broadcast_errors(running, now=now)  # "The window must start in the future."

    copy, passed = campaign_copy(source=running, author=officer, now=now)

    assert (copy.starts_at, copy.ends_at, passed) == (None, None, True)


def test_only_officers_and_admins_copy_and_an_officer_only_into_their_jurisdiction(areas, officer, approver):
    source = CampaignFactory(author=officer, area_codes=["35.05"])
    elsewhere = UserFactory(role=Role.OFFICER, jurisdiction_id="35.05.01")

    with pytest.raises(ServiceForbidden):
        campaign_copy(source=source, author=approver)
    with pytest.raises(ServiceInvalid):
        campaign_copy(source=source, author=elsewhere)
    assert Campaign.objects.count() == 1
