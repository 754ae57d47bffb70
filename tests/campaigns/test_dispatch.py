"""Dispatch on the campaign side: scheduling, starting due runs, fan-out, pause/resume/cancel, reconciler."""

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from django.db import DatabaseError
from django.db.models import Count, Max
from django.utils import timezone

from campaigns import dispatch
from campaigns.models import Approval, Campaign, CampaignRun, Delivery, DispatchBatch
from campaigns.services import campaign_allowed_actions, campaign_cancel, campaign_update
from operators.gateways.base import BatchResult, Outcome
from operators.models import Operator
from operators.services import batch_send
from smsblast.errors import ServiceConflict, ServiceForbidden, ServiceInvalid
from smsblast.models import AuditEvent, Role, Subscriber
from tests.concurrency import race_behind_a_row, skip_unless_postgresql
from tests.operators.scripted import ScriptedAdapter, approved_campaign, operators_and_subscribers, sending_run
from tests.smsblast.factories import SubscriberFactory, UserFactory

pytestmark = pytest.mark.django_db

BLORA_DAILY = {"kind": "daily", "time": "13:00", "weekday_times": {"fri": "10:00"}}


@pytest.fixture(autouse=True)
def dispatch_redis(settings, redis_client, redis_url, private_broker):
    settings.REDIS_URL = redis_url
    ScriptedAdapter.reset()


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- scheduling ------------------------------------------------------------------------------


def test_setting_the_approved_schedule_arms_the_campaign_at_its_local_time():
    campaign = approved_campaign(schedule=dispatch.scheduling.schedule_normalize(BLORA_DAILY))
    now = utc(2021, 7, 7, 1, 0)  # Wednesday 08:00 WIB
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=BLORA_DAILY, now=now)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert campaign.next_run_at == utc(2021, 7, 7, 6, 0)
    assert AuditEvent.objects.filter(action="campaign.schedule", to_state="scheduled").exists()


def test_a_campaign_drawn_only_as_a_polygon_over_papua_is_armed_and_held_in_wit():
    from tests.smsblast.factories import AreaFactory
    from tests.smsblast.test_preview import box

    AreaFactory(code="94", name="Papua Tengah", boundary=box(135.0, -4.5, 137.0, -3.0))
    once = dispatch.scheduling.schedule_normalize(
        {"kind": "once", "at": "2030-01-07T10:00", "quiet_hours": {"start": "21:00", "end": "06:00"}}
    )
    campaign = approved_campaign(schedule=once, area_codes=[], polygon=box(135.2, -3.8, 135.6, -3.4))
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=once, now=utc(2030, 1, 1))
    campaign.refresh_from_db()
    assert campaign.next_run_at == utc(2030, 1, 7, 1, 0)  # 10:00 WIT, not 10:00 WIB

    run = dispatch.run_start(campaign_id=campaign.pk, now=campaign.next_run_at)
    assert run.frozen["zone"] == "Asia/Jayapura"
    # Quiet hours are Papua's nights: 21:30 WIT is quiet until 06:00 WIT, while 21:30 WIB is not.
    assert dispatch.is_quiet_for(run, utc(2030, 1, 7, 12, 30)) == utc(2030, 1, 7, 21, 0)
    assert dispatch.is_quiet_for(run, utc(2030, 1, 7, 14, 30)) == utc(2030, 1, 7, 21, 0)
    assert dispatch.is_quiet_for(run, utc(2030, 1, 7, 11, 30)) is None  # 20:30 WIT


def test_a_different_schedule_voids_the_approval_and_returns_to_draft():
    campaign = approved_campaign(schedule={"kind": "now"})
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=BLORA_DAILY, now=utc(2021, 7, 7))
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert campaign.schedule["weekday_times"] == {"4": "10:00"}
    assert Approval.objects.get(campaign=campaign).voided_at is not None


def test_setting_the_schedule_a_scheduled_campaign_already_has_changes_nothing_and_only_its_dispatchers_may():
    campaign = approved_campaign(schedule=dispatch.scheduling.schedule_normalize(BLORA_DAILY))
    now = utc(2021, 7, 7, 1, 0)  # Wednesday 08:00 WIB
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=BLORA_DAILY, now=now)
    events = AuditEvent.objects.count()
    later = now + timedelta(minutes=5)
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=BLORA_DAILY, now=later)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert campaign.next_run_at == utc(2021, 7, 7, 6, 0)
    assert Approval.objects.get(campaign=campaign).voided_at is None
    assert AuditEvent.objects.count() == events

    another_officer = UserFactory(role=Role.OFFICER)
    with pytest.raises(ServiceForbidden):
        dispatch.campaign_schedule(campaign=campaign, user=another_officer, schedule=BLORA_DAILY, now=later)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED


def test_arming_a_campaign_edited_back_to_draft_meanwhile_is_refused_and_keeps_the_edit():
    campaign = approved_campaign(schedule={"kind": "now"})
    page = Campaign.objects.get(pk=campaign.pk)  # the campaign page, loaded while it was approved
    later = {"kind": "once", "at": "2031-01-01T10:00"}
    campaign_update(campaign=campaign, actor=campaign.author, data={"schedule": later})
    with pytest.raises(ServiceConflict, match="Only an approved campaign can be scheduled; this one is draft"):
        dispatch.campaign_schedule_approved(campaign=page, user=campaign.author)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert campaign.schedule == later
    assert AuditEvent.objects.filter(object_id=str(campaign.pk), action="campaign.update").count() == 1


@pytest.mark.django_db(transaction=True)
def test_arming_while_an_edit_voids_the_approval_refuses_the_arming_and_keeps_the_edit():
    skip_unless_postgresql()
    campaign = approved_campaign(schedule={"kind": "now"})
    page = Campaign.objects.get(pk=campaign.pk)
    later = {"kind": "once", "at": "2031-01-01T10:00"}
    errors = race_behind_a_row(
        campaign,
        lambda: campaign_update(
            campaign=Campaign.objects.get(pk=campaign.pk), actor=campaign.author, data={"schedule": later}
        ),
        lambda: dispatch.campaign_schedule_approved(campaign=page, user=campaign.author),
    )
    assert [type(error) for error in errors] == [ServiceConflict]
    campaign.refresh_from_db()
    assert (campaign.status, campaign.schedule) == (Campaign.Status.DRAFT, later)
    events = AuditEvent.objects.filter(object_id=str(campaign.pk), object_type="campaigns.campaign")
    assert list(events.values_list("action", "from_state", "to_state")) == [("campaign.update", "approved", "draft")]


def test_scheduling_a_draft_only_stores_the_schedule():
    campaign = approved_campaign()
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.DRAFT)
    campaign.refresh_from_db()
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=BLORA_DAILY, now=utc(2021, 7, 7))
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert campaign.next_run_at is None
    assert campaign.schedule["kind"] == "daily"


def test_a_schedule_with_no_future_run_is_refused():
    campaign = approved_campaign()
    with pytest.raises(ServiceInvalid):
        dispatch.campaign_schedule(
            campaign=campaign, user=campaign.author, schedule={"kind": "once", "at": "2020-01-01T10:00"}
        )
    with pytest.raises(ServiceInvalid):
        dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule={"kind": "sometimes"})


def test_another_officer_may_not_arm_the_campaign():
    campaign = approved_campaign()
    with pytest.raises(ServiceForbidden):
        dispatch.campaign_schedule(campaign=campaign, user=UserFactory(role=Role.OFFICER), schedule={"kind": "now"})


def test_arming_a_campaign_changed_behind_its_approval_is_refused_and_it_stays_approved():
    campaign = approved_campaign()
    # Edited behind the services' back: the approval binds the old text.
    Campaign.objects.filter(pk=campaign.pk).update(text="Teks yang belum disetujui.")
    with pytest.raises(ServiceConflict, match="approval no longer matches"):
        dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule={"kind": "now"})
    campaign.refresh_from_db()
    assert (campaign.status, campaign.next_run_at) == (Campaign.Status.APPROVED, None)
    assert not AuditEvent.objects.filter(action="campaign.schedule", object_id=str(campaign.pk)).exists()


# --- starting runs ---------------------------------------------------------------------------


def _scheduled(schedule=None, **fields) -> Campaign:
    campaign = approved_campaign(schedule=dispatch.scheduling.schedule_normalize(schedule or {"kind": "now"}), **fields)
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=campaign.schedule)
    campaign.refresh_from_db()
    return campaign


def test_a_due_run_starts_once_even_when_the_scheduler_runs_twice():
    campaign = _scheduled()
    now = timezone.now() + timedelta(seconds=1)
    first = dispatch.runs_start_due(now=now)
    second = dispatch.runs_start_due(now=now)
    assert len(first) == 1
    assert second == []
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENDING
    assert campaign.next_run_at is None  # "now" runs once
    run = CampaignRun.objects.get(campaign=campaign)
    assert run.status == CampaignRun.Status.FANNING_OUT
    assert run.content_hash and run.text == campaign.text


def test_a_campaign_whose_run_cannot_start_does_not_hold_back_the_other_due_ones(monkeypatch, caplog):
    campaigns = [_scheduled(), _scheduled(skip_areas=True)]
    real_start = dispatch.run_start
    tried = []

    def start_failing_first(*, campaign_id, now=None):
        tried.append(campaign_id)
        if len(tried) == 1:  # a fault in the first campaign's data or in ours, after its run was written
            real_start(campaign_id=campaign_id, now=now)
            raise DatabaseError("could not read the frozen audience")
        return real_start(campaign_id=campaign_id, now=now)

    monkeypatch.setattr(dispatch, "run_start", start_failing_first)
    now = timezone.now() + timedelta(seconds=1)

    started = dispatch.runs_start_due(now=now)

    failed, other = sorted(campaigns, key=lambda campaign: campaign.pk != tried[0])
    assert [CampaignRun.objects.get(pk=pk).campaign_id for pk in started] == [other.pk]
    failed.refresh_from_db()
    assert failed.status == Campaign.Status.SCHEDULED  # rolled back whole, still due
    assert not CampaignRun.objects.filter(campaign=failed).exists()
    assert f"Campaign {failed.pk}: its due run could not start" in caplog.text

    monkeypatch.setattr(dispatch, "run_start", real_start)
    assert [CampaignRun.objects.get(pk=pk).campaign_id for pk in dispatch.runs_start_due(now=now)] == [failed.pk]


def test_a_scheduler_finding_another_one_starting_runs_starts_none_itself(redis_client):
    campaign = _scheduled()
    now = timezone.now() + timedelta(seconds=1)
    other_beat = redis_client.lock("smsblast:lock:runs_start_due", timeout=30)
    assert other_beat.acquire(blocking=False)
    assert dispatch.runs_start_due(now=now) == []
    assert not CampaignRun.objects.filter(campaign=campaign).exists()
    other_beat.release()
    assert len(dispatch.runs_start_due(now=now)) == 1


def test_a_run_of_the_design_example_sender_of_13_characters_freezes_it_and_its_batches_carry_it_whole():
    campaign = _scheduled(sender="PEMKAB-BLITAR")
    operators_and_subscribers(counts={"tsel": 2})
    [run_id] = dispatch.runs_start_due(now=timezone.now() + timedelta(seconds=1))
    run = CampaignRun.objects.get(pk=run_id)
    assert run.sender == "PEMKAB-BLITAR"
    assert run.content_hash == campaign.approvals.get().content_hash
    dispatch.run_fan_out(run_id=run.pk)
    [batch_id] = DispatchBatch.objects.filter(run=run).values_list("pk", flat=True)
    assert batch_send(batch_id=batch_id) == "accepted"
    assert [batch.sender for batch in ScriptedAdapter.sent] == ["PEMKAB-BLITAR"]


def test_a_second_start_of_the_same_occurrence_is_refused_and_changes_nothing():
    campaign = _scheduled()
    CampaignRun.objects.create(campaign=campaign, scheduled_for=campaign.next_run_at, content_hash="x", text="x")
    assert dispatch.run_start(campaign_id=campaign.pk, now=timezone.now() + timedelta(seconds=1)) is None
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1


def test_a_recurring_campaign_advances_to_its_next_occurrence():
    campaign = _scheduled(BLORA_DAILY)
    occurrence = campaign.next_run_at
    dispatch.runs_start_due(now=occurrence + timedelta(seconds=1))
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENDING
    assert campaign.next_run_at > occurrence
    assert CampaignRun.objects.get(campaign=campaign).scheduled_for == occurrence


def test_a_scheduler_down_past_several_occurrences_runs_only_the_latest_due_one():
    campaign = approved_campaign(schedule=dispatch.scheduling.schedule_normalize(BLORA_DAILY))
    wednesday_12 = utc(2021, 7, 7, 5, 0)
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=BLORA_DAILY, now=wednesday_12)
    thursday_13, thursday_14 = utc(2021, 7, 8, 6, 0), utc(2021, 7, 8, 7, 0)

    # Down from before Wednesday 13:00 WIB until Thursday 14:00 WIB.
    (run_id,) = dispatch.runs_start_due(now=thursday_14)
    assert dispatch.runs_start_due(now=thursday_14 + timedelta(seconds=1)) == []

    assert CampaignRun.objects.get(pk=run_id).scheduled_for == thursday_13
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1
    campaign.refresh_from_db()
    assert campaign.next_run_at == utc(2021, 7, 9, 3, 0)  # Friday 10:00 WIB


