"""Retention: a finished run's deliveries are removed after SMSBLAST_DELIVERY_RETENTION_DAYS, its figures kept."""

import csv
import io
import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.urls import reverse

from campaigns import dispatch, retention
from campaigns.dispatch_selectors import run_progress_block, runs_progress
from campaigns.models import Campaign, CampaignRun, Delivery, DispatchBatch, RunSummary
from smsblast.models import AuditEvent, Subscriber
from tests.conftest import client_for
from tests.operators.scripted import ScriptedAdapter, finished_run, sending_run

pytestmark = pytest.mark.django_db

RETENTION_DAYS = 180


@pytest.fixture(autouse=True)
def dispatch_redis(settings, redis_client, redis_url, private_broker):
    settings.REDIS_URL = redis_url
    settings.SMSBLAST_DELIVERY_RETENTION_DAYS = RETENTION_DAYS
    ScriptedAdapter.reset()


def without_removal_mark(progress: dict) -> dict:
    return {key: value for key, value in progress.items() if key != "recipients_removed_at"}


def csv_text(response) -> str:
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content).decode("utf-8")


def shown_figures(run: CampaignRun, api) -> dict:
    """Return every figure the pages, the API and the reports show for the run, as a user would compare them."""
    campaign = run.campaign
    base = f"/api/v1/campaigns/{campaign.pk}"
    block = run_progress_block(run)
    block["progress"] = without_removal_mark(block["progress"])
    page = client_for(campaign.author, "en").get(reverse("campaigns:run_progress", args=[campaign.pk, run.pk]))
    assert page.status_code == 200
    # The page as it was, less the line saying the recipients were removed.
    html = re.sub(r"\n *<p class=\"muted\" data-recipients-removed>.*?</p>", "", page.content.decode())
    return {
        "selector": [without_removal_mark(progress) for progress in runs_progress([run])],
        "block": block,
        "page": html,
        "detail": without_removal_mark(api.get(f"{base}/").json()["progress"]),
        "runs": [without_removal_mark(progress) for progress in api.get(f"{base}/runs/").json()["results"]],
        "areas": csv_text(api.get(f"{base}/areas.csv")),
        "run areas": csv_text(api.get(f"{base}/areas.csv", {"run": run.pk})),
    }


def test_after_pruning_every_page_api_answer_and_report_shows_the_figures_it_showed_before(api_client_for):
    run = finished_run()
    api = api_client_for(run.campaign.author)
    before = shown_figures(run, api)
    # The run is what the docstring of finished_run says: every state and several operators are in the figures.
    counts = before["selector"][0]["counts"]
    assert {key: n for key, n in counts.items() if n} == {
        "delivered": 3,
        "undelivered": 1,
        "expired": 2,
        "rejected": 2,
        "failed": 2,
        "skipped": 3,
    }
    assert before["selector"][0]["cost"] == 2 * (4 * 250 + 3 * 200)
    assert before["block"]["delivered"] and before["block"]["failures"]
    assert "35.05.02" in before["areas"]

    pruned = retention.deliveries_prune(now=run.finished_at + timedelta(days=RETENTION_DAYS + 1))

    assert [(entry.run_id, entry.removed, entry.done) for entry in pruned] == [(run.pk, 13, True)]
    assert not Delivery.objects.filter(run=run).exists()
    after = shown_figures(run, api)
    for name, figures in before.items():
        assert after[name] == figures, name
    progress = api.get(f"/api/v1/campaigns/{run.campaign_id}/runs/").json()["results"][0]
    assert progress["recipients_removed_at"] is not None


def test_the_summary_holds_no_phone_number_and_the_audit_trail_records_the_rows_removed_and_the_cutoff():
    run = finished_run()
    numbers = list(Delivery.objects.filter(run=run).values_list("msisdn", flat=True))
    now = run.finished_at + timedelta(days=RETENTION_DAYS + 1)

    retention.deliveries_prune(now=now)

    summary = RunSummary.objects.get(run=run)
    (event,) = AuditEvent.objects.filter(action="run.deliveries_remove", object_id=str(run.pk))
    assert event.object_type == "campaigns.campaignrun" and event.actor is None
    assert event.details == {
        "removed": 13,
        "recipients": 13,
        "retention_days": RETENTION_DAYS,
        "cutoff": (now - timedelta(days=RETENTION_DAYS)).isoformat(),
    }
    stored = str(summary.figures) + str(event.details)
    assert not any(number in stored or number.removeprefix("+") in stored for number in numbers)


