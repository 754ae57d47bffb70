"""One run's deliveries and batches, driven step by step and checked against a model after every step.

A run to three operators (two pushed to, one pulling its batches) and twenty recipients goes through whatever
hypothesis draws: sends answered in each way an operator answers (partial refusals, 503, 429, 400, an adapter that
raises, a worker that dies, an answer arriving after the lease lapsed or the campaign was paused or cancelled),
lapsed leases taken back by the reconciler, delivery-report requests from the right operator and from another (in
any order, repeated, with unknown ids), pull-mode claims and acks, STOP messages, pause, resume, cancel and the end
of the validity window. A plain model predicts every delivery's and batch's state; after each step the database
must hold what it predicts, statuses only move forward, each batch, run and campaign change is audited, the
progress the API shows counts the Delivery rows, and no recipient goes out under two batch ids.

Time is a clock the test moves: `django.utils.timezone.now` reads it, so leases lapse and the window passes as they
would, for the services and the reconciler alike.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from unittest import mock

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from campaigns import dispatch
from campaigns.models import Campaign, CampaignRun, Delivery, DispatchBatch
from operators import services
from operators.gateways.base import BatchResult, GatewayAdapter, Outcome, register
from smsblast.models import AuditEvent, Role, Subscriber
from tests.conftest import make_user
from tests.operators.scripted import approved_campaign, operators_and_subscribers, sending_run

pytestmark = pytest.mark.django_db


QUEUED, SUBMITTED, DELIVERED, UNDELIVERED, EXPIRED, REJECTED, FAILED, SKIPPED, CANCELLED = (
    "queued",
    "submitted",
    "delivered",
    "undelivered",
    "expired",
    "rejected",
    "failed",
    "skipped",
    "cancelled",
)
PENDING, IN_FLIGHT, ACCEPTED, RETRY_WAIT = "pending", "in_flight", "accepted", "retry_wait"
FINAL_DELIVERY = {DELIVERED, UNDELIVERED, EXPIRED, REJECTED, FAILED, SKIPPED, CANCELLED}
FINAL_BATCH = {ACCEPTED, FAILED, CANCELLED}
# Where each state may go: the Delivery line of DESIGN.md (forward only, finals never change) and its DispatchBatch
# graph with the edges the design's prose adds (a lapsed lease goes back, a late answer still counts, a batch every
# number opted out of is done unsent, the validity window fails an unsent batch, cancel ends any unaccepted one).
DELIVERY_MOVES = {
    QUEUED: {SUBMITTED, *FINAL_DELIVERY},
    SUBMITTED: {DELIVERED, UNDELIVERED, EXPIRED, REJECTED},
}
BATCH_MOVES = {
    PENDING: {IN_FLIGHT, ACCEPTED, FAILED, CANCELLED},
    IN_FLIGHT: {PENDING, ACCEPTED, RETRY_WAIT, FAILED, CANCELLED},
    RETRY_WAIT: {IN_FLIGHT, ACCEPTED, FAILED, CANCELLED},
}
REPORT_STATUSES = ["SUBMITTED", "DELIVERED", "UNDELIVERED", "EXPIRED", "REJECTED"]
REPORTS_URL = "/api/v1/operator/delivery-reports/"
MAX_ATTEMPTS = 3  # the retry budget, lowered so a few steps spend it
PULLING = "xl"  # the operator that fetches its batches; the other two are pushed to


class WorkerDied(BaseException):  # noqa: N818 - not an error the services may catch: the process is gone
    """The worker process died while the operator had the batch: nothing records an answer."""


@register
class ModelAdapter(GatewayAdapter):
    """The operator's answer, decided by the state machine for each send (the adapter boundary)."""

    name = "modelled"
    answer = None  # a callable taking the OutboundBatch and returning a BatchResult (or raising)

    def send_batch(self, batch):
        answer, type(self).answer = type(self).answer, None
        assert answer is not None, f"batch {batch.batch_id} was sent when the model expected no send"
        return answer(batch)