def test_an_occurrence_missed_until_just_before_the_next_is_skipped_rather_than_sent_twice_in_a_row():
    campaign = approved_campaign(schedule=dispatch.scheduling.schedule_normalize(BLORA_DAILY))
    tuesday_9 = utc(2021, 7, 6, 2, 0)
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=BLORA_DAILY, now=tuesday_9)
    thursday_1259, thursday_13 = utc(2021, 7, 8, 5, 59), utc(2021, 7, 8, 6, 0)

    # Down from Tuesday 09:00 WIB until a minute before Thursday's 13:00 WIB occurrence.
    assert dispatch.runs_start_due(now=thursday_1259) == []
    campaign.refresh_from_db()
    assert (campaign.status, campaign.next_run_at) == (Campaign.Status.SCHEDULED, thursday_13)
    event = AuditEvent.objects.get(object_id=str(campaign.pk), action="campaign.occurrences_skip")
    assert (event.from_state, event.to_state, event.details["occurrences_skipped"]) == ("scheduled", "scheduled", 2)

    (run_id,) = dispatch.runs_start_due(now=thursday_13)
    assert list(CampaignRun.objects.filter(campaign=campaign).values_list("pk", "scheduled_for")) == [
        (run_id, thursday_13)
    ]


def test_the_history_gives_in_indonesian_why_missed_occurrences_were_not_sent_before_the_next():
    from tests.conftest import client_for

    campaign = approved_campaign(schedule=dispatch.scheduling.schedule_normalize(BLORA_DAILY))
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=BLORA_DAILY, now=utc(2021, 7, 6, 2, 0))
    dispatch.runs_start_due(now=utc(2021, 7, 8, 5, 59))

    page = client_for(campaign.author).get(f"/campaigns/{campaign.pk}/").content.decode()

    assert "pengiriman yang terlewat tidak dikirim: pengiriman berikutnya sudah dekat" in page
    assert "Alasan: Kejadian ini terlewat hingga kejadian berikutnya lebih dekat; yang berikutnya yang dikirim." in page


def test_an_occurrence_missed_into_quiet_hours_is_skipped_when_it_could_only_send_nearer_the_next_one():
    schedule = {**BLORA_DAILY, "quiet_hours": {"start": "21:00", "end": "06:00"}}
    campaign = approved_campaign(schedule=dispatch.scheduling.schedule_normalize(schedule))
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=schedule, now=utc(2021, 7, 6, 2, 0))

    # Down from Tuesday 09:00 WIB until 23:00: Tuesday's 13:00 occurrence could send only at 06:00 on Wednesday,
    # seven hours before Wednesday's own.
    assert dispatch.runs_start_due(now=utc(2021, 7, 6, 16, 0)) == []
    campaign.refresh_from_db()
    assert (campaign.status, campaign.next_run_at) == (Campaign.Status.SCHEDULED, utc(2021, 7, 7, 6, 0))
    assert AuditEvent.objects.filter(object_id=str(campaign.pk), action="campaign.occurrences_skip").exists()


def test_a_run_started_late_into_its_quiet_hours_is_valid_from_when_it_may_send_not_from_its_start():
    schedule = {"kind": "once", "at": "2021-07-06T20:00", "quiet_hours": {"start": "21:00", "end": "06:00"}}
    campaign = approved_campaign(schedule=dispatch.scheduling.schedule_normalize(schedule), validity_minutes=120)
    operators_and_subscribers(counts={"tsel": 2})
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=schedule, now=utc(2021, 7, 6, 2, 0))

    # Down from before 20:00 WIB until 21:30: the run starts in its quiet hours and may first send at 06:00.
    (run_id,) = dispatch.runs_start_due(now=utc(2021, 7, 6, 14, 30))
    dispatch.run_fan_out(run_id=run_id)
    wednesday_6 = utc(2021, 7, 6, 23, 0)
    assert CampaignRun.objects.get(pk=run_id).expires_at == wednesday_6 + timedelta(minutes=120)
    (batch,) = DispatchBatch.objects.filter(run_id=run_id)
    assert batch_send(batch_id=batch.pk, now=utc(2021, 7, 6, 15, 0)) == "quiet"
    assert batch_send(batch_id=batch.pk, now=wednesday_6 + timedelta(minutes=1)) == "accepted"
    assert len(ScriptedAdapter.sent) == 1


def test_a_recurring_campaign_resumed_just_before_its_next_occurrence_sends_that_one_only():
    campaign, thursday = _blora_thursday_run_sent()
    dispatch.campaign_pause(campaign=campaign, actor=campaign.author)
    Delivery.objects.filter(run_id=thursday).update(status="delivered")
    dispatch.run_check_complete(run_id=thursday, now=utc(2021, 7, 8, 7, 0))

    # Paused across Friday's 10:00 WIB occurrence, resumed at 12:58 on Saturday.
    dispatch.campaign_resume(campaign=campaign, actor=campaign.author)
    saturday_1258, saturday_13 = utc(2021, 7, 10, 5, 58), utc(2021, 7, 10, 6, 0)
    assert dispatch.runs_start_due(now=saturday_1258) == []
    (saturday,) = dispatch.runs_start_due(now=saturday_13)
    runs = CampaignRun.objects.filter(campaign=campaign).order_by("scheduled_for")
    assert list(runs.values_list("pk", flat=True)) == [thursday, saturday]


def _until_sunday_saturday_run_sent() -> tuple[Campaign, int]:
    """Arm a daily 13:00 WIB campaign ending Sunday 11 July 2021 and send its Saturday run; return it and the run id.

    The run's batches are accepted, so it waits for delivery reports.
    """
    until_sunday = dispatch.scheduling.schedule_normalize({"kind": "daily", "time": "13:00", "until": "2021-07-11"})
    campaign = approved_campaign(schedule=until_sunday)
    operators_and_subscribers(counts={"tsel": 2})
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=until_sunday, now=utc(2021, 7, 10))
    (saturday,) = dispatch.runs_start_due(now=utc(2021, 7, 10, 6, 0))
    dispatch.run_fan_out(run_id=saturday)
    DispatchBatch.objects.filter(run_id=saturday).update(status="accepted")
    return campaign, saturday


def test_an_occurrence_missed_until_after_the_end_date_is_not_sent_late_and_the_campaign_completes():
    campaign, saturday = _until_sunday_saturday_run_sent()
    Delivery.objects.filter(run_id=saturday).update(status="delivered")
    dispatch.run_check_complete(run_id=saturday, now=utc(2021, 7, 10, 7, 0))
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.SCHEDULED

    # The scheduler is down from before Sunday 13:00 WIB until Tuesday 08:00 WIB.
    assert dispatch.runs_start_due(now=utc(2021, 7, 13, 1, 0)) == []
    assert list(CampaignRun.objects.filter(campaign=campaign).values_list("pk", flat=True)) == [saturday]
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.COMPLETED
    assert campaign.next_run_at is None
    event = AuditEvent.objects.get(action="campaign.schedule_end", object_id=str(campaign.pk))
    assert (event.from_state, event.to_state, event.details["occurrences_skipped"]) == ("scheduled", "completed", 1)


def test_an_occurrence_missed_on_the_last_day_still_runs_late_that_day():
    campaign, saturday = _until_sunday_saturday_run_sent()
    Delivery.objects.filter(run_id=saturday).update(status="delivered")
    dispatch.run_check_complete(run_id=saturday, now=utc(2021, 7, 10, 7, 0))

    (sunday,) = dispatch.runs_start_due(now=utc(2021, 7, 11, 9, 0))  # Sunday 16:00 WIB
    assert CampaignRun.objects.get(pk=sunday).scheduled_for == utc(2021, 7, 11, 6, 0)
    assert Campaign.objects.get(pk=campaign.pk).next_run_at is None


def test_a_campaign_still_sending_when_its_schedule_ended_unsent_completes_with_its_run():
    campaign, saturday = _until_sunday_saturday_run_sent()  # reports still to come
    dispatch.campaign_pause(campaign=campaign, actor=campaign.author)
    dispatch.campaign_resume(campaign=campaign, actor=campaign.author)
    # Resumed on Monday: Saturday's run goes on, Sunday's occurrence is not sent the day after the end date.
    assert dispatch.runs_start_due(now=utc(2021, 7, 12, 1, 0)) == []
    campaign.refresh_from_db()
    assert (campaign.status, campaign.next_run_at) == (Campaign.Status.SENDING, None)

    Delivery.objects.filter(run_id=saturday).update(status="delivered")
    dispatch.run_check_complete(run_id=saturday, now=utc(2021, 7, 12, 2, 0))
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.COMPLETED
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_run_completing_as_the_start_finds_the_schedule_ended_completes_the_campaign():
    """The last run ends while a start finds the end date passed: the campaign completes, never left scheduled
    with nothing to start."""
    skip_unless_postgresql()
    campaign, saturday = _until_sunday_saturday_run_sent()
    Delivery.objects.filter(run_id=saturday).update(status="delivered")
    tuesday = utc(2021, 7, 13, 1, 0)
    errors = race_behind_a_row(
        campaign,
        lambda: dispatch.run_start(campaign_id=campaign.pk, now=tuesday),
        lambda: dispatch.run_check_complete(run_id=saturday, now=tuesday),
    )
    assert errors == []
    campaign.refresh_from_db()
    assert (campaign.status, campaign.next_run_at) == (Campaign.Status.COMPLETED, None)


def test_dispatch_refuses_a_campaign_whose_approval_no_longer_matches():
    campaign = _scheduled()
    # Edited behind the services' back: the approval binds the old text.
    Campaign.objects.filter(pk=campaign.pk).update(text="Teks yang belum disetujui.")
    assert dispatch.runs_start_due(now=timezone.now() + timedelta(seconds=1)) == []
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert not CampaignRun.objects.filter(campaign=campaign).exists()
    assert AuditEvent.objects.filter(action="campaign.dispatch_refused", object_id=str(campaign.pk)).exists()


def test_a_campaign_not_yet_due_does_not_start():
    campaign = _scheduled(BLORA_DAILY)
    assert dispatch.runs_start_due(now=campaign.next_run_at - timedelta(seconds=1)) == []


def test_a_start_before_the_next_run_time_starts_nothing_and_keeps_that_time():
    # Another scheduler may have started the due occurrence and moved next_run_at on meanwhile.
    campaign = _scheduled(BLORA_DAILY)
    due = campaign.next_run_at
    assert dispatch.run_start(campaign_id=campaign.pk, now=due - timedelta(seconds=1)) is None
    campaign.refresh_from_db()
    assert (campaign.status, campaign.next_run_at) == (Campaign.Status.SCHEDULED, due)
    assert not CampaignRun.objects.filter(campaign=campaign).exists()


# --- fan-out ---------------------------------------------------------------------------------


def _fanned_out_run(counts, *, batch_size=3, chunk_size=4, extra=None):
    campaign = approved_campaign()
    operators = operators_and_subscribers(counts=counts, batch_size=batch_size)
    if extra:
        extra(operators)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    created = dispatch.run_fan_out(run_id=run.pk, chunk_size=chunk_size)
    run.refresh_from_db()
    return run, operators, created


def test_fan_out_writes_one_delivery_per_recipient_in_batches_of_one_operator_each():
    def extra(operators):
        from smsblast.models import Area

        district = Area.objects.get(code="35.05.01")
        SubscriberFactory(area=district, operator=operators["tsel"], opted_out_at=timezone.now())
        SubscriberFactory(area=district, operator=None)
        SubscriberFactory(area=Area.objects.get(code="35.05.02"), operator=operators["isat"])
        SubscriberFactory(area=None, operator=operators["isat"])  # outside the area

    run, operators, created = _fanned_out_run({"tsel": 7, "isat": 4}, extra=extra)
    assert run.fanout_done and run.status == CampaignRun.Status.SENDING
    deliveries = Delivery.objects.filter(run=run)
    assert deliveries.count() == 7 + 4 + 3
    assert set(deliveries.filter(status="skipped").values_list("reason", flat=True)) == {"opted_out", "no_operator"}
    batches = DispatchBatch.objects.filter(run=run)
    assert created == batches.count()
    for batch in batches:
        members = deliveries.filter(batch=batch)
        assert 1 <= members.count() <= 3
        assert batch.size == members.count() and batch.segments == batch.size
        assert set(members.values_list("operator_id", flat=True)) == {batch.operator_id}
    assert deliveries.filter(status="queued", batch__isnull=False).count() == 7 + 5


def test_fan_out_run_again_creates_nothing_twice():
    run, _, created = _fanned_out_run({"tsel": 10})
    assert dispatch.run_fan_out(run_id=run.pk, chunk_size=4) == 0
    CampaignRun.objects.filter(pk=run.pk).update(fanout_done=False, status=CampaignRun.Status.FANNING_OUT)
    assert dispatch.run_fan_out(run_id=run.pk, chunk_size=4) == 0
    assert Delivery.objects.filter(run=run).count() == 10
    assert DispatchBatch.objects.filter(run=run).count() == created


def test_the_end_of_a_fan_out_is_audited_once_with_the_batches_it_wrote():
    run, _, created = _fanned_out_run({"tsel": 4}, batch_size=2)
    dispatch.run_fan_out(run_id=run.pk)  # a spare task finds the fan-out done
    events = AuditEvent.objects.filter(
        object_type="campaigns.campaignrun", object_id=str(run.pk), action="run.fanned_out"
    )
    assert [(e.from_state, e.to_state, e.details) for e in events] == [("fanning_out", "sending", {"batches": created})]