def test_a_run_not_final_or_ended_within_the_retention_or_waiting_for_a_report_keeps_its_deliveries():
    run = finished_run()
    ended = run.finished_at
    # Another occurrence of the campaign, still sending.
    Campaign.objects.filter(pk=run.campaign_id).update(status=Campaign.Status.SENDING)
    sending = sending_run(run.campaign, scheduled_for=run.scheduled_for + timedelta(days=1))
    dispatch.run_fan_out(run_id=sending.pk)
    CampaignRun.objects.filter(pk=sending.pk).update(started_at=ended - timedelta(days=1))

    assert retention.deliveries_prune(now=ended + timedelta(days=RETENTION_DAYS - 1)) == []

    # Cancelled, but a message the operator holds may still be reported on until it expires.
    CampaignRun.objects.filter(pk=sending.pk).update(status=CampaignRun.Status.CANCELLED, finished_at=ended)
    DispatchBatch.objects.filter(run=sending).update(status=DispatchBatch.Status.ACCEPTED)
    Delivery.objects.filter(run=sending).update(status=Delivery.Status.SUBMITTED)
    pruned = retention.deliveries_prune(now=ended + timedelta(days=RETENTION_DAYS + 1))

    assert [entry.run_id for entry in pruned] == [run.pk]
    assert Delivery.objects.filter(run=sending).count() == 13
    assert not RunSummary.objects.filter(run=sending).exists()


def test_a_retention_of_zero_keeps_deliveries_for_good(settings):
    run = finished_run()
    settings.SMSBLAST_DELIVERY_RETENTION_DAYS = 0

    assert retention.deliveries_prune(now=run.finished_at + timedelta(days=10_000)) == []
    assert retention.deliveries_prune_enqueue(now=run.finished_at + timedelta(days=10_000)) == 0
    assert Delivery.objects.filter(run=run).count() == 13


def test_a_pass_cut_off_midway_shows_the_summary_at_once_and_the_next_pass_removes_the_rest(api_client_for):
    run = finished_run()
    api = api_client_for(run.campaign.author)
    before = shown_figures(run, api)
    now = run.finished_at + timedelta(days=RETENTION_DAYS + 1)

    first = retention.run_deliveries_prune(run_id=run.pk, days=RETENTION_DAYS, now=now, chunk=5, max_chunks=1)

    assert (first.removed, first.done) == (5, False)
    assert Delivery.objects.filter(run=run).count() == 8
    # Not a mix of the summary and the rows left: the figures are whole, and no recipient is listed.
    assert shown_figures(run, api) == before
    assert api.get(f"/api/v1/campaigns/{run.campaign_id}/deliveries/").status_code == 410
    assert not AuditEvent.objects.filter(action="run.deliveries_remove").exists()

    (second,) = retention.deliveries_prune(now=now + timedelta(days=1), chunk=5)

    assert (second.run_id, second.removed, second.done) == (run.pk, 8, True)
    assert not Delivery.objects.filter(run=run).exists()
    assert shown_figures(run, api) == before
    (event,) = AuditEvent.objects.filter(action="run.deliveries_remove")
    assert event.details["removed"] == 13
    assert event.details["cutoff"] == (now - timedelta(days=RETENTION_DAYS)).isoformat()  # the first pass's
    assert retention.deliveries_prune(now=now + timedelta(days=2)) == []


def test_the_recipient_list_of_a_wholly_pruned_campaign_is_gone_and_says_why_in_both_languages(api_client_for):
    run = finished_run()
    retention.deliveries_prune(now=run.finished_at + timedelta(days=RETENTION_DAYS + 1))
    api = api_client_for(run.campaign.author)
    base = f"/api/v1/campaigns/{run.campaign_id}"

    english = api.get(f"{base}/deliveries/", HTTP_ACCEPT_LANGUAGE="en")
    indonesian = api.get(f"{base}/deliveries/", {"run": run.pk}, HTTP_ACCEPT_LANGUAGE="id")
    report = api.get(f"{base}/report.csv", HTTP_ACCEPT_LANGUAGE="en")

    assert english.status_code == indonesian.status_code == report.status_code == 410
    assert english.json()["detail"] == (
        f"The recipients of runs that ended more than {RETENTION_DAYS} days ago were removed under the retention "
        f"policy for personal data; the figures of each run remain (runs, areas.csv). Removed: runs {run.pk}."
    )
    assert report.json() == english.json()
    assert f"{RETENTION_DAYS} hari" in indonesian.json()["detail"]
    assert "retensi" in indonesian.json()["detail"] and str(run.pk) in indonesian.json()["detail"]


