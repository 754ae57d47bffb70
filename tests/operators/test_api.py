"""The operator API: delivery reports (forward-only, idempotent, scoped) and pull mode."""

import base64
import json
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from campaigns import dispatch
from campaigns.models import Campaign, CampaignRun, Delivery, DispatchBatch
from campaigns.tasks import check_run_complete
from operators import services
from operators.gateways.base import BatchResult, Outcome
from operators.models import Operator
from smsblast.audit import audit_history
from smsblast.models import AuditEvent, Role
from tests.concurrency import race_behind_a_row, skip_unless_postgresql
from tests.conftest import make_user
from tests.operators.scripted import (
    ScriptedAdapter,
    approved_campaign,
    fanned_out_world,
    finished_run,
    operators_and_subscribers,
    sending_run,
)

pytestmark = pytest.mark.django_db

REPORTS_URL = "/api/v1/operator/delivery-reports/"


@pytest.fixture(autouse=True)
def dispatch_redis(settings, redis_client, redis_url, private_broker):
    settings.REDIS_URL = redis_url
    ScriptedAdapter.reset()


@pytest.fixture
def world(api_client_for):
    """A run fanned out to two operators (3 recipients each), each operator with its own API client."""
    return fanned_out_world(api_client_for)


def _report(message_id, status, **extra):
    return {"message_id": message_id, "status": status, **extra}


def _handed_over(world) -> None:
    """Have every batch of the run sent and accepted, as the push path does: the operators hold their messages."""
    DispatchBatch.objects.filter(run=world["run"]).update(
        status=DispatchBatch.Status.ACCEPTED, attempts=1, accepted_count=F("size")
    )


def _run_started(world, at: str) -> None:
    CampaignRun.objects.filter(pk=world["run"].pk).update(started_at=datetime.fromisoformat(at))


def test_reports_move_statuses_forward_and_a_repeat_changes_nothing(world):
    _handed_over(world)
    client, ids = world["clients"]["tsel"], world["ids"]["tsel"]
    _run_started(world, "2021-07-07T13:00:00+07:00")
    body = {
        "reports": [
            _report(ids[0], "DELIVERED", operator_ref="T-1", done_at="2021-07-07T13:00:05+07:00"),
            _report(ids[1], "SUBMITTED"),
            _report(ids[2], "UNDELIVERED", error_code="absent_subscriber"),
        ]
    }
    response = client.post(REPORTS_URL, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"applied": 3, "unchanged": 0, "rejected": []}
    first = Delivery.objects.get(pk=ids[0])
    assert (first.status, first.operator_ref) == ("delivered", "T-1")
    assert first.done_at.isoformat() == "2021-07-07T06:00:05+00:00"
    assert Delivery.objects.get(pk=ids[2]).error_code == "absent_subscriber"

    again = client.post(REPORTS_URL, body, format="json")
    assert again.json() == {"applied": 0, "unchanged": 3, "rejected": []}


def test_a_late_submitted_never_overwrites_a_final_status(world):
    _handed_over(world)
    client, ids = world["clients"]["tsel"], world["ids"]["tsel"]
    client.post(REPORTS_URL, {"reports": [_report(ids[0], "DELIVERED")]}, format="json")
    late_reports = [_report(ids[0], "SUBMITTED"), _report(ids[0], "EXPIRED")]
    late = client.post(REPORTS_URL, {"reports": late_reports}, format="json")
    assert late.json()["applied"] == 0
    assert Delivery.objects.get(pk=ids[0]).status == "delivered"
    # submitted → final still moves forward.
    client.post(REPORTS_URL, {"reports": [_report(ids[1], "SUBMITTED")]}, format="json")
    moved = client.post(REPORTS_URL, {"reports": [_report(ids[1], "REJECTED")]}, format="json")
    assert moved.json()["applied"] == 1
    assert Delivery.objects.get(pk=ids[1]).status == "rejected"


def test_a_done_at_after_the_report_arrived_is_stored_as_its_arrival(world):
    _handed_over(world)
    client, ids = world["clients"]["tsel"], world["ids"]["tsel"]
    _run_started(world, "2021-07-07T13:00:00+07:00")
    before = timezone.now()
    reports = [
        _report(ids[0], "DELIVERED", done_at="9999-12-31T00:00:00+00:00"),
        _report(ids[1], "DELIVERED", done_at="2021-07-07T13:00:05+07:00"),
    ]

    assert client.post(REPORTS_URL, {"reports": reports}, format="json").json()["applied"] == 2

    assert before <= Delivery.objects.get(pk=ids[0]).done_at <= timezone.now()
    assert Delivery.objects.get(pk=ids[1]).done_at.isoformat() == "2021-07-07T06:00:05+00:00"


@pytest.mark.parametrize(
    "done_at", ["0001-01-01T00:00:00+00:00", "1970-01-01T00:00:00+00:00", "2021-07-07T12:59:59+07:00"]
)
def test_a_done_at_before_the_run_started_is_stored_as_the_runs_start(world, done_at):
    _handed_over(world)
    client, ids = world["clients"]["tsel"], world["ids"]["tsel"]
    _run_started(world, "2021-07-07T13:00:00+07:00")

    assert (
        client.post(REPORTS_URL, {"reports": [_report(ids[0], "DELIVERED", done_at=done_at)]}, format="json").json()[
            "applied"
        ]
        == 1
    )

    assert Delivery.objects.get(pk=ids[0]).done_at.isoformat() == "2021-07-07T06:00:00+00:00"


def test_a_final_report_without_a_reference_keeps_the_one_reported_with_submitted(world):
    _handed_over(world)
    client, ids = world["clients"]["tsel"], world["ids"]["tsel"]
    client.post(REPORTS_URL, {"reports": [_report(ids[0], "SUBMITTED", operator_ref="T-9")]}, format="json")
    reports = [
        _report(ids[0], "UNDELIVERED", error_code="absent_subscriber"),
        _report(ids[1], "SUBMITTED", operator_ref="T-10"),
        _report(ids[1], "DELIVERED"),
    ]

    response = client.post(REPORTS_URL, {"reports": reports}, format="json")

    assert response.json()["applied"] == 2
    first, second = Delivery.objects.get(pk=ids[0]), Delivery.objects.get(pk=ids[1])
    assert (first.status, first.operator_ref, first.error_code) == ("undelivered", "T-9", "absent_subscriber")
    assert (second.status, second.operator_ref) == ("delivered", "T-10")