def test_a_fan_out_task_arriving_after_its_run_was_cancelled_writes_nothing():
    campaign = approved_campaign()
    operators_and_subscribers(counts={"tsel": 3})
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    campaign_cancel(campaign=Campaign.objects.get(pk=campaign.pk), actor=campaign.author)
    assert dispatch.run_fan_out(run_id=run.pk) == 0
    assert not Delivery.objects.filter(run=run).exists()
    assert not DispatchBatch.objects.filter(run=run).exists()
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.CANCELLED


def test_a_number_deleted_and_added_again_during_fan_out_keeps_its_one_delivery_and_the_rest_still_fan_out():
    from smsblast.models import Area

    run, operators, _ = _fanned_out_run({"tsel": 6})
    # Between two chunks the first number is deleted and added again (a new row past the cursor), and a
    # new number arrives; then the fan-out resumes from its cursor.
    first = Subscriber.objects.order_by("pk").first()
    first.delete()
    district = Area.objects.get(code="35.05.02")
    SubscriberFactory(msisdn=first.msisdn, area=district, operator=operators["tsel"])
    newcomer = SubscriberFactory(area=district, operator=operators["tsel"])
    CampaignRun.objects.filter(pk=run.pk).update(fanout_done=False, status=CampaignRun.Status.FANNING_OUT)

    dispatch.run_fan_out(run_id=run.pk, chunk_size=4)

    run.refresh_from_db()
    assert run.fanout_done and run.status == CampaignRun.Status.SENDING
    assert Delivery.objects.filter(run=run, msisdn=first.msisdn).count() == 1
    assert Delivery.objects.filter(run=run, msisdn=newcomer.msisdn, status="queued", batch__isnull=False).exists()
    assert Delivery.objects.filter(run=run).count() == 7
    sizes = DispatchBatch.objects.filter(run=run).values_list("size", flat=True)
    assert sum(sizes) == Delivery.objects.filter(run=run, batch__isnull=False).count()


def test_an_operator_edited_while_its_run_fans_out_is_followed_from_the_next_chunk(monkeypatch):
    from operators.models import Operator
    from tests.operators.factories import OperatorFactory

    write_chunk = dispatch._fan_out_chunk_once
    chunks = []

    def the_admin_edits_operators_after_the_first_chunk(run, rows, operators, now):
        batches = write_chunk(run, rows, operators, now)
        chunks.append({msisdn for _, msisdn, _, _ in rows})
        if len(chunks) == 1:
            Operator.objects.filter(slug="tsel").update(batch_size=1)
            Operator.objects.filter(slug="isat").update(active=False)
            # A new operator's prefixes route the last Telkomsel number to it.
            last = Subscriber.objects.filter(operator__slug="tsel").latest("pk")
            Subscriber.objects.filter(pk=last.pk).update(operator=OperatorFactory(slug="newop", adapter="scripted"))
        return batches

    monkeypatch.setattr(dispatch, "_fan_out_chunk_once", the_admin_edits_operators_after_the_first_chunk)
    # Ten Telkomsel numbers, then six Indosat ones, in chunks of four.
    run, operators, _ = _fanned_out_run({"tsel": 10, "isat": 6}, batch_size=3, chunk_size=4)

    later = Delivery.objects.filter(run=run).exclude(msisdn__in=chunks[0])
    assert set(later.filter(operator=operators["tsel"]).values_list("batch__size", flat=True)) == {1}
    # A skipped delivery keeps its operator.
    assert set(later.filter(operator=operators["isat"]).values_list("status", "reason")) == {
        ("skipped", "operator_inactive")
    }
    assert later.filter(operator=operators["isat"]).count() == 6
    assert later.get(operator__slug="newop").status == "queued"


def test_numbers_routed_to_an_operator_added_as_a_chunk_is_read_are_sent_to_it_not_skipped(monkeypatch):
    """An admin's save of a new operator, moving numbers to it, may commit between a chunk's look at the operators and
    its read of the subscribers: the numbers are that operator's, not numbers without one."""
    from tests.operators.factories import OperatorFactory

    read_chunk = dispatch._chunk_rows
    added = []

    def the_admin_adds_an_operator_just_before_the_chunk_is_read(run, size):
        if not added:
            added.append(OperatorFactory(slug="byu", adapter="scripted", batch_size=10))
            Subscriber.objects.filter(operator__slug="tsel").update(operator=added[0])
        return read_chunk(run, size)

    monkeypatch.setattr(dispatch, "_chunk_rows", the_admin_adds_an_operator_just_before_the_chunk_is_read)
    run, _, _ = _fanned_out_run({"tsel": 3}, batch_size=10, chunk_size=10)

    deliveries = Delivery.objects.filter(run=run)
    assert set(deliveries.values_list("operator__slug", "status", "reason")) == {("byu", "queued", "")}
    assert deliveries.count() == 3
    assert set(DispatchBatch.objects.filter(run=run).values_list("operator__slug", flat=True)) == {"byu"}


def test_fan_out_streams_the_audience_in_chunks_advancing_its_cursor():
    run, _, _ = _fanned_out_run({"tsel": 9}, batch_size=100, chunk_size=4)
    # 9 recipients in chunks of 4 make three batches even with room for 100: a chunk never waits for another.
    assert sorted(DispatchBatch.objects.filter(run=run).values_list("size", flat=True)) == [1, 4, 4]
    assert run.fanout_cursor == Subscriber.objects.aggregate(last=Max("id"))["last"]


def test_a_drawn_polygon_reaches_the_subscribers_inside_it_at_fan_out_and_in_the_estimate():
    from campaigns.selectors import campaign_audience

    square = {
        "type": "Polygon",
        "coordinates": [[[112.0, -8.2], [112.2, -8.2], [112.2, -8.0], [112.0, -8.0], [112.0, -8.2]]],
    }
    campaign = _scheduled(area_codes=[], polygon=square)
    operator = operators_and_subscribers(counts={"tsel": 0})["tsel"]
    inside = SubscriberFactory(area=None, operator=operator, latitude=-8.1, longitude=112.1)
    SubscriberFactory(area=None, operator=operator, latitude=-7.0, longitude=110.0)  # outside the polygon
    assert campaign_audience(campaign)["total"] == 1
    [run] = dispatch.runs_start_due(now=timezone.now() + timedelta(seconds=1))
    run = CampaignRun.objects.get(pk=getattr(run, "pk", run))
    dispatch.run_fan_out(run_id=run.pk)
    assert list(Delivery.objects.filter(run=run).values_list("msisdn", flat=True)) == [inside.msisdn]


def test_a_drawn_polygon_fans_out_reading_the_coordinates_of_one_chunk_at_a_time():
    import re

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from smsblast.models import Area

    square = {
        "type": "Polygon",
        "coordinates": [[[112.0, -8.2], [112.2, -8.2], [112.2, -8.0], [112.0, -8.0], [112.0, -8.2]]],
    }
    campaign = approved_campaign(area_codes=["35.05.02"], polygon=square)
    operator = operators_and_subscribers(counts={"tsel": 0}, batch_size=100)["tsel"]
    district = Area.objects.get(code="35.05.02")
    expected = set()
    for number in range(30):
        inside = SubscriberFactory(area=None, operator=operator, latitude=-8.1, longitude=112.1)
        SubscriberFactory(area=None, operator=operator, latitude=-8.1, longitude=112.3)  # east of the polygon
        homed = SubscriberFactory(area=district, operator=operator) if number % 3 == 0 else None
        expected |= {inside.msisdn} | ({homed.msisdn} if homed else set())
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    CampaignRun.objects.filter(pk=run.pk).update(frozen={**run.frozen, "polygon": square})

    with CaptureQueriesContext(connection) as queries:
        dispatch.run_fan_out(run_id=run.pk, chunk_size=4)

    assert set(Delivery.objects.filter(run=run).values_list("msisdn", flat=True)) == expected
    run.refresh_from_db()
    assert run.fanout_done and run.status == CampaignRun.Status.SENDING
    # No statement names more subscribers than a chunk holds: the audience is never read whole.
    listed = [
        len(found.split(","))
        for query in queries.captured_queries
        for found in re.findall(r"IN \(([^()]*)\)", query["sql"])
    ]
    assert max(listed) <= 4


@pytest.mark.parametrize(
    ("batch_size", "segments_per_second", "segments", "expected"),
    [(1000, 0, 3, 1000), (1000, 500, 1, 500), (1000, 500, 2, 250), (100, 500, 2, 100), (1000, 2, 3, 1)],
)
def test_a_batch_never_carries_more_segments_than_its_operator_allows_in_a_second(
    batch_size, segments_per_second, segments, expected
):
    from operators.models import Operator

    operator = Operator(batch_size=batch_size, segments_per_second=segments_per_second)
    assert dispatch.batch_size_for(operator, segments=segments) == expected


def test_fan_out_splits_batches_to_the_operators_rate_limit():
    campaign = approved_campaign()
    operator = operators_and_subscribers(counts={"slow": 10}, batch_size=100, segments_per_second=4)["slow"]
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    slow_run = sending_run(campaign, segments=2)
    dispatch.run_fan_out(run_id=slow_run.pk)
    sizes = list(DispatchBatch.objects.filter(run=slow_run, operator=operator).values_list("segments", flat=True))
    assert sorted(sizes) == [4, 4, 4, 4, 4]


# --- completion, pause, resume, cancel -------------------------------------------------------


def test_a_run_completes_when_every_delivery_is_final_and_the_campaign_follows():
    run, _, _ = _fanned_out_run({"tsel": 4})
    for batch_id in DispatchBatch.objects.filter(run=run).values_list("pk", flat=True):
        assert batch_send(batch_id=batch_id) == "accepted"
    assert dispatch.run_check_complete(run_id=run.pk).status == CampaignRun.Status.SENDING
    Delivery.objects.filter(run=run, status="queued").update(status="delivered")
    run = dispatch.run_check_complete(run_id=run.pk)
    assert run.status == CampaignRun.Status.COMPLETED
    assert Campaign.objects.get(pk=run.campaign_id).status == Campaign.Status.COMPLETED


def test_completing_a_run_is_audited_with_the_state_it_left():
    run, _, _ = _fanned_out_run({"tsel": 2})
    DispatchBatch.objects.filter(run=run).update(status="accepted")
    Delivery.objects.filter(run=run).update(status="delivered")
    dispatch.run_check_complete(run_id=run.pk)
    (event,) = AuditEvent.objects.filter(
        object_type="campaigns.campaignrun", object_id=str(run.pk), action="run.complete"
    )
    assert (event.from_state, event.to_state) == ("sending", "completed")


def test_a_run_paused_before_its_fan_out_finished_is_not_completed_by_the_reports_on_what_it_wrote():
    run, _, _ = _fanned_out_run({"tsel": 2})
    # Paused with subscribers still to write: the reports on the batches written so far are all in.
    CampaignRun.objects.filter(pk=run.pk).update(status=CampaignRun.Status.PAUSED, fanout_done=False)
    DispatchBatch.objects.filter(run=run).update(status="accepted")
    Delivery.objects.filter(run=run).update(status="delivered")
    assert dispatch.run_check_complete(run_id=run.pk).status == CampaignRun.Status.PAUSED
    assert Campaign.objects.get(pk=run.campaign_id).status == Campaign.Status.SENDING


def test_a_run_whose_messages_are_reported_before_their_batch_is_answered_waits_for_the_answer():
    run, _, _ = _fanned_out_run({"tsel": 2})
    # An operator may report a batch's messages before the worker records its answer (or a pull ack).
    DispatchBatch.objects.filter(run=run).update(status="in_flight", attempts=1)
    Delivery.objects.filter(run=run).update(status="delivered")
    assert dispatch.run_check_complete(run_id=run.pk).status == CampaignRun.Status.SENDING


def test_every_delivery_and_batch_status_is_either_final_or_one_completion_waits_for():
    # Completion asks for the unsettled states by name (one index probe): a state in neither set would be missed.
    assert set(Delivery.Status) == Delivery.FINAL_STATUSES | set(dispatch.UNSETTLED_DELIVERY_STATUSES)
    assert not Delivery.FINAL_STATUSES & set(dispatch.UNSETTLED_DELIVERY_STATUSES)
    assert set(DispatchBatch.Status) == DispatchBatch.FINAL_STATUSES | set(dispatch.UNSETTLED_BATCH_STATUSES)
    assert not DispatchBatch.FINAL_STATUSES & set(dispatch.UNSETTLED_BATCH_STATUSES)


def test_a_recurring_campaign_goes_back_to_scheduled_after_its_run():
    run, _, _ = _fanned_out_run({"tsel": 2})
    Campaign.objects.filter(pk=run.campaign_id).update(next_run_at=timezone.now() + timedelta(days=1))
    DispatchBatch.objects.filter(run=run).update(status="accepted")
    Delivery.objects.filter(run=run).update(status="undelivered")
    assert dispatch.run_check_complete(run_id=run.pk).status == CampaignRun.Status.COMPLETED
    assert Campaign.objects.get(pk=run.campaign_id).status == Campaign.Status.SCHEDULED


def test_a_campaign_ends_with_failures_when_any_of_its_runs_failed_not_only_the_one_finishing_last():
    earlier, _, _ = _fanned_out_run({"tsel": 2})
    campaign = earlier.campaign
    # The last occurrence started while the earlier run still awaited reports, and its batches failed.
    last = sending_run(campaign, scheduled_for=earlier.scheduled_for + timedelta(days=1))
    dispatch.run_fan_out(run_id=last.pk)
    DispatchBatch.objects.filter(run=last).update(status="failed")
    Delivery.objects.filter(run=last).update(status="failed")
    assert dispatch.run_check_complete(run_id=last.pk).status == CampaignRun.Status.COMPLETED_WITH_FAILURES
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.SENDING

    DispatchBatch.objects.filter(run=earlier).update(status="accepted")
    Delivery.objects.filter(run=earlier).update(status="delivered")
    assert dispatch.run_check_complete(run_id=earlier.pk).status == CampaignRun.Status.COMPLETED
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.COMPLETED_WITH_FAILURES