def test_a_campaign_with_a_pruned_and_a_kept_run_lists_the_kept_recipients_and_names_the_pruned_run(api_client_for):
    run = finished_run()
    Campaign.objects.filter(pk=run.campaign_id).update(status=Campaign.Status.SENDING)
    kept = sending_run(run.campaign, scheduled_for=run.scheduled_for + timedelta(days=200))
    dispatch.run_fan_out(run_id=kept.pk)
    retention.deliveries_prune(now=run.finished_at + timedelta(days=RETENTION_DAYS + 1))
    api = api_client_for(run.campaign.author)
    base = f"/api/v1/campaigns/{run.campaign_id}"

    listed = api.get(f"{base}/deliveries/", HTTP_ACCEPT_LANGUAGE="en").json()
    report = list(csv.DictReader(io.StringIO(csv_text(api.get(f"{base}/report.csv")).removeprefix("\ufeff"))))
    one_run = api.get(f"{base}/report.csv", {"run": run.pk})

    assert listed["count"] == 13 and {row["run"] for row in listed["results"]} == {kept.pk}
    assert listed["removed_runs"] == [run.pk]
    assert f"Removed: runs {run.pk}." in listed["removed_note"]
    assert [row["run_id"] for row in report].count(str(kept.pk)) == 13
    (removed,) = [row for row in report if row["run_id"] == str(run.pk)]
    assert (removed["status"], removed["msisdn"], removed["message_id"]) == ("removed", "", "")
    assert "retensi" in removed["reason"]  # the report is in the language of the request: Indonesian by default
    assert one_run.status_code == 410
    assert api.get(f"{base}/deliveries/", {"run": kept.pk}).json()["removed_runs"] == []


def test_the_answers_naming_removed_recipients_are_documented_field_by_field(api_client_for):
    from tests.schema_check import answer_mismatches

    run = finished_run()
    Campaign.objects.filter(pk=run.campaign_id).update(status=Campaign.Status.SENDING)
    sending_run(run.campaign, scheduled_for=run.scheduled_for + timedelta(days=200))
    retention.deliveries_prune(now=run.finished_at + timedelta(days=RETENTION_DAYS + 1))
    api = api_client_for(run.campaign.author)
    schema = api.get("/api/v1/schema/", {"format": "json"}).json()
    base = f"/api/v1/campaigns/{run.campaign_id}"

    runs = api.get(f"{base}/runs/")
    deliveries = api.get(f"{base}/deliveries/")
    gone = api.get(f"{base}/deliveries/", {"run": run.pk})

    assert runs.json()["results"][1]["recipients_removed_at"] is not None
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/runs/", "get", runs) == []
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/deliveries/", "get", deliveries) == []
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/deliveries/", "get", gone) == []


def test_the_run_page_says_its_recipients_were_removed_and_keeps_its_results_by_area_link():
    run = finished_run()
    retention.deliveries_prune(now=run.finished_at + timedelta(days=RETENTION_DAYS + 1))
    campaign = run.campaign

    block = client_for(campaign.author, "en").get(reverse("campaigns:run_progress", args=[campaign.pk, run.pk]))
    page = client_for(campaign.author, "id").get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()

    assert f"which keeps them {RETENTION_DAYS} days after a run ends; its figures remain" in block.content.decode()
    assert f"report.csv?run={run.pk}" not in page and f"areas.csv?run={run.pk}" in page
    # The whole campaign's report would list no one either; its results by area remain.
    assert f'href="/api/v1/campaigns/{campaign.pk}/report.csv"' not in page
    assert f'href="/api/v1/campaigns/{campaign.pk}/areas.csv"' in page
    assert "retensi" in page