@dataclass
class ModelBatch:
    operator: str
    status: str = PENDING
    attempts: int = 0
    throttled: int = 0
    lease_until: datetime | None = None
    next_attempt_at: datetime | None = None
    claimed: bool = False  # its latest lease is the pulling operator's claim


class RunMachine(RuleBasedStateMachine):
    client_for = None  # set by the test: a builder of API clients authenticated as a user

    def __init__(self):
        super().__init__()
        self.savepoint = transaction.savepoint()
        self.clock = timezone.now().replace(microsecond=0)
        self.time_patch = mock.patch("django.utils.timezone.now", lambda: self.clock)
        self.time_patch.start()
        self.budget_patch = mock.patch.object(services, "MAX_ATTEMPTS", MAX_ATTEMPTS)
        self.budget_patch.start()
        self._build()

    def teardown(self):
        self.budget_patch.stop()
        self.time_patch.stop()
        transaction.savepoint_rollback(self.savepoint)

    # --- the world ------------------------------------------------------------------------------

    def _build(self):
        campaign = approved_campaign()
        operators = operators_and_subscribers(counts={"tsel": 8, "isat": 5, "xl": 6}, batch_size=3)
        for slug, operator in operators.items():
            operator.adapter = services.PULL_ADAPTER if slug == PULLING else ModelAdapter.name
            operator.batch_size = 4 if slug == PULLING else 3
            operator.user = make_user(f"{slug}-api-{operator.pk}", Role.OPERATOR)
            operator.save()
        # One recipient opted out before the run: skipped at fan-out.
        Subscriber.objects.filter(pk=Subscriber.objects.filter(operator=operators["tsel"]).order_by("pk")[0].pk).update(
            opted_out_at=self.clock
        )
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
        run = sending_run(campaign)
        dispatch.run_fan_out(run_id=run.pk, chunk_size=8)
        run.refresh_from_db()
        assert run.status == CampaignRun.Status.SENDING

        self.campaign, self.run, self.operators = campaign, run, operators
        self.slug_of = {op.pk: slug for slug, op in operators.items()}
        self.clients = {slug: RunMachine.client_for(op.user) for slug, op in operators.items()}
        self.officer = RunMachine.client_for(campaign.author)
        self.expires_at = run.expires_at
        self.run_status, self.campaign_status = "sending", "sending"
        self.batches = {
            batch.pk: ModelBatch(operator=self.slug_of[batch.operator_id])
            for batch in DispatchBatch.objects.filter(run=run)
        }
        self.deliveries = {
            pk: {"status": status, "batch": batch_id, "operator": self.slug_of[operator_id], "msisdn": msisdn}
            for pk, status, batch_id, operator_id, msisdn in Delivery.objects.filter(run=run).values_list(
                "pk", "status", "batch_id", "operator_id", "msisdn"
            )
        }
        self.opted_out = set(Subscriber.objects.filter(opted_out_at__isnull=False).values_list("msisdn", flat=True))
        # (message id, msisdn) → the batch ids it went out under, to the operators' gateways or claims.
        self.sent: dict[tuple[int, str], set] = {}
        self.audit_seen = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        self.before = self._snapshot()
        self.check()

    def _snapshot(self) -> dict:
        return {
            "deliveries": dict(Delivery.objects.filter(run=self.run).values_list("pk", "status")),
            "batches": dict(DispatchBatch.objects.filter(run=self.run).values_list("pk", "status")),
            "run": CampaignRun.objects.values_list("status", flat=True).get(pk=self.run.pk),
            "campaign": Campaign.objects.values_list("status", flat=True).get(pk=self.campaign.pk),
        }

    def _advance(self, seconds: float) -> None:
        self.clock += timedelta(seconds=seconds)

    def _batch_deliveries(self, batch_id, *statuses) -> list[int]:
        return sorted(
            pk
            for pk, d in self.deliveries.items()
            if d["batch"] == batch_id and (not statuses or d["status"] in statuses)
        )

    def _set(self, ids, status: str, *, only_from=(QUEUED,)) -> None:
        for pk in ids:
            if self.deliveries[pk]["status"] in only_from:
                self.deliveries[pk]["status"] = status

    # --- the model's services -------------------------------------------------------------------

    def m_cancel_batch(self, batch_id) -> None:
        self.batches[batch_id].status = CANCELLED
        self.batches[batch_id].lease_until = None
        self.m_move_batch_deliveries(batch_id, CANCELLED)

    def m_move_batch_deliveries(self, batch_id, status) -> None:
        self._set(self._batch_deliveries(batch_id, QUEUED), status)

    def m_fail_batch(self, batch_id) -> None:
        if self.batches[batch_id].status not in FINAL_BATCH:
            self.batches[batch_id].status = FAILED
            self.batches[batch_id].lease_until = None
            self.m_move_batch_deliveries(batch_id, FAILED)

    def m_accept(self, batch_id, refused) -> None:
        batch = self.batches[batch_id]
        if batch.status not in (IN_FLIGHT, PENDING, RETRY_WAIT):
            return
        batch.status, batch.lease_until, batch.next_attempt_at = ACCEPTED, None, None
        self._set(
            [pk for pk in refused if self.deliveries.get(pk, {}).get("batch") == batch_id],
            REJECTED,
            only_from=(QUEUED, SUBMITTED),
        )

    def m_unsettled(self) -> bool:
        return any(d["status"] in (QUEUED, SUBMITTED) for d in self.deliveries.values()) or any(
            b.status in (PENDING, IN_FLIGHT, RETRY_WAIT) for b in self.batches.values()
        )

    def m_check_complete(self) -> None:
        if self.run_status not in ("sending", "paused") or self.m_unsettled():
            return
        failed = any(d["status"] in (FAILED, REJECTED) for d in self.deliveries.values())
        self.run_status = "completed_with_failures" if failed else "completed"
        self.campaign_status = self.run_status

    def m_expire(self) -> None:
        for batch in self.batches.values():
            if batch.status in (PENDING, RETRY_WAIT):
                batch.status = FAILED
        for d in self.deliveries.values():
            batch_status = self.batches[d["batch"]].status if d["batch"] else None
            if d["status"] == QUEUED and batch_status == FAILED:
                d["status"] = FAILED
            elif (d["status"] == QUEUED and batch_status == ACCEPTED) or d["status"] == SUBMITTED:
                d["status"] = EXPIRED

    def m_reconcile(self) -> None:
        for batch in self.batches.values():
            if batch.status == IN_FLIGHT and batch.lease_until < self.clock:
                batch.status, batch.lease_until, batch.next_attempt_at = PENDING, None, None
        if self.expires_at < self.clock:
            if self.run_status in ("sending", "paused"):
                self.m_expire()
            elif self.run_status == "cancelled" and any(
                d["status"] in (QUEUED, SUBMITTED) for d in self.deliveries.values()
            ):
                self.m_expire()
        self.m_check_complete()

    def m_cancel(self) -> None:
        self.campaign_status = "cancelled"
        if self.run_status in ("sending", "paused"):
            self.run_status = "cancelled"
            for batch_id, batch in self.batches.items():
                if batch.status in (PENDING, RETRY_WAIT):
                    self.m_cancel_batch(batch_id)

    # --- sending --------------------------------------------------------------------------------

    def m_send_label(self, batch_id) -> str | None:
        """Return why the send task sends nothing (None: it leases the batch), applying what that changes."""
        batch = self.batches[batch_id]
        if batch.status in FINAL_BATCH:
            return "final"
        if self.run_status == "cancelled":
            if batch.status in (PENDING, RETRY_WAIT):
                self.m_cancel_batch(batch_id)
            return "cancelled"
        if batch.operator == PULLING:
            return "pull"
        if self.run_status == "paused":
            return "paused"
        if self.expires_at <= self.clock:
            return "expired"
        if batch.next_attempt_at is not None and batch.next_attempt_at > self.clock + timedelta(seconds=1):
            return "not_due"
        if batch.status == IN_FLIGHT:
            return "not_leased"
        batch.status, batch.attempts, batch.claimed = IN_FLIGHT, batch.attempts + 1, False
        batch.lease_until = self.clock + timedelta(seconds=django_settings.DISPATCH_LEASE_SECONDS)
        return None

    def m_record(self, batch_id, result: BatchResult, refused_ids) -> str:
        batch = self.batches[batch_id]
        if result.outcome == Outcome.ACCEPTED:
            if batch.status not in (IN_FLIGHT, PENDING, RETRY_WAIT):
                return "final"
            self.m_accept(batch_id, refused_ids)
            return "accepted"
        if batch.status != IN_FLIGHT:
            return "not_leased"
        if self.run_status == "cancelled":
            self.m_cancel_batch(batch_id)
            return "cancelled"
        throttled = result.outcome == Outcome.RETRY and result.status_code == 429
        if result.outcome == Outcome.RETRY and (throttled or batch.attempts - batch.throttled < MAX_ATTEMPTS):
            batch.status, batch.lease_until = RETRY_WAIT, None
            batch.throttled += throttled
            return "retry"
        self.m_fail_batch(batch_id)
        return "failed"

    def _send(self, data, batch_id, *, nested: bool = False) -> None:
        """Run the send task of one batch with an answer drawn for it, predicting each effect in the model."""
        kinds = ["accept", "refuse_some", "retry_503", "retry_429", "permanent_400", "adapter_raises", "worker_dies"]
        kind = data.draw(st.sampled_from(kinds if nested else [*kinds, "slow", "slow_then_resent"]), label="answer")
        meanwhile = "nothing"
        if not nested and kind in ("accept", "refuse_some", "retry_503", "permanent_400"):
            meanwhile = data.draw(st.sampled_from(["nothing", "nothing", "pause", "cancel"]), label="meanwhile")
        label = self.m_send_label(batch_id)
        answered: dict = {}

        def answer(outbound):
            ids = [int(m.message_id) for m in outbound.recipients]
            assert ids == self._batch_deliveries(batch_id, QUEUED, SUBMITTED, *FINAL_DELIVERY - {SKIPPED}), (
                "the batch goes out with every message of it but those whose number opted out before it was sent"
            )
            for message in outbound.recipients:
                self.sent.setdefault((int(message.message_id), message.msisdn), set()).add(outbound.batch_id)
            if meanwhile == "pause":
                self._pause()
            elif meanwhile == "cancel":
                self._cancel()
            refused = []
            if kind == "worker_dies":
                raise WorkerDied
            if kind == "adapter_raises":
                raise RuntimeError("connection pool exploded")
            if kind in ("slow", "slow_then_resent"):
                # The operator takes longer than the lease: the reconciler takes the batch back meanwhile.
                self._advance(django_settings.DISPATCH_LEASE_SECONDS + 1)
                self.m_reconcile()
                dispatch.dispatch_reconcile()
                if kind == "slow_then_resent":
                    self._send(data, batch_id, nested=True)
                return BatchResult(outcome=Outcome.ACCEPTED, accepted=len(ids), status_code=202)
            if kind == "refuse_some":
                refused = data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids)), label="refused")
                answered["refused"] = refused
                rejected = [(str(pk), "invalid_number") for pk in refused] + [("987654321012", "unknown")]
                return BatchResult(
                    outcome=Outcome.ACCEPTED, accepted=len(ids) - len(refused), rejected=rejected, status_code=202
                )
            if kind == "accept":
                return BatchResult(outcome=Outcome.ACCEPTED, accepted=len(ids), status_code=202)
            if kind == "retry_503":
                return BatchResult(outcome=Outcome.RETRY, error="Service Unavailable", status_code=503)
            if kind == "retry_429":
                return BatchResult(outcome=Outcome.RETRY, error="slow down", status_code=429, retry_after=5)
            return BatchResult(outcome=Outcome.FAILED, error="invalid sender", status_code=400)

        ModelAdapter.answer = answer if label is None else None
        try:
            got = services.batch_send(batch_id=batch_id)
        except WorkerDied:
            got = "died"
        ModelAdapter.answer = None
        if label is None:
            if kind == "worker_dies":
                label = "died"
            else:
                result = {
                    "adapter_raises": BatchResult(outcome=Outcome.RETRY),
                    "retry_503": BatchResult(outcome=Outcome.RETRY, status_code=503),
                    "retry_429": BatchResult(outcome=Outcome.RETRY, status_code=429),
                    "permanent_400": BatchResult(outcome=Outcome.FAILED, status_code=400),
                }.get(kind, BatchResult(outcome=Outcome.ACCEPTED))
                label = self.m_record(batch_id, result, answered.get("refused", []))
        assert got == label, f"send of batch {batch_id} ({kind}, {meanwhile} meanwhile): {got}, expected {label}"
        # The backoff is jittered: the model takes the moment of the next attempt as the service drew it.
        self.batches[batch_id].next_attempt_at = DispatchBatch.objects.get(pk=batch_id).next_attempt_at

    @rule(data=st.data())
    def a_send_task_runs(self, data):
        """A send task runs for a batch: its first, a retry when due, a duplicate, or one long after."""
        unsettled = sorted(
            pk for pk, b in self.batches.items() if b.status not in FINAL_BATCH and b.operator != PULLING
        )
        batch_id = data.draw(
            st.sampled_from(unsettled)
            if unsettled and data.draw(st.integers(0, 4), label="any")
            else st.sampled_from(sorted(self.batches)),
            label="batch",
        )
        batch = self.batches[batch_id]
        if batch.next_attempt_at is not None and data.draw(st.booleans(), label="when due"):
            self.clock = max(self.clock, batch.next_attempt_at)
        self._send(data, batch_id)
        self.check()

    @rule(data=st.data())
    def another_send_task_runs(self, data):
        """Sends are most of what workers do: a second rule makes them as frequent as the rest together."""
        self.a_send_task_runs(data)

    # --- the reconciler and time ----------------------------------------------------------------

    @rule(data=st.data())
    def time_passes_and_the_reconciler_runs(self, data):
        """A second, a lapsed lease, or now and then the end of the run's validity window."""
        passing = data.draw(st.sampled_from(["a second", "a lease", "a second", "a lease", "the window"]))
        if passing == "the window":
            self.clock = max(self.clock, self.expires_at) + timedelta(seconds=django_settings.DISPATCH_LEASE_SECONDS)
        self._advance(1 if passing == "a second" else django_settings.DISPATCH_LEASE_SECONDS + 1)
        self.m_reconcile()
        dispatch.dispatch_reconcile()
        self.check()
        if passing == "the window":
            assert self.run_status in CampaignRun.FINAL_STATUSES

    @rule()
    def the_completion_check_runs(self):
        self.m_check_complete()
        dispatch.run_check_complete(run_id=self.run.pk)
        self.check()

    # --- delivery reports -----------------------------------------------------------------------

    @rule(data=st.data())
    def an_operator_reports(self, data):
        sender = data.draw(st.sampled_from(sorted(self.operators)), label="operator")
        ids = sorted(self.deliveries)
        message = st.one_of(
            st.sampled_from(ids).map(str),
            st.sampled_from(ids).map(lambda pk: f"00{pk}"),  # the same message, spelled with leading zeros
            st.sampled_from(["987654321012", "not-an-id", "-5"]),
        )
        reports = data.draw(
            st.lists(st.tuples(message, st.sampled_from(REPORT_STATUSES)), min_size=1, max_size=12), label="reports"
        )
        body = {"reports": [{"message_id": mid, "status": status} for mid, status in reports]}

        owned, rejected = set(), []
        spellings: dict[int, list[str]] = {}
        for mid, _status in reports:
            pk = int(mid) if mid.isdigit() else None
            if pk is None:
                rejected.append(mid)
                continue
            if mid not in spellings.setdefault(pk, []):
                spellings[pk].append(mid)
            d = self.deliveries.get(pk)
            if d is None or d["operator"] != sender or not d["batch"] or self.batches[d["batch"]].attempts == 0:
                continue
            owned.add(pk)
        rejected += [mid for pk in sorted(spellings) if pk not in owned for mid in spellings[pk]]
        before = {pk: self.deliveries[pk]["status"] for pk in owned}
        for mid, status in reports:
            pk = int(mid) if mid.isdigit() else None
            if pk in owned:
                current = self.deliveries[pk]["status"]
                if current == QUEUED or (current == SUBMITTED and status != "SUBMITTED"):
                    self.deliveries[pk]["status"] = status.lower()
        applied = sum(before[pk] != self.deliveries[pk]["status"] for pk in owned)

        response = self.clients[sender].post(REPORTS_URL, body, format="json")
        assert response.status_code == 200, response.content
        answer = response.json()
        assert (answer["applied"], answer["unchanged"]) == (applied, len(owned) - applied), (body, answer)
        assert sorted(item["message_id"] for item in answer["rejected"]) == sorted(rejected), (body, answer)
        self.check()

        # The same request again (the operator's retry) changes nothing.
        again = self.clients[sender].post(REPORTS_URL, body, format="json").json()
        assert (again["applied"], again["unchanged"]) == (0, len(owned))
        self.check()

    # --- pull mode ------------------------------------------------------------------------------

    @rule(data=st.data())
    def the_pulling_operator_claims(self, data):
        batch_id = data.draw(st.sampled_from(sorted(self.batches)), label="batch")
        caller = data.draw(st.sampled_from([PULLING, PULLING, "tsel"]), label="caller")
        batch = self.batches[batch_id]
        held = (
            batch.status == IN_FLIGHT
            and batch.claimed
            and batch.lease_until > self.clock
            and self.run_status == "sending"
            and self.expires_at > self.clock
        )
        # Pull mode answers an operator set up for pull, for its own batches; one a push worker holds is not
        # handed out. An operator set up for push is refused outright: its batches go to its gateway.
        claimable = (
            caller == batch.operator
            and caller == PULLING
            and batch.status in (PENDING, RETRY_WAIT)
            and self.run_status == "sending"
            and self.expires_at > self.clock
        )
        response = self.clients[caller].post(f"/api/v1/operator/batches/{batch_id}/claim/")
        if caller != PULLING:
            assert response.status_code == 403, response.content
        elif caller == batch.operator and held:
            assert response.status_code == 200, response.content
        elif claimable:
            assert response.status_code == 200, response.content
            batch.status, batch.attempts, batch.claimed = IN_FLIGHT, batch.attempts + 1, True
            batch.lease_until = self.clock + timedelta(seconds=django_settings.DISPATCH_LEASE_SECONDS)
        else:
            assert response.status_code == 409, response.content
        if response.status_code == 200:
            recipients = response.json()["recipients"]
            assert [int(r["message_id"]) for r in recipients] == self._batch_deliveries(
                batch_id, QUEUED, SUBMITTED, *FINAL_DELIVERY - {SKIPPED}
            )
            for recipient in recipients:
                self.sent.setdefault((int(recipient["message_id"]), recipient["msisdn"]), set()).add(str(batch_id))
        self.check()

    @rule(data=st.data())
    def the_pulling_operator_acks(self, data):
        batch_id = data.draw(st.sampled_from(sorted(self.batches)), label="batch")
        caller = data.draw(st.sampled_from([PULLING, PULLING, "isat"]), label="caller")
        batch = self.batches[batch_id]
        handed = self._batch_deliveries(batch_id, QUEUED, SUBMITTED, *FINAL_DELIVERY - {SKIPPED})
        refused = data.draw(st.lists(st.sampled_from(handed), unique=True), label="refused") if handed else []
        body = {"rejected": [{"message_id": str(pk), "reason": "blacklisted"} for pk in refused]}
        if data.draw(st.booleans(), label="with count"):
            body["accepted"] = len(handed) - len(refused)
        response = self.clients[caller].post(f"/api/v1/operator/batches/{batch_id}/ack/", body, format="json")
        if caller != batch.operator:
            assert response.status_code == 409, response.content
        elif batch.status == ACCEPTED:
            assert response.status_code == 200, response.content
        elif batch.status == IN_FLIGHT or (batch.status in (PENDING, RETRY_WAIT) and batch.attempts > 0):
            assert response.status_code == 200, response.content
            self.m_accept(batch_id, refused)
        else:
            assert response.status_code == 409, response.content
        self.check()

    # --- the audience and the officer -----------------------------------------------------------

    @rule(data=st.data())
    def a_recipient_sends_stop(self, data):
        pk = data.draw(st.sampled_from(sorted(self.deliveries)), label="recipient")
        delivery = self.deliveries[pk]
        caller = data.draw(st.sampled_from([delivery["operator"], delivery["operator"], "isat"]), label="caller")
        response = self.clients[caller].post(
            "/api/v1/operator/inbound/", {"msisdn": delivery["msisdn"], "text": "STOP"}, format="json"
        )
        if caller != delivery["operator"]:
            assert response.status_code == 403, response.content
        else:
            assert response.status_code == 200, response.content
            if delivery["msisdn"] not in self.opted_out:
                self.opted_out.add(delivery["msisdn"])
                batch_id = delivery["batch"]
                batch = self.batches.get(batch_id)
                if (
                    batch is not None
                    and self.run_status in ("sending", "paused")
                    and batch.status == PENDING
                    and batch.attempts == 0
                    and delivery["status"] == QUEUED
                ):
                    delivery["status"] = SKIPPED
                    if not self._batch_deliveries(batch_id, QUEUED):
                        batch.status = ACCEPTED
        self.check()

    def _pause(self):
        ok = self.campaign_status == "sending"
        response = self.officer.post(f"/api/v1/campaigns/{self.campaign.pk}/pause/")
        assert response.status_code == (200 if ok else 409), response.content
        if ok:
            self.campaign_status = "paused"
            if self.run_status == "sending":
                self.run_status = "paused"

    def _resume(self):
        ok = self.campaign_status == "paused"
        response = self.officer.post(f"/api/v1/campaigns/{self.campaign.pk}/resume/")
        assert response.status_code == (200 if ok else 409), response.content
        if ok:
            self.campaign_status = "sending"
            if self.run_status == "paused":
                self.run_status = "sending"

    def _cancel(self):
        ok = self.campaign_status not in Campaign.FINAL_STATUSES
        response = self.officer.post(f"/api/v1/campaigns/{self.campaign.pk}/cancel/")
        assert response.status_code == (200 if ok else 409), response.content
        if ok:
            self.m_cancel()

    @rule(data=st.data())
    def the_officer_acts(self, data):
        """Pause or resume the campaign, or now and then cancel it."""
        act = data.draw(
            st.sampled_from([self._pause, self._pause, self._resume, self._resume, self._resume, self._cancel])
        )
        act()
        self.check()

    # --- what must hold after every step --------------------------------------------------------

    def check(self) -> None:
        now = self._snapshot()
        before, self.before = self.before, now

        # The database holds what the model predicts.
        model = {pk: d["status"] for pk, d in self.deliveries.items()}
        assert now["deliveries"] == model, _diff(now["deliveries"], model)
        assert now["batches"] == {pk: b.status for pk, b in self.batches.items()}, _diff(
            now["batches"], {pk: b.status for pk, b in self.batches.items()}
        )
        attempts = dict(DispatchBatch.objects.filter(run=self.run).values_list("pk", "attempts"))
        assert attempts == {pk: b.attempts for pk, b in self.batches.items()}
        assert (now["run"], now["campaign"]) == (self.run_status, self.campaign_status)

        # Statuses only move forward, batches along their graph.
        for pk, status in now["deliveries"].items():
            old = before["deliveries"][pk]
            assert status == old or status in DELIVERY_MOVES.get(old, ()), f"delivery {pk}: {old} → {status}"

        # Every state change of a batch, the run and the campaign wrote its AuditEvent, chained from→to.
        events = list(
            AuditEvent.objects.filter(id__gt=self.audit_seen)
            .exclude(to_state="")
            .order_by("id")
            .values_list("id", "object_type", "object_id", "from_state", "to_state", "action")
        )
        if events:
            self.audit_seen = events[-1][0]
        objects = [
            (("campaigns.dispatchbatch", str(pk)), before["batches"][pk], now["batches"][pk]) for pk in now["batches"]
        ]
        objects.append((("campaigns.campaignrun", str(self.run.pk)), before["run"], now["run"]))
        objects.append((("campaigns.campaign", str(self.campaign.pk)), before["campaign"], now["campaign"]))
        for key, old, new in objects:
            chain = [(f, t, action) for _, kind, oid, f, t, action in events if (kind, oid) == key]
            state = old
            for from_state, to_state, action in chain:
                assert from_state == state, f"{key} {action} audited from {from_state}, was {state}: {chain}"
                if key[0] == "campaigns.dispatchbatch":
                    assert to_state in BATCH_MOVES.get(state, ()), f"batch {key[1]} {action}: {state} → {to_state}"
                state = to_state
            assert state == new, f"{key} moved {old} → {new} but its audit trail says {chain}"

        # The progress the API shows counts the Delivery rows by (shown) status, per run and per operator.
        rows = Delivery.objects.filter(run=self.run).values_list("operator__slug", "status", "batch__status")
        overall, per_operator = Counter(), {}
        for slug, status, batch_status in rows:
            shown = SUBMITTED if status == QUEUED and batch_status == ACCEPTED else status
            overall[shown] += 1
            per_operator.setdefault(slug or "", Counter())[shown] += 1
        detail = self.officer.get(f"/api/v1/campaigns/{self.campaign.pk}/").json()["progress"]
        (listed,) = self.officer.get(f"/api/v1/campaigns/{self.campaign.pk}/runs/").json()["results"]
        for progress in (detail, listed):
            assert {k: v for k, v in progress["counts"].items() if v} == dict(overall)
            assert {op["slug"]: {k: v for k, v in op["counts"].items() if v} for op in progress["operators"]} == {
                slug: dict(counts) for slug, counts in per_operator.items()
            }
            assert progress["status"] == self.run_status
            assert progress["batches"] == dict(Counter(now["batches"].values()))
            pending = overall[QUEUED] + overall[SUBMITTED]
            assert (progress["recipients"], progress["delivered"], progress["pending"]) == (
                len(model),
                overall[DELIVERED],
                pending,
            )
            assert progress["done"] == (self.run_status in CampaignRun.FINAL_STATUSES)

        # At most one accepted send per recipient per run: a number goes out under one batch id however often.
        for (pk, msisdn), batch_ids in self.sent.items():
            assert len(batch_ids) == 1, f"message {pk} ({msisdn}) went out under batches {batch_ids}"
        assert len({msisdn for _, msisdn in self.sent}) == len(self.sent)

        # A finished run has every delivery final, and the campaign says whether any failed.
        if self.run_status in ("completed", "completed_with_failures"):
            assert set(model.values()) <= FINAL_DELIVERY
            failed = any(status in (FAILED, REJECTED) for status in model.values())
            assert self.run_status == ("completed_with_failures" if failed else "completed")
        # A cancelled run leaves nothing queued but what a worker or the operator may still hold.
        if self.run_status == "cancelled":
            for pk, d in self.deliveries.items():
                batch = self.batches.get(d["batch"])
                if d["status"] == QUEUED and batch.status != ACCEPTED:
                    assert batch.status not in FINAL_BATCH and batch.attempts > 0, f"delivery {pk} left queued"


def _diff(got: dict, expected: dict) -> dict:
    return {
        key: (got.get(key), expected.get(key)) for key in set(got) | set(expected) if got.get(key) != expected.get(key)
    }


@pytest.fixture
def redis_settings(settings, redis_client, redis_url, private_broker):
    settings.REDIS_URL = redis_url


def test_a_runs_deliveries_and_batches_move_as_the_model_predicts(redis_settings, api_client_for):
    RunMachine.client_for = staticmethod(api_client_for)
    run_state_machine_as_test(RunMachine, settings=hypothesis_settings(max_examples=20, stateful_step_count=30))
