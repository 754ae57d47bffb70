"""Campaign API actions of the send pipeline: schedule, pause, resume, runs, deliveries, report.csv, areas.csv."""

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns import dispatch
from campaigns.dispatch_selectors import area_report_level, run_progress
from campaigns.models import Campaign, Delivery, DispatchBatch
from campaigns.services import campaign_approval_is_valid
from operators import services
from operators.gateways.base import BatchResult, Outcome
from operators.models import Operator
from smsblast.models import Area, Role, Subscriber
from tests.operators.factories import OperatorFactory
from tests.operators.scripted import ScriptedAdapter, approved_campaign, operators_and_subscribers, sending_run
from tests.smsblast.factories import SubscriberFactory, UserFactory, area_tree

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def dispatch_redis(settings, redis_client, redis_url):
    settings.REDIS_URL = redis_url
    ScriptedAdapter.reset()


@pytest.fixture
def sent_run():
    """A run over two operators (tariffs 250 and 200), one batch accepted with a rejection, one failed."""
    campaign = approved_campaign()
    operators = operators_and_subscribers(counts={"tsel": 3, "isat": 2}, batch_size=10)
    operators["isat"].tariff_per_segment = 200
    operators["isat"].save()
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign, segments=2)
    dispatch.run_fan_out(run_id=run.pk)
    tsel_batch = DispatchBatch.objects.get(run=run, operator=operators["tsel"])
    rejected_id = str(tsel_batch.deliveries.order_by("pk").first().pk)
    ScriptedAdapter.reset(
        BatchResult(outcome=Outcome.ACCEPTED, accepted=2, rejected=[(rejected_id, "invalid")]),
        BatchResult(outcome=Outcome.FAILED, status_code=401, error="bad key"),
    )
    assert services.batch_send(batch_id=tsel_batch.pk) == "accepted"
    isat_batch = DispatchBatch.objects.get(run=run, operator=operators["isat"])
    assert services.batch_send(batch_id=isat_batch.pk) == "failed"
    return run


