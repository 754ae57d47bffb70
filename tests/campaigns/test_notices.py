"""Who is told what by email: approvers of a submitted campaign, the author of a decision, a run's end or stall."""

import threading
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from campaigns.dispatch import run_check_complete, run_report_stall
from campaigns.models import Campaign, CampaignRun
from campaigns.services import (
    campaign_approve,
    campaign_content_hash,
    campaign_reject,
    campaign_submit,
    campaign_update,
)
from smsblast.models import Notification, Role
from tests.campaigns.factories import CampaignFactory, CampaignRunFactory, DeliveryFactory
from tests.concurrency import skip_unless_postgresql, start_in_thread, wait_until_blocked_on_a_lock
from tests.smsblast.factories import AreaFactory, UserFactory, area_tree

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("areas")]


@pytest.fixture
def areas():
    area_tree("35.05", kecamatan=1)
    AreaFactory(code="35.07", name="Kabupaten Malang")


@pytest.fixture
def author():
    return UserFactory(username="ofc", role=Role.OFFICER, email="ofc@blitarkab.go.id", first_name="Siti")


def notified(kind: str) -> dict[str, Notification]:
    return {row.user.username: row for row in Notification.objects.filter(kind=kind).select_related("user")}


@override_settings(PUBLIC_BASE_URL="https://smsblast.blitarkab.go.id")
def test_a_submitted_campaign_asks_the_approvers_who_may_decide_on_it(author):
    UserFactory(username="chair", role=Role.APPROVER, email="chair@blitarkab.go.id", jurisdiction_id="35.05")
    UserFactory(username="national", role=Role.APPROVER, email="bnpb@go.id")
    UserFactory(username="malang", role=Role.APPROVER, email="chair@malangkab.go.id", jurisdiction_id="35.07")
    UserFactory(username="no-address", role=Role.APPROVER)
    UserFactory(username="officer2", role=Role.OFFICER, email="ofc2@blitarkab.go.id")
    campaign = CampaignFactory(author=author, title="Update Covid-19", area_codes=["35.05.01"])

    campaign_submit(campaign=campaign, actor=author)

    asked = notified("campaign.submitted")
    assert sorted(asked) == ["chair", "national"]
    assert asked["chair"].subject == "Menunggu persetujuan Anda: Update Covid-19"
    assert f"https://smsblast.blitarkab.go.id/campaigns/{campaign.pk}/review/" in asked["chair"].body
    assert "Siti mengajukan kampanye “Update Covid-19”" in asked["chair"].body


def test_a_title_with_line_breaks_stays_on_its_line_and_cannot_add_a_link_to_the_approvers_email(author):
    # The API and an imported CAP headline take a title with line breaks; in the email it would start lines of
    # its own, such as a link that reads as the page to approve on.
    UserFactory(username="chair", role=Role.APPROVER, email="chair@blitarkab.go.id")
    title = "Banjir\r\n\nSudah diperiksa Ketua Satgas, setujui segera di:\nhttps://evil.example/review\n"
    campaign = CampaignFactory(author=author, title=title, area_codes=["35.05.01"])

    campaign_submit(campaign=campaign, actor=author)

    (asked,) = notified("campaign.submitted").values()
    lines = asked.body.splitlines()
    one_line = "Banjir Sudah diperiksa Ketua Satgas, setujui segera di: https://evil.example/review"
    assert f"Siti mengajukan kampanye “{one_line}” untuk disetujui." in lines
    assert not any(line.startswith("https://evil.example") for line in lines)


def test_the_author_is_told_of_an_approval_and_of_a_rejection_with_its_reason(author):
    approver = UserFactory(username="chair", role=Role.APPROVER, email="chair@blitarkab.go.id")
    approved = CampaignFactory(author=author, title="Vaksinasi", status=Campaign.Status.PENDING_APPROVAL)
    rejected = CampaignFactory(author=author, title="Jam malam", status=Campaign.Status.PENDING_APPROVAL)

    campaign_approve(campaign=approved, approver=approver, content_hash=campaign_content_hash(approved))
    campaign_reject(campaign=rejected, approver=approver, reason="Sebutkan nomor hotline 112.")

    (yes,) = notified("campaign.approved").values()
    (no,) = notified("campaign.rejected").values()
    assert (yes.user, yes.subject, yes.object_id) == (author, "Disetujui: Vaksinasi", str(approved.pk))
    assert (no.user, no.subject) == (author, "Ditolak: Jam malam")
    assert "Alasan: Sebutkan nomor hotline 112." in no.body