def test_a_runs_cost_is_counted_at_the_tariffs_of_its_start_not_as_the_admin_later_changes_them():
    from campaigns.dispatch_selectors import run_progress

    _scheduled()
    operators = operators_and_subscribers(counts={"tsel": 2}, batch_size=10)
    (run_id,) = dispatch.runs_start_due(now=timezone.now() + timedelta(seconds=1))
    dispatch.run_fan_out(run_id=run_id)
    (batch_id,) = DispatchBatch.objects.filter(run_id=run_id).values_list("pk", flat=True)
    assert batch_send(batch_id=batch_id) == "accepted"
    run = CampaignRun.objects.get(pk=run_id)
    assert run_progress(run)["cost"] == 2 * run.segments * 250

    operators["tsel"].tariff_per_segment = 400
    operators["tsel"].save()
    assert run_progress(run)["cost"] == 2 * run.segments * 250


def test_the_tariff_of_an_operator_added_after_the_run_started_is_frozen_when_the_run_first_sends_to_it():
    from campaigns.dispatch_selectors import run_progress
    from smsblast.models import Area
    from tests.operators.factories import OperatorFactory

    _scheduled()
    operators_and_subscribers(counts={"tsel": 1}, batch_size=10)
    (run_id,) = dispatch.runs_start_due(now=timezone.now() + timedelta(seconds=1))
    # Added, with its subscribers, while the run was starting: fan-out reaches them.
    added = OperatorFactory(slug="new", adapter="scripted", batch_size=10, tariff_per_segment=300)
    SubscriberFactory.create_batch(2, area=Area.objects.get(code="35.05.01"), operator=added)
    dispatch.run_fan_out(run_id=run_id)
    for batch_id in DispatchBatch.objects.filter(run_id=run_id).values_list("pk", flat=True):
        assert batch_send(batch_id=batch_id) == "accepted"
    run = CampaignRun.objects.get(pk=run_id)
    assert run_progress(run)["cost"] == 1 * 250 + 2 * 300

    added.tariff_per_segment = 500
    added.save()
    assert run_progress(run)["cost"] == 1 * 250 + 2 * 300


def test_a_run_sends_and_costs_the_encoding_and_parts_of_its_text():
    from campaigns.dispatch_selectors import run_progress
    from operators.services import batch_outbound

    text = "Vaksinasi “gratis” " + "ç" * 130  # UCS-2, 149 units: three parts of 67
    _scheduled(text=text)
    operators_and_subscribers(counts={"tsel": 2}, batch_size=10)
    (run_id,) = dispatch.runs_start_due(now=timezone.now() + timedelta(seconds=1))
    dispatch.run_fan_out(run_id=run_id)
    batch = DispatchBatch.objects.get(run_id=run_id)
    outbound = batch_outbound(batch)
    assert (outbound.text, outbound.encoding, outbound.segments, batch.segments) == (text, "UCS2", 3, 2 * 3)
    assert batch_send(batch_id=batch.pk) == "accepted"
    assert (ScriptedAdapter.sent[0].encoding, ScriptedAdapter.sent[0].segments) == ("UCS2", 3)
    assert run_progress(CampaignRun.objects.get(pk=run_id))["cost"] == 2 * 3 * 250


def test_failed_batches_complete_the_run_with_failures():
    run, _, _ = _fanned_out_run({"tsel": 2})
    DispatchBatch.objects.filter(run=run).update(status="failed")
    Delivery.objects.filter(run=run).update(status="failed")
    assert dispatch.run_check_complete(run_id=run.pk).status == CampaignRun.Status.COMPLETED_WITH_FAILURES
    assert Campaign.objects.get(pk=run.campaign_id).status == Campaign.Status.COMPLETED_WITH_FAILURES


def test_pause_stops_new_batches_and_resume_sends_them():
    run, _, _ = _fanned_out_run({"tsel": 6})
    campaign = run.campaign
    dispatch.campaign_pause(campaign=campaign, actor=campaign.author)
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.PAUSED
    batch_ids = list(DispatchBatch.objects.filter(run=run).values_list("pk", flat=True))
    assert {batch_send(batch_id=batch_id) for batch_id in batch_ids} == {"paused"}
    assert ScriptedAdapter.sent == []
    assert set(DispatchBatch.objects.filter(run=run).values_list("status", flat=True)) == {"pending"}
    with pytest.raises(ServiceConflict):
        dispatch.campaign_pause(campaign=campaign, actor=campaign.author)

    dispatch.campaign_resume(campaign=campaign, actor=campaign.author)
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.SENDING
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.SENDING
    assert {batch_send(batch_id=batch_id) for batch_id in batch_ids} == {"accepted"}
    assert len(ScriptedAdapter.sent) == len(batch_ids)


def test_a_fan_out_paused_before_it_wrote_anything_writes_its_batches_unsent_and_resume_sends_them(
    django_capture_on_commit_callbacks,
):
    campaign = approved_campaign()
    operators_and_subscribers(counts={"tsel": 6}, batch_size=2)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    dispatch.campaign_pause(campaign=campaign, actor=campaign.author)
    with django_capture_on_commit_callbacks() as callbacks:
        assert dispatch.run_fan_out(run_id=run.pk, chunk_size=4) == 3
    assert _enqueued(callbacks) == []
    run.refresh_from_db()
    assert (run.status, run.fanout_done) == (CampaignRun.Status.PAUSED, True)
    assert not AuditEvent.objects.filter(action="run.fanned_out", object_id=str(run.pk)).exists()

    with django_capture_on_commit_callbacks() as callbacks:
        dispatch.campaign_resume(campaign=campaign, actor=campaign.author)
    batch_ids = set(DispatchBatch.objects.filter(run=run).values_list("pk", flat=True))
    assert {batch_id for batch_id, _queue in _enqueued(callbacks)} == batch_ids
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.SENDING
    assert {batch_send(batch_id=batch_id) for batch_id in batch_ids} == {"accepted"}


def test_another_officer_may_not_pause_or_resume_the_campaign():
    run, _, _ = _fanned_out_run({"tsel": 2})
    campaign, stranger = run.campaign, UserFactory(role=Role.OFFICER)
    with pytest.raises(ServiceForbidden):
        dispatch.campaign_pause(campaign=campaign, actor=stranger)
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.SENDING
    dispatch.campaign_pause(campaign=campaign, actor=campaign.author)
    with pytest.raises(ServiceForbidden):
        dispatch.campaign_resume(campaign=campaign, actor=stranger)
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.PAUSED
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.PAUSED


def test_only_a_sending_campaign_can_be_paused_and_only_a_paused_one_resumed():
    campaign = _scheduled(BLORA_DAILY)
    with pytest.raises(ServiceConflict, match="Only a sending campaign can be paused; this one is scheduled"):
        dispatch.campaign_pause(campaign=campaign, actor=campaign.author)
    with pytest.raises(ServiceConflict, match="Only a paused campaign can be resumed; this one is scheduled"):
        dispatch.campaign_resume(campaign=campaign, actor=campaign.author)
    campaign_cancel(campaign=campaign, actor=campaign.author)
    with pytest.raises(ServiceConflict, match="this one is cancelled"):
        dispatch.campaign_resume(campaign=campaign, actor=campaign.author)
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.CANCELLED
    assert not AuditEvent.objects.filter(object_id=str(campaign.pk), action__in=["campaign.pause", "campaign.resume"])