def test_a_message_reported_twice_in_one_request_ends_as_if_the_reports_came_one_after_another(world):
    _handed_over(world)
    client, ids = world["clients"]["tsel"], world["ids"]["tsel"]
    reports = [
        _report(ids[0], "DELIVERED", operator_ref="T-1"),
        _report(ids[0], "SUBMITTED"),
        _report(ids[1], "DELIVERED"),
        _report(ids[1], "UNDELIVERED", error_code="absent_subscriber"),
        _report(ids[2], "SUBMITTED"),
        _report(ids[2], "EXPIRED"),
    ]

    response = client.post(REPORTS_URL, {"reports": reports}, format="json")

    assert response.json() == {"applied": 3, "unchanged": 0, "rejected": []}
    statuses = dict(Delivery.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert [statuses[int(message_id)] for message_id in ids] == ["delivered", "delivered", "expired"]
    assert Delivery.objects.get(pk=ids[1]).error_code == ""


def test_another_operators_messages_are_rejected_not_applied(world):
    client = world["clients"]["tsel"]
    theirs = world["ids"]["isat"][0]
    response = client.post(
        REPORTS_URL,
        {"reports": [_report(theirs, "DELIVERED"), _report("999999999", "DELIVERED"), _report("abc", "DELIVERED")]},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["applied"] == 0
    assert {item["message_id"] for item in body["rejected"]} == {theirs, "999999999", "abc"}
    assert Delivery.objects.get(pk=theirs).status == "queued"


def test_another_operators_messages_handed_over_to_it_are_rejected_not_applied(world):
    _handed_over(world)  # the other operator holds its messages: only the operator scope keeps them apart
    theirs = world["ids"]["isat"][0]
    response = world["clients"]["tsel"].post(REPORTS_URL, {"reports": [_report(theirs, "DELIVERED")]}, format="json")
    rejected = [{"message_id": theirs, "reason": "unknown_message"}]
    assert response.json() == {"applied": 0, "unchanged": 0, "rejected": rejected}
    assert Delivery.objects.get(pk=theirs).status == "queued"


def test_a_report_on_a_message_never_handed_to_the_operator_is_refused_and_costs_nothing(world):
    from campaigns.dispatch_selectors import run_progress

    client, ids = world["clients"]["tsel"], world["ids"]["tsel"]
    # Its batch waits unsent (quiet hours, a pause, the rate limit): the operator cannot have this message.
    response = client.post(REPORTS_URL, {"reports": [_report(ids[0], "DELIVERED")]}, format="json")

    assert response.json() == {"applied": 0, "unchanged": 0, "rejected": [{"message_id": ids[0], "reason": "not_sent"}]}
    assert Delivery.objects.get(pk=ids[0]).status == "queued"
    tsel = next(entry for entry in run_progress(world["run"])["operators"] if entry["slug"] == "tsel")
    assert (tsel["delivered"], tsel["segments_sent"], tsel["cost"]) == (0, 0, 0)


def test_message_ids_that_cannot_name_a_delivery_are_rejected_and_the_rest_applied(world):
    _handed_over(world)
    client, mine = world["clients"]["tsel"], world["ids"]["tsel"][0]
    odd = ["\u00b2", "\u0661\u0662", "99999999999999999999999", "9223372036854775808", "1" * 5000]
    reports = [_report(message_id, "DELIVERED") for message_id in odd] + [_report(mine, "DELIVERED")]

    response = client.post(REPORTS_URL, {"reports": reports}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["applied"] == 1
    assert [item["message_id"] for item in body["rejected"]] == odd
    assert Delivery.objects.get(pk=mine).status == "delivered"


def test_ids_that_are_no_message_id_come_back_rejected_while_the_rest_apply(world):
    _handed_over(world)
    client, mine = world["clients"]["tsel"], world["ids"]["tsel"][0]
    odd_ids = ["\u00b2", "99999999999999999999", "9" * 5000, 10**30, "0"]
    reports = [_report(odd, "DELIVERED") for odd in odd_ids] + [_report(mine, "DELIVERED")]
    response = client.post(REPORTS_URL, {"reports": reports}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["applied"] == 1
    assert [item["message_id"] for item in body["rejected"]] == [str(odd) for odd in odd_ids]
    assert Delivery.objects.get(pk=mine).status == "delivered"


def test_more_than_ten_thousand_reports_are_refused(world):
    client, ids = world["clients"]["tsel"], world["ids"]["tsel"]
    body = {"reports": [_report(ids[0], "DELIVERED")] * (services.MAX_REPORTS + 1)}
    response = client.post(REPORTS_URL, body, format="json")
    assert response.status_code == 400
    assert "10000" in response.json()["detail"]
    assert Delivery.objects.get(pk=ids[0]).status == "queued"


def test_ten_thousand_reports_apply_in_one_request(world):
    _handed_over(world)
    client, ids = world["clients"]["tsel"], world["ids"]["tsel"]
    body = {"reports": [_report(ids[i % 3], "DELIVERED") for i in range(services.MAX_REPORTS)]}
    response = client.post(REPORTS_URL, body, format="json")
    assert response.status_code == 200
    assert response.json()["applied"] == 3


def test_the_largest_report_request_the_contract_allows_fits_the_upload_limit(world):
    _handed_over(world)
    client, ids = world["clients"]["tsel"], world["ids"]["tsel"]
    longest = {
        "status": "UNDELIVERED",
        "operator_ref": "R" * Delivery._meta.get_field("operator_ref").max_length,
        "error_code": "E" * Delivery._meta.get_field("error_code").max_length,
        "done_at": "2021-07-07T13:00:05.123456+07:00",
    }
    reports = [
        {"message_id": str(ids[i % 3] if i < 3 else 9_223_372_036_854_775_807 - i), **longest} for i in range(10_000)
    ]
    body = json.dumps({"reports": reports}, indent=2)

    response = client.post(REPORTS_URL, body, content_type="application/json")

    assert response.status_code == 200, response.content[:200]
    assert response.json()["applied"] == 3
    assert Delivery.objects.get(pk=ids[0]).status == "undelivered"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reports": "nope"}, "reports"),
        ({"reports": [{"message_id": "1", "status": "READ"}]}, "reports[0].status"),
        ({"reports": [{"status": "DELIVERED"}]}, "reports[0].message_id"),
        ({"reports": [{"message_id": "1", "status": "DELIVERED", "done_at": "yesterday"}]}, "reports[0].done_at"),
        (
            {"reports": [{"message_id": "1", "status": "DELIVERED", "done_at": "2021-13-45T00:00:00+07:00"}]},
            "reports[0].done_at",
        ),
        (
            {"reports": [{"message_id": "1", "status": "DELIVERED", "done_at": "9999-12-31T23:59:59-23:59"}]},
            "reports[0].done_at",
        ),
        (
            {"reports": [{"message_id": "1", "status": "DELIVERED", "operator_ref": "T-\x001"}]},
            "reports[0].operator_ref",
        ),
        ({"reports": [{"message_id": "1", "status": "DELIVERED", "error_code": "\x00"}]}, "reports[0].error_code"),
        ({"reports": [{"message_id": "1", "status": "DELIVERED"}, "late"]}, "reports[1]"),
        ([], "reports"),
    ],
)
def test_malformed_reports_are_refused_with_a_message_naming_the_field(world, body, field):
    response = world["clients"]["tsel"].post(REPORTS_URL, body, format="json")
    assert response.status_code == 400
    answer = response.json()
    assert answer["detail"]
    assert answer["errors"] == {field: answer["detail"]}


@pytest.mark.parametrize("path", [REPORTS_URL, "batches/{batch}/ack/", "/api/v1/operator/area-broadcast-reports/"])
def test_a_body_nested_too_deeply_is_refused_with_a_message(world, path):
    (batch,) = DispatchBatch.objects.filter(operator=world["operators"]["tsel"])
    url = path if path.startswith("/") else "/api/v1/operator/" + path.format(batch=batch.pk)
    body = '{"reports": ' + "[" * 100_000 + "]" * 100_000 + "}"

    response = world["clients"]["tsel"].post(url, body, content_type="application/json")

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_a_body_over_the_upload_limit_is_refused_with_a_message_in_json(world, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    mine = world["ids"]["tsel"][0]
    body = {"reports": [_report(mine, "DELIVERED", operator_ref="T-1")] * 50}

    response = world["clients"]["tsel"].post(REPORTS_URL, body, format="json")

    assert response.status_code == 413
    assert "1000 bytes" in response.json()["detail"]
    assert Delivery.objects.get(pk=mine).status == "queued"


@pytest.mark.parametrize("field", ["message_id", "operator_ref", "error_code"])
def test_a_report_holding_a_lone_surrogate_is_refused_with_a_message(world, field):
    mine = world["ids"]["tsel"][0]
    report = {"message_id": mine, "status": "DELIVERED", field: "T-\ud800"}
    body = json.dumps({"reports": [report]})  # escaped as \\ud800, which JSON allows and decodes back

    response = world["clients"]["tsel"].post(REPORTS_URL, body, content_type="application/json")

    assert response.status_code == 400
    assert field in response.json()["detail"]
    assert Delivery.objects.get(pk=mine).status == "queued"


def test_only_operators_may_report(world, api_client_for, officer):
    response = api_client_for(officer).post(REPORTS_URL, {"reports": []}, format="json")
    assert response.status_code == 403
    unlinked = api_client_for(make_user("lonely-operator", Role.OPERATOR))
    assert unlinked.post(REPORTS_URL, {"reports": []}, format="json").status_code == 403


def _queued_completion_checks(redis_client, *, since=None) -> list[tuple[int, float]]:
    """Take the check_run_complete tasks off the broker's default queue; return (run id, seconds until due) of each.

    Due from `since` (now if not given): a test that asks whether a check waits gives the moment before the request
    that queued it, so that a slow machine between the two does not make the wait look spent.
    """
    checks = []
    while (raw := redis_client.rpop("default")) is not None:
        message = json.loads(raw)
        if message["headers"]["task"] != "campaigns.tasks.check_run_complete":
            continue
        args = json.loads(base64.b64decode(message["body"]))[0]
        eta = message["headers"].get("eta")
        due_in = (datetime.fromisoformat(eta) - (since or timezone.now())).total_seconds() if eta else 0.0
        checks.append((args[0], due_in))
    return checks


def _run_checks(checks) -> None:
    """Run the queued checks as a worker would once they are due."""
    for run_id, _due_in in checks:
        check_run_complete.apply((run_id,))


def test_the_last_report_request_completes_the_run_at_once_and_earlier_ones_queue_no_check(
    world, redis_client, django_capture_on_commit_callbacks
):
    run = world["run"]
    for batch in DispatchBatch.objects.filter(run=run):
        assert services.batch_send(batch_id=batch.pk) == "accepted"
    redis_client.delete("default")
    tsel = [_report(message_id, "DELIVERED") for message_id in world["ids"]["tsel"]]
    with django_capture_on_commit_callbacks(execute=True):
        world["clients"]["tsel"].post(REPORTS_URL, {"reports": tsel}, format="json")
    # isat's messages still wait for their reports: a request that leaves some waiting asks for no check.
    assert _queued_completion_checks(redis_client) == []

    isat = [_report(message_id, "DELIVERED") for message_id in world["ids"]["isat"]]
    with django_capture_on_commit_callbacks(execute=True):
        world["clients"]["isat"].post(REPORTS_URL, {"reports": isat}, format="json")
    checks = _queued_completion_checks(redis_client)
    assert checks == [(run.pk, 0.0)]
    _run_checks(checks)  # no reconciler pass
    run.refresh_from_db()
    assert run.status == "completed"
    assert Campaign.objects.get(pk=run.campaign_id).status == Campaign.Status.COMPLETED


def test_reports_arriving_before_the_batchs_answer_is_recorded_complete_the_run_once_it_is(
    world, redis_client, django_capture_on_commit_callbacks
):
    run = world["run"]
    tsel_batch = DispatchBatch.objects.get(run=run, operator=world["operators"]["tsel"])
    assert services.batch_send(batch_id=DispatchBatch.objects.get(run=run, operator__slug="isat").pk) == "accepted"
    # tsel took its batch and reports on it while the worker that sent it has not recorded the 202 yet.
    DispatchBatch.objects.filter(pk=tsel_batch.pk).update(status="in_flight", attempts=1)
    redis_client.delete("default")
    reported_at = timezone.now()
    for slug in ("isat", "tsel"):
        reports = [_report(message_id, "DELIVERED") for message_id in world["ids"][slug]]
        with django_capture_on_commit_callbacks(execute=True):
            world["clients"][slug].post(REPORTS_URL, {"reports": reports}, format="json")

    checks = _queued_completion_checks(redis_client, since=reported_at)
    # Not at once, when the run could not complete yet, but once the answer is likely recorded.
    assert [run_id for run_id, _ in checks] == [run.pk] and checks[0][1] > 0
    services.batch_record_result(batch_id=tsel_batch.pk, result=BatchResult(outcome=Outcome.ACCEPTED, accepted=3))
    _run_checks(checks)
    run.refresh_from_db()
    assert run.status == "completed"


def test_reports_complete_the_run_once_every_delivery_is_final(world):
    run = world["run"]
    for batch in DispatchBatch.objects.filter(run=run):
        assert services.batch_send(batch_id=batch.pk) == "accepted"
    for slug in ("tsel", "isat"):
        reports = [_report(message_id, "DELIVERED") for message_id in world["ids"][slug]]
        world["clients"][slug].post(REPORTS_URL, {"reports": reports}, format="json")
    run = dispatch.run_check_complete(run_id=run.pk)
    assert run.status == "completed"


# --- pull mode -------------------------------------------------------------------------------


def _pulling_operator(world):
    """Switch tsel to pull mode and return (its API client, its batch)."""
    operator = world["operators"]["tsel"]
    operator.adapter = services.PULL_ADAPTER
    operator.save()
    client = world["clients"]["tsel"]
    (batch,) = DispatchBatch.objects.filter(operator=operator)
    return client, batch


def _claimed_by_a_pulling_operator(world):
    """Switch tsel to pull mode, claim its batch through the API and return (its client, the batch)."""
    client, batch = _pulling_operator(world)
    assert client.post(f"/api/v1/operator/batches/{batch.pk}/claim/").status_code == 200
    return client, batch


def test_a_pulling_operator_lists_claims_and_acks_its_own_batches(world):
    client, batch = _pulling_operator(world)
    assert services.batch_send(batch_id=batch.pk) == "pull"  # no push for a pulling operator

    listed = client.get("/api/v1/operator/batches/?state=ready").json()
    assert [row["batch_id"] for row in listed["results"]] == [str(batch.pk)]

    claimed = client.post(f"/api/v1/operator/batches/{batch.pk}/claim/")
    assert claimed.status_code == 200
    assert {r["message_id"] for r in claimed.json()["recipients"]} == set(world["ids"]["tsel"])
    assert client.post(f"/api/v1/operator/batches/{batch.pk}/claim/").json() == claimed.json()  # a retried claim
    assert client.get("/api/v1/operator/batches/?state=ready").json()["results"] == []

    rejected = [{"message_id": world["ids"]["tsel"][0], "reason": "blacklisted"}]
    acked = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {"rejected": rejected}, format="json")
    assert acked.status_code == 200 and acked.json()["status"] == "accepted"
    batch.refresh_from_db()
    assert batch.status == "accepted" and batch.accepted_count == 2
    assert Delivery.objects.get(pk=world["ids"]["tsel"][0]).status == "rejected"


def test_a_rotated_token_works_beside_the_old_one_until_it_is_revoked_and_keeps_the_old_ones_claims(
    world, api_client_for
):
    from smsblast.authentication import api_token_revoke
    from smsblast.models import ApiToken

    old_client, batch = _pulling_operator(world)
    user = world["operators"]["tsel"].user
    (old_token,) = ApiToken.objects.filter(user=user)
    assert old_client.post(f"/api/v1/operator/batches/{batch.pk}/claim/").status_code == 200

    new_client = api_client_for(user)
    report = {"reports": [_report(world["ids"]["tsel"][1], "DELIVERED")]}
    assert old_client.post("/api/v1/operator/delivery-reports/", report, format="json").status_code == 200
    assert new_client.post("/api/v1/operator/delivery-reports/", report, format="json").status_code == 200

    api_token_revoke(token=old_token, actor=None)
    assert old_client.post("/api/v1/operator/delivery-reports/", report, format="json").status_code == 401
    acked = new_client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {}, format="json")
    assert acked.status_code == 200 and acked.json()["status"] == "accepted"


def _batch_events(batch) -> list:
    return list(audit_history(batch).values_list("action", "from_state", "to_state"))


def test_a_claim_retried_while_it_holds_answers_the_same_batch_and_lease_and_changes_nothing(world):
    client, batch = _pulling_operator(world)
    first = client.post(f"/api/v1/operator/batches/{batch.pk}/claim/")
    held = DispatchBatch.objects.values_list("status", "attempts", "lease_expires_at").get(pk=batch.pk)
    events = _batch_events(batch)

    again = client.post(f"/api/v1/operator/batches/{batch.pk}/claim/")

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()  # the same recipients and the same lease_expires_at: it is not renewed
    assert DispatchBatch.objects.values_list("status", "attempts", "lease_expires_at").get(pk=batch.pk) == held
    assert _batch_events(batch) == events == [("batch.claim", "pending", "in_flight")]


def test_another_operator_claiming_a_held_batch_is_answered_as_for_an_unknown_batch(world):
    _, batch = _claimed_by_a_pulling_operator(world)
    isat = world["operators"]["isat"]
    isat.adapter = services.PULL_ADAPTER
    isat.save()
    other = world["clients"]["isat"]

    theirs = other.post(f"/api/v1/operator/batches/{batch.pk}/claim/")
    unknown = other.post("/api/v1/operator/batches/00000000-0000-0000-0000-000000000000/claim/")

    assert (theirs.status_code, theirs.json()) == (unknown.status_code, unknown.json())
    assert theirs.status_code == 409


def test_a_claim_retried_after_its_lease_lapsed_is_not_answered_with_the_batch(world):
    client, batch = _claimed_by_a_pulling_operator(world)
    DispatchBatch.objects.filter(pk=batch.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    events = _batch_events(batch)

    again = client.post(f"/api/v1/operator/batches/{batch.pk}/claim/")

    assert again.status_code == 409
    assert _batch_events(batch) == events


def test_a_batch_leased_to_a_push_worker_is_not_handed_to_a_claim(world):
    operator = world["operators"]["tsel"]
    (batch,) = DispatchBatch.objects.filter(operator=operator)
    leased = services._batch_lease_checked(batch.pk, now=timezone.now(), lease_seconds=60)
    assert leased != "pull" and DispatchBatch.objects.get(pk=batch.pk).status == "in_flight"
    operator.adapter = services.PULL_ADAPTER  # turned to pull while a worker holds the batch
    operator.save()

    claimed = world["clients"]["tsel"].post(f"/api/v1/operator/batches/{batch.pk}/claim/")

    assert claimed.status_code == 409


@pytest.mark.parametrize(
    ("ending", "status"), [("acked", "accepted"), ("failed", "failed"), ("cancelled", "in_flight")]
)
def test_a_claimed_batch_that_ended_or_whose_campaign_was_cancelled_is_never_handed_out_again(world, ending, status):
    from campaigns.services import campaign_cancel

    client, batch = _claimed_by_a_pulling_operator(world)
    if ending == "acked":
        assert client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {}, format="json").status_code == 200
    elif ending == "failed":
        dispatch.dispatch_reconcile(now=timezone.now() + timedelta(hours=2))  # past the run's validity window
    else:
        # A batch in flight is left to finish (its ack still counts), but its content is not to be sent any more.
        campaign = Campaign.objects.get(pk=world["run"].campaign_id)
        campaign_cancel(campaign=campaign, actor=campaign.author)
    batch.refresh_from_db()
    assert batch.status == status
    events = _batch_events(batch)

    again = client.post(f"/api/v1/operator/batches/{batch.pk}/claim/")

    assert again.status_code == 409 and "recipients" not in again.json()
    assert DispatchBatch.objects.get(pk=batch.pk).status == batch.status
    assert _batch_events(batch) == events


@pytest.mark.parametrize("rejected", [[], [{"message_id": "0", "reason": "bad"}]])
def test_an_ack_is_audited_as_the_operators_doing_like_its_claim(world, rejected):
    client, batch = _claimed_by_a_pulling_operator(world)
    operator_user = world["operators"]["tsel"].user

    acked = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {"rejected": rejected}, format="json")

    assert acked.status_code == 200
    events = AuditEvent.objects.filter(object_type="campaigns.dispatchbatch", object_id=str(batch.pk))
    assert [(e.action, e.actor, e.from_state, e.to_state) for e in events] == [
        ("batch.claim", operator_user, "pending", "in_flight"),
        ("batch.accept", operator_user, "in_flight", "accepted"),
    ]