def test_the_reconciler_and_a_stop_message_pass_over_a_pruned_run(api_client_for):
    from smsblast.services import subscriber_opt_out

    run = finished_run()
    number = Subscriber.objects.filter(operator__slug="tsel").values_list("msisdn", flat=True).first()
    now = run.finished_at + timedelta(days=RETENTION_DAYS + 1)
    retention.deliveries_prune(now=now)

    counts = dispatch.dispatch_reconcile(now=now)
    subscriber_opt_out(msisdn=number, actor=None, source="inbound")

    assert counts == {"leases": 0, "requeued": 0, "fanouts": 0, "expired": 0, "completed": 0, "stalled": 0}
    assert dispatch.run_check_complete(run_id=run.pk, now=now).status == CampaignRun.Status.COMPLETED_WITH_FAILURES
    assert Subscriber.objects.get(msisdn=number).opted_out_at is not None


def test_the_command_prints_what_it_would_remove_and_then_removes_it(capsys):
    from django.utils import timezone

    run = finished_run()

    call_command("prune_deliveries", "--older-than", "1", "--dry-run")
    assert "0 runs ended more than 1 day ago: would remove 0 deliveries" in capsys.readouterr().out

    CampaignRun.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=2))
    call_command("prune_deliveries", "--older-than", "1", "--dry-run")
    dry = capsys.readouterr().out
    assert f"Run {run.pk} of campaign {run.campaign_id}" in dry and "would remove 13 deliveries" in dry
    assert Delivery.objects.filter(run=run).count() == 13

    call_command("prune_deliveries", "--older-than", "1")
    out = capsys.readouterr().out
    assert f"Run {run.pk} of campaign {run.campaign_id}" in out and "removed 13 deliveries" in out
    assert "1 run ended more than 1 day ago: removed 13 deliveries; their figures are kept." in out
    # The run's end in its campaign's zone, as the campaign's pages show it (the demo areas are WIB).
    ended = timezone.localtime(CampaignRun.objects.get(pk=run.pk).finished_at, ZoneInfo("Asia/Jakarta"))
    assert f"ended {ended:%Y-%m-%d %H:%M} WIB:" in out
    assert not Delivery.objects.filter(run=run).exists()


def test_the_command_prints_each_run_as_soon_as_it_is_pruned_not_all_at_the_end(monkeypatch):
    from django.utils import timezone

    runs = [finished_run(), finished_run()]
    CampaignRun.objects.filter(pk__in=[run.pk for run in runs]).update(finished_at=timezone.now() - timedelta(days=2))
    deliveries = Delivery.objects.count()
    out = io.StringIO()
    printed_before = {}  # run id -> what the command had printed when that run's prune began
    prune = retention.run_deliveries_prune

    def watched(*, run_id, **kwargs):
        printed_before[run_id] = out.getvalue()
        return prune(run_id=run_id, **kwargs)

    monkeypatch.setattr(retention, "run_deliveries_prune", watched)
    call_command("prune_deliveries", "--older-than", "1", stdout=out)

    first, second = printed_before
    assert f"Run {first} of campaign" in printed_before[second]
    assert f"2 runs ended more than 1 day ago: removed {deliveries} deliveries" in out.getvalue()
    assert not Delivery.objects.exists()


def test_a_retention_longer_than_the_calendar_reaches_back_removes_nothing_instead_of_failing(capsys, settings):
    # A number of days no date lies back to (a million days, meant as "keep for good"): no run ended that long ago.
    run = finished_run()

    call_command("prune_deliveries", "--older-than", "1000000")
    settings.SMSBLAST_DELIVERY_RETENTION_DAYS = 3_000_000

    assert "0 runs ended more than 1,000,000 days ago: removed 0 deliveries" in capsys.readouterr().out
    assert retention.deliveries_prune_enqueue(now=run.finished_at + timedelta(days=1)) == 0
    assert retention.deliveries_prune(now=run.finished_at + timedelta(days=1)) == []
    assert Delivery.objects.filter(run=run).count() == 13