def test_a_run_resumed_after_its_validity_window_sends_nothing_and_its_unsent_messages_fail():
    run, _, _ = _fanned_out_run({"tsel": 4})
    campaign = run.campaign
    dispatch.campaign_pause(campaign=campaign, actor=campaign.author)
    CampaignRun.objects.filter(pk=run.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    dispatch.campaign_resume(campaign=campaign, actor=campaign.author)  # before the reconciler's next pass

    batch_ids = list(DispatchBatch.objects.filter(run=run).values_list("pk", flat=True))
    assert {batch_send(batch_id=pk) for pk in batch_ids} == {"expired"}
    assert ScriptedAdapter.sent == []
    dispatch.dispatch_reconcile()
    assert set(Delivery.objects.filter(run=run).values_list("reason", flat=True)) == {"validity_passed"}
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.COMPLETED_WITH_FAILURES


def test_cancel_stops_the_run_and_cancels_unsent_deliveries():
    run, _, _ = _fanned_out_run({"tsel": 6})
    first, *rest = DispatchBatch.objects.filter(run=run).order_by("created_at", "pk")
    assert batch_send(batch_id=first.pk) == "accepted"
    campaign = run.campaign
    campaign_cancel(campaign=campaign, actor=campaign.author)
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.CANCELLED
    assert {b.status for b in DispatchBatch.objects.filter(pk__in=[b.pk for b in rest])} == {"cancelled"}
    assert Delivery.objects.filter(batch=first, status="queued").count() == first.size  # sent: reports decide
    assert Delivery.objects.filter(run=run, status="cancelled").count() == 6 - first.size
    assert batch_send(batch_id=rest[0].pk) in {"final", "cancelled"}
    assert len(ScriptedAdapter.sent) == 1


def test_cancel_audits_each_unsent_batch_it_cancels_with_the_state_it_left():
    run, _, _ = _fanned_out_run({"tsel": 6}, batch_size=3, chunk_size=6)
    first, second = DispatchBatch.objects.filter(run=run).order_by("created_at", "pk")
    DispatchBatch.objects.filter(pk=second.pk).update(status=DispatchBatch.Status.RETRY_WAIT, attempts=1)
    campaign = run.campaign

    campaign_cancel(campaign=campaign, actor=campaign.author)

    events = AuditEvent.objects.filter(action="batch.cancel", object_type="campaigns.dispatchbatch")
    assert sorted((e.object_id, e.actor, e.from_state, e.to_state) for e in events) == sorted(
        [
            (str(first.pk), campaign.author, "pending", "cancelled"),
            (str(second.pk), campaign.author, "retry_wait", "cancelled"),
        ]
    )


# --- reconciler ------------------------------------------------------------------------------


def _enqueued(callbacks) -> list[tuple]:
    """Return the (batch id, queue) pairs handed to batches_enqueue by captured on-commit callbacks."""
    pairs = []
    for callback in callbacks:
        enqueue = getattr(callback, "__wrapped__", callback)
        if getattr(enqueue, "func", None) is dispatch.batches_enqueue:
            pairs.extend(enqueue.args[0])
    return pairs


def test_the_reconciler_re_drives_an_expired_lease_with_the_same_batch_id(django_capture_on_commit_callbacks):
    run, _, _ = _fanned_out_run({"tsel": 3})
    batch = DispatchBatch.objects.get(run=run)
    past = timezone.now() - timedelta(minutes=5)
    # A worker leased the batch and died.
    DispatchBatch.objects.filter(pk=batch.pk).update(status="in_flight", lease_expires_at=past, attempts=1)
    with django_capture_on_commit_callbacks() as callbacks:
        counts = dispatch.dispatch_reconcile()
    assert counts["leases"] == 1
    assert _enqueued(callbacks) == [(batch.pk, "dispatch.tsel")]
    assert DispatchBatch.objects.get(pk=batch.pk).status == "pending"
    assert batch_send(batch_id=batch.pk) == "accepted"
    assert [sent.batch_id for sent in ScriptedAdapter.sent] == [str(batch.pk)]
    assert DispatchBatch.objects.get(pk=batch.pk).attempts == 2


def test_the_reconciler_audits_taking_back_an_expired_lease():
    run, _, _ = _fanned_out_run({"tsel": 3})
    batch = DispatchBatch.objects.get(run=run)
    DispatchBatch.objects.filter(pk=batch.pk).update(
        status="in_flight", lease_expires_at=timezone.now() - timedelta(minutes=5), attempts=1
    )
    dispatch.dispatch_reconcile()
    dispatch.dispatch_reconcile()
    (event,) = AuditEvent.objects.filter(object_type="campaigns.dispatchbatch", object_id=str(batch.pk))
    assert (event.action, event.from_state, event.to_state) == ("batch.lease_expired", "in_flight", "pending")
    assert event.details["attempts"] == 1


def test_the_reconciler_leaves_a_batch_whose_lease_still_holds_with_its_worker(django_capture_on_commit_callbacks):
    run, _, _ = _fanned_out_run({"tsel": 3})
    batch = DispatchBatch.objects.get(run=run)
    held_until = timezone.now() + timedelta(minutes=1)
    # A worker is sending it right now; the batch has waited long enough to look untouched otherwise.
    DispatchBatch.objects.filter(pk=batch.pk).update(
        status="in_flight", lease_expires_at=held_until, attempts=1, updated_at=timezone.now() - timedelta(minutes=5)
    )
    with django_capture_on_commit_callbacks() as callbacks:
        assert dispatch.dispatch_reconcile()["leases"] == 0
    assert _enqueued(callbacks) == []
    batch.refresh_from_db()
    assert (batch.status, batch.lease_expires_at) == ("in_flight", held_until)


def test_the_reconciler_requeues_batches_whose_task_was_lost(django_capture_on_commit_callbacks):
    run, _, _ = _fanned_out_run({"tsel": 3})
    batch = DispatchBatch.objects.get(run=run)
    with django_capture_on_commit_callbacks() as callbacks:
        dispatch.dispatch_reconcile()
    assert _enqueued(callbacks) == []  # fresh: its task is still on the way
    DispatchBatch.objects.filter(pk=batch.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    with django_capture_on_commit_callbacks() as callbacks:
        assert dispatch.dispatch_reconcile()["requeued"] == 1
    assert _enqueued(callbacks) == [(batch.pk, "dispatch.tsel")]


def test_a_batch_of_a_cancelled_run_whose_lease_lapsed_and_whose_task_was_lost_is_still_cancelled(
    django_capture_on_commit_callbacks,
):
    # The worker sending it died after the campaign was cancelled; the reconciler put it back to pending and the
    # task it queued was lost too. Left alone, its messages would show queued until the validity window ends.
    run, _, _ = _fanned_out_run({"tsel": 3})
    batch = DispatchBatch.objects.get(run=run)
    CampaignRun.objects.filter(pk=run.pk).update(status="cancelled")
    DispatchBatch.objects.filter(pk=batch.pk).update(
        status="pending", attempts=1, updated_at=timezone.now() - timedelta(minutes=5)
    )
    with django_capture_on_commit_callbacks() as callbacks:
        assert dispatch.dispatch_reconcile()["requeued"] == 1
    assert _enqueued(callbacks) == [(batch.pk, "dispatch.tsel")]
    batch_send(batch_id=batch.pk)
    batch.refresh_from_db()
    assert batch.status == "cancelled"
    assert set(Delivery.objects.filter(batch=batch).values_list("status", flat=True)) == {"cancelled"}


def test_the_reconciler_expires_unreported_deliveries_and_completes_the_run():
    run, _, _ = _fanned_out_run({"tsel": 4}, batch_size=2)
    first, second = DispatchBatch.objects.filter(run=run)
    assert batch_send(batch_id=first.pk) == "accepted"
    reported = Delivery.objects.filter(batch=first).order_by("pk").first()
    Delivery.objects.filter(pk=reported.pk).update(status="delivered")
    CampaignRun.objects.filter(pk=run.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    dispatch.dispatch_reconcile()
    statuses = dict(Delivery.objects.filter(run=run).values_list("status").annotate(n=Count("id")))
    assert statuses == {"delivered": 1, "expired": 1, "failed": 2}
    assert DispatchBatch.objects.get(pk=second.pk).status == "failed"
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.COMPLETED_WITH_FAILURES


def test_a_run_past_its_window_with_every_message_reported_completes_without_an_expiry_event():
    run, _, _ = _fanned_out_run({"tsel": 2})
    DispatchBatch.objects.filter(run=run).update(status="accepted")
    Delivery.objects.filter(run=run).update(status="delivered")
    CampaignRun.objects.filter(pk=run.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    counts = dispatch.dispatch_reconcile()
    assert (counts["expired"], counts["completed"]) == (0, 1)
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.COMPLETED
    assert not AuditEvent.objects.filter(action="run.expire").exists()


def test_each_batch_the_validity_window_fails_gets_its_own_audit_event_with_the_state_it_left():
    run, _, _ = _fanned_out_run({"tsel": 6}, batch_size=2)
    waiting, pending, leased = DispatchBatch.objects.filter(run=run).order_by("created_at", "pk")
    DispatchBatch.objects.filter(pk=waiting.pk).update(status="retry_wait", attempts=1)
    assert batch_send(batch_id=leased.pk) == "accepted"
    CampaignRun.objects.filter(pk=run.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    dispatch.dispatch_reconcile()
    events = AuditEvent.objects.filter(action="batch.fail", object_type="campaigns.dispatchbatch")
    assert sorted(events.values_list("object_id", "from_state", "to_state")) == sorted(
        [(str(waiting.pk), "retry_wait", "failed"), (str(pending.pk), "pending", "failed")]
    )
    assert DispatchBatch.objects.get(pk=leased.pk).status == "accepted"


def test_the_reconciler_leaves_area_broadcast_runs_to_their_own_service():
    campaign = approved_campaign(mode="area_broadcast")
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign, status=CampaignRun.Status.SENDING, fanout_done=True)
    dispatch.dispatch_reconcile()
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.SENDING
    with pytest.raises(ServiceConflict):
        dispatch.campaign_pause(campaign=campaign, actor=campaign.author)


def test_the_reconciler_leaves_a_waiting_batch_to_the_task_its_operators_queue_still_holds(
    redis_client, django_capture_on_commit_callbacks
):
    run, _, _ = _fanned_out_run({"tsel": 3})
    batch = DispatchBatch.objects.get(run=run)
    DispatchBatch.objects.filter(pk=batch.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    dispatch.batches_enqueue([(batch.pk, "dispatch.tsel")])  # behind other batches, waiting for a worker
    with django_capture_on_commit_callbacks() as callbacks:
        assert dispatch.dispatch_reconcile()["requeued"] == 0
    assert _enqueued(callbacks) == []

    redis_client.delete("dispatch.tsel")  # the queue drained and this batch's task was lost
    with django_capture_on_commit_callbacks() as callbacks:
        assert dispatch.dispatch_reconcile()["requeued"] == 1
    assert _enqueued(callbacks) == [(batch.pk, "dispatch.tsel")]


def test_the_reconciler_re_drives_waiting_batches_when_the_broker_cannot_say_what_it_holds(
    caplog, django_capture_on_commit_callbacks
):
    from config.celery import app
    from smsblast.devtools import free_port

    run, _, _ = _fanned_out_run({"tsel": 3})
    batch = DispatchBatch.objects.get(run=run)
    DispatchBatch.objects.filter(pk=batch.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    app.conf.broker_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app._pool = None
    with caplog.at_level("WARNING", logger="campaigns.dispatch"), django_capture_on_commit_callbacks() as callbacks:
        assert dispatch.dispatch_reconcile()["requeued"] == 1
    assert _enqueued(callbacks) == [(batch.pk, "dispatch.tsel")]
    assert "Could not count the tasks waiting" in caplog.text


def test_a_completion_check_leaves_an_area_broadcast_run_to_the_end_of_its_window():
    campaign = approved_campaign(mode="area_broadcast")
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign, status=CampaignRun.Status.SENDING, fanout_done=True)
    dispatch.run_check_complete(run_id=run.pk)
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.SENDING
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.SENDING


def test_the_reconciler_does_not_report_a_run_whose_batches_wait_unleased_in_its_quiet_hours_as_stalled(caplog):
    run, _, _ = _fanned_out_run({"tsel": 2})
    CampaignRun.objects.filter(pk=run.pk).update(
        frozen={**run.frozen, "quiet_hours": {"start": "21:00", "end": "06:00"}, "area_codes": ["35.05"]},
        expires_at=utc(2021, 7, 9),
        last_progress_at=utc(2021, 7, 7, 14, 0),  # 21:00 WIB
    )
    wib_2230 = utc(2021, 7, 7, 15, 30)
    with caplog.at_level("ERROR", logger="campaigns.dispatch"):
        assert dispatch.dispatch_reconcile(now=wib_2230)["stalled"] == 0
    assert "no progress" not in caplog.text
    # Past the quiet hours, ten minutes without a batch leased is a stall.
    assert dispatch.dispatch_reconcile(now=utc(2021, 7, 7, 23, 11))["stalled"] == 1


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_starts_of_a_due_campaign_make_one_run():
    """Two schedulers racing past the lock: the conditional update lets exactly one start the run."""
    import threading

    skip_unless_postgresql()
    campaign = _scheduled()
    now = timezone.now() + timedelta(seconds=1)
    barrier = threading.Barrier(2)
    started = []

    def start():
        from django.db import connections

        barrier.wait()
        try:
            started.append(dispatch.run_start(campaign_id=campaign.pk, now=now))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([run for run in started if run is not None]) == 1
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1


def test_fan_out_stores_numbers_exactly_even_with_characters_copy_would_misread():
    def extra(operators):
        from smsblast.models import Area

        district = Area.objects.get(code="35.05.01")
        SubscriberFactory(area=district, operator=operators["tsel"], msisdn="+62812\\t\t1")

    run, _, _ = _fanned_out_run({"tsel": 2}, extra=extra)
    assert Delivery.objects.filter(run=run, msisdn="+62812\\t\t1", status="queued").exists()
    assert Delivery.objects.filter(run=run).count() == 3


def test_the_reconciler_reports_a_run_without_progress_for_ten_minutes(caplog):
    run, _, _ = _fanned_out_run({"tsel": 2})
    CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=timezone.now() - timedelta(minutes=11))
    DispatchBatch.objects.filter(run=run).update(
        status="in_flight", lease_expires_at=timezone.now() + timedelta(hours=1)
    )
    with caplog.at_level("ERROR", logger="campaigns.dispatch"):
        assert dispatch.dispatch_reconcile()["stalled"] == 1
    assert f"Run {run.pk} " in caplog.text and "no progress" in caplog.text


def test_the_reconciler_reports_a_stalled_run_once_and_again_only_after_it_moved_and_stalled_anew(caplog):
    run, _, _ = _fanned_out_run({"tsel": 2})
    DispatchBatch.objects.filter(run=run).update(
        status="in_flight", lease_expires_at=timezone.now() + timedelta(days=1)
    )
    stalled_since = timezone.now() - timedelta(minutes=11)
    CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=stalled_since)
    with caplog.at_level("ERROR", logger="campaigns.dispatch"):
        passes = [dispatch.dispatch_reconcile()["stalled"] for _ in range(3)]
    assert passes == [1, 0, 0]
    assert caplog.text.count("no progress") == 1
    (event,) = AuditEvent.objects.filter(action="run.stalled", object_id=str(run.pk))
    assert event.details == {"since": stalled_since.isoformat()}

    # A report moved it on, then it stalled again: that is a new stall.
    CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=stalled_since + timedelta(seconds=30))
    assert dispatch.dispatch_reconcile()["stalled"] == 1
    assert AuditEvent.objects.filter(action="run.stalled", object_id=str(run.pk)).count() == 2


def _reconcile_until_stalled(held_again, caplog) -> None:
    """Reconcile 5 minutes on (not stalled), past STALL_AFTER (stalled, reported) and 15 s later (not again).

    `held_again(at)` holds the run's batch once more before each pass, as its operator does.
    """
    with caplog.at_level("ERROR", logger="campaigns.dispatch"):
        soon = timezone.now() + timedelta(minutes=5)
        held_again(soon)
        assert dispatch.dispatch_reconcile(now=soon)["stalled"] == 0
        later = timezone.now() + dispatch.STALL_AFTER + timedelta(seconds=30)
        held_again(later)
        assert dispatch.dispatch_reconcile(now=later)["stalled"] == 1
        assert dispatch.dispatch_reconcile(now=later + timedelta(seconds=15))["stalled"] == 0


def test_the_reconciler_reports_a_run_held_back_by_a_deactivated_operator_for_ten_minutes_naming_it(caplog):
    run, operators, _ = _fanned_out_run({"tsel": 2, "isat": 2})
    (isat_batch,) = DispatchBatch.objects.filter(run=run, operator=operators["isat"])
    (tsel_batch,) = DispatchBatch.objects.filter(run=run, operator=operators["tsel"])
    assert batch_send(batch_id=isat_batch.pk) == "accepted"
    Operator.objects.filter(pk=operators["tsel"].pk).update(active=False)
    CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=timezone.now() - timedelta(seconds=5))
    assert batch_send(batch_id=tsel_batch.pk) == "operator_inactive"

    def given_back_again(at):
        # As every 30 s: the batch is leased and given back, held for another 30 s.
        DispatchBatch.objects.filter(pk=tsel_batch.pk).update(next_attempt_at=at + timedelta(seconds=30))

    _reconcile_until_stalled(given_back_again, caplog)
    assert f"Run {run.pk} " in caplog.text and "deactivated operator tsel" in caplog.text
    (event,) = AuditEvent.objects.filter(action="run.stalled", object_id=str(run.pk))
    assert event.details["inactive_operators"] == ["tsel"]
    # What happens to the batch is unchanged: it still waits, unsent, for its operator.
    tsel_batch.refresh_from_db()
    assert (tsel_batch.status, tsel_batch.attempts) == ("pending", 0)


def test_the_reconciler_does_not_report_a_run_held_back_by_a_deactivated_operator_for_less_than_ten_minutes():
    run, operators, _ = _fanned_out_run({"tsel": 2})
    (batch,) = DispatchBatch.objects.filter(run=run)
    # The run waited out a long Retry-After, and the operator was deactivated as it ended.
    CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=timezone.now() - timedelta(hours=1))
    Operator.objects.filter(pk=operators["tsel"].pk).update(active=False)
    assert batch_send(batch_id=batch.pk) == "operator_inactive"
    assert dispatch.dispatch_reconcile()["stalled"] == 0


def _answered_429(retry_after=None) -> BatchResult:
    return BatchResult(outcome=Outcome.RETRY, retry_after=retry_after, status_code=429, error="HTTP 429: slow down")