def test_schedule_arms_an_approved_campaign(api_client_for):
    campaign = approved_campaign(schedule={"kind": "now"})
    client = api_client_for(campaign.author)
    response = client.post(f"/api/v1/campaigns/{campaign.pk}/schedule/", {"schedule": {"kind": "now"}}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "scheduled"
    assert response.json()["next_run_at"]


def test_the_next_run_is_shown_in_the_zone_the_schedule_is_entered_in(api_client_for):
    area_tree("91.01", kecamatan=1)  # Papua: WIT, UTC+9
    campaign = approved_campaign(schedule={"kind": "daily", "time": "08:00"}, area_codes=["91.01"], skip_areas=True)
    client = api_client_for(campaign.author)
    response = client.post(f"/api/v1/campaigns/{campaign.pk}/schedule/", {}, format="json")
    assert response.status_code == 200
    assert response.json()["next_run_at"].endswith("T08:00:00+09:00")
    (row,) = client.get("/api/v1/campaigns/").json()["results"]
    assert row["next_run_at"] == response.json()["next_run_at"]


def test_schedule_without_a_body_arms_the_approved_schedule(api_client_for):
    campaign = approved_campaign(schedule={"kind": "daily", "time": "13:00"})
    client = api_client_for(campaign.author)
    response = client.post(f"/api/v1/campaigns/{campaign.pk}/schedule/", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "scheduled"
    assert response.json()["schedule"] == {"kind": "daily", "time": "13:00"}


def test_arming_a_campaign_no_longer_approved_is_a_409_naming_its_state(api_client_for):
    campaign = approved_campaign(schedule={"kind": "daily", "time": "13:00"})
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.DRAFT)
    response = api_client_for(campaign.author).post(f"/api/v1/campaigns/{campaign.pk}/schedule/", {}, format="json")
    assert response.status_code == 409, response.content
    assert response.json()["detail"] == "Only an approved campaign can be scheduled; this one is draft."


@pytest.mark.parametrize(
    ("status", "label"),
    [(Campaign.Status.PENDING_APPROVAL, "pending approval"), (Campaign.Status.COMPLETED, "completed")],
)
def test_setting_a_schedule_in_a_state_that_takes_none_is_a_409_naming_the_schedule(api_client_for, status, label):
    campaign = approved_campaign(schedule={"kind": "daily", "time": "13:00"})
    Campaign.objects.filter(pk=campaign.pk).update(status=status)
    response = api_client_for(campaign.author).post(
        f"/api/v1/campaigns/{campaign.pk}/schedule/", {"schedule": {"kind": "now"}}, format="json"
    )
    assert response.status_code == 409, response.content
    detail = response.json()["detail"]
    assert detail.startswith(f"Cannot schedule a campaign that is {label};"), detail
    assert "update" not in detail
    campaign.refresh_from_db()
    assert (campaign.status, campaign.schedule) == (status, {"kind": "daily", "time": "13:00"})


def test_a_campaign_approved_without_a_schedule_is_armed_to_go_out_now_and_keeps_its_approval(api_client_for):
    campaign = approved_campaign(schedule={})
    client = api_client_for(campaign.author)
    before = timezone.now()
    response = client.post(f"/api/v1/campaigns/{campaign.pk}/schedule/", {}, format="json")
    assert response.status_code == 200, response.content
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert campaign.schedule == {}  # the hashed content the approver saw is unchanged
    assert campaign_approval_is_valid(campaign)
    assert before <= campaign.next_run_at <= timezone.now()


def test_scheduling_now_explicitly_arms_a_campaign_approved_without_a_schedule(api_client_for):
    campaign = approved_campaign(schedule={})
    client = api_client_for(campaign.author)
    response = client.post(f"/api/v1/campaigns/{campaign.pk}/schedule/", {"schedule": {"kind": "now"}}, format="json")
    assert response.status_code == 200, response.content
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert campaign_approval_is_valid(campaign)


def test_a_bad_schedule_is_a_400_naming_the_problem(api_client_for):
    campaign = approved_campaign()
    client = api_client_for(campaign.author)
    response = client.post(
        f"/api/v1/campaigns/{campaign.pk}/schedule/", {"schedule": {"kind": "daily", "time": "25:00"}}, format="json"
    )
    assert response.status_code == 400
    assert "time" in response.json()["detail"]


@pytest.mark.parametrize("at", ["0001-01-01T00:00", "9999-12-31T23:59"])
def test_a_once_schedule_in_an_impossible_year_is_a_400_and_changes_nothing(api_client_for, at):
    campaign = approved_campaign()
    client = api_client_for(campaign.author)
    response = client.post(
        f"/api/v1/campaigns/{campaign.pk}/schedule/", {"schedule": {"kind": "once", "at": at}}, format="json"
    )
    assert response.status_code == 400
    assert "between the years 2000 and 9998" in response.json()["detail"]
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED


def test_pause_and_resume_over_the_api(api_client_for, sent_run):
    client = api_client_for(sent_run.campaign.author)
    base = f"/api/v1/campaigns/{sent_run.campaign_id}"
    assert client.post(f"{base}/resume/").status_code == 409
    assert client.post(f"{base}/pause/").json()["status"] == "paused"
    assert client.post(f"{base}/resume/").json()["status"] == "sending"


@pytest.mark.parametrize("role", [Role.OPERATOR, None])
def test_an_operator_or_anonymous_caller_may_not_schedule_pause_or_resume(api_client_for, sent_run, role):
    client = api_client_for(UserFactory(role=role)) if role else APIClient()
    base = f"/api/v1/campaigns/{sent_run.campaign_id}"
    for action in ("pause", "resume", "schedule"):
        response = client.post(f"{base}/{action}/", {}, format="json")
        assert response.status_code in (401, 403), (action, response.status_code)
    assert Campaign.objects.get(pk=sent_run.campaign_id).status == Campaign.Status.SENDING


def test_runs_show_progress_per_operator_with_segments_and_cost(api_client_for, sent_run, approver):
    response = api_client_for(approver).get(f"/api/v1/campaigns/{sent_run.campaign_id}/runs/")
    assert response.status_code == 200
    (progress,) = response.json()["results"]
    assert progress["recipients"] == 5
    assert progress["counts"]["submitted"] == 2  # queued in an accepted batch
    assert progress["counts"]["rejected"] == 1
    assert progress["counts"]["failed"] == 2
    assert progress["batches"] == {"accepted": 1, "failed": 1}
    # 2 accepted messages × 2 segments × Rp 250; the failed operator costs nothing.
    assert progress["segments_sent"] == 4 and progress["cost"] == 1000
    by_slug = {entry["slug"]: entry for entry in progress["operators"]}
    assert by_slug["isat"]["counts"]["failed"] == 2 and by_slug["isat"]["cost"] == 0


def test_run_progress_totals_delivered_failed_and_pending_overall_and_per_operator(sent_run):
    progress = run_progress(sent_run)
    # tsel: two queued in the accepted batch (shown submitted, pending) and one rejected; isat: two failed.
    assert (progress["recipients"], progress["delivered"], progress["failed"], progress["pending"]) == (5, 0, 3, 2)
    assert progress["final"] == 3 and progress["done"] is False
    by_slug = {entry["slug"]: entry for entry in progress["operators"]}
    assert (by_slug["tsel"]["recipients"], by_slug["tsel"]["failed"], by_slug["tsel"]["pending"]) == (3, 1, 2)
    assert (by_slug["isat"]["recipients"], by_slug["isat"]["failed"], by_slug["isat"]["pending"]) == (2, 2, 0)


def test_run_progress_counts_an_opted_out_subscriber_as_skipped_under_its_own_operator():
    from smsblast.models import Area
    from tests.smsblast.factories import SubscriberFactory

    campaign = approved_campaign()
    operators = operators_and_subscribers(counts={"tsel": 2})
    district = Area.objects.get(code="35.05.01")
    SubscriberFactory(area=district, operator=operators["tsel"], opted_out_at=timezone.now())
    SubscriberFactory(area=district, operator=None)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    dispatch.run_fan_out(run_id=run.pk)

    by_slug = {entry["slug"]: entry for entry in run_progress(run)["operators"]}
    assert by_slug["tsel"]["counts"]["skipped"] == 1 and by_slug["tsel"]["recipients"] == 3
    assert by_slug[""]["counts"]["skipped"] == 1  # the number no operator serves


def test_run_progress_costs_messages_the_operator_reported_on_though_its_answer_to_their_batch_was_lost():
    from campaigns.services import campaign_cancel

    campaign = approved_campaign()
    operator = operators_and_subscribers(counts={"tsel": 3}, batch_size=10)["tsel"]
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign, segments=2)
    dispatch.run_fan_out(run_id=run.pk)
    (batch,) = DispatchBatch.objects.filter(run=run)
    # The operator took the batch but its answer timed out; before the retry it reports on two messages.
    ScriptedAdapter.reset(BatchResult(outcome=Outcome.RETRY, error="read timeout"))
    assert services.batch_send(batch_id=batch.pk) == "retry"
    first, second, _ = batch.deliveries.order_by("pk").values_list("pk", flat=True)
    reports = [(str(first), "DELIVERED", "", "", None), (str(second), "UNDELIVERED", "", "", None)]
    assert services.delivery_reports_apply(operator=operator, reports=reports).applied == 2
    campaign_cancel(campaign=campaign, actor=campaign.author)

    progress = run_progress(run)

    assert progress["counts"]["delivered"] == 1 and progress["counts"]["undelivered"] == 1
    assert progress["counts"]["cancelled"] == 1 and progress["batches"] == {"cancelled": 1}
    # The two messages it reported on were with it: 2 messages × 2 segments × Rp 250.
    assert (progress["segments_sent"], progress["cost"]) == (4, 1000)
    (tsel,) = progress["operators"]
    assert (tsel["segments_sent"], tsel["cost"]) == (4, 1000)