def test_a_pulling_operator_gets_no_batch_of_a_run_in_its_quiet_hours_unless_the_run_is_urgent(api_client_for):
    local_hour = timezone.now().astimezone(timezone.get_fixed_timezone(7 * 60)).hour
    quiet = {"start": f"{local_hour:02d}:00", "end": f"{(local_hour + 2) % 24:02d}:00"}
    campaigns = {
        priority: approved_campaign(
            schedule={"kind": "now", "quiet_hours": quiet}, priority=priority, skip_areas=priority == "urgent"
        )
        for priority in ("normal", "urgent")
    }
    operator = operators_and_subscribers(counts={"tsel": 2}, batch_size=10)["tsel"]
    operator.adapter, operator.user = services.PULL_ADAPTER, make_user("tsel-api", Role.OPERATOR)
    operator.save()
    batches = {}
    for priority, campaign in campaigns.items():
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
        run = sending_run(campaign)
        dispatch.run_fan_out(run_id=run.pk)
        (batches[priority],) = DispatchBatch.objects.filter(run=run)
    client = api_client_for(operator.user)

    listed = client.get("/api/v1/operator/batches/?state=ready").json()
    held = client.post(f"/api/v1/operator/batches/{batches['normal'].pk}/claim/")

    assert [row["batch_id"] for row in listed["results"]] == [str(batches["urgent"].pk)]
    assert held.status_code == 409 and "quiet hours" in held.json()["detail"]
    assert DispatchBatch.objects.get(pk=batches["normal"].pk).status == "pending"
    assert client.post(f"/api/v1/operator/batches/{batches['urgent'].pk}/claim/").status_code == 200