def test_the_reconciler_reports_a_run_an_operator_keeps_answering_429_for_ten_minutes_naming_it(caplog):
    run, operators, _ = _fanned_out_run({"tsel": 2, "isat": 2})
    (isat_batch,) = DispatchBatch.objects.filter(run=run, operator=operators["isat"])
    (tsel_batch,) = DispatchBatch.objects.filter(run=run, operator=operators["tsel"])
    assert batch_send(batch_id=isat_batch.pk) == "accepted"
    CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=timezone.now() - timedelta(seconds=5))
    ScriptedAdapter.reset(_answered_429())
    assert batch_send(batch_id=tsel_batch.pk) == "retry"

    def answered_429_again(at):
        # As at every retry: the batch is sent, answered 429 and held for up to the backoff's cap.
        DispatchBatch.objects.filter(pk=tsel_batch.pk).update(next_attempt_at=at + timedelta(minutes=2))

    _reconcile_until_stalled(answered_429_again, caplog)
    assert f"Run {run.pk} " in caplog.text and "operator tsel answers its batches 429" in caplog.text
    (event,) = AuditEvent.objects.filter(action="run.stalled", object_id=str(run.pk))
    assert event.details["throttling_operators"] == ["tsel"]
    assert "inactive_operators" not in event.details
    # What happens to the batch is unchanged: it still waits for its next try, no retry budget spent.
    tsel_batch.refresh_from_db()
    assert (tsel_batch.status, tsel_batch.attempts, tsel_batch.throttled) == ("retry_wait", 1, 1)


def test_the_reconciler_does_not_report_a_run_an_operator_answered_429_for_less_than_ten_minutes():
    run, _, _ = _fanned_out_run({"tsel": 2})
    (batch,) = DispatchBatch.objects.filter(run=run)
    # The run waited out a long Retry-After, and the operator throttled the first try after it.
    CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=timezone.now() - timedelta(hours=1))
    ScriptedAdapter.reset(_answered_429(retry_after=60))
    assert batch_send(batch_id=batch.pk) == "retry"
    assert dispatch.dispatch_reconcile(now=timezone.now() + timedelta(minutes=5))["stalled"] == 0


def test_the_reconciler_does_not_report_a_run_waiting_out_an_outages_retry_after():
    run, _, _ = _fanned_out_run({"tsel": 2})
    (batch,) = DispatchBatch.objects.filter(run=run)
    CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=timezone.now() - timedelta(seconds=5))
    outage = BatchResult(outcome=Outcome.RETRY, retry_after=1800, status_code=503, error="HTTP 503: maintenance")
    ScriptedAdapter.reset(outage)
    assert batch_send(batch_id=batch.pk) == "retry"
    assert dispatch.dispatch_reconcile(now=timezone.now() + timedelta(minutes=20))["stalled"] == 0


def test_a_fan_out_that_the_reconciler_restarts_in_vain_is_still_reported_as_stalled(caplog):
    run, _, _ = _fanned_out_run({"tsel": 2})
    now = timezone.now()
    CampaignRun.objects.filter(pk=run.pk).update(
        status=CampaignRun.Status.FANNING_OUT,
        fanout_done=False,
        last_progress_at=now - timedelta(minutes=11),
        fanout_progress_at=now - timedelta(minutes=11),
    )
    # Every pass restarts the fan-out, and no restart gets anywhere (no worker takes it, or it fails at once).
    with caplog.at_level("ERROR", logger="campaigns.dispatch"):
        passes = [dispatch.dispatch_reconcile(now=now + timedelta(seconds=15 * n)) for n in range(3)]
    assert [counts["fanouts"] for counts in passes] == [1, 1, 1]
    assert sum(counts["stalled"] for counts in passes) == 1
    assert f"Run {run.pk} " in caplog.text


def test_a_fan_out_that_died_mid_way_is_restarted_while_reports_on_its_first_chunks_still_arrive(
    monkeypatch, django_capture_on_commit_callbacks
):
    """The sends and reports of the chunks written move the run on; they say nothing of the fan-out itself."""
    campaign = approved_campaign()
    operators_and_subscribers(counts={"tsel": 6}, batch_size=2)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    monkeypatch.setattr(dispatch, "FANOUT_FIRST_CHUNK", 2)
    chunk_rows = dispatch._chunk_rows
    read = []

    def lose_the_connection_after_the_first_chunk(run, size):
        if read:
            raise DatabaseError("server closed the connection unexpectedly")
        read.append(size)
        return chunk_rows(run, size)

    monkeypatch.setattr(dispatch, "_chunk_rows", lose_the_connection_after_the_first_chunk)
    with pytest.raises(DatabaseError):
        dispatch.run_fan_out(run_id=run.pk, chunk_size=2)
    run.refresh_from_db()
    assert (run.status, run.fanout_done, Delivery.objects.filter(run=run).count()) == ("fanning_out", False, 2)

    # The first chunk's batch is sent and its reports keep coming; the fan-out task is gone for good.
    (batch,) = DispatchBatch.objects.filter(run=run)
    assert batch_send(batch_id=batch.pk) == "accepted"
    later = timezone.now() + timedelta(minutes=5)
    CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=later - timedelta(seconds=10))
    with django_capture_on_commit_callbacks() as callbacks:
        counts = dispatch.dispatch_reconcile(now=later)
    assert counts["fanouts"] == 1
    restart = [getattr(callback, "__wrapped__", callback) for callback in callbacks]
    assert [(enqueue.func, enqueue.args) for enqueue in restart if hasattr(enqueue, "func")] == [
        (dispatch._enqueue_fan_out, (run.pk,))
    ]


def test_an_approved_schedule_spelled_differently_still_arms_and_recurs():
    campaign = approved_campaign(schedule={"kind": "daily", "time": "13:00:00", "weekday_times": {"fri": "10:00"}})
    now = utc(2021, 7, 7, 1, 0)  # Wednesday 08:00 WIB
    dispatch.campaign_schedule_approved(campaign=campaign, user=campaign.author, now=now)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert campaign.schedule["time"] == "13:00:00"  # the approved content is left as approved
    thursday = utc(2021, 7, 8, 6, 0)
    Campaign.objects.filter(pk=campaign.pk).update(next_run_at=thursday)
    run = dispatch.run_start(campaign_id=campaign.pk, now=thursday)
    assert run is not None
    assert Campaign.objects.get(pk=campaign.pk).next_run_at == utc(2021, 7, 9, 3, 0)  # Friday 10:00 WIB


def _race_with_the_end_of_fan_out(action):
    """Run `action(campaign)` while fan-out writes its last chunk: both queue behind a lock on the run row.

    Fan-out takes the row lock first and moves the run fanning_out → sending; `action` has already read
    the run as fanning out and updates it once fan-out commits.
    """
    run, _, _ = _fanned_out_run({"tsel": 4})
    CampaignRun.objects.filter(pk=run.pk).update(status=CampaignRun.Status.FANNING_OUT, fanout_done=False)
    campaign = run.campaign
    errors = race_behind_a_row(run, lambda: dispatch.run_fan_out(run_id=run.pk), lambda: action(campaign))
    assert errors == []
    return run


@pytest.mark.django_db(transaction=True)
def test_cancel_as_fan_out_finishes_still_cancels_the_run_and_its_batches():
    skip_unless_postgresql()
    run = _race_with_the_end_of_fan_out(lambda campaign: campaign_cancel(campaign=campaign, actor=campaign.author))
    assert Campaign.objects.get(pk=run.campaign_id).status == Campaign.Status.CANCELLED
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.CANCELLED
    assert set(DispatchBatch.objects.filter(run=run).values_list("status", flat=True)) == {"cancelled"}
    assert set(Delivery.objects.filter(run=run).values_list("status", flat=True)) == {"cancelled"}
    assert {batch_send(batch_id=pk) for pk in DispatchBatch.objects.filter(run=run).values_list("pk", flat=True)} <= {
        "final",
        "cancelled",
    }
    assert ScriptedAdapter.sent == []


@pytest.mark.django_db(transaction=True)
def test_pause_as_fan_out_finishes_still_pauses_the_run():
    skip_unless_postgresql()
    run = _race_with_the_end_of_fan_out(
        lambda campaign: dispatch.campaign_pause(campaign=campaign, actor=campaign.author)
    )
    assert Campaign.objects.get(pk=run.campaign_id).status == Campaign.Status.PAUSED
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.PAUSED
    assert {batch_send(batch_id=pk) for pk in DispatchBatch.objects.filter(run=run).values_list("pk", flat=True)} == {
        "paused"
    }
    assert ScriptedAdapter.sent == []


def test_a_batch_whose_worker_died_after_cancel_ends_cancelled_and_is_not_sent():
    run, _, _ = _fanned_out_run({"tsel": 3})
    batch = DispatchBatch.objects.get(run=run)
    # A worker leased the batch, the campaign was cancelled while it was in flight, and the worker died.
    DispatchBatch.objects.filter(pk=batch.pk).update(status="in_flight", lease_expires_at=timezone.now(), attempts=1)
    campaign_cancel(campaign=run.campaign, actor=run.campaign.author)
    assert DispatchBatch.objects.get(pk=batch.pk).status == "in_flight"  # it might be with the operator
    dispatch.dispatch_reconcile(now=timezone.now() + timedelta(seconds=1))
    assert batch_send(batch_id=batch.pk) == "cancelled"
    assert ScriptedAdapter.sent == []
    assert DispatchBatch.objects.get(pk=batch.pk).status == "cancelled"
    assert set(Delivery.objects.filter(run=run).values_list("status", flat=True)) == {"cancelled"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["cancel", "pause"])
def test_completing_a_run_while_it_is_cancelled_or_paused_ends_in_one_state_without_a_deadlock(action):
    skip_unless_postgresql()
    run, _, _ = _fanned_out_run({"tsel": 3})
    Delivery.objects.filter(run=run).update(status="delivered")
    DispatchBatch.objects.filter(run=run).update(status="accepted")
    campaign = run.campaign
    if action == "cancel":
        act = partial(campaign_cancel, campaign=campaign, actor=campaign.author)
    else:
        act = partial(dispatch.campaign_pause, campaign=campaign, actor=campaign.author)
    errors = race_behind_a_row(run, lambda: dispatch.run_check_complete(run_id=run.pk), act)
    assert [type(error) for error in errors] == [ServiceConflict]  # it completed first: a clear 409
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.COMPLETED
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.COMPLETED
    assert AuditEvent.objects.filter(action="campaign.run_complete", object_id=str(campaign.pk)).count() == 1