def test_the_daily_task_enqueues_a_prune_per_run_past_the_retention_and_that_task_prunes_it(
    django_capture_on_commit_callbacks, redis_client
):
    from django.utils import timezone

    from campaigns.tasks import prune_run_deliveries

    run = finished_run()
    now = run.finished_at + timedelta(days=RETENTION_DAYS + 1)

    with django_capture_on_commit_callbacks(execute=True):
        assert retention.deliveries_prune_enqueue(now=now) == 1
    queued = redis_client.lrange("default", 0, -1)
    assert len(queued) == 1 and b"campaigns.tasks.prune_run_deliveries" in queued[0]

    prune_run_deliveries(run.pk, RETENTION_DAYS)  # as a worker calls it, now: the run ended just now
    assert Delivery.objects.filter(run=run).count() == 13
    CampaignRun.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=RETENTION_DAYS + 1))
    prune_run_deliveries(run.pk, RETENTION_DAYS)
    assert not Delivery.objects.filter(run=run).exists()
    prune_run_deliveries(run.pk, RETENTION_DAYS)  # again: nothing left, nothing done
    assert AuditEvent.objects.filter(action="run.deliveries_remove").count() == 1


def test_the_campaign_history_names_the_removal_of_the_recipients_in_the_users_language():
    run = finished_run()
    retention.deliveries_prune(now=run.finished_at + timedelta(days=RETENTION_DAYS + 1))
    url = reverse("campaigns:detail", args=[run.campaign_id])

    english = client_for(run.campaign.author, "en").get(url).content.decode()
    indonesian = client_for(run.campaign.author, "id").get(url).content.decode()

    assert '<b>recipients removed under the retention policy</b> <span class="muted">(run.deliveries_remove)' in english
    assert "<b>penerima dihapus sesuai kebijakan retensi</b>" in indonesian


def prune_as_removed_runs_are_read(monkeypatch, module, run, now) -> None:
    """Have the daily prune write `run`'s summary just as `module` reads which runs were removed."""
    removed_runs = module.campaign_removed_runs

    def pruned_meanwhile(*args, **kwargs):
        summaries = removed_runs(*args, **kwargs)
        retention.run_summarize(run_id=run.pk, days=RETENTION_DAYS, now=now)
        return summaries

    monkeypatch.setattr(module, "campaign_removed_runs", pruned_meanwhile)


def test_a_report_downloaded_while_a_run_is_being_pruned_shows_that_run_whole_or_removed(api_client_for, monkeypatch):
    from campaigns import dispatch_selectors

    run = finished_run()
    now = run.finished_at + timedelta(days=RETENTION_DAYS + 1)
    prune_as_removed_runs_are_read(monkeypatch, dispatch_selectors, run, now)
    api = api_client_for(run.campaign.author)
    text = csv_text(api.get(f"/api/v1/campaigns/{run.campaign_id}/report.csv"))

    rows = [row for row in csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))) if row["run_id"] == str(run.pk)]
    statuses = [row["status"] for row in rows]
    assert statuses == ["removed"] or (len(rows) == 13 and "removed" not in statuses), statuses


def test_a_list_of_recipients_read_while_a_run_is_being_pruned_names_that_run_if_it_leaves_it_out(
    api_client_for, monkeypatch
):
    from campaigns import api_dispatch

    run = finished_run()
    Campaign.objects.filter(pk=run.campaign_id).update(status=Campaign.Status.SENDING)
    kept = sending_run(run.campaign, scheduled_for=run.scheduled_for + timedelta(days=200))
    dispatch.run_fan_out(run_id=kept.pk)
    now = run.finished_at + timedelta(days=RETENTION_DAYS + 1)
    prune_as_removed_runs_are_read(monkeypatch, api_dispatch, run, now)
    api = api_client_for(run.campaign.author)
    listed = api.get(f"/api/v1/campaigns/{run.campaign_id}/deliveries/", {"limit": 100}).json()

    rows = [row for row in listed["results"] if row["run"] == run.pk]
    assert (rows == [] and listed["removed_runs"] == [run.pk]) or (len(rows) == 13 and not listed["removed_runs"])
    assert listed["count"] == len(listed["results"])