def test_a_claim_retried_after_quiet_hours_began_gets_the_batch_it_holds_and_a_new_one_is_refused(api_client_for):
    campaign = approved_campaign(schedule={"kind": "now"})
    operator = operators_and_subscribers(counts={"tsel": 2}, batch_size=1)["tsel"]
    operator.adapter, operator.user = services.PULL_ADAPTER, make_user("tsel-api", Role.OPERATOR)
    operator.save()
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    dispatch.run_fan_out(run_id=run.pk)
    claimed, other = DispatchBatch.objects.filter(run=run).order_by("pk")
    client = api_client_for(operator.user)
    first = client.post(f"/api/v1/operator/batches/{claimed.pk}/claim/")
    assert first.status_code == 200

    # Its answer was lost, and the run's quiet hours began before the operator claimed again.
    local_hour = timezone.now().astimezone(timezone.get_fixed_timezone(7 * 60)).hour
    quiet = {"start": f"{local_hour:02d}:00", "end": f"{(local_hour + 2) % 24:02d}:00"}
    run.refresh_from_db()
    CampaignRun.objects.filter(pk=run.pk).update(frozen={**run.frozen, "quiet_hours": quiet})
    again = client.post(f"/api/v1/operator/batches/{claimed.pk}/claim/")
    refused = client.post(f"/api/v1/operator/batches/{other.pk}/claim/")

    assert again.status_code == 200, again.json()
    assert again.json()["recipients"] == first.json()["recipients"]
    assert again.json()["lease_expires_at"] == first.json()["lease_expires_at"]
    assert refused.status_code == 409 and "quiet hours" in refused.json()["detail"]
    assert DispatchBatch.objects.get(pk=other.pk).status == "pending"