def test_a_run_with_a_message_still_pending_is_never_shown_as_one_hundred_percent_final():
    from campaigns.models import Delivery

    run = sending_run(approved_campaign())
    Delivery.objects.bulk_create(
        Delivery(run=run, msisdn=f"+6281300{n:06d}", status="queued" if n == 0 else "delivered") for n in range(10_000)
    )

    progress = run_progress(run)

    assert (progress["pending"], progress["final"]) == (1, 9_999)
    assert progress["percent_final"] == 99.9  # 99.99 % shown down, not up to 100


def test_campaign_detail_carries_the_latest_run_progress(api_client_for, sent_run):
    detail = api_client_for(sent_run.campaign.author).get(f"/api/v1/campaigns/{sent_run.campaign_id}/").json()
    assert detail["progress"]["id"] == sent_run.pk
    assert detail["progress"]["final"] == 3


def test_deliveries_are_paginated_and_filtered_by_shown_status(api_client_for, sent_run):
    client = api_client_for(sent_run.campaign.author)
    base = f"/api/v1/campaigns/{sent_run.campaign_id}/deliveries/"
    page = client.get(base, {"limit": 2}).json()
    assert page["count"] == 5 and len(page["results"]) == 2
    submitted = client.get(base, {"status": "submitted"}).json()
    assert submitted["count"] == 2
    assert {row["status"] for row in submitted["results"]} == {"submitted"}
    assert client.get(base, {"status": "bogus"}).status_code == 400


@pytest.mark.parametrize("run", ["\u00b2", "99999999999999999999"])
def test_a_run_filter_that_is_no_run_id_is_a_400(api_client_for, sent_run, run):
    client = api_client_for(sent_run.campaign.author)
    response = client.get(f"/api/v1/campaigns/{sent_run.campaign_id}/deliveries/", {"run": run})
    assert response.status_code == 400
    assert response.json()["detail"] == "run must be a run id."


def test_a_huge_page_limit_is_capped_not_an_error(api_client_for, sent_run):
    client = api_client_for(sent_run.campaign.author)
    base = f"/api/v1/campaigns/{sent_run.campaign_id}"
    for url in (f"{base}/deliveries/", f"{base}/runs/", "/api/v1/campaigns/"):
        response = client.get(url, {"limit": "99999999999999999999"})
        assert response.status_code == 200, url


def test_report_csv_streams_one_row_per_delivery(api_client_for, sent_run):
    response = api_client_for(sent_run.campaign.author).get(f"/api/v1/campaigns/{sent_run.campaign_id}/report.csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert len(rows) == 5
    assert sorted(row["status"] for row in rows) == ["failed", "failed", "rejected", "submitted", "submitted"]
    assert {row["operator"] for row in rows} == {"tsel", "isat"}


def test_report_csv_starts_with_a_byte_order_mark_so_a_spreadsheet_reads_it_as_utf8(api_client_for, sent_run):
    delivery = sent_run.deliveries.order_by("pk").first()
    delivery.reason = "Nomor diblokir – hubungi gerai"
    delivery.save()
    response = api_client_for(sent_run.campaign.author).get(f"/api/v1/campaigns/{sent_run.campaign_id}/report.csv")
    body = b"".join(response.streaming_content)
    assert body.startswith(b"\xef\xbb\xbfrun_id,")
    assert "Nomor diblokir – hubungi gerai" in body.decode("utf-8-sig")


def test_report_csv_is_served_to_a_client_that_accepts_only_csv_and_its_errors_stay_json(api_client_for, sent_run):
    client = api_client_for(sent_run.campaign.author)
    response = client.get(f"/api/v1/campaigns/{sent_run.campaign_id}/report.csv", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert b"".join(response.streaming_content).decode().count("\n") > 1

    missing = client.get("/api/v1/campaigns/999999/report.csv", HTTP_ACCEPT="text/csv")
    assert missing.status_code == 404 and missing.json()["detail"]


@pytest.mark.parametrize("accept", ["text/html,application/xhtml+xml,*/*;q=0.8", "text/html"])
def test_report_csv_errors_reach_a_browser_as_json_not_the_browsable_api_page(api_client_for, sent_run, accept):
    client = api_client_for(sent_run.campaign.author)
    missing = client.get("/api/v1/campaigns/999999/report.csv", HTTP_ACCEPT=accept)
    assert missing.status_code == 404
    assert missing["Content-Type"].startswith("application/json")
    assert missing.json()["detail"]


def test_report_csv_of_one_run_holds_only_that_runs_rows_and_names_the_run_in_its_file(api_client_for, sent_run):
    later = sending_run(sent_run.campaign, scheduled_for=sent_run.scheduled_for + timedelta(days=1))
    dispatch.run_fan_out(run_id=later.pk)
    client = api_client_for(sent_run.campaign.author)
    base = f"/api/v1/campaigns/{sent_run.campaign_id}/report.csv"

    def rows(response):
        return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))

    assert {row["run_id"] for row in rows(client.get(base))} == {str(sent_run.pk), str(later.pk)}
    response = client.get(base, {"run": later.pk})
    assert response.status_code == 200
    assert f"run-{later.pk}" in response["Content-Disposition"]
    only = rows(response)
    assert len(only) == 5 and {row["run_id"] for row in only} == {str(later.pk)}


def test_report_csv_of_a_run_not_of_the_campaign_is_a_404_and_a_bad_run_id_a_400(api_client_for, sent_run):
    other = sending_run(approved_campaign())
    client = api_client_for(sent_run.campaign.author)
    base = f"/api/v1/campaigns/{sent_run.campaign_id}/report.csv"
    missing = client.get(base, {"run": other.pk}, HTTP_ACCEPT="text/csv")
    assert missing.status_code == 404 and str(other.pk) in missing.json()["detail"]
    bad = client.get(base, {"run": "one"})
    assert bad.status_code == 400 and "run" in bad.json()["detail"]


