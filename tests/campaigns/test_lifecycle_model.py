"""The campaign lifecycle against a plain model of it: hypothesis drives campaigns through the officer and approver
API as every kind of user, moves the clock to start due runs, and checks after each step that the API and the
database hold what the model expects (DESIGN.md, State and Invariants 1, 2 and 6).

Refused actions answer 4xx with a message and change nothing; each state change writes exactly one audit event
naming its actor, action and states; an edit of an approved campaign voids its approval; nobody approves what
they wrote; and no run starts without an approval of exactly the content it sends.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from datetime import timezone as fixed_zone
from unittest import mock

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import Phase
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from campaigns import dispatch
from campaigns.models import Approval, Campaign, CampaignRun
from smsblast.models import AuditEvent, Role, area_common_ancestor
from smsblast.models import area_code_within as within
from smsblast.roles import user_role_set
from tests.smsblast.factories import AreaFactory, UserFactory, area_tree

Status = Campaign.Status
RunStatus = CampaignRun.Status
WIB = fixed_zone(timedelta(hours=7))
# A Monday, 08:00 WIB: the clock every example starts from, moved on by each step.
START = datetime(2030, 3, 4, 1, 0, tzinfo=UTC)
STEP = timedelta(minutes=1)
DAILY_AT = time(13, 0)

# name: (role, jurisdiction). `dual` changes role between officer, approver and admin as the machine decides.
USERS = {
    "officer": (Role.OFFICER, "35.05"),
    "officer2": (Role.OFFICER, "35.05"),
    "officer_malang": (Role.OFFICER, "35.07"),
    "approver": (Role.APPROVER, "35.05"),
    "approver_all": (Role.APPROVER, None),
    "admin": (Role.ADMIN, None),
    "operator": (Role.OPERATOR, None),
    "dual": (Role.OFFICER, "35.05"),
}
STAFF = {Role.OFFICER, Role.APPROVER, Role.ADMIN}
FINAL = {Status.COMPLETED, Status.COMPLETED_WITH_FAILURES, Status.CANCELLED}
EDITABLE = {Status.DRAFT, Status.REJECTED, Status.APPROVED, Status.SCHEDULED}
APPROVED_STATES = {Status.APPROVED, Status.SCHEDULED, Status.SENDING}
ACTIVE_RUN = {RunStatus.PENDING, RunStatus.FANNING_OUT, RunStatus.SENDING, RunStatus.PAUSED}
MAX_CAMPAIGNS = 6
MAX_LIVE_CAMPAIGNS = 3

TITLES = ["Covid-19 Blitar", "Vaksinasi massal"]
TEXTS = [
    "Tetap pakai masker dan jaga jarak.",
    "Vaksinasi gratis di puskesmas terdekat, Senin 08:00.",
    "Hindari kerumunan. Info: covid19.go.id",
]
SENDERS = ["PEMKAB", "SATGAS-COVID", "PEMKAB", ""]  # a blank sender is a draft that cannot be submitted
AREAS = [["35.05"], ["35.05.01"], ["35.05.01", "35.05.02"], ["35.07"]]
AUDIENCES = [{}, {"languages": ["id"]}, {"languages": ["jv"]}]
SCHEDULES = ["now", "once_tomorrow", "once_in_three_days", "daily"]

# None stands for the user entitled to the action (see CampaignLifecycle.entitled), drawn as often as all others.
users = st.one_of(st.none(), st.sampled_from(sorted(USERS)))
campaign_index = st.integers(min_value=0, max_value=MAX_CAMPAIGNS - 1)
edits = st.one_of(
    st.tuples(st.just("title"), st.sampled_from(TITLES)),
    st.tuples(st.just("text"), st.sampled_from(TEXTS)),
    st.tuples(st.just("sender"), st.sampled_from(SENDERS)),
    st.tuples(st.just("area_codes"), st.sampled_from(AREAS)),
    st.tuples(st.just("audience"), st.sampled_from(AUDIENCES)),
    st.tuples(st.just("schedule"), st.sampled_from(SCHEDULES)),
)


class Refused(Exception):
    """What the model expects the API to answer instead of doing the action."""

    def __init__(self, status_code: int, why: str):
        super().__init__(f"{status_code}: {why}")
        self.status_code = status_code


@dataclass
class ModelApproval:
    decision: str
    approver: str
    content: str  # the content key it was given on
    voided: bool = False


@dataclass
class ModelRun:
    scheduled_for: datetime
    content: str
    status: str = RunStatus.FANNING_OUT
    fanout_done: bool = False
    id: int | None = None


@dataclass
class ModelCampaign:
    id: int
    author: str
    status: str
    content: dict
    next_run_at: datetime | None = None
    approvals: list[ModelApproval] = field(default_factory=list)
    runs: list[ModelRun] = field(default_factory=list)
    cowriters: set[str] = field(default_factory=set)  # users whose edit changed its content
    checked: tuple = ()  # its signature when the API was last read

    @property
    def key(self) -> str:
        return content_key(self.content)

    @property
    def scope(self) -> str:
        return area_common_ancestor(self.content["area_codes"])

    def signature(self) -> tuple:
        approvals = tuple((approval.decision, approval.voided) for approval in self.approvals)
        return (self.status, self.key, self.next_run_at, approvals, tuple(run.status for run in self.runs))

    def approval_valid(self) -> bool:
        current = [a for a in self.approvals if not a.voided]
        return bool(current) and current[-1].decision == "approved" and current[-1].content == self.key

    def active_runs(self) -> list[ModelRun]:
        return [run for run in self.runs if run.status in ACTIVE_RUN]

    def awaits_reports(self) -> bool:
        """A sending recurring campaign whose runs were all handed over may be edited (see campaign_update)."""
        return (
            self.status == Status.SENDING
            and self.content["schedule"].get("kind") == "daily"
            and all(run.status == RunStatus.SENDING and run.fanout_done for run in self.active_runs())
        )


def content_key(content: dict) -> str:
    return json.dumps(content, sort_keys=True)


def meaning(schedule: dict) -> dict:
    return schedule or {"kind": "now"}


def daily_at_or_after(moment: datetime, *, strictly: bool) -> datetime:
    candidate = datetime.combine(moment.astimezone(WIB).date(), DAILY_AT, tzinfo=WIB).astimezone(UTC)
    if candidate < moment or (strictly and candidate == moment):
        candidate += timedelta(days=1)
    return candidate


def first_start(schedule: dict, now: datetime) -> datetime | None:
    """When a campaign armed at `now` first runs (no quiet hours, normal priority), or None if never."""
    schedule = meaning(schedule)
    if schedule["kind"] == "now":
        return now
    if schedule["kind"] == "once":
        at = datetime.fromisoformat(schedule["at"]).replace(tzinfo=WIB).astimezone(UTC)
        return at if at >= now else None
    return daily_at_or_after(now, strictly=False)


class CampaignLifecycle(RuleBasedStateMachine):
    """Campaigns of Kab. Blitar driven through the API; `world` (users, clients) is set by the test."""

    world: dict = {}

    def __init__(self):
        super().__init__()
        # Each example runs in a savepoint rolled back by teardown: the users made once stay, the rest goes.
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self.clock = START
        self._clock_patch = mock.patch.object(timezone, "now", lambda: self.clock)
        self._clock_patch.start()
        self.campaigns: list[ModelCampaign] = []
        self.roles = {name: role for name, (role, _) in USERS.items()}
        self.hashes: dict[str, str] = {}  # content key -> content hash the API answered for it
        self.last_event = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        self.last_run = CampaignRun.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def teardown(self):
        self._clock_patch.stop()
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    # --- who may see and do what ---------------------------------------------------------------

    def user(self, name: str):
        return self.world["users"][name]

    def client(self, name: str):
        return self.world["clients"][name]

    def jurisdiction(self, name: str) -> str | None:
        return None if self.roles[name] == Role.ADMIN else USERS[name][1]

    def visible(self, name: str, campaign: ModelCampaign) -> bool:
        return self.roles[name] in STAFF and within(campaign.scope, self.jurisdiction(name))

    def writes(self, name: str, campaign: ModelCampaign) -> bool:
        """Edit and submit: the author as an officer, or an admin."""
        role = self.roles[name]
        return role == Role.ADMIN or (role == Role.OFFICER and campaign.author == name)

    def dispatches(self, name: str, campaign: ModelCampaign) -> bool:
        """Schedule, pause and resume: the author as an officer, an approver or an admin."""
        return self.roles[name] in {Role.ADMIN, Role.APPROVER} or (
            self.roles[name] == Role.OFFICER and campaign.author == name
        )

    def allowed_actions(self, name: str, campaign: ModelCampaign) -> list[str]:
        """Return what the campaign's page offers the user, in the order the API lists it."""
        role, wrote = self.roles[name], name == campaign.author or name in campaign.cowriters
        offered = {
            "update": self.writes(name, campaign) and (campaign.status in EDITABLE or campaign.awaits_reports()),
            "submit": self.writes(name, campaign) and campaign.status == Status.DRAFT,
            "approve": role == Role.APPROVER and not wrote and campaign.status == Status.PENDING_APPROVAL,
            "reject": role == Role.APPROVER and not wrote and campaign.status == Status.PENDING_APPROVAL,
            "cancel": self.dispatches(name, campaign) and campaign.status not in FINAL,
        }
        return [action for action, yes in offered.items() if yes]

    def entitled(self, campaign: ModelCampaign, *, decides: bool = False) -> str:
        """Return a user who may act on the campaign: an approver who did not write it, or its author or an admin."""
        if decides:
            return next(
                (
                    name
                    for name in ("approver", "approver_all")
                    if self.visible(name, campaign) and name not in campaign.cowriters
                ),
                "approver_all",
            )
        if self.roles[campaign.author] == Role.OFFICER and self.visible(campaign.author, campaign):
            return campaign.author
        return "admin"

    def live(self) -> list[ModelCampaign]:
        """Return the unfinished campaigns: the rules act on these, as a finished one changes no more."""
        return [campaign for campaign in self.campaigns if campaign.status not in FINAL]

    def pick(self, index: int) -> ModelCampaign:
        live = self.live()
        return live[index % len(live)]

    def schedule_value(self, name: str) -> dict:
        local_day = self.clock.astimezone(WIB).date()
        if name == "now":
            return {"kind": "now"}
        if name == "daily":
            return {"kind": "daily", "time": DAILY_AT.strftime("%H:%M")}
        days = 1 if name == "once_tomorrow" else 3
        return {"kind": "once", "at": f"{(local_day + timedelta(days=days)).isoformat()}T10:00"}

    # --- expectations --------------------------------------------------------------------------

    def event(self, campaign, actor, action, from_state, to_state):
        return ("campaigns.campaign", str(campaign.id), actor, action, from_state, to_state)

    def run_event(self, run: ModelRun, actor, action, from_state, to_state):
        return ("campaigns.campaignrun", run, actor, action, from_state, to_state)

    def plan_edit(self, name: str, campaign: ModelCampaign, changes: dict, *, stale_hash: bool = False):
        """Return what an edit by `name` does (new content, next state, events), or raise Refused."""
        if not self.writes(name, campaign):
            raise Refused(403, "only the author or an admin edits")
        if campaign.status not in EDITABLE and not campaign.awaits_reports():
            raise Refused(409, f"an edit of a {campaign.status} campaign")
        if stale_hash:
            raise Refused(409, "edited on a version changed since")
        content = dict(campaign.content)
        for name_, value in changes.items():
            if name_ == "schedule" and meaning(value) == meaning(content["schedule"]):
                continue  # the same send, kept as it was stored
            content[name_] = sorted(value) if name_ == "area_codes" else value
        if "area_codes" in changes and not all(within(code, self.jurisdiction(name)) for code in changes["area_codes"]):
            raise Refused(400, "a target outside the editor's jurisdiction")
        changed = content != campaign.content
        if not changed and campaign.status != Status.REJECTED:
            return content, campaign.status, []
        to_state = campaign.status
        if campaign.status == Status.REJECTED or (changed and campaign.status in APPROVED_STATES):
            to_state = Status.DRAFT
        return content, to_state, [self.event(campaign, name, "campaign.update", campaign.status, to_state)]

    def apply_edit(self, name: str, campaign: ModelCampaign, content: dict, to_state: str) -> None:
        if content != campaign.content:
            campaign.cowriters.add(name)
        if to_state == Status.DRAFT and campaign.status in APPROVED_STATES:
            for approval in campaign.approvals:
                if approval.decision == "approved":
                    approval.voided = True
        if to_state != campaign.status:
            campaign.next_run_at = None
        campaign.content, campaign.status = content, to_state

    def cancel_runs(self, campaign: ModelCampaign, actor) -> list:
        events = []
        for run in campaign.active_runs():
            events.append(self.run_event(run, actor, "run.cancel", run.status, RunStatus.CANCELLED))
            run.status = RunStatus.CANCELLED
        return events

    # --- checking an answer --------------------------------------------------------------------

    def snapshot(self):
        return (
            list(Campaign.objects.order_by("pk").values()),
            list(Approval.objects.order_by("pk").values()),
            list(CampaignRun.objects.order_by("pk").values()),
            AuditEvent.objects.count(),
        )

    def call(self, plan, request):
        """Make the request; a refused one must answer the planned 4xx with a message and change nothing.

        `plan` returns the expected status code and a function applying the action to the model (with the
        events it expects), or raises Refused.
        """
        before = self.snapshot()
        try:
            status_code, apply = plan()
        except Refused as refusal:
            response = request()
            assert response.status_code == refusal.status_code, (str(refusal), response.content)
            assert response.json()["detail"], response.content
            assert self.snapshot() == before, f"refused ({refusal}) yet changed"
            self.check_events([])
            return response
        response = request()
        assert response.status_code == status_code, response.content
        self.check_events(apply(response))
        return response

    def check_events(self, expected: list) -> None:
        """The audit events written since the last step are exactly the expected ones (invariant 6)."""
        new_runs = list(CampaignRun.objects.filter(id__gt=self.last_run).order_by("id"))
        for run in new_runs:
            matches = [
                model_run
                for campaign in self.campaigns
                if campaign.id == run.campaign_id
                for model_run in campaign.runs
                if model_run.id is None and model_run.scheduled_for == run.scheduled_for
            ]
            assert len(matches) == 1, f"run {run.pk} of campaign {run.campaign_id} at {run.scheduled_for} not expected"
            matches[0].id = run.pk
        self.last_run = max([self.last_run, *(run.pk for run in new_runs)])
        assert all(run.id is not None for campaign in self.campaigns for run in campaign.runs), (
            "an expected run is missing"
        )
        events = list(AuditEvent.objects.filter(id__gt=self.last_event).select_related("actor").order_by("id"))
        written = sorted(
            (e.object_type, e.object_id, e.actor.username if e.actor else None, e.action, e.from_state, e.to_state)
            for e in events
        )
        wanted = sorted(
            (kind, str(obj.id) if isinstance(obj, ModelRun) else obj, *rest) for kind, obj, *rest in expected
        )
        assert written == wanted
        self.last_event = max([self.last_event, *(e.pk for e in events)])

    def tick(self) -> None:
        self.clock += STEP

    # --- rules: the API --------------------------------------------------------------------------

    @initialize(
        name=st.sampled_from(["officer", "officer2", "dual"]),
        area=st.sampled_from(AREAS[:3]),
        schedule=st.none() | st.sampled_from(SCHEDULES),
        steps=st.integers(min_value=0, max_value=9),
    )
    def first_campaign(self, name, area, schedule, steps):
        """Start each example from a campaign somewhere along its usual path."""
        self.create_as(
            name=name, title=TITLES[0], text=TEXTS[0], sender=SENDERS[0], area=area, audience={}, schedule=schedule
        )
        for _ in range(steps):
            self.advance_one(self.campaigns[0])

    @precondition(lambda self: len(self.campaigns) < MAX_CAMPAIGNS and len(self.live()) < MAX_LIVE_CAMPAIGNS)
    @rule(
        name=users,
        title=st.sampled_from(TITLES),
        text=st.sampled_from(TEXTS),
        sender=st.sampled_from(SENDERS),
        area=st.sampled_from(AREAS),
        audience=st.sampled_from(AUDIENCES),
        schedule=st.none() | st.sampled_from(SCHEDULES),
    )
    def create(self, name, title, text, sender, area, audience, schedule):
        self.create_as(
            name=name or "officer",
            title=title,
            text=text,
            sender=sender,
            area=area,
            audience=audience,
            schedule=schedule,
        )

    def create_as(self, *, name, title, text, sender, area, audience, schedule):
        self.tick()
        body = {
            "title": title,
            "text": text,
            "sender": sender,
            "mode": "targeted",
            "priority": "normal",
            "area_codes": area,
            "audience_filter": audience,
        }
        if schedule is not None:
            body["schedule"] = self.schedule_value(schedule)

        def plan():
            if self.roles[name] not in {Role.OFFICER, Role.ADMIN}:
                raise Refused(403, "only an officer or an admin creates")
            if not all(within(code, self.jurisdiction(name)) for code in area):
                raise Refused(400, "a target outside the author's jurisdiction")

            def apply(response):
                content = {
                    "title": title,
                    "text": text,
                    "sender": sender,
                    "area_codes": sorted(area),
                    "audience": audience,
                    "schedule": body.get("schedule", {}),
                }
                campaign = ModelCampaign(id=response.json()["id"], author=name, status=Status.DRAFT, content=content)
                self.campaigns.append(campaign)
                return [self.event(campaign, name, "campaign.create", "", Status.DRAFT)]

            return 201, apply

        self.call(plan, lambda: self.client(name).post("/api/v1/campaigns/", body, format="json"))

    @precondition(lambda self: self.live())
    @rule(name=users, index=campaign_index, edit=edits, with_hash=st.sampled_from([None, "current", "stale"]))
    def edit(self, name, index, edit, with_hash):
        campaign = self.pick(index)
        self.do_edit(name or self.entitled(campaign), campaign, edit=edit, with_hash=with_hash)

    def do_edit(self, name, campaign, edit, with_hash=None):
        self.tick()
        field_name, value = edit
        if field_name == "schedule":
            value = self.schedule_value(value)
        body = {"audience_filter" if field_name == "audience" else field_name: value}
        if with_hash == "current":
            body["content_hash"] = self.hash_of(campaign)
        elif with_hash == "stale":
            body["content_hash"] = self.stale_hash(campaign)

        def plan():
            if self.roles[name] not in {Role.OFFICER, Role.ADMIN}:
                raise Refused(403, "only an officer or an admin edits")
            if not self.visible(name, campaign):
                raise Refused(404, "outside the caller's jurisdiction")
            content, to_state, events = self.plan_edit(
                name, campaign, {field_name: value}, stale_hash=with_hash == "stale"
            )

            def apply(response):
                self.apply_edit(name, campaign, content, to_state)
                return events

            return 200, apply

        self.call(plan, lambda: self.client(name).patch(f"/api/v1/campaigns/{campaign.id}/", body, format="json"))

    @precondition(lambda self: self.live())
    @rule(name=users, index=campaign_index)
    def submit(self, name, index):
        campaign = self.pick(index)
        self.do_submit(name or self.entitled(campaign), campaign)

    def do_submit(self, name, campaign):
        self.tick()

        def plan():
            if self.roles[name] not in {Role.OFFICER, Role.ADMIN}:
                raise Refused(403, "only an officer or an admin submits")
            if not self.visible(name, campaign):
                raise Refused(404, "outside the caller's jurisdiction")
            if not self.writes(name, campaign):
                raise Refused(403, "only the author or an admin submits")
            if campaign.status != Status.DRAFT:
                raise Refused(409, f"a submit of a {campaign.status} campaign")
            if not campaign.content["sender"]:
                raise Refused(400, "no sender")

            def apply(response):
                campaign.status = Status.PENDING_APPROVAL
                return [self.event(campaign, name, "campaign.submit", Status.DRAFT, Status.PENDING_APPROVAL)]

            return 200, apply

        self.call(plan, lambda: self.client(name).post(f"/api/v1/campaigns/{campaign.id}/submit/"))

    def hash_of(self, campaign: ModelCampaign) -> str:
        """Return the content hash the API answers for the campaign's current content (read once per content)."""
        if campaign.key not in self.hashes:
            detail = self.client("admin").get(f"/api/v1/campaigns/{campaign.id}/").json()
            self.hashes[campaign.key] = detail["content_hash"]
        return self.hashes[campaign.key]

    def stale_hash(self, campaign: ModelCampaign) -> str:
        current = self.hash_of(campaign)
        return next((value for value in self.hashes.values() if value != current), "f" * 64)

    @precondition(lambda self: self.live())
    @rule(name=users, index=campaign_index, hash_kind=st.sampled_from(["current", "current", "stale", "missing"]))
    def approve(self, name, index, hash_kind):
        campaign = self.pick(index)
        self.do_approve(name or self.entitled(campaign, decides=True), campaign, hash_kind=hash_kind)

    def do_approve(self, name, campaign, hash_kind):
        self.tick()
        body = {}
        if hash_kind == "current":
            body["content_hash"] = self.hash_of(campaign)
        elif hash_kind == "stale":
            body["content_hash"] = self.stale_hash(campaign)

        def plan():
            if self.roles[name] != Role.APPROVER:
                raise Refused(403, "only an approver approves")
            if not self.visible(name, campaign):
                raise Refused(404, "outside the caller's jurisdiction")
            if hash_kind == "missing":
                raise Refused(400, "no content hash")
            if name == campaign.author or name in campaign.cowriters:
                raise Refused(403, "four eyes: the approver wrote it")
            if campaign.status != Status.PENDING_APPROVAL:
                raise Refused(409, f"an approval of a {campaign.status} campaign")
            if hash_kind == "stale":
                raise Refused(409, "the hash of another version")

            def apply(response):
                campaign.status = Status.APPROVED
                campaign.approvals.append(ModelApproval("approved", name, campaign.key))
                return [self.event(campaign, name, "campaign.approve", Status.PENDING_APPROVAL, Status.APPROVED)]

            return 200, apply

        self.call(
            plan, lambda: self.client(name).post(f"/api/v1/campaigns/{campaign.id}/approve/", body, format="json")
        )

    @precondition(lambda self: self.live())
    @rule(
        name=users,
        index=campaign_index,
        reason=st.sampled_from(["Sebutkan nomor hotline.", "Sebutkan nomor hotline.", "   ", None]),
    )
    def reject(self, name, index, reason):
        campaign = self.pick(index)
        self.do_reject(name or self.entitled(campaign, decides=True), campaign, reason=reason)

    def do_reject(self, name, campaign, reason):
        self.tick()
        body = {} if reason is None else {"reason": reason}

        def plan():
            if self.roles[name] != Role.APPROVER:
                raise Refused(403, "only an approver rejects")
            if not self.visible(name, campaign):
                raise Refused(404, "outside the caller's jurisdiction")
            if not (reason or "").strip():
                raise Refused(400, "no reason")
            if name == campaign.author or name in campaign.cowriters:
                raise Refused(403, "four eyes: the approver wrote it")
            if campaign.status != Status.PENDING_APPROVAL:
                raise Refused(409, f"a rejection of a {campaign.status} campaign")

            def apply(response):
                campaign.status = Status.REJECTED
                campaign.approvals.append(ModelApproval("rejected", name, campaign.key))
                return [self.event(campaign, name, "campaign.reject", Status.PENDING_APPROVAL, Status.REJECTED)]

            return 200, apply

        self.call(plan, lambda: self.client(name).post(f"/api/v1/campaigns/{campaign.id}/reject/", body, format="json"))

    @precondition(lambda self: self.live())
    @rule(name=users, index=campaign_index, schedule=st.none() | st.sampled_from(SCHEDULES))
    def schedule(self, name, index, schedule):
        """Arm an approved campaign (no body: with its approved schedule), or set a schedule, an edit otherwise."""
        campaign = self.pick(index)
        self.do_schedule(name or self.entitled(campaign), campaign, schedule=schedule)

    def do_schedule(self, name, campaign, schedule):
        self.tick()
        value = None if schedule is None else self.schedule_value(schedule)
        body = {} if value is None else {"schedule": value}

        def plan():
            if self.roles[name] not in STAFF:
                raise Refused(403, "operators do not schedule")
            if not self.visible(name, campaign):
                raise Refused(404, "outside the caller's jurisdiction")
            wanted = value
            if wanted is None:
                if campaign.status not in {Status.APPROVED, Status.SCHEDULED}:
                    if not self.dispatches(name, campaign):
                        raise Refused(403, "only the author, an approver or an admin arms")
                    raise Refused(409, f"arming a {campaign.status} campaign")
                wanted = meaning(campaign.content["schedule"])
            first = first_start(wanted, self.clock)
            if first is None:
                raise Refused(400, "no run after now")
            same = meaning(campaign.content["schedule"]) == meaning(wanted)
            if campaign.status in {Status.APPROVED, Status.SCHEDULED} and same:
                if not self.dispatches(name, campaign):
                    raise Refused(403, "only the author, an approver or an admin arms")
                if campaign.status == Status.SCHEDULED:
                    return 200, lambda response: []
                if not campaign.approval_valid():
                    raise Refused(409, "the approval no longer matches")

                def arm(response):
                    campaign.status, campaign.next_run_at = Status.SCHEDULED, first
                    return [self.event(campaign, name, "campaign.schedule", Status.APPROVED, Status.SCHEDULED)]

                return 200, arm
            content, to_state, events = self.plan_edit(name, campaign, {"schedule": wanted})

            def apply(response):
                self.apply_edit(name, campaign, content, to_state)
                return events

            return 200, apply

        self.call(
            plan, lambda: self.client(name).post(f"/api/v1/campaigns/{campaign.id}/schedule/", body, format="json")
        )

    @precondition(lambda self: self.live())
    @rule(name=users, index=campaign_index, reason=st.sampled_from(["", "Data keliru."]))
    def cancel(self, name, index, reason):
        campaign = self.pick(index)
        self.do_cancel(name or self.entitled(campaign), campaign, reason=reason)

    def do_cancel(self, name, campaign, reason):
        self.tick()

        def plan():
            if self.roles[name] not in STAFF:
                raise Refused(403, "operators do not cancel")
            if not self.visible(name, campaign):
                raise Refused(404, "outside the caller's jurisdiction")
            if not self.dispatches(name, campaign):
                raise Refused(403, "only the author, an approver or an admin cancels")
            if campaign.status in FINAL:
                raise Refused(409, f"a cancel of a {campaign.status} campaign")

            def apply(response):
                events = [self.event(campaign, name, "campaign.cancel", campaign.status, Status.CANCELLED)]
                events += self.cancel_runs(campaign, name)
                campaign.status, campaign.next_run_at = Status.CANCELLED, None
                return events

            return 200, apply

        self.call(
            plan,
            lambda: self.client(name).post(
                f"/api/v1/campaigns/{campaign.id}/cancel/", {"reason": reason}, format="json"
            ),
        )

    @precondition(lambda self: self.live())
    @rule(name=users, index=campaign_index)
    def pause(self, name, index):
        campaign = self.pick(index)
        self.do_pause(name or self.entitled(campaign), campaign)

    def do_pause(self, name, campaign):
        self.tick()

        def plan():
            if self.roles[name] not in STAFF:
                raise Refused(403, "operators do not pause")
            if not self.visible(name, campaign):
                raise Refused(404, "outside the caller's jurisdiction")
            if not self.dispatches(name, campaign):
                raise Refused(403, "only the author, an approver or an admin pauses")
            if campaign.status != Status.SENDING:
                raise Refused(409, f"a pause of a {campaign.status} campaign")

            def apply(response):
                events = [self.event(campaign, name, "campaign.pause", Status.SENDING, Status.PAUSED)]
                for run in campaign.runs:
                    if run.status in {RunStatus.FANNING_OUT, RunStatus.SENDING}:
                        events.append(self.run_event(run, name, "run.pause", run.status, RunStatus.PAUSED))
                        run.status = RunStatus.PAUSED
                campaign.status = Status.PAUSED
                return events

            return 200, apply

        self.call(plan, lambda: self.client(name).post(f"/api/v1/campaigns/{campaign.id}/pause/"))

    @precondition(lambda self: self.live())
    @rule(name=users, index=campaign_index)
    def resume(self, name, index):
        campaign = self.pick(index)
        self.do_resume(name or self.entitled(campaign), campaign)

    def do_resume(self, name, campaign):
        self.tick()

        def plan():
            if self.roles[name] not in STAFF:
                raise Refused(403, "operators do not resume")
            if not self.visible(name, campaign):
                raise Refused(404, "outside the caller's jurisdiction")
            if not self.dispatches(name, campaign):
                raise Refused(403, "only the author, an approver or an admin resumes")
            if campaign.status != Status.PAUSED:
                raise Refused(409, f"a resume of a {campaign.status} campaign")

            def apply(response):
                paused = [run for run in campaign.runs if run.status == RunStatus.PAUSED]
                to_state = Status.SENDING if paused else Status.SCHEDULED
                events = [self.event(campaign, name, "campaign.resume", Status.PAUSED, to_state)]
                for run in paused:
                    run.status = RunStatus.SENDING if run.fanout_done else RunStatus.FANNING_OUT
                    events.append(self.run_event(run, name, "run.resume", RunStatus.PAUSED, run.status))
                campaign.status = to_state
                return events

            return 200, apply

        self.call(plan, lambda: self.client(name).post(f"/api/v1/campaigns/{campaign.id}/resume/"))

    @precondition(lambda self: self.live())
    @rule(index=campaign_index, steps=st.integers(min_value=1, max_value=5))
    def advance(self, index, steps):
        """Take the campaign a few steps along its usual path, each as the user entitled to it."""
        campaign = self.pick(index)
        for _ in range(steps):
            if campaign.status in FINAL:
                break
            self.advance_one(campaign)

    def advance_one(self, campaign: ModelCampaign) -> None:
        if campaign.status == Status.DRAFT and not campaign.content["sender"]:
            self.do_edit(self.entitled(campaign), campaign, ("sender", "PEMKAB"))
        elif campaign.status == Status.DRAFT:
            self.do_submit(self.entitled(campaign), campaign)
        elif campaign.status == Status.REJECTED:
            self.do_edit(self.entitled(campaign), campaign, ("text", TEXTS[1]))
        elif campaign.status == Status.PENDING_APPROVAL:
            self.do_approve(self.entitled(campaign, decides=True), campaign, "current")
        elif campaign.status == Status.APPROVED:
            self.do_schedule(self.entitled(campaign), campaign, None)
        elif campaign.status == Status.PAUSED:
            self.do_resume(self.entitled(campaign), campaign)
        elif any(run.status == RunStatus.FANNING_OUT for run in campaign.runs):
            self.do_fan_out(campaign)
        elif any(run.fanout_done and run.status in ACTIVE_RUN for run in campaign.runs):
            self.do_runs_complete(campaign)
        elif campaign.status in {Status.SCHEDULED, Status.SENDING} and campaign.next_run_at:
            self.do_time_passes(timedelta(0))

    # --- rules: outside the API ----------------------------------------------------------------

    @rule(role=st.sampled_from([Role.OFFICER, Role.APPROVER, Role.ADMIN]))
    def dual_changes_role(self, role):
        """The `dual` user is given another role: an author or co-writer turned approver still may not approve."""
        self.tick()
        events = []
        if role != self.roles["dual"]:
            user = self.user("dual")
            events = [("smsblast.user", str(user.pk), None, "user.role_set", self.roles["dual"], role)]
        user_role_set(user=self.user("dual"), role=role)
        self.roles["dual"] = role
        self.check_events(events)

    def startable(self) -> list[ModelCampaign]:
        return [c for c in self.campaigns if c.status in {Status.SCHEDULED, Status.SENDING} and c.next_run_at]

    @precondition(lambda self: self.startable())
    @rule(late=st.sampled_from([timedelta(0), timedelta(0), timedelta(hours=3), timedelta(days=1, hours=1)]))
    def time_passes_and_due_runs_start(self, late):
        """Move the clock to the earliest next run (or later) and start what is due, as the beat does."""
        self.do_time_passes(late)

    def do_time_passes(self, late):
        self.clock = max(self.clock + STEP, min(c.next_run_at for c in self.startable()) + late)
        now = self.clock
        events = []
        for campaign in self.startable():
            if campaign.next_run_at > now:
                continue
            if not campaign.approval_valid():
                # Invariant 1: nothing is sent; a scheduled campaign goes back to draft.
                if campaign.status == Status.SCHEDULED:
                    # Back in draft it must be approved again: the approval that no longer matches is void.
                    for approval in campaign.approvals:
                        approval.voided = approval.voided or approval.decision == "approved"
                    events.append(
                        self.event(campaign, None, "campaign.dispatch_refused", Status.SCHEDULED, Status.DRAFT)
                    )
                    campaign.status, campaign.next_run_at = Status.DRAFT, None
                continue
            scheduled_for, next_run_at = campaign.next_run_at, None
            if campaign.content["schedule"].get("kind") == "daily":
                while (later := daily_at_or_after(scheduled_for, strictly=True)) <= now:
                    scheduled_for = later
                next_run_at = daily_at_or_after(max(scheduled_for, now), strictly=True)
                if now - scheduled_for > next_run_at - now:
                    events.append(
                        self.event(campaign, None, "campaign.occurrences_skip", campaign.status, campaign.status)
                    )
                    campaign.next_run_at = next_run_at
                    continue
            run = ModelRun(scheduled_for=scheduled_for, content=campaign.key)
            campaign.runs.append(run)
            events.append(self.event(campaign, None, "campaign.run_start", campaign.status, Status.SENDING))
            events.append(self.run_event(run, None, "run.start", "", RunStatus.FANNING_OUT))
            campaign.status, campaign.next_run_at = Status.SENDING, next_run_at
        new_runs = [run for campaign in self.campaigns for run in campaign.runs if run.id is None]
        started = dispatch.runs_start_due()
        self.check_events(events)
        assert sorted(started) == sorted(run.id for run in new_runs)

    @precondition(lambda self: any(run.status == RunStatus.FANNING_OUT for c in self.campaigns for run in c.runs))
    @rule(index=campaign_index)
    def fan_out(self, index):
        """A worker writes the recipients of the campaign's runs (none in the area: the runs only wait for reports)."""
        self.do_fan_out(self.pick(index))

    def do_fan_out(self, campaign):
        self.tick()
        events = []
        for run in campaign.runs:
            if run.status in {RunStatus.FANNING_OUT, RunStatus.PAUSED} and not run.fanout_done:
                if run.status == RunStatus.FANNING_OUT:
                    events.append(self.run_event(run, None, "run.fanned_out", RunStatus.FANNING_OUT, RunStatus.SENDING))
                    run.status = RunStatus.SENDING
                run.fanout_done = True
                dispatch.run_fan_out(run_id=run.id)
        self.check_events(events)

    @precondition(
        lambda self: any(run.fanout_done and run.status in ACTIVE_RUN for c in self.campaigns for run in c.runs)
    )
    @rule(index=campaign_index)
    def runs_complete(self, index):
        """Every message of the campaign's fanned-out runs is final: they complete and the campaign follows."""
        self.do_runs_complete(self.pick(index))

    def do_runs_complete(self, campaign):
        self.tick()
        events = []
        for run in campaign.runs:
            if run.status not in {RunStatus.SENDING, RunStatus.PAUSED} or not run.fanout_done:
                continue
            events.append(self.run_event(run, None, "run.complete", run.status, RunStatus.COMPLETED))
            run.status = RunStatus.COMPLETED
            dispatch.run_check_complete(run_id=run.id)
            if campaign.active_runs():
                continue
            if campaign.next_run_at is not None:
                to_state, from_states = Status.SCHEDULED, {Status.SENDING}
            else:
                to_state, from_states = Status.COMPLETED, {Status.SENDING, Status.PAUSED}
            if campaign.status in from_states:
                events.append(self.event(campaign, None, "campaign.run_complete", campaign.status, to_state))
                campaign.status = to_state
        self.check_events(events)

    def approved(self) -> list[ModelCampaign]:
        """Return the approved campaigns, scheduled ones only when there are any: dispatch re-checks those next."""
        approved = [
            c for c in self.campaigns if c.status in {Status.APPROVED, Status.SCHEDULED, Status.SENDING, Status.PAUSED}
        ]
        return [c for c in approved if c.status == Status.SCHEDULED] or approved

    @precondition(lambda self: self.approved())
    @rule(index=campaign_index, text=st.sampled_from(TEXTS))
    def content_changed_outside_the_services(self, index, text):
        """The text of an approved campaign is changed in the database, past every service (a repair gone wrong)."""
        self.tick()
        approved = self.approved()
        campaign = approved[index % len(approved)]
        Campaign.objects.filter(pk=campaign.id).update(text=text)
        campaign.content = {**campaign.content, "text": text}

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def the_api_answers_the_models_state(self):
        listed = self.client("admin").get("/api/v1/campaigns/", {"limit": 50}).json()["results"]
        assert {row["id"]: row["status"] for row in listed} == {c.id: c.status for c in self.campaigns}
        for campaign in self.campaigns:
            # A campaign the model holds unchanged was read already; a refused action was checked to change nothing.
            if campaign.checked == campaign.signature():
                continue
            campaign.checked = campaign.signature()
            detail = self.client("admin").get(f"/api/v1/campaigns/{campaign.id}/").json()
            content = {
                "title": detail["title"],
                "text": detail["text"],
                "sender": detail["sender"],
                "area_codes": detail["area_codes"],
                "audience": detail["audience_filter"],
                "schedule": detail["schedule"],
            }
            assert (detail["status"], content) == (campaign.status, campaign.content)
            assert detail["allowed_actions"] == self.allowed_actions("admin", campaign)
            for name in {self.entitled(campaign), self.entitled(campaign, decides=True)}:
                if self.visible(name, campaign):
                    offered = self.client(name).get(f"/api/v1/campaigns/{campaign.id}/").json()["allowed_actions"]
                    assert offered == self.allowed_actions(name, campaign), name
            # One hash per content, another for any other content.
            known = self.hashes.setdefault(campaign.key, detail["content_hash"])
            assert detail["content_hash"] == known
            assert list(self.hashes.values()).count(known) == 1
            stored = Campaign.objects.get(pk=campaign.id)
            assert stored.next_run_at == campaign.next_run_at
            latest = campaign.approvals[-1] if campaign.approvals else None
            shown = detail["approval"]
            if latest is None:
                assert shown is None
            else:
                assert (shown["decision"], shown["approver"], shown["voided_at"] is not None) == (
                    latest.decision,
                    latest.approver,
                    latest.voided,
                )
                assert shown["valid"] == (
                    latest.decision == "approved" and not latest.voided and latest.content == campaign.key
                )

    @invariant()
    def approvals_and_runs_are_the_models(self):
        for campaign in self.campaigns:
            approvals = list(Approval.objects.filter(campaign_id=campaign.id).select_related("approver").order_by("id"))
            assert [(a.decision, a.approver.username, a.content_hash, a.voided_at is not None) for a in approvals] == [
                (a.decision, a.approver, self.hashes[a.content], a.voided) for a in campaign.approvals
            ]
            runs = list(CampaignRun.objects.filter(campaign_id=campaign.id).order_by("id"))
            assert [(r.id, r.status, r.fanout_done, r.scheduled_for, r.content_hash, r.text) for r in runs] == [
                (r.id, r.status, r.fanout_done, r.scheduled_for, self.hashes[r.content], json.loads(r.content)["text"])
                for r in campaign.runs
            ]

    @invariant()
    def four_eyes(self):
        """Invariant 2: every approval was given by an approver who neither wrote nor edited the campaign."""
        for campaign in self.campaigns:
            for approval in campaign.approvals:
                assert approval.approver != campaign.author
        author_ids = dict(Campaign.objects.values_list("pk", "author_id"))
        for campaign_id, approver_id in Approval.objects.values_list("campaign_id", "approver_id"):
            assert approver_id != author_ids[campaign_id]

    @invariant()
    def every_run_sends_approved_content(self):
        """Invariant 1: each run's content hash is that of an approval of its campaign given before it started."""
        for run in CampaignRun.objects.select_related("campaign"):
            assert Approval.objects.filter(
                campaign=run.campaign,
                decision=Approval.Decision.APPROVED,
                content_hash=run.content_hash,
                created_at__lte=run.started_at,
            ).exists(), f"run {run.pk} sends content nobody approved"

    @invariant()
    def only_an_approved_campaign_holds_an_approval_in_force(self):
        """A campaign in draft, waiting for approval or rejected holds no approval that is not void."""
        in_force = set(
            Approval.objects.filter(decision=Approval.Decision.APPROVED, voided_at__isnull=True).values_list(
                "campaign_id", flat=True
            )
        )
        for campaign in self.campaigns:
            if campaign.status in {Status.DRAFT, Status.PENDING_APPROVAL, Status.REJECTED}:
                assert campaign.id not in in_force, f"campaign {campaign.id} is {campaign.status} yet approved"


@pytest.mark.django_db
def test_the_campaign_lifecycle_follows_its_model(settings, redis_client, redis_url, api_client_for):
    settings.REDIS_URL = redis_url
    area_tree()
    AreaFactory(code="35.07", name="Kabupaten Malang")
    made = {}
    for name, (role, jurisdiction) in USERS.items():
        made[name] = UserFactory(username=name, role=role, jurisdiction_id=jurisdiction)
    CampaignLifecycle.world = {"users": made, "clients": {name: api_client_for(user) for name, user in made.items()}}
    run_state_machine_as_test(
        CampaignLifecycle,
        settings=hypothesis_settings(
            max_examples=20,
            stateful_step_count=30,
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
        ),
    )