def test_an_ack_after_the_reports_of_its_batch_completes_the_run_at_once(
    world, redis_client, django_capture_on_commit_callbacks
):
    client, batch = _claimed_by_a_pulling_operator(world)
    assert services.batch_send(batch_id=DispatchBatch.objects.get(run=world["run"], operator__slug="isat").pk)
    reports = {slug: [_report(message_id, "DELIVERED") for message_id in world["ids"][slug]] for slug in world["ids"]}
    for slug in ("isat", "tsel"):
        world["clients"][slug].post(REPORTS_URL, {"reports": reports[slug]}, format="json")
    redis_client.delete("default")

    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {}, format="json").status_code == 200

    checks = _queued_completion_checks(redis_client)
    assert checks == [(world["run"].pk, 0.0)]
    _run_checks(checks)
    assert Campaign.objects.get(pk=world["run"].campaign_id).status == Campaign.Status.COMPLETED


def test_an_ack_rejecting_message_ids_that_name_no_delivery_still_accepts_the_batch(world):
    client, batch = _claimed_by_a_pulling_operator(world)

    rejected = [{"message_id": message_id, "reason": "bad"} for message_id in ("\u00b2", "1" * 5000)]
    body = {"accepted": 3, "rejected": rejected}
    acked = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", body, format="json")

    assert acked.status_code == 200 and acked.json()["status"] == "accepted"
    assert set(Delivery.objects.filter(batch=batch).values_list("status", flat=True)) == {"queued"}


def test_a_pulling_operator_can_neither_list_nor_claim_a_batch_past_its_runs_validity_window(world):
    from campaigns.models import CampaignRun

    client, batch = _pulling_operator(world)
    CampaignRun.objects.filter(pk=batch.run_id).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert client.get("/api/v1/operator/batches/?state=ready").json()["results"] == []
    assert client.post(f"/api/v1/operator/batches/{batch.pk}/claim/").status_code == 409
    assert DispatchBatch.objects.get(pk=batch.pk).status == "pending"


def test_a_pulling_operator_is_not_handed_a_batch_whose_every_number_opted_out(world):
    from smsblast.services import subscriber_opt_out

    client, batch = _pulling_operator(world)
    for delivery in Delivery.objects.filter(batch=batch):
        subscriber_opt_out(msisdn=delivery.msisdn, actor=None, source="sms")

    assert client.get("/api/v1/operator/batches/?state=ready").json()["results"] == []
    assert client.post(f"/api/v1/operator/batches/{batch.pk}/claim/").status_code == 409
    batch.refresh_from_db()
    assert (batch.status, batch.accepted_count) == ("accepted", 0)


def test_an_ack_without_a_count_accepts_the_numbers_handed_over_so_the_run_costs_no_opted_out_number(world):
    from campaigns.dispatch_selectors import run_progress
    from smsblast.services import subscriber_opt_out

    client, batch = _pulling_operator(world)
    first, *others = world["ids"]["tsel"]
    subscriber_opt_out(msisdn=Delivery.objects.get(pk=first).msisdn, actor=None, source="sms")
    claimed = client.post(f"/api/v1/operator/batches/{batch.pk}/claim/").json()
    assert {row["message_id"] for row in claimed["recipients"]} == set(others)

    rejected = [{"message_id": others[0], "reason": "barred"}]
    acked = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {"rejected": rejected}, format="json")

    assert acked.status_code == 200
    batch.refresh_from_db()
    assert batch.accepted_count == 1  # three in the batch, one opted out, one refused
    tsel = next(entry for entry in run_progress(world["run"])["operators"] if entry["slug"] == "tsel")
    assert tsel["counts"]["submitted"] == 1 and tsel["counts"]["skipped"] == 1 and tsel["counts"]["rejected"] == 1
    assert (tsel["segments_sent"], tsel["cost"]) == (1, 250)