def test_report_csv_keeps_operator_text_from_running_as_a_spreadsheet_formula(api_client_for, sent_run):
    delivery = sent_run.deliveries.order_by("pk").first()
    delivery.reason, delivery.operator_ref, delivery.error_code = '=HYPERLINK("http://x.example","a")', "@SUM(1)", "-1"
    delivery.save()
    response = api_client_for(sent_run.campaign.author).get(f"/api/v1/campaigns/{sent_run.campaign_id}/report.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    row = next(row for row in rows if row["message_id"] == str(delivery.pk))
    assert (row["reason"], row["operator_ref"], row["error_code"]) == (
        '\'=HYPERLINK("http://x.example","a")',
        "'@SUM(1)",
        "'-1",
    )
    assert row["msisdn"] == delivery.msisdn


def test_report_csv_keeps_a_formula_after_a_semicolon_or_line_break_in_operator_text_from_running(
    api_client_for, sent_run
):
    # Excel set for Indonesia starts a cell at every ";" of a CSV line, and a row at a line break outside quotes.
    delivery = sent_run.deliveries.order_by("pk").first()
    delivery.reason, delivery.operator_ref, delivery.error_code = "barred;=cmd|' /C calc'!A0", "r1\n+1+1", "E1;@SUM(1)"
    delivery.save()
    response = api_client_for(sent_run.campaign.author).get(f"/api/v1/campaigns/{sent_run.campaign_id}/report.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    row = next(row for row in rows if row["message_id"] == str(delivery.pk))
    assert (row["reason"], row["operator_ref"], row["error_code"]) == (
        "barred;'=cmd|' /C calc'!A0",
        "r1\n'+1+1",
        "E1;'@SUM(1)",
    )


def test_report_csv_keeps_an_operator_slug_starting_with_a_dash_from_running_as_a_formula(api_client_for, sent_run):
    delivery = sent_run.deliveries.order_by("pk").first()
    Operator.objects.filter(pk=delivery.operator_id).update(slug="-2+3")
    response = api_client_for(sent_run.campaign.author).get(f"/api/v1/campaigns/{sent_run.campaign_id}/report.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert next(row for row in rows if row["message_id"] == str(delivery.pk))["operator"] == "'-2+3"


def test_report_csv_with_semicolons_opens_as_columns_in_excel_set_to_indonesian(api_client_for, sent_run):
    # Excel set to Indonesian splits a CSV at ";" (its list separator) and reads a comma-separated file as one column.
    delivery = sent_run.deliveries.order_by("pk").first()
    delivery.reason = "Nomor diblokir – hubungi gerai; kode 7"
    delivery.save()
    client = api_client_for(sent_run.campaign.author)
    url = f"/api/v1/campaigns/{sent_run.campaign_id}/report.csv"
    comma = b"".join(client.get(url).streaming_content).decode("utf-8-sig")

    response = client.get(url, {"sep": "semicolon"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content)
    assert body.startswith(b"\xef\xbb\xbfrun_id;scheduled_for;message_id;")
    text = body.decode("utf-8-sig")
    semicolon_rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    comma_rows = list(csv.reader(io.StringIO(comma)))
    number = comma_rows[0].index("msisdn")
    # The same rows, but each number is Excel's text formula: shown whole, not as 6,28123E+12.
    assert [row[number] for row in semicolon_rows[1:]] == [f'="{row[number]}"' for row in comma_rows[1:]]
    assert all(row[number].startswith("+62") for row in comma_rows[1:])
    for row in semicolon_rows[1:] + comma_rows[1:]:
        del row[number]
    assert semicolon_rows == comma_rows and len(semicolon_rows) == sent_run.deliveries.count() + 1
    assert client.get(url, {"sep": "comma"}).getvalue().decode("utf-8-sig") == comma
    refused = client.get(url, {"sep": "tab"})
    assert refused.status_code == 400 and "semicolon" in refused.json()["detail"]


def test_report_csv_with_semicolons_keeps_a_formula_after_a_comma_in_operator_text_from_running(
    api_client_for, sent_run
):
    # A semicolon file leaves a comma in a cell unquoted: a spreadsheet splitting at commas starts a cell there.
    delivery = sent_run.deliveries.order_by("pk").first()
    delivery.reason, delivery.operator_ref = "barred,=cmd|' /C calc'!A0", "@SUM(1)"
    delivery.save()
    response = api_client_for(sent_run.campaign.author).get(
        f"/api/v1/campaigns/{sent_run.campaign_id}/report.csv", {"sep": "semicolon"}
    )
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text), delimiter=";"))
    row = next(row for row in rows if row["message_id"] == str(delivery.pk))
    assert (row["reason"], row["operator_ref"]) == ("barred,'=cmd|' /C calc'!A0", "'@SUM(1)")


def test_operators_cannot_read_campaign_runs(api_client_for, sent_run, operator_user):
    response = api_client_for(operator_user).get(f"/api/v1/campaigns/{sent_run.campaign_id}/runs/")
    assert response.status_code == 403


def test_a_delivery_without_a_report_is_documented_with_the_null_done_at_it_answers(sent_run, api_client_for):
    client = api_client_for(sent_run.campaign.author)
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    answered = client.get(f"/api/v1/campaigns/{sent_run.campaign_id}/deliveries/", {"status": "submitted"}).json()

    assert answered["results"] and all(row["done_at"] is None for row in answered["results"])
    assert schema["components"]["schemas"]["Delivery"]["properties"]["done_at"].get("nullable") is True


def test_runs_and_the_detail_progress_are_documented_field_by_field(api_client_for, sent_run, approver):
    from tests.schema_check import answer_mismatches

    client = api_client_for(approver)
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    runs = schema["paths"]["/api/v1/campaigns/{id}/runs/"]["get"]
    assert {"limit", "offset"} <= {parameter["name"] for parameter in runs["parameters"]}
    answer = client.get(f"/api/v1/campaigns/{sent_run.campaign_id}/runs/")
    assert answer.json()["results"][0]["operators"]
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/runs/", "get", answer) == []
    progress = schema["components"]["schemas"]["CampaignDetail"]["properties"]["progress"]
    run = schema["components"]["schemas"][progress["allOf"][0]["$ref"].rsplit("/", 1)[1]]
    assert set(run["properties"]) == set(client.get(f"/api/v1/campaigns/{sent_run.campaign_id}/").json()["progress"])


def test_report_csv_is_documented_as_csv(api_client_for, sent_run, approver):
    from tests.schema_check import answer_mismatches

    client = api_client_for(approver)
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    answer = client.get(f"/api/v1/campaigns/{sent_run.campaign_id}/report.csv")
    assert answer.status_code == 200
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/report.csv", "get", answer) == []


def test_report_csv_gives_times_in_the_campaigns_zone_as_the_campaign_page_shows_them(api_client_for, sent_run):
    from datetime import UTC, datetime

    from campaigns.models import CampaignRun, Delivery

    CampaignRun.objects.filter(pk=sent_run.pk).update(scheduled_for=datetime(2021, 7, 8, 6, 0, tzinfo=UTC))
    Delivery.objects.filter(run=sent_run).update(done_at=datetime(2021, 7, 8, 6, 5, tzinfo=UTC))
    response = api_client_for(sent_run.campaign.author).get(f"/api/v1/campaigns/{sent_run.campaign_id}/report.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    # Kab. Blitar is in WIB: the 06:00 UTC run is the 13:00 run the officer scheduled.
    assert {row["scheduled_for"] for row in rows} == {"2021-07-08T13:00:00+07:00"}
    assert {row["done_at"] for row in rows} == {"2021-07-08T13:05:00+07:00"}


def test_runs_deliveries_and_the_detail_progress_give_times_in_the_campaigns_zone_as_report_csv_does(api_client_for):
    from datetime import UTC, datetime

    from campaigns.models import CampaignRun

    area_tree("91.71", kecamatan=1)  # Kota Jayapura: WIT, UTC+9
    campaign = approved_campaign(area_codes=["91.71"], skip_areas=True)
    district = Area.objects.filter(code__startswith="91.71.").first()
    operator = OperatorFactory(slug="tsel", adapter="scripted")
    for _ in range(2):
        SubscriberFactory(area=district, operator=operator)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    dispatch.run_fan_out(run_id=run.pk)
    CampaignRun.objects.filter(pk=run.pk).update(
        scheduled_for=datetime(2021, 7, 8, 4, 0, tzinfo=UTC), started_at=datetime(2021, 7, 8, 4, 0, tzinfo=UTC)
    )
    run.deliveries.update(status="delivered", done_at=datetime(2021, 7, 8, 4, 5, tzinfo=UTC))
    client = api_client_for(campaign.author)
    base = f"/api/v1/campaigns/{campaign.pk}"

    (progress,) = client.get(f"{base}/runs/").json()["results"]
    detail = client.get(f"{base}/").json()["progress"]
    deliveries = client.get(f"{base}/deliveries/").json()["results"]
    report = list(
        csv.DictReader(io.StringIO(b"".join(client.get(f"{base}/report.csv").streaming_content).decode("utf-8-sig")))
    )

    # The 13:00 WIT run the officer scheduled, as the report and the campaign page give it.
    assert {row["scheduled_for"] for row in report} == {"2021-07-08T13:00:00+09:00"}
    assert progress["scheduled_for"] == detail["scheduled_for"] == "2021-07-08T13:00:00+09:00"
    assert progress["started_at"] == "2021-07-08T13:00:00+09:00"
    assert {row["done_at"] for row in deliveries} == {row["done_at"] for row in report} == {"2021-07-08T13:05:00+09:00"}


def _answered_run(recipients: int):
    """Fan out a run in batches of two and answer them: every third fails, the rest are accepted and delivered."""
    campaign = approved_campaign()
    operators_and_subscribers(counts={"tsel": recipients}, batch_size=2)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    dispatch.run_fan_out(run_id=run.pk)
    batches = list(DispatchBatch.objects.filter(run=run).order_by("pk"))
    ScriptedAdapter.reset(
        *(
            BatchResult(outcome=Outcome.FAILED, status_code=400, error=f"refused {n}")
            if n % 3 == 0
            else BatchResult(outcome=Outcome.ACCEPTED, accepted=batch.size)
            for n, batch in enumerate(batches)
        )
    )
    for batch in batches:
        services.batch_send(batch_id=batch.pk)
    run.deliveries.filter(status="queued").update(status="delivered", done_at=timezone.now())
    return run


def test_progress_pages_and_endpoints_take_as_many_queries_for_a_large_run_as_for_a_small_one(api_client_for):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from tests.conftest import client_for

    def queries_per_url(run) -> dict[str, int]:
        campaign = run.campaign
        api, web = api_client_for(campaign.author), client_for(campaign.author)
        base = f"/api/v1/campaigns/{campaign.pk}"
        urls = {
            "detail": (api, f"{base}/"),
            "runs": (api, f"{base}/runs/"),
            "deliveries": (api, f"{base}/deliveries/?status=submitted"),
            "report": (api, f"{base}/report.csv"),
            "page": (web, reverse("campaigns:detail", args=[campaign.pk])),
            "run page": (web, reverse("campaigns:run_progress", args=[campaign.pk, run.pk])),
            "dashboard": (web, reverse("dashboard")),
        }
        counted = {}
        for name, (client, url) in urls.items():
            with CaptureQueriesContext(connection) as queries:
                response = client.get(url)
                if response.streaming:
                    b"".join(response.streaming_content)
            assert response.status_code == 200, name
            counted[name] = len(queries.captured_queries)
        return counted

    small = queries_per_url(_answered_run(4))
    large = queries_per_url(_answered_run(120))  # 60 batches, 20 of them failed

    # No query per delivery or per batch: a run of a million costs these pages what a run of four does.
    assert large == small


def test_an_area_broadcast_answers_its_reach_per_operator_as_runs_and_no_delivery_progress(api_client_for, officer):
    from datetime import timedelta

    from operators import broadcasts
    from operators.models import AreaBroadcast
    from tests.operators.area_scripted import ScriptedAreaAdapter, blitar_areas, broadcast_campaign
    from tests.operators.factories import OperatorFactory
    from tests.schema_check import answer_mismatches

    ScriptedAreaAdapter.reset()
    OperatorFactory(slug="telkomsel", adapter="scripted_area", base_url="http://sim/telkomsel")
    blitar_areas()
    campaign = broadcast_campaign(author=officer)
    run = broadcasts.area_broadcast_run_start(campaign_id=campaign.pk, now=campaign.starts_at + timedelta(seconds=1))
    sent = broadcasts.area_broadcast_send(broadcast_id=AreaBroadcast.objects.get(run=run).pk)
    broadcasts.area_broadcast_report(
        operator=sent.operator, broadcast_id=sent.pk, handsets_reached=1234, at=timezone.now()
    )
    client = api_client_for(officer)
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()

    detail = client.get(f"/api/v1/campaigns/{campaign.pk}/")
    assert detail.json()["progress"] is None
    assert detail.json()["broadcast"]["runs"][0]["handsets_reached"] == 1234
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/", "get", detail) == []
    progress = schema["components"]["schemas"]["CampaignDetail"]["properties"]["progress"]
    assert "area broadcast" in progress["description"]

    runs = client.get(f"/api/v1/campaigns/{campaign.pk}/runs/")
    [answered] = runs.json()["results"]
    assert answered["run_id"] == run.pk
    assert answered["handsets_reached"] == 1234
    assert [(op["operator"], op["state"]) for op in answered["operators"]] == [("telkomsel", "acknowledged")]
    assert "recipients" not in answered and "cost" not in answered
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/runs/", "get", runs) == []


def test_a_recurring_campaign_lists_each_occurrences_run_with_its_own_progress_and_report_rows(api_client_for):
    from datetime import UTC, datetime, timedelta

    from campaigns.models import Delivery

    blora_daily = dispatch.scheduling.schedule_normalize(
        {"kind": "daily", "time": "13:00", "weekday_times": {"fri": "10:00"}}
    )
    campaign = approved_campaign(schedule=blora_daily)
    operators_and_subscribers(counts={"tsel": 2}, batch_size=10)
    thursday_13 = datetime(2021, 7, 8, 6, 0, tzinfo=UTC)
    dispatch.campaign_schedule(campaign=campaign, user=campaign.author, schedule=blora_daily, now=thursday_13)
    # Thursday 13:00, Friday 10:00 and Saturday 13:00 WIB; only Friday's run has a number the operator rejected.
    occurrences = [thursday_13, datetime(2021, 7, 9, 3, 0, tzinfo=UTC), datetime(2021, 7, 10, 6, 0, tzinfo=UTC)]
    run_ids = []
    for occurrence in occurrences:
        (run_id,) = dispatch.runs_start_due(now=occurrence)
        dispatch.run_fan_out(run_id=run_id)
        DispatchBatch.objects.filter(run_id=run_id).update(status="accepted", accepted_count=2)
        Delivery.objects.filter(run_id=run_id).update(status="delivered")
        if occurrence == occurrences[1]:
            Delivery.objects.filter(pk=Delivery.objects.filter(run_id=run_id).first().pk).update(status="rejected")
        dispatch.run_check_complete(run_id=run_id, now=occurrence + timedelta(hours=1))
        run_ids.append(run_id)
    friday = run_ids[1]
    client = api_client_for(campaign.author)

    detail = client.get(f"/api/v1/campaigns/{campaign.pk}/").json()
    assert detail["status"] == "scheduled"  # between occurrences, not completed
    assert detail["progress"]["id"] == run_ids[-1]
    first_page = client.get(f"/api/v1/campaigns/{campaign.pk}/runs/", {"limit": 2}).json()
    assert first_page["count"] == 3 and first_page["next"]
    second_page = client.get(first_page["next"]).json()
    runs = first_page["results"] + second_page["results"]
    assert [run["id"] for run in runs] == run_ids[::-1]  # newest first
    assert [(run["recipients"], run["delivered"], run["counts"]["rejected"]) for run in runs] == [
        (2, 2, 0),
        (2, 1, 1),
        (2, 2, 0),
    ]

    report = client.get(f"/api/v1/campaigns/{campaign.pk}/report.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(report.streaming_content).decode("utf-8-sig"))))
    assert sorted({(int(row["run_id"]), row["scheduled_for"]) for row in rows}) == [
        (run_ids[0], "2021-07-08T13:00:00+07:00"),
        (run_ids[1], "2021-07-09T10:00:00+07:00"),
        (run_ids[2], "2021-07-10T13:00:00+07:00"),
    ]
    assert [row["status"] for row in rows if int(row["run_id"]) == friday].count("rejected") == 1


def test_an_area_broadcasts_report_csv_answers_409_pointing_to_its_runs(api_client_for, officer):
    from tests.operators.area_scripted import blitar_areas, broadcast_campaign
    from tests.schema_check import answer_mismatches

    blitar_areas()
    campaign = broadcast_campaign(author=officer)
    client = api_client_for(officer)

    response = client.get(f"/api/v1/campaigns/{campaign.pk}/report.csv", HTTP_ACCEPT="text/csv")

    assert response.status_code == 409
    assert f"/api/v1/campaigns/{campaign.pk}/runs/" in response.json()["detail"]
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/report.csv", "get", response) == []


def _runs_with_deliveries(campaign, count: int) -> None:
    from tests.campaigns.factories import CampaignRunFactory, DeliveryFactory, DispatchBatchFactory
    from tests.operators.factories import OperatorFactory

    operator = OperatorFactory()
    for day in range(count):
        run = CampaignRunFactory(campaign=campaign, scheduled_for=timezone.now() - timedelta(days=day))
        batch = DispatchBatchFactory(run=run, operator=operator, status=DispatchBatch.Status.ACCEPTED, size=2)
        DeliveryFactory(run=run, batch=batch, operator=operator, status="delivered")
        DeliveryFactory(run=run, batch=batch, operator=operator)


def test_the_runs_of_a_recurring_campaign_are_counted_with_the_same_queries_however_many_runs_a_page_holds(
    api_client_for, officer
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.campaigns.factories import CampaignFactory

    few, many = CampaignFactory(author=officer), CampaignFactory(author=officer)
    _runs_with_deliveries(few, 2)
    _runs_with_deliveries(many, 12)
    client = api_client_for(officer)
    client.get("/api/v1/campaigns/")  # the token's first use is recorded once
    queries = {}
    for campaign in (few, many):
        with CaptureQueriesContext(connection) as captured:
            response = client.get(f"/api/v1/campaigns/{campaign.pk}/runs/")
        assert response.status_code == 200
        queries[campaign.pk] = len(captured)
    runs = response.json()["results"]
    assert len(runs) == 12
    assert {(run["recipients"], run["delivered"], run["counts"]["submitted"]) for run in runs} == {(2, 1, 1)}
    assert queries[many.pk] == queries[few.pk]


def test_a_page_of_deliveries_is_sorted_out_before_their_operators_and_batches_are_read(api_client_for, sent_run):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = api_client_for(sent_run.campaign.author)
    base = f"/api/v1/campaigns/{sent_run.campaign_id}/deliveries/"
    client.get(base)  # the token's first use is recorded once
    with CaptureQueriesContext(connection) as captured:
        page = client.get(base, {"limit": 3}).json()
    # Joined into the paged query, they would be joined for every delivery of the campaign before the sort.
    (paged,) = [
        query["sql"] for query in captured if 'FROM "campaigns_delivery"' in query["sql"] and "LIMIT" in query["sql"]
    ]
    assert '"operators_operator"' not in paged and '"campaigns_dispatchbatch"' not in paged
    rows = page["results"]
    assert len(rows) == 3 and {row["operator"] for row in rows} <= {"tsel", "isat"}
    shown = {row["message_id"]: row["status"] for row in client.get(base).json()["results"]}
    assert sorted(shown.values()) == ["failed", "failed", "rejected", "submitted", "submitted"]


def test_progress_pages_and_endpoints_read_the_deliveries_of_a_run_once(api_client_for):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from tests.conftest import client_for

    run = _answered_run(12)
    campaign = run.campaign
    api, web = api_client_for(campaign.author), client_for(campaign.author)
    base = f"/api/v1/campaigns/{campaign.pk}"
    urls = {
        "detail": (api, f"{base}/"),
        "runs": (api, f"{base}/runs/"),
        "page": (web, reverse("campaigns:detail", args=[campaign.pk])),
        "run page": (web, reverse("campaigns:run_progress", args=[campaign.pk, run.pk])),
        "dashboard": (web, reverse("dashboard")),
    }
    for name, (client, url) in urls.items():
        client.get(url)  # the token's first use is recorded once
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200, name
        reads = [query["sql"] for query in captured if '"campaigns_delivery"' in query["sql"]]
        # Each read counts all of a run's deliveries (up to millions), and these are polled every few seconds.
        assert len(reads) == 1, name
        # Looked up among the run's accepted batches, not joined to every delivery.
        assert 'JOIN "campaigns_dispatchbatch"' not in reads[0], name


def test_the_submitted_and_queued_filters_answer_as_joining_each_delivery_to_its_batch_did(api_client_for):
    from django.db import connection
    from django.db.models import Q
    from django.test.utils import CaptureQueriesContext

    from campaigns.models import Delivery

    campaign = approved_campaign()
    operators_and_subscribers(counts={"tsel": 12}, batch_size=3)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    runs = []
    for outcomes in [(Outcome.ACCEPTED, Outcome.FAILED, Outcome.RETRY), (Outcome.ACCEPTED, Outcome.ACCEPTED)]:
        run = sending_run(campaign, scheduled_for=timezone.now() - timedelta(days=len(runs)))
        dispatch.run_fan_out(run_id=run.pk)
        batches = list(DispatchBatch.objects.filter(run=run).order_by("pk"))
        ScriptedAdapter.reset(
            *(BatchResult(outcome=outcome, accepted=3, status_code=503, error="down") for outcome in outcomes)
        )
        for batch in batches[: len(outcomes)]:
            services.batch_send(batch_id=batch.pk)
        runs.append(run)
    Delivery.objects.filter(pk=runs[0].deliveries.order_by("pk")[0].pk).update(status="submitted")
    Delivery.objects.filter(pk=runs[1].deliveries.order_by("pk")[0].pk).update(status="delivered")
    client = api_client_for(campaign.author)
    deliveries = Delivery.objects.filter(run__campaign=campaign)
    joined = {
        "submitted": deliveries.filter(Q(status="submitted") | Q(status="queued", batch__status="accepted")),
        "queued": deliveries.filter(status="queued").exclude(batch__status="accepted"),
    }
    for status, expected in joined.items():
        for run in (None, *runs):
            query = {"status": status, "limit": 100, **({"run": run.pk} if run else {})}
            with CaptureQueriesContext(connection) as captured:
                page = client.get(f"/api/v1/campaigns/{campaign.pk}/deliveries/", query).json()
            wanted = expected.filter(run=run) if run else expected
            assert page["count"] == wanted.count() > 0, query
            assert [row["message_id"] for row in page["results"]] == list(
                wanted.order_by("-run_id", "id").values_list("pk", flat=True)
            ), query
            reads = [query["sql"] for query in captured if 'FROM "campaigns_delivery"' in query["sql"]]
            assert reads and all('JOIN "campaigns_dispatchbatch"' not in read for read in reads)


def area_rows(response) -> dict[str, dict[str, str]]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.startswith("\ufeffarea_code,")
    return {row["area_code"]: row for row in csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))}


def test_areas_csv_counts_a_runs_recipients_per_kecamatan_by_status(api_client_for, sent_run):
    # Two of the five recipients live in the second kecamatan; one number is no longer held.
    deliveries = list(sent_run.deliveries.order_by("pk"))
    Subscriber.objects.filter(msisdn__in=[d.msisdn for d in deliveries[3:]]).update(area_id="35.05.02")
    Subscriber.objects.filter(msisdn=deliveries[4].msisdn).delete()
    Delivery.objects.filter(pk=deliveries[1].pk).update(status=Delivery.Status.DELIVERED)

    rows = area_rows(
        api_client_for(sent_run.campaign.author).get(f"/api/v1/campaigns/{sent_run.campaign_id}/areas.csv")
    )

    first, second, gone = rows["35.05.01"], rows["35.05.02"], rows[""]
    assert first["area_name"] == Area.objects.get(code="35.05.01").name
    assert (first["recipients"], first["delivered"], first["rejected"]) == ("3", "1", "1")
    assert first["delivered_percent"] == "33.3"
    assert (second["recipients"], gone["recipients"]) == ("1", "1")
    assert int(first["recipients"]) + int(second["recipients"]) + int(gone["recipients"]) == 5
    assert gone["area_name"] == "(no longer a subscriber)"
    assert list(rows) == ["35.05.01", "35.05.02", ""]


def test_areas_csv_with_semicolons_gives_the_delivered_share_with_a_decimal_comma(api_client_for, sent_run):
    # Excel set to Indonesian reads "33,3" as a number and "33.3" as text (or, like "12.5", a date).
    Delivery.objects.filter(pk=sent_run.deliveries.order_by("pk").values("pk")[1:2]).update(
        status=Delivery.Status.DELIVERED
    )
    url = f"/api/v1/campaigns/{sent_run.campaign_id}/areas.csv"
    client = api_client_for(sent_run.campaign.author)

    response = client.get(url, {"sep": "semicolon", "run": sent_run.pk})

    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body.startswith(b"\xef\xbb\xbfarea_code;area_name;recipients;")
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig")), delimiter=";"))
    assert (rows[0]["area_code"], rows[0]["recipients"], rows[0]["delivered_percent"]) == ("35.05.01", "5", "20,0")
    assert area_rows(client.get(url))["35.05.01"]["delivered_percent"] == "20.0"
    assert client.get(url, {"sep": ";"}).status_code == 400


def test_areas_csv_of_one_run_and_its_refusals(api_client_for, sent_run):
    later = sending_run(sent_run.campaign, scheduled_for=sent_run.scheduled_for + timedelta(days=1))
    dispatch.run_fan_out(run_id=later.pk)
    client = api_client_for(sent_run.campaign.author)
    url = f"/api/v1/campaigns/{sent_run.campaign_id}/areas.csv"

    everything = area_rows(client.get(url))
    one = client.get(url, {"run": sent_run.pk})
    assert everything["35.05.01"]["recipients"] == "10"
    assert area_rows(one)["35.05.01"]["recipients"] == "5"
    assert f"run-{sent_run.pk}-areas.csv" in one["Content-Disposition"]
    assert client.get(url, {"run": "999999"}).status_code == 404
    assert client.get(url, {"run": "x"}).status_code == 400
    assert api_client_for(UserFactory(role=Role.OPERATOR)).get(url).status_code == 403


def test_the_area_report_groups_one_level_below_the_widest_target():
    assert area_report_level(["35"]) == 5
    assert area_report_level(["35.05", "35.06.01"]) == 8
    assert area_report_level(["35.05.01.2001"]) == 13
    assert area_report_level([]) == 8  # a polygon: by kecamatan


def test_areas_csv_counts_a_subscriber_known_only_by_coordinates_apart_from_numbers_no_longer_held(
    api_client_for, sent_run
):
    deliveries = list(sent_run.deliveries.order_by("pk"))
    Subscriber.objects.filter(msisdn=deliveries[3].msisdn).update(area_id=None, latitude=-8.1, longitude=112.2)
    Subscriber.objects.filter(msisdn=deliveries[4].msisdn).delete()
    url = f"/api/v1/campaigns/{sent_run.campaign_id}/areas.csv"

    response = api_client_for(sent_run.campaign.author).get(url)

    text = b"".join(response.streaming_content).decode("utf-8").removeprefix("\ufeff")
    rows = [(row["area_code"], row["area_name"], row["recipients"]) for row in csv.DictReader(io.StringIO(text))]
    assert rows == [
        ("35.05.01", Area.objects.get(code="35.05.01").name, "3"),
        ("", "(no home area)", "1"),
        ("", "(no longer a subscriber)", "1"),
    ]


@pytest.mark.parametrize(
    "schedule",
    [{"kind": "once", "at": "2001-01-01T08:00"}, {"kind": "daily", "time": "25:00"}, "not a schedule"],
)
def test_an_officer_who_is_not_the_author_is_refused_before_the_schedule_is_read(api_client_for, schedule):
    campaign = approved_campaign()
    other = UserFactory(role=Role.OFFICER)
    response = api_client_for(other).post(
        f"/api/v1/campaigns/{campaign.pk}/schedule/", {"schedule": schedule}, format="json"
    )
    assert response.status_code == 403, response.content
    assert "author" in response.json()["detail"]
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED


def _datetimes_in(value) -> list[str]:
    """Return every ISO date-time string anywhere in a JSON answer."""
    import re

    if isinstance(value, dict):
        return [found for item in value.values() for found in _datetimes_in(item)]
    if isinstance(value, list):
        return [found for item in value for found in _datetimes_in(item)]
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        return [value]
    return []


def test_an_area_broadcasts_runs_give_their_times_in_the_campaigns_zone_as_a_targeted_runs_do(api_client_for, officer):
    from datetime import timedelta

    from operators import broadcasts
    from operators.models import AreaBroadcast
    from tests.operators.area_scripted import ScriptedAreaAdapter, blitar_areas, broadcast_campaign
    from tests.operators.factories import OperatorFactory

    ScriptedAreaAdapter.reset()
    OperatorFactory(slug="telkomsel", adapter="scripted_area", base_url="http://sim/telkomsel")
    blitar_areas()  # Kab. Blitar: WIB, UTC+7
    campaign = broadcast_campaign(author=officer)
    run = broadcasts.area_broadcast_run_start(campaign_id=campaign.pk, now=campaign.starts_at + timedelta(seconds=1))
    sent = broadcasts.area_broadcast_send(broadcast_id=AreaBroadcast.objects.get(run=run).pk)
    broadcasts.area_broadcast_report(
        operator=sent.operator, broadcast_id=sent.pk, handsets_reached=1234, at=timezone.now()
    )
    client = api_client_for(officer)

    runs = client.get(f"/api/v1/campaigns/{campaign.pk}/runs/").json()["results"]
    detail = client.get(f"/api/v1/campaigns/{campaign.pk}/").json()["broadcast"]["runs"]

    times = _datetimes_in(runs) + _datetimes_in(detail)
    assert len(times) >= 4  # the window, the start and the reach report at least
    assert {time[-6:] for time in times} == {"+07:00"}, times