def test_the_daily_prune_holds_one_run_at_a_time_in_the_default_queue_so_a_run_due_meanwhile_starts_at_once(
    django_capture_on_commit_callbacks, redis_client
):
    import base64
    import json

    from django.utils import timezone

    from campaigns.tasks import prune_run_deliveries

    run = finished_run()
    runs = [run]
    for days in (1, 2):  # two more runs of the campaign, ended the days after, with the same recipients
        deliveries = list(Delivery.objects.filter(run=run))
        later = CampaignRun.objects.get(pk=run.pk)
        later.pk = None
        later.scheduled_for += timedelta(days=days)
        later.finished_at += timedelta(days=days)
        later.save()
        for delivery in deliveries:
            delivery.pk, delivery.run, delivery.batch = None, later, None
        Delivery.objects.bulk_create(deliveries)
        runs.append(later)
    now = timezone.now()
    for age, one in enumerate(runs):
        CampaignRun.objects.filter(pk=one.pk).update(finished_at=now - timedelta(days=RETENTION_DAYS + 3 - age))

    def queued_prunes() -> list[int]:
        messages = [json.loads(raw) for raw in redis_client.lrange("default", 0, -1)]
        return [
            json.loads(base64.b64decode(message["body"]))[0][0]
            for message in messages
            if message["headers"]["task"] == "campaigns.tasks.prune_run_deliveries"
        ]

    with django_capture_on_commit_callbacks(execute=True):
        assert retention.deliveries_prune_enqueue(now=now) == 3
    pruned = []
    while queued := queued_prunes():
        # A fan-out enqueued now waits behind one run's prune at most, not behind every run past the retention.
        assert len(queued) == 1
        redis_client.delete("default")
        with django_capture_on_commit_callbacks(execute=True):
            prune_run_deliveries(queued[0], RETENTION_DAYS)
        pruned.append(queued[0])
    assert pruned == [one.pk for one in runs]
    assert not Delivery.objects.filter(run__in=runs).exists()


def test_a_run_whose_prune_fails_does_not_hold_up_the_next_one(monkeypatch):
    calls = []
    monkeypatch.setattr(retention, "_prune_enqueue", lambda run_id, days: calls.append(run_id))
    first = finished_run()
    second = CampaignRun.objects.get(pk=first.pk)
    second.pk = None
    second.scheduled_for += timedelta(days=1)
    second.finished_at += timedelta(days=1)
    second.save()
    Delivery.objects.filter(pk=Delivery.objects.filter(run=first).values("pk")[:1]).update(run=second)
    now = second.finished_at + timedelta(days=RETENTION_DAYS + 1)

    def broken(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(retention, "run_deliveries_prune", broken)
    with pytest.raises(RuntimeError):
        retention.run_deliveries_prune_and_next(run_id=first.pk, days=RETENTION_DAYS, now=now)

    assert calls == [second.pk]


def test_a_retention_of_one_day_is_said_in_the_singular_on_the_api_and_the_run_page(api_client_for):
    run = finished_run()
    retention.deliveries_prune(now=run.finished_at + timedelta(days=2), days=1)
    api = api_client_for(run.campaign.author)

    gone = api.get(f"/api/v1/campaigns/{run.campaign_id}/deliveries/", HTTP_ACCEPT_LANGUAGE="en").json()["detail"]
    page = client_for(run.campaign.author, language="en").get(
        reverse("campaigns:run_progress", args=[run.campaign_id, run.pk])
    )
    indonesian = api.get(f"/api/v1/campaigns/{run.campaign_id}/deliveries/", HTTP_ACCEPT_LANGUAGE="id")

    assert "ended more than 1 day ago" in gone
    assert "keeps them 1 day after a run ends" in page.content.decode()
    assert "1 days" not in gone + page.content.decode()
    assert "lebih dari 1 hari yang lalu" in indonesian.json()["detail"]


def test_a_number_an_operator_wrote_into_a_reason_or_error_code_is_masked_in_the_summary():
    run = finished_run()
    (first, second) = Delivery.objects.filter(run=run, status="rejected").order_by("pk")[:2]
    Delivery.objects.filter(pk=first.pk).update(reason=f"blacklisted {first.msisdn} by request")
    Delivery.objects.filter(pk=second.pk).update(error_code=f"E42/{second.msisdn.replace('+62', '0')}")

    retention.deliveries_prune(now=run.finished_at + timedelta(days=RETENTION_DAYS + 1))

    stored = str(RunSummary.objects.get(run=run).figures)
    for number in (first.msisdn, second.msisdn):
        assert number not in stored and number.replace("+62", "0") not in stored
    assert f"blacklisted {first.msisdn[:6]}" in stored and "by request" in stored and "E42/" in stored