def test_an_ack_without_a_count_refusing_a_message_twice_counts_it_once(world):
    client, batch = _claimed_by_a_pulling_operator(world)
    rejected = [{"message_id": world["ids"]["tsel"][0], "reason": "barred"}] * 2

    acked = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {"rejected": rejected}, format="json")

    assert acked.status_code == 200
    batch.refresh_from_db()
    assert batch.accepted_count == 2


def test_an_ack_accepting_more_than_the_numbers_handed_over_is_refused(world):
    from smsblast.services import subscriber_opt_out

    client, batch = _pulling_operator(world)
    subscriber_opt_out(msisdn=Delivery.objects.get(pk=world["ids"]["tsel"][0]).msisdn, actor=None, source="sms")
    assert client.post(f"/api/v1/operator/batches/{batch.pk}/claim/").status_code == 200

    response = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {"accepted": 3}, format="json")

    assert response.status_code == 400
    assert "at most" in response.json()["detail"]
    batch.refresh_from_db()
    assert batch.status == "in_flight" and batch.accepted_count == 0


def test_an_ack_accepting_a_message_it_also_refused_is_refused_and_the_batch_stays_claimed(world):
    client, batch = _claimed_by_a_pulling_operator(world)
    handed = world["ids"]["tsel"]
    rejected = [{"message_id": handed[0], "reason": "barred"}]

    response = client.post(
        f"/api/v1/operator/batches/{batch.pk}/ack/", {"accepted": len(handed), "rejected": rejected}, format="json"
    )

    assert response.status_code == 400
    assert "at most" in response.json()["detail"]
    batch.refresh_from_db()
    assert batch.status == "in_flight" and batch.accepted_count == 0


def _deactivated(world):
    """Switch tsel to pull mode, have it claim its batch, then deactivate it; return (its client, the batch)."""
    client, batch = _claimed_by_a_pulling_operator(world)
    operator = world["operators"]["tsel"]
    operator.active = False
    operator.save()
    return client, batch


def test_a_deactivated_operator_can_neither_list_nor_claim_batches(world):
    client, batch = _pulling_operator(world)
    operator = world["operators"]["tsel"]
    operator.active = False
    operator.save()

    listed = client.get("/api/v1/operator/batches/?state=ready")
    claimed = client.post(f"/api/v1/operator/batches/{batch.pk}/claim/")

    assert listed.status_code == 403 and "deactivated" in listed.json()["detail"]
    assert claimed.status_code == 403 and "deactivated" in claimed.json()["detail"]
    assert DispatchBatch.objects.get(pk=batch.pk).status == "pending"


def test_a_deactivated_operator_still_acks_what_it_claimed_and_reports_on_it(world):
    client, batch = _deactivated(world)
    ids = world["ids"]["tsel"]

    acked = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {"accepted": 3}, format="json")
    reported = client.post(REPORTS_URL, {"reports": [_report(ids[0], "DELIVERED")]}, format="json")

    assert acked.status_code == 200 and acked.json()["status"] == "accepted"
    assert reported.status_code == 200 and reported.json()["applied"] == 1
    assert Delivery.objects.get(pk=ids[0]).status == "delivered"


def test_a_deactivated_operator_still_forwards_its_subscribers_stop(world):
    client, _ = _deactivated(world)
    number = Delivery.objects.get(pk=world["ids"]["tsel"][0]).msisdn

    response = client.post("/api/v1/operator/inbound/", {"msisdn": number, "text": "STOP"}, format="json")

    assert response.status_code == 200 and response.json()["action"] == "opted_out"


def test_an_operator_cannot_claim_another_operators_batch(world):
    client, _ = _pulling_operator(world)
    (theirs,) = DispatchBatch.objects.filter(operator=world["operators"]["isat"])
    response = client.post(f"/api/v1/operator/batches/{theirs.pk}/claim/")
    assert response.status_code == 409
    assert DispatchBatch.objects.get(pk=theirs.pk).status == "pending"


def test_an_operator_set_up_for_push_can_neither_list_nor_claim_its_batches_so_none_is_handed_over_twice(world):
    (mine,) = DispatchBatch.objects.filter(operator=world["operators"]["tsel"])
    client = world["clients"]["tsel"]

    listed = client.get("/api/v1/operator/batches/?state=ready")
    claimed = client.post(f"/api/v1/operator/batches/{mine.pk}/claim/")

    for response in (listed, claimed):
        assert response.status_code == 403, response.content
        assert "set up for push" in response.json()["detail"]
    assert DispatchBatch.objects.values_list("status", "attempts").get(pk=mine.pk) == ("pending", 0)
    assert services.batch_send(batch_id=mine.pk) == "accepted"


def test_an_ack_whose_reason_holds_a_nul_character_is_recorded_without_it(world):
    client, batch = _claimed_by_a_pulling_operator(world)

    rejected = [{"message_id": world["ids"]["tsel"][0], "reason": "black\x00listed"}]
    acked = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {"rejected": rejected}, format="json")

    assert acked.status_code == 200 and acked.json()["status"] == "accepted"
    assert Delivery.objects.get(pk=world["ids"]["tsel"][0]).reason == "blacklisted"


def test_an_ack_whose_reason_holds_a_lone_surrogate_is_recorded_without_it(world):
    client, batch = _claimed_by_a_pulling_operator(world)
    mine = world["ids"]["tsel"][0]
    body = json.dumps({"rejected": [{"message_id": mine, "reason": "black\udc00listed"}]})

    acked = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", body, content_type="application/json")

    assert acked.status_code == 200 and acked.json()["status"] == "accepted"
    assert Delivery.objects.get(pk=mine).reason == "blacklisted"


@pytest.mark.parametrize("body", [[{"message_id": "1", "reason": "barred"}], "accepted", 3])
def test_an_ack_that_is_not_an_object_is_refused_and_the_batch_stays_claimed(world, body):
    client, batch = _claimed_by_a_pulling_operator(world)

    response = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", body, format="json")

    assert response.status_code == 400
    assert response.json()["detail"]
    batch.refresh_from_db()
    assert batch.status == "in_flight"


def test_an_ack_accepting_more_than_the_batch_holds_is_refused_and_the_batch_stays_claimed(world):
    client, batch = _claimed_by_a_pulling_operator(world)

    response = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {"accepted": 2**40}, format="json")

    assert response.status_code == 400
    assert "at most" in response.json()["detail"]
    batch.refresh_from_db()
    assert batch.status == "in_flight" and batch.accepted_count == 0


def test_a_late_ack_after_the_claim_lapsed_still_accepts_the_batch_but_an_unclaimed_one_cannot_be_acked(world):
    client, batch = _pulling_operator(world)
    assert client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {}, format="json").status_code == 409
    assert client.post(f"/api/v1/operator/batches/{batch.pk}/claim/").status_code == 200
    dispatch.dispatch_reconcile(now=timezone.now() + timedelta(seconds=settings.DISPATCH_LEASE_SECONDS + 1))
    batch.refresh_from_db()
    assert batch.status == "pending"  # the lapsed claim went back

    acked = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {"accepted": 3}, format="json")

    assert acked.status_code == 200 and acked.json()["status"] == "accepted"
    batch.refresh_from_db()
    assert batch.status == "accepted" and batch.accepted_count == 3
    assert client.get("/api/v1/operator/batches/?state=ready").json()["results"] == []