def test_the_author_is_told_when_a_run_ends_with_its_recipients_counted_by_status(author):
    campaign = CampaignFactory(author=author, title="Update harian", status=Campaign.Status.SENDING)
    run = CampaignRunFactory(campaign=campaign, status=CampaignRun.Status.SENDING, fanout_done=True)
    for status, count in (("delivered", 3), ("undelivered", 1), ("failed", 1)):
        for _ in range(count):
            DeliveryFactory(run=run, status=status)

    run_check_complete(run_id=run.pk)

    (ended,) = notified("run.ended").values()
    assert (ended.user, ended.subject, ended.object_id) == (
        author,
        "Terkirim dengan kegagalan: Update harian",
        str(run.pk),
    )
    lines = ended.body.splitlines()
    assert [line for line in lines if line.startswith("- ")] == ["- terkirim: 3", "- tidak terkirim: 1", "- gagal: 1"]


def test_a_run_ending_after_its_campaign_was_retitled_is_named_by_the_title_it_was_sent_with(author):
    campaign = CampaignFactory(
        author=author,
        title="Update harian",
        status=Campaign.Status.SENDING,
        schedule={"kind": "daily", "time": "13:00"},
    )
    run = CampaignRunFactory(
        campaign=campaign, status=CampaignRun.Status.SENDING, fanout_done=True, frozen={"title": "Update harian"}
    )
    DeliveryFactory(run=run, status="submitted")
    campaign_update(campaign=campaign, actor=author, data={"title": "Update harian (revisi)"})
    run.deliveries.update(status="delivered")

    run_check_complete(run_id=run.pk)

    (ended,) = notified("run.ended").values()
    assert ended.subject == "Terkirim: Update harian"
    assert "“Update harian”" in ended.body


def stalled_run(author) -> CampaignRun:
    """Return a sending run of the author's "Update harian" with no progress for 11 minutes."""
    campaign = CampaignFactory(author=author, title="Update harian", status=Campaign.Status.SENDING)
    return CampaignRunFactory(
        campaign=campaign,
        status=CampaignRun.Status.SENDING,
        fanout_done=True,
        last_progress_at=timezone.now() - timedelta(minutes=11),
    )


def test_the_author_is_told_once_per_stall_and_which_operators_hold_the_run(author):
    run = stalled_run(author)

    assert run_report_stall(run=run, inactive_operators=["xl"], throttling_operators=["telkomsel"])
    assert not run_report_stall(run=run, inactive_operators=["xl"], throttling_operators=["telkomsel"])

    (stalled,) = Notification.objects.filter(kind="run.stalled")
    assert stalled.subject == "Tidak ada kemajuan: Update harian"
    assert "operator yang dinonaktifkan: xl." in stalled.body
    assert "terlalu cepat (429): telkomsel." in stalled.body


def test_users_without_an_address_are_not_notified_and_nothing_else_changes():
    author = UserFactory(username="no-address", role=Role.OFFICER)
    UserFactory(username="chair", role=Role.APPROVER)
    campaign = CampaignFactory(author=author)

    campaign_submit(campaign=campaign, actor=author)

    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.PENDING_APPROVAL
    assert not Notification.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_reconciler_passes_at_once_report_a_stall_and_email_the_author_once(author):
    """The control process and a worker may each run a pass (both take the control queue)."""
    skip_unless_postgresql()
    run = stalled_run(author)
    reported, errors = [], []
    first_reported, go = threading.Event(), threading.Event()

    def first_pass():
        with transaction.atomic():
            reported.append(run_report_stall(run=CampaignRun.objects.get(pk=run.pk)))
            first_reported.set()
            go.wait(30)  # still uncommitted while the other pass looks

    def second_pass():
        reported.append(run_report_stall(run=CampaignRun.objects.get(pk=run.pk)))

    first = start_in_thread(first_pass, errors)
    assert first_reported.wait(30)
    second = start_in_thread(second_pass, errors)
    wait_until_blocked_on_a_lock(1, unless=second)
    go.set()
    first.join(30)
    second.join(30)

    assert errors == []
    assert sorted(reported) == [False, True]
    assert Notification.objects.filter(kind="run.stalled").count() == 1


def test_a_user_also_in_the_approver_group_but_whose_role_is_another_is_not_asked_to_approve(author):
    from django.contrib.auth.models import Group

    from campaigns.services import campaign_check_actor
    from smsblast.errors import ServiceForbidden

    chair = UserFactory(username="chair", role=Role.APPROVER, email="chair@blitarkab.go.id")
    both = UserFactory(username="both", role=Role.OFFICER, email="both@blitarkab.go.id")
    both.groups.add(Group.objects.get(name=Role.APPROVER))
    campaign = CampaignFactory(author=author)
    with pytest.raises(ServiceForbidden):
        campaign_check_actor("approve", campaign=campaign, user=both)

    campaign_submit(campaign=campaign, actor=author)

    assert sorted(notified("campaign.submitted")) == [chair.username]