def test_unreported_deliveries_of_a_batch_sent_before_cancel_expire_after_the_validity_window():
    run, _, _ = _fanned_out_run({"tsel": 4}, batch_size=2)
    first, second = DispatchBatch.objects.filter(run=run).order_by("created_at", "pk")
    assert batch_send(batch_id=first.pk) == "accepted"
    campaign_cancel(campaign=run.campaign, actor=run.campaign.author)
    reported = Delivery.objects.filter(batch=first).order_by("pk").first()
    Delivery.objects.filter(pk=reported.pk).update(status="delivered")
    dispatch.dispatch_reconcile()
    assert Delivery.objects.filter(batch=first, status="queued").count() == 1  # the operator may still report
    CampaignRun.objects.filter(pk=run.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    dispatch.dispatch_reconcile()
    statuses = dict(Delivery.objects.filter(run=run).values_list("status").annotate(n=Count("id")))
    assert statuses == {"delivered": 1, "expired": 1, "cancelled": 2}
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.CANCELLED
    assert dispatch.dispatch_reconcile()["expired"] == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("late", ["failed", "retry"])
def test_a_late_error_from_a_worker_whose_lease_lapsed_never_moves_a_batch_the_operator_accepted(late):
    from operators.gateways.base import BatchResult, Outcome
    from operators.services import batch_record_result
    from smsblast.audit import audit_history

    skip_unless_postgresql()
    run, _, _ = _fanned_out_run({"tsel": 2})
    batch = DispatchBatch.objects.select_related("run", "operator").get(run=run)
    # Worker A leased it (attempt 1) and overran its lease; the reconciler re-drove it and worker B leased it.
    DispatchBatch.objects.filter(pk=batch.pk).update(status="in_flight", attempts=2)
    stale = DispatchBatch.objects.select_related("run", "operator").get(pk=batch.pk)
    stale.attempts = 1
    accepted = BatchResult(outcome=Outcome.ACCEPTED, accepted=2, status_code=202)
    if late == "failed":
        refused = BatchResult(outcome=Outcome.FAILED, status_code=400, error="bad request")
    else:
        refused = BatchResult(outcome=Outcome.RETRY, status_code=503, error="unavailable")
    errors = race_behind_a_row(
        batch,
        lambda: batch_record_result(batch_id=batch.pk, result=accepted, leased=batch),
        lambda: batch_record_result(batch_id=batch.pk, result=refused, leased=stale),
    )
    assert errors == []
    assert DispatchBatch.objects.get(pk=batch.pk).status == "accepted"
    assert set(Delivery.objects.filter(batch=batch).values_list("status", flat=True)) == {"queued"}
    assert [event.action for event in audit_history(batch)] == ["batch.accept"]


@pytest.mark.django_db(transaction=True)
def test_resume_as_a_paused_fan_out_finishes_leaves_the_run_sending_so_it_completes():
    skip_unless_postgresql()
    run, _, _ = _fanned_out_run({"tsel": 4})
    campaign = run.campaign
    dispatch.campaign_pause(campaign=campaign, actor=campaign.author)
    CampaignRun.objects.filter(pk=run.pk).update(fanout_done=False)  # its last chunk is still to be written
    errors = race_behind_a_row(
        run,
        lambda: dispatch.run_fan_out(run_id=run.pk),
        lambda: dispatch.campaign_resume(campaign=campaign, actor=campaign.author),
    )
    assert errors == []
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.SENDING
    for pk in DispatchBatch.objects.filter(run=run).values_list("pk", flat=True):
        assert batch_send(batch_id=pk) == "accepted"
    Delivery.objects.filter(run=run).update(status="delivered")
    assert dispatch.run_check_complete(run_id=run.pk).status == CampaignRun.Status.COMPLETED


def test_the_reconciler_does_not_report_a_run_waiting_out_its_quiet_hours_as_stalled(caplog):
    run, _, _ = _fanned_out_run({"tsel": 2})
    local_hour = timezone.now().astimezone(timezone.get_fixed_timezone(7 * 60)).hour
    quiet = {"start": f"{local_hour:02d}:00", "end": f"{(local_hour + 2) % 24:02d}:00"}
    CampaignRun.objects.filter(pk=run.pk).update(
        frozen={**run.frozen, "quiet_hours": quiet, "area_codes": ["35.05"]},
        last_progress_at=timezone.now() - timedelta(minutes=11),
    )
    assert {batch_send(batch_id=pk) for pk in DispatchBatch.objects.filter(run=run).values_list("pk", flat=True)} == {
        "quiet"
    }
    with caplog.at_level("ERROR", logger="campaigns.dispatch"):
        assert dispatch.dispatch_reconcile()["stalled"] == 0
    assert "no progress" not in caplog.text


def _blora_thursday_run_sent() -> tuple[Campaign, int]:
    """Arm the Blora daily campaign and send its Thursday 13:00 WIB run; return it and the run id.

    Its batches are accepted, so the run waits for delivery reports.
    """
    campaign = approved_campaign(schedule=dispatch.scheduling.schedule_normalize(BLORA_DAILY))
    operators_and_subscribers(counts={"tsel": 2})
    thursday_13 = utc(2021, 7, 8, 6, 0)
    dispatch.campaign_schedule(
        campaign=campaign, user=campaign.author, schedule=BLORA_DAILY, now=thursday_13 - timedelta(hours=1)
    )
    (thursday,) = dispatch.runs_start_due(now=thursday_13)
    dispatch.run_fan_out(run_id=thursday)
    DispatchBatch.objects.filter(run_id=thursday).update(status="accepted")
    return campaign, thursday


def test_a_recurring_occurrence_starts_on_time_while_the_previous_run_awaits_reports():
    campaign, thursday = _blora_thursday_run_sent()  # sent; reports still to come
    friday_10 = utc(2021, 7, 9, 3, 0)
    assert Campaign.objects.get(pk=campaign.pk).next_run_at == friday_10

    (friday,) = dispatch.runs_start_due(now=friday_10)
    assert CampaignRun.objects.get(pk=friday).scheduled_for == friday_10
    assert dispatch.runs_start_due(now=friday_10 + timedelta(seconds=1)) == []
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENDING
    assert campaign.next_run_at == utc(2021, 7, 10, 6, 0)
    assert AuditEvent.objects.filter(action="campaign.run_start", details__run_id=friday).exists()


def test_an_occurrence_whose_approval_no_longer_matches_starts_nothing_and_leaves_the_running_campaign_sending():
    campaign, thursday = _blora_thursday_run_sent()  # sent; reports still to come
    Campaign.objects.filter(pk=campaign.pk).update(text="Teks yang belum disetujui.")
    friday_10 = utc(2021, 7, 9, 3, 0)
    assert dispatch.run_start(campaign_id=campaign.pk, now=friday_10) is None
    # Back to draft only once the run under way has ended: until then it is still sending.
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.SENDING
    assert list(CampaignRun.objects.filter(campaign=campaign).values_list("pk", flat=True)) == [thursday]
    assert not AuditEvent.objects.filter(action="campaign.dispatch_refused", object_id=str(campaign.pk)).exists()


@pytest.mark.django_db(transaction=True)
def test_a_start_racing_the_end_of_the_previous_run_audits_the_state_it_really_left():
    """Invariant 6: the previous run completes (sending → scheduled) while the next occurrence starts; the
    start's audit event names the state the campaign was in when it moved, not the one read before."""
    skip_unless_postgresql()
    campaign, thursday = _blora_thursday_run_sent()
    Delivery.objects.filter(run_id=thursday).update(status="delivered")
    friday_10 = utc(2021, 7, 9, 3, 0)
    errors = race_behind_a_row(
        campaign,
        lambda: dispatch.run_check_complete(run_id=thursday, now=friday_10),
        lambda: dispatch.run_start(campaign_id=campaign.pk, now=friday_10),
    )
    assert errors == []
    dispatch.run_start(campaign_id=campaign.pk, now=friday_10 + timedelta(seconds=1))  # the next tick, if needed
    moves = ["campaign.run_complete", "campaign.run_start"]
    events = list(
        AuditEvent.objects.filter(object_id=str(campaign.pk), action__in=moves)
        .order_by("id")
        .values_list("action", "from_state", "to_state")
    )
    assert events == [
        ("campaign.run_start", "scheduled", "sending"),  # Thursday
        ("campaign.run_complete", "sending", "scheduled"),
        ("campaign.run_start", "scheduled", "sending"),  # Friday
    ]
    assert CampaignRun.objects.filter(campaign=campaign).count() == 2


def test_a_number_opting_out_between_occurrences_is_skipped_from_the_next_run_on_until_it_opts_back_in():
    from smsblast.services import subscriber_opt_in, subscriber_opt_out

    campaign, thursday = _blora_thursday_run_sent()
    Delivery.objects.filter(run_id=thursday).update(status="delivered")
    dispatch.run_check_complete(run_id=thursday, now=utc(2021, 7, 8, 7, 0))
    stopped = Subscriber.objects.order_by("pk").first()
    subscriber_opt_out(msisdn=stopped.msisdn, actor=None, source="sms", at=utc(2021, 7, 8, 8, 0))

    def started_run(now) -> dict[str, str]:
        (run_id,) = dispatch.runs_start_due(now=now)
        dispatch.run_fan_out(run_id=run_id)
        DispatchBatch.objects.filter(run_id=run_id).update(status="accepted")
        Delivery.objects.filter(run_id=run_id, status="queued").update(status="delivered")
        dispatch.run_check_complete(run_id=run_id, now=now + timedelta(hours=1))
        return dict(Delivery.objects.filter(run_id=run_id).values_list("msisdn", "status"))

    friday = started_run(utc(2021, 7, 9, 3, 0))
    assert friday[stopped.msisdn] == "skipped"
    assert sorted(friday.values()) == ["delivered", "skipped"]
    assert Delivery.objects.get(run_id=thursday, msisdn=stopped.msisdn).status == "delivered"  # history stays

    subscriber_opt_in(msisdn=stopped.msisdn, actor=None, source="sms", at=utc(2021, 7, 9, 5, 0))
    saturday = started_run(utc(2021, 7, 10, 6, 0))
    assert sorted(saturday.values()) == ["delivered", "delivered"]
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.SCHEDULED


def test_editing_the_schedule_between_occurrences_voids_the_approval_and_starts_no_further_run():
    campaign, thursday = _blora_thursday_run_sent()
    Delivery.objects.filter(run_id=thursday).update(status="delivered")
    dispatch.run_check_complete(run_id=thursday, now=utc(2021, 7, 8, 7, 0))
    campaign.refresh_from_db()
    dispatch.campaign_schedule(
        campaign=campaign, user=campaign.author, schedule={"kind": "daily", "time": "14:00"}, now=utc(2021, 7, 8, 8, 0)
    )
    campaign.refresh_from_db()
    assert (campaign.status, campaign.next_run_at) == (Campaign.Status.DRAFT, None)
    assert Approval.objects.get(campaign=campaign).voided_at is not None
    assert dispatch.runs_start_due(now=utc(2021, 7, 9, 3, 0)) == []
    assert list(CampaignRun.objects.filter(campaign=campaign).values_list("pk", "status")) == [(thursday, "completed")]


def test_cancelling_between_occurrences_stops_every_later_one_and_keeps_the_runs_sent():
    campaign, thursday = _blora_thursday_run_sent()
    Delivery.objects.filter(run_id=thursday).update(status="delivered")
    dispatch.run_check_complete(run_id=thursday, now=utc(2021, 7, 8, 7, 0))
    campaign_cancel(campaign=campaign, actor=campaign.author)
    campaign.refresh_from_db()
    assert (campaign.status, campaign.next_run_at) == (Campaign.Status.CANCELLED, None)
    assert dispatch.runs_start_due(now=utc(2021, 7, 9, 3, 0)) == []
    assert CampaignRun.objects.get(pk=thursday).status == CampaignRun.Status.COMPLETED


def test_a_paused_recurring_campaign_starts_no_further_occurrence_until_resumed():
    campaign, thursday = _blora_thursday_run_sent()
    dispatch.campaign_pause(campaign=campaign, actor=campaign.author)
    Delivery.objects.filter(run_id=thursday).update(status="delivered")  # the batches sent before the pause report

    assert dispatch.run_check_complete(run_id=thursday).status == CampaignRun.Status.COMPLETED
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.PAUSED
    friday_10 = utc(2021, 7, 9, 3, 0)
    assert dispatch.runs_start_due(now=friday_10) == []

    dispatch.campaign_resume(campaign=campaign, actor=campaign.author)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert campaign.next_run_at == friday_10
    (friday,) = dispatch.runs_start_due(now=friday_10 + timedelta(seconds=1))
    assert CampaignRun.objects.get(pk=friday).scheduled_for == friday_10


def test_the_reconciler_does_not_report_a_run_as_stalled_the_moment_its_quiet_hours_end(caplog):
    run, _, _ = _fanned_out_run({"tsel": 2})
    CampaignRun.objects.filter(pk=run.pk).update(
        frozen={**run.frozen, "quiet_hours": {"start": "21:00", "end": "06:00"}, "area_codes": ["35.05"]},
        expires_at=utc(2021, 7, 9),
    )
    wib_2130 = utc(2021, 7, 7, 14, 30)
    CampaignRun.objects.filter(pk=run.pk).update(last_progress_at=wib_2130)
    batch_ids = list(DispatchBatch.objects.filter(run=run).values_list("pk", flat=True))
    assert {batch_send(batch_id=pk, now=wib_2130) for pk in batch_ids} == {"quiet"}
    quiet_end = utc(2021, 7, 7, 23, 0)
    with caplog.at_level("ERROR", logger="campaigns.dispatch"):
        counts = dispatch.dispatch_reconcile(now=quiet_end + timedelta(seconds=5))
    assert counts["requeued"] == len(batch_ids)
    assert counts["stalled"] == 0
    assert "no progress" not in caplog.text
    # Still nothing sent ten minutes after the quiet hours: that is a stall.
    assert dispatch.dispatch_reconcile(now=quiet_end + dispatch.STALL_AFTER + timedelta(seconds=5))["stalled"] == 1


@pytest.mark.django_db(transaction=True)
def test_reports_arriving_as_the_run_expires_are_applied_without_a_deadlock():
    from operators.models import Operator
    from operators.services import delivery_reports_apply

    skip_unless_postgresql()
    run, _, _ = _fanned_out_run({"tsel": 3})
    batch = DispatchBatch.objects.get(run=run)
    assert batch_send(batch_id=batch.pk) == "accepted"
    first, middle, last = Delivery.objects.filter(run=run).order_by("pk")
    # Reported as submitted in this order, the first and middle messages' rows now lie after the last one's.
    for delivery in (middle, first):
        Delivery.objects.filter(pk=delivery.pk).update(status="submitted")
    now = timezone.now()
    CampaignRun.objects.filter(pk=run.pk).update(expires_at=now - timedelta(seconds=1))
    operator = Operator.objects.get(pk=batch.operator_id)
    reports = [(str(delivery.pk), "DELIVERED", "", "", None) for delivery in (first, middle, last)]

    # A report holds the middle message; the next report waits for it as the reconciler expires the run.
    errors = race_behind_a_row(
        middle,
        lambda: delivery_reports_apply(operator=operator, reports=reports),
        lambda: dispatch.run_expire_overdue(run=CampaignRun.objects.get(pk=run.pk), now=now),
        second_may_pass=True,
    )
    assert errors == []
    assert Delivery.objects.get(pk=middle.pk).status == "delivered"  # its report was being applied
    assert set(Delivery.objects.filter(run=run).values_list("status", flat=True)) <= {"delivered", "expired"}
    dispatch.dispatch_reconcile()
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.COMPLETED


def test_messages_the_operator_reported_submitted_in_a_batch_that_then_failed_expire_and_the_run_completes():
    from operators.gateways.base import BatchResult, Outcome
    from operators.services import delivery_reports_apply

    run, operators, _ = _fanned_out_run({"tsel": 2})
    batch = DispatchBatch.objects.get(run=run)
    first, second = Delivery.objects.filter(batch=batch).order_by("pk")
    # The operator took the batch and reported on one message, but its answer to us never came through, and
    # the retries met a permanent error: the batch fails for good.
    DispatchBatch.objects.filter(pk=batch.pk).update(attempts=1)  # posted once; the answer timed out
    delivery_reports_apply(operator=operators["tsel"], reports=[(str(first.pk), "SUBMITTED", "", "", None)])
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.FAILED, error="HTTP 400: bad request", status_code=400))
    assert batch_send(batch_id=batch.pk) == "failed"
    assert Delivery.objects.get(pk=second.pk).status == "failed"
    assert Delivery.objects.get(pk=first.pk).status == "submitted"  # the operator has it: a report may come

    CampaignRun.objects.filter(pk=run.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    dispatch.dispatch_reconcile()

    assert Delivery.objects.get(pk=first.pk).status == "expired"
    assert CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.COMPLETED_WITH_FAILURES


def test_a_campaign_over_several_zones_is_held_while_it_is_night_in_any_of_them():
    quiet = {"start": "21:00", "end": "06:00"}
    schedule = dispatch.scheduling.schedule_normalize({"kind": "now", "quiet_hours": quiet})
    # Kab. Blitar (WIB) and Kota Jayapura (WIT): times are entered in WIB, the first area's zone.
    campaign = approved_campaign(schedule=schedule, area_codes=["35.05", "91.71"])
    wib_1930 = utc(2030, 1, 7, 12, 30)  # 21:30 in Jayapura
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=schedule, now=wib_1930)
    campaign.refresh_from_db()
    assert campaign.next_run_at == utc(2030, 1, 7, 23, 0)  # 06:00 WIB, when it is day in both

    run = dispatch.run_start(campaign_id=campaign.pk, now=campaign.next_run_at)
    assert dispatch.is_quiet_for(run, utc(2030, 1, 8, 8, 0)) is None  # 15:00 WIB, 17:00 WIT
    # 20:00 WIB is 22:00 in Jayapura: its batches wait until 06:00 WIB.
    assert dispatch.is_quiet_for(run, utc(2030, 1, 8, 13, 0)) == utc(2030, 1, 8, 23, 0)