def test_an_ack_rejecting_more_messages_than_the_batch_holds_accepts_none_rather_than_failing(world):
    client, batch = _claimed_by_a_pulling_operator(world)
    rejected = [{"message_id": message_id, "reason": "barred"} for message_id in [*world["ids"]["tsel"], "1", "2"]]

    response = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {"rejected": rejected}, format="json")

    assert response.status_code == 200 and response.json()["status"] == "accepted"
    batch.refresh_from_db()
    assert batch.accepted_count == 0
    assert set(Delivery.objects.filter(batch=batch).values_list("status", flat=True)) == {"rejected"}


def test_a_claim_of_a_batch_waiting_for_a_retry_is_audited_from_that_state(world):
    client, batch = _pulling_operator(world)
    DispatchBatch.objects.filter(pk=batch.pk).update(status="retry_wait", attempts=1)
    assert client.post(f"/api/v1/operator/batches/{batch.pk}/claim/").status_code == 200
    claim = audit_history(batch).get(action="batch.claim")
    assert (claim.from_state, claim.to_state) == ("retry_wait", "in_flight")


def test_a_very_late_report_on_a_message_whose_run_was_pruned_is_refused_as_unknown_not_an_error(api_client_for):
    from campaigns.retention import deliveries_prune

    run = finished_run()
    operator = Operator.objects.get(slug="tsel")
    operator.user = make_user("tsel-api", Role.OPERATOR)
    operator.save()
    ids = [str(pk) for pk in Delivery.objects.filter(run=run, operator=operator).values_list("pk", flat=True)]
    deliveries_prune(now=run.finished_at + timedelta(days=settings.SMSBLAST_DELIVERY_RETENTION_DAYS + 1))

    response = api_client_for(operator.user).post(
        REPORTS_URL, {"reports": [_report(ids[0], "DELIVERED"), _report(ids[1], "UNDELIVERED")]}, format="json"
    )

    assert response.status_code == 200, response.content
    unknown = [{"message_id": message_id, "reason": "unknown_message"} for message_id in sorted(ids[:2], key=int)]
    assert response.json() == {"applied": 0, "unchanged": 0, "rejected": unknown}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"accepted": -1}, "accepted"),
        ({"accepted": 2**40}, "accepted"),
        ({"rejected": "all"}, "rejected"),
        ({"rejected": [{"message_id": ["1"], "reason": "x"}]}, "rejected"),
    ],
)
def test_a_refused_ack_names_the_field_at_fault_in_its_errors(world, body, field):
    client, batch = _claimed_by_a_pulling_operator(world)

    response = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", body, format="json")

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]


def test_a_list_asked_for_another_state_names_state_in_its_errors(world):
    client, _ = _pulling_operator(world)

    response = client.get("/api/v1/operator/batches/", {"state": "all"})

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["state"]


def test_the_ready_list_pages_through_batches_written_in_the_same_instant_without_repeating_or_skipping_one(
    api_client_for,
):
    campaign = approved_campaign()
    operator = operators_and_subscribers(counts={"tsel": 120}, batch_size=1)["tsel"]
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    dispatch.run_fan_out(run_id=run.pk)
    # One fan-out chunk writes many batches at once; nothing keeps their creation times apart.
    DispatchBatch.objects.filter(run=run).update(created_at=timezone.now())
    operator.user = make_user("tsel-api", Role.OPERATOR)
    operator.adapter = services.PULL_ADAPTER
    operator.save()
    client = api_client_for(operator.user)

    listed, url = [], "/api/v1/operator/batches/?state=ready&limit=7"
    while url:
        page = client.get(url).json()
        listed += [row["batch_id"] for row in page["results"]]
        url = page["next"]

    written = DispatchBatch.objects.filter(run=run).values_list("pk", flat=True)
    assert sorted(listed) == sorted(str(pk) for pk in written)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("repeat", [{}, {"rejected": [{"message_id": "<first>", "reason": "barred"}]}])
def test_an_ack_repeated_while_the_first_is_being_recorded_answers_the_first_ones_outcome(world, repeat):
    """An operator whose ack timed out sends it again at once: both answers say the batch is accepted."""
    skip_unless_postgresql()
    client, batch = _claimed_by_a_pulling_operator(world)
    url = f"/api/v1/operator/batches/{batch.pk}/ack/"
    repeat = json.loads(json.dumps(repeat).replace("<first>", world["ids"]["tsel"][0]))
    answers = []

    def ack(body):
        return lambda: answers.append(client.post(url, body, format="json"))

    # Both wait behind the batch's row; the first records the batch, the second finds it recorded.
    errors = race_behind_a_row(batch, ack({"accepted": 3}), ack(repeat))

    assert errors == []
    assert [(answer.status_code, answer.json()) for answer in answers] == 2 * [
        (200, {"batch_id": str(batch.pk), "status": "accepted", "accepted": 3})
    ]
    assert set(Delivery.objects.filter(batch=batch).values_list("status", flat=True)) == {"queued"}


def _enqueued_batches(callbacks) -> list:
    """Return the batch ids handed to batches_enqueue by captured on-commit callbacks."""
    enqueues = [getattr(callback, "__wrapped__", callback) for callback in callbacks]
    return [
        batch_id
        for enqueue in enqueues
        if getattr(enqueue, "func", None) is dispatch.batches_enqueue
        for batch_id, _queue in enqueue.args[0]
    ]


@pytest.mark.parametrize("task", ["runs", "is lost"])
def test_a_claimed_batch_of_a_campaign_cancelled_meanwhile_is_cancelled_once_its_claim_lapses(
    world, django_capture_on_commit_callbacks, task
):
    """As a pushed batch is: its numbers show cancelled at once, not queued until the validity window fails them."""
    from campaigns.services import campaign_cancel

    client, batch = _claimed_by_a_pulling_operator(world)
    campaign = Campaign.objects.get(pk=world["run"].campaign_id)
    campaign_cancel(campaign=campaign, actor=campaign.author)
    assert DispatchBatch.objects.get(pk=batch.pk).status == "in_flight"  # with the operator: it may still ack it
    lapsed = timezone.now() + timedelta(seconds=settings.DISPATCH_LEASE_SECONDS + 1)
    with django_capture_on_commit_callbacks() as callbacks:
        assert dispatch.dispatch_reconcile(now=lapsed)["leases"] == 1
    if task == "is lost":
        later = lapsed + timedelta(seconds=settings.DISPATCH_REDRIVE_AFTER_SECONDS + 1)
        with django_capture_on_commit_callbacks() as callbacks:
            assert dispatch.dispatch_reconcile(now=later)["requeued"] == 1
    assert _enqueued_batches(callbacks) == [batch.pk]

    services.batch_send(batch_id=batch.pk)

    assert DispatchBatch.objects.get(pk=batch.pk).status == "cancelled"
    assert set(Delivery.objects.filter(batch=batch).values_list("status", "reason")) == {
        ("cancelled", "campaign_cancelled")
    }
    late = client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {}, format="json")
    assert late.status_code == 409 and "cancelled" in late.json()["detail"]


@pytest.mark.parametrize("refusal", [{"reason": None}, {}])
def test_an_ack_refusing_a_message_without_a_reason_records_it_as_rejected_not_none(world, refusal):
    client, batch = _claimed_by_a_pulling_operator(world)
    refused = world["ids"]["tsel"][0]

    response = client.post(
        f"/api/v1/operator/batches/{batch.pk}/ack/", {"rejected": [{"message_id": refused, **refusal}]}, format="json"
    )

    assert response.status_code == 200
    assert Delivery.objects.values_list("status", "reason").get(pk=refused) == ("rejected", "rejected")


def _claim_refused_after(world, ending) -> dict:
    """Bring the caller's own batch to `ending`, claim it and return the refusal (409)."""
    from campaigns.dispatch import campaign_pause
    from campaigns.services import campaign_cancel

    client, batch = _pulling_operator(world)
    campaign = Campaign.objects.get(pk=world["run"].campaign_id)
    url = f"/api/v1/operator/batches/{batch.pk}/claim/"
    if ending in ("acked", "claim lapsed"):
        assert client.post(url).status_code == 200
    if ending == "acked":
        assert client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {}, format="json").status_code == 200
    elif ending == "claim lapsed":
        DispatchBatch.objects.filter(pk=batch.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    elif ending == "paused":
        campaign_pause(campaign=campaign, actor=campaign.author)
    elif ending == "cancelled":
        campaign_cancel(campaign=campaign, actor=campaign.author)
    elif ending == "past its validity window":
        CampaignRun.objects.filter(pk=world["run"].pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.post(url)
    assert response.status_code == 409
    return response.json()


@pytest.mark.parametrize(
    ("ending", "words"),
    [
        ("acked", "is accepted"),
        ("claim lapsed", "claim lapsed"),
        ("paused", "campaign is paused"),
        ("cancelled", "is cancelled"),
        ("past its validity window", "validity window"),
    ],
)
def test_a_refused_claim_of_the_callers_own_batch_says_why(world, ending, words):
    assert words in _claim_refused_after(world, ending)["detail"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=-5", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
    ],
)
def test_a_ready_list_asked_for_a_page_it_cannot_have_is_refused_naming_the_parameter(world, query, field):
    client, _ = _pulling_operator(world)

    response = client.get(f"/api/v1/operator/batches/?state=ready&{query}")

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]
    assert field in response.json()["detail"]


def test_a_ready_list_asked_for_more_than_its_largest_page_answers_the_largest(world):
    client, batch = _pulling_operator(world)

    response = client.get("/api/v1/operator/batches/?state=ready&limit=1000000")

    assert response.status_code == 200
    assert [row["batch_id"] for row in response.json()["results"]] == [str(batch.pk)]


@pytest.mark.django_db(transaction=True)
def test_an_ack_refusing_messages_as_their_reports_arrive_both_apply_without_a_deadlock(world):
    """The operator reports its refusals while it acks them (its reasons in another order): neither answers 503."""
    skip_unless_postgresql()
    client, batch = _claimed_by_a_pulling_operator(world)
    first, second, _ = world["ids"]["tsel"]
    answers = {}

    def report():
        body = {"reports": [{"message_id": first, "status": "REJECTED"}, {"message_id": second, "status": "REJECTED"}]}
        answers["report"] = client.post(REPORTS_URL, body, format="json").status_code

    def ack():
        rejected = [{"message_id": second, "reason": "barred"}, {"message_id": first, "reason": "unknown_number"}]
        answers["ack"] = client.post(
            f"/api/v1/operator/batches/{batch.pk}/ack/", {"rejected": rejected}, format="json"
        ).status_code

    # The report waits behind the first message; the ack, arriving next, takes the second before the first.
    errors = race_behind_a_row(Delivery.objects.get(pk=first), report, ack, second_may_pass=True)

    assert errors == []
    assert answers == {"report": 200, "ack": 200}
    assert set(Delivery.objects.filter(pk__in=[first, second]).values_list("status", flat=True)) == {"rejected"}
    assert DispatchBatch.objects.get(pk=batch.pk).status == "accepted"


@pytest.mark.django_db(transaction=True)
def test_two_claims_of_one_batch_racing_lease_it_once_and_hand_over_the_same_content(world):
    """Two fetchers of one operator claim the same batch at once: one lease, one attempt, one batch_id to send once."""
    skip_unless_postgresql()
    client, batch = _pulling_operator(world)
    answers = []

    def claim():
        answers.append(client.post(f"/api/v1/operator/batches/{batch.pk}/claim/"))

    errors = race_behind_a_row(batch, claim, claim)

    assert errors == []
    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()
    assert DispatchBatch.objects.values_list("status", "attempts").get(pk=batch.pk) == ("in_flight", 1)
    assert _batch_events(batch) == [("batch.claim", "pending", "in_flight")]


@pytest.mark.django_db(transaction=True)
def test_a_claim_answers_the_lease_it_took_even_when_an_ack_follows_at_once(world, monkeypatch):
    """The claim's answer read the batch's lease after the claim had committed: an ack recorded in between (a client
    that retried its claim and acked the first answer meanwhile) made the retried claim answer a lease of null."""
    import threading

    from django.db import connections

    from tests.concurrency import start_in_thread, wait_until_blocked_on_a_lock

    skip_unless_postgresql()
    client, batch = _pulling_operator(world)
    first = client.post(f"/api/v1/operator/batches/{batch.pk}/claim/")
    claim = services.batch_claim
    acks, errors = [], []

    def ack():
        try:
            acks.append(client.post(f"/api/v1/operator/batches/{batch.pk}/ack/", {"accepted": 3}, format="json"))
        finally:
            connections.close_all()

    acking = threading.Thread(target=ack)

    def claim_then_ack(**kwargs):
        outbound = claim(**kwargs)
        acking.start()
        # The ack waits behind the claim's lock until the claim's answer is read, or is recorded at once. Watched
        # from a session of its own: inside this request's transaction PostgreSQL shows the same activity each time.
        watching = start_in_thread(lambda: wait_until_blocked_on_a_lock(1, unless=acking), errors)
        watching.join(35)
        return outbound

    monkeypatch.setattr(services, "batch_claim", claim_then_ack)

    again = client.post(f"/api/v1/operator/batches/{batch.pk}/claim/")
    acking.join(30)

    assert errors == []
    assert first.status_code == again.status_code == 200, again.content
    assert again.json() == first.json()  # the same batch under the same lease, not a lease of null
    assert [answer.json()["status"] for answer in acks] == ["accepted"]