@pytest.mark.django_db(transaction=True)
def test_a_run_starting_as_the_previous_one_completes_records_the_state_it_started_from():
    skip_unless_postgresql()
    campaign, thursday = _blora_thursday_run_sent()
    Delivery.objects.filter(run_id=thursday).update(status="delivered")
    friday_10 = utc(2021, 7, 9, 3, 0)
    started = []
    errors = race_behind_a_row(
        campaign,
        lambda: dispatch.run_check_complete(run_id=thursday, now=friday_10),
        lambda: started.append(dispatch.run_start(campaign_id=campaign.pk, now=friday_10)),
        second_may_pass=True,
    )
    assert errors == []
    (friday,) = started
    # The Thursday run completed first (sending → scheduled); the Friday run then started from scheduled.
    event = AuditEvent.objects.get(action="campaign.run_start", details__run_id=friday.pk)
    assert (event.from_state, event.to_state) == ("scheduled", "sending")
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.SENDING


def test_a_run_started_before_runs_kept_their_zones_is_still_held_in_each_zone_of_its_areas():
    campaign = approved_campaign(area_codes=["35.05", "91.71"])
    run = sending_run(campaign)
    frozen = {**run.frozen, "quiet_hours": {"start": "21:00", "end": "06:00"}, "zone": "Asia/Jakarta"}
    frozen.pop("quiet_zones", None)
    CampaignRun.objects.filter(pk=run.pk).update(frozen=frozen)
    run.refresh_from_db()
    # 20:00 WIB is 22:00 in Jayapura.
    assert dispatch.is_quiet_for(run, utc(2030, 1, 8, 13, 0)) == utc(2030, 1, 8, 23, 0)


def test_the_history_gives_in_indonesian_why_occurrences_after_the_end_date_were_not_sent():
    from tests.conftest import client_for

    campaign, saturday = _until_sunday_saturday_run_sent()
    Delivery.objects.filter(run_id=saturday).update(status="delivered")
    dispatch.run_check_complete(run_id=saturday, now=utc(2021, 7, 10, 7, 0))
    dispatch.runs_start_due(now=utc(2021, 7, 13, 1, 0))

    page = client_for(campaign.author).get(f"/campaigns/{campaign.pk}/").content.decode()

    assert "end date passed before these occurrences" not in page
    assert "Alasan: Tanggal akhir jadwal lewat sebelum kejadian ini dapat dimulai; tidak dikirim." in page


def test_the_history_gives_in_indonesian_why_a_campaign_whose_approval_no_longer_matches_went_back_to_draft():
    from campaigns.services import campaign_dispatch_refuse
    from tests.conftest import client_for

    campaign = approved_campaign()
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SCHEDULED, next_run_at=timezone.now())
    campaign.refresh_from_db()
    assert campaign_dispatch_refuse(campaign=campaign)

    page = client_for(campaign.author).get(f"/campaigns/{campaign.pk}/").content.decode()

    assert "The approval does not match" not in page
    assert "Alasan: Persetujuan tidak cocok dengan isi kampanye saat ini; tidak ada yang dikirim." in page


def _daily_run_sent(counts):
    """Return a sending run of a daily campaign whose batches the operator accepted: only reports are awaited."""
    run, _, _ = _fanned_out_run(counts, batch_size=10)
    Campaign.objects.filter(pk=run.campaign_id).update(schedule=dispatch.scheduling.schedule_normalize(BLORA_DAILY))
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.ACCEPTED, accepted=sum(counts.values())))
    for batch in DispatchBatch.objects.filter(run=run):
        assert batch_send(batch_id=batch.pk) == "accepted"
    return run


def test_a_daily_campaign_whose_runs_only_wait_for_reports_may_be_edited_and_needs_approving_again():
    run = _daily_run_sent({"tsel": 2})
    campaign = Campaign.objects.get(pk=run.campaign_id)
    assert "update" in campaign_allowed_actions(campaign=campaign, user=campaign.author)

    campaign_update(campaign=campaign, actor=campaign.author, data={"text": "Update harian: kasus turun."})

    campaign.refresh_from_db()
    assert (campaign.status, campaign.next_run_at) == (Campaign.Status.DRAFT, None)
    assert campaign.approvals.get().voided_at is not None
    event = AuditEvent.objects.get(action="campaign.update")
    assert (event.from_state, event.to_state) == (Campaign.Status.SENDING, Campaign.Status.DRAFT)
    # The run keeps the text it was approved with and completes as its reports come; the draft stays a draft.
    run.refresh_from_db()
    assert run.text != campaign.text
    Delivery.objects.filter(run=run).update(status="delivered")
    assert dispatch.run_check_complete(run_id=run.pk).status == CampaignRun.Status.COMPLETED
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.DRAFT


def test_a_sending_campaign_with_messages_still_to_send_or_sent_once_may_not_be_edited():
    unsent, _, _ = _fanned_out_run({"tsel": 2})  # its batch still waits for a worker
    Campaign.objects.filter(pk=unsent.campaign_id).update(schedule=dispatch.scheduling.schedule_normalize(BLORA_DAILY))
    campaign = Campaign.objects.get(pk=unsent.campaign_id)
    assert "update" not in campaign_allowed_actions(campaign=campaign, user=campaign.author)
    with pytest.raises(ServiceConflict, match="only wait for reports"):
        campaign_update(campaign=campaign, actor=campaign.author, data={"text": "Teks baru."})

    once = _daily_run_sent({"tsel": 2}).campaign
    Campaign.objects.filter(pk=once.pk).update(schedule={"kind": "now"})  # a one-off: nothing later to edit
    once.refresh_from_db()
    with pytest.raises(ServiceConflict):
        campaign_update(campaign=once, actor=once.author, data={"text": "Teks baru."})
    assert Campaign.objects.get(pk=once.pk).status == Campaign.Status.SENDING


def test_a_campaign_whose_runs_wait_for_reports_keeps_its_mode_so_its_runs_still_complete():
    run = _daily_run_sent({"tsel": 2})
    campaign = Campaign.objects.get(pk=run.campaign_id)

    # Its runs are closed by the targeted machinery, which an area broadcast's would never reach.
    with pytest.raises(ServiceConflict, match="mode"):
        campaign_update(campaign=campaign, actor=campaign.author, data={"mode": "area_broadcast"})

    campaign.refresh_from_db()
    assert (campaign.mode, campaign.status) == ("targeted", Campaign.Status.SENDING)
    Delivery.objects.filter(run=run).update(status="delivered")
    assert dispatch.run_check_complete(run_id=run.pk).status == CampaignRun.Status.COMPLETED


def test_a_campaign_edited_back_to_draft_while_its_runs_wait_for_reports_still_keeps_its_mode():
    run = _daily_run_sent({"tsel": 2})
    campaign = Campaign.objects.get(pk=run.campaign_id)
    campaign_update(campaign=campaign, actor=campaign.author, data={"text": "Update harian: kasus turun."})
    assert campaign.status == Campaign.Status.DRAFT

    with pytest.raises(ServiceConflict, match="mode"):
        campaign_update(campaign=campaign, actor=campaign.author, data={"mode": "area_broadcast"})

    campaign.refresh_from_db()
    assert campaign.mode == "targeted"
    Delivery.objects.filter(run=run).update(status="delivered")
    assert dispatch.run_check_complete(run_id=run.pk).status == CampaignRun.Status.COMPLETED


def test_a_campaign_whose_runs_have_ended_keeps_its_mode_so_their_reports_stay_downloadable(api_client_for):
    run = _daily_run_sent({"tsel": 2})
    Delivery.objects.filter(run=run).update(status="delivered")
    assert dispatch.run_check_complete(run_id=run.pk).status == CampaignRun.Status.COMPLETED
    campaign = Campaign.objects.get(pk=run.campaign_id)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SCHEDULED)  # waiting for its next day
    campaign.refresh_from_db()

    # A report is read by its mode: as an area broadcast, its targeted runs' deliveries would no longer be listed.
    with pytest.raises(ServiceConflict, match="mode"):
        campaign_update(campaign=campaign, actor=campaign.author, data={"mode": "area_broadcast"})

    assert Campaign.objects.get(pk=campaign.pk).mode == "targeted"
    response = api_client_for(campaign.author).get(f"/api/v1/campaigns/{campaign.pk}/report.csv")
    assert response.status_code == 200


def test_a_one_off_run_missed_by_longer_than_its_validity_is_not_sent_and_its_author_is_told():
    from smsblast.models import Notification

    schedule = {"kind": "once", "at": "2021-07-06T13:00"}
    campaign = approved_campaign(schedule=dispatch.scheduling.schedule_normalize(schedule), validity_minutes=60)
    campaign.author.email = "ofc@blitarkab.go.id"
    campaign.author.save()
    operators_and_subscribers(counts={"tsel": 2})
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=schedule, now=utc(2021, 7, 6, 2, 0))
    due = utc(2021, 7, 6, 6, 0)  # 13:00 WIB

    # The scheduler was down from before 13:00 until 14:01: the warning would reach handsets after it expired.
    assert dispatch.runs_start_due(now=due + timedelta(minutes=61)) == []

    campaign.refresh_from_db()
    assert (campaign.status, campaign.next_run_at) == (Campaign.Status.CANCELLED, None)
    assert not CampaignRun.objects.filter(campaign=campaign).exists() and not Delivery.objects.exists()
    event = AuditEvent.objects.get(object_id=str(campaign.pk), action="campaign.validity_missed")
    assert (event.actor, event.from_state, event.to_state) == (None, "scheduled", "cancelled")
    assert event.details["scheduled_for"] == due.isoformat()
    assert "longer than its validity (60 minutes)" in event.details["reason"]
    (notice,) = Notification.objects.filter(kind="campaign.validity_missed")
    assert notice.user == campaign.author and notice.subject.startswith("Tidak dikirim: ")
    assert "13:00 WIB" in notice.body and f"/campaigns/{campaign.pk}/" in notice.body
    assert dispatch.runs_start_due(now=due + timedelta(minutes=62)) == []
    assert Notification.objects.filter(kind="campaign.validity_missed").count() == 1
    from tests.conftest import client_for

    page = client_for(campaign.author).get(f"/campaigns/{campaign.pk}/").content.decode()
    assert "pengiriman terlewat melewati masa berlakunya: tidak ada yang dikirim" in page
    assert "Alasan: Terlewat lebih lama dari masa berlakunya (60 menit)" in page


def test_a_one_off_run_late_but_within_its_validity_is_still_sent():
    schedule = {"kind": "once", "at": "2021-07-06T13:00"}
    campaign = approved_campaign(schedule=dispatch.scheduling.schedule_normalize(schedule), validity_minutes=60)
    operators_and_subscribers(counts={"tsel": 2})
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=schedule, now=utc(2021, 7, 6, 2, 0))

    (run_id,) = dispatch.runs_start_due(now=utc(2021, 7, 6, 6, 59))

    assert CampaignRun.objects.get(pk=run_id).scheduled_for == utc(2021, 7, 6, 6, 0)


def test_a_weekly_occurrence_missed_past_its_validity_is_skipped_and_the_next_one_kept():
    schedule = {"kind": "weekly", "time": "13:00", "weekdays": [1]}
    campaign = approved_campaign(schedule=dispatch.scheduling.schedule_normalize(schedule), validity_minutes=120)
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=schedule, now=utc(2021, 7, 5, 2, 0))
    tuesday_13 = utc(2021, 7, 6, 6, 0)
    campaign.refresh_from_db()
    assert campaign.next_run_at == tuesday_13

    # Down until Tuesday 16:00 WIB: three hours late for a two-hour warning, the next one six days away.
    assert dispatch.runs_start_due(now=utc(2021, 7, 6, 9, 0)) == []

    campaign.refresh_from_db()
    assert (campaign.status, campaign.next_run_at) == (Campaign.Status.SCHEDULED, utc(2021, 7, 13, 6, 0))
    event = AuditEvent.objects.get(object_id=str(campaign.pk), action="campaign.validity_missed")
    assert (event.from_state, event.to_state) == ("scheduled", "scheduled")
    assert not CampaignRun.objects.filter(campaign=campaign).exists()
