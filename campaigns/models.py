"""Campaigns, approvals, runs, dispatch batches and per-recipient deliveries."""

from django.conf import settings
from django.db import models

from smsblast.ids import uuid7


class Mode(models.TextChoices):
    TARGETED = "targeted"  # the system holds the numbers and sends to each
    AREA_BROADCAST = "area_broadcast"  # operators send to every handset in or entering the area


class Priority(models.TextChoices):
    NORMAL = "normal"  # waits out quiet hours
    URGENT = "urgent"  # ignores quiet hours


class RepeatPolicy(models.TextChoices):
    ONCE_PER_WINDOW = "once_per_window"  # each handset receives the broadcast once per window
    ONCE_PER_DAY = "once_per_day"  # each handset again on each day of the window


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"  # editable by its author (or an admin); nothing can be sent
        PENDING_APPROVAL = "pending_approval"  # frozen until the approver approves or rejects
        APPROVED = "approved"  # an approval binds the current content hash; no schedule set yet
        SCHEDULED = "scheduled"  # approved and waiting for its next run time
        SENDING = "sending"  # a run is fanning out or pushing batches
        PAUSED = "paused"  # a run is halted; no new batch leaves until resumed
        COMPLETED = "completed"  # every delivery of the last run is final and none failed
        COMPLETED_WITH_FAILURES = "completed_with_failures"  # every delivery final, some failed
        REJECTED = "rejected"  # the approver sent it back with a reason; editing returns it to draft
        CANCELLED = "cancelled"  # stopped for good; unsent deliveries are cancelled

    FINAL_STATUSES = frozenset({Status.COMPLETED, Status.COMPLETED_WITH_FAILURES, Status.CANCELLED})

    title = models.CharField(max_length=200)
    text = models.TextField()
    sender = models.CharField(
        max_length=16, help_text="Alphanumeric sender ID, at most 16 characters; handsets show the first 11."
    )
    mode = models.CharField(max_length=20, choices=Mode.choices, default=Mode.TARGETED)
    # Kemendagri codes; each includes everything below it.
    area_codes = models.JSONField(default=list, blank=True)
    # A drawn GeoJSON polygon, instead of or besides codes.
    polygon = models.JSONField(null=True, blank=True)
    # The deepest area holding the whole target: its codes and the known boundary around its polygon ("" for
    # more than one province, or a polygon no known boundary holds); a campaign without a target yet belongs to
    # its author's jurisdiction. Set by the services; which officers and approvers see it follows from it.
    area_scope = models.CharField(max_length=13, blank=True, default="")
    # Audience filters for targeted mode, e.g. {"languages": ["id"]}; empty means everyone in the area.
    audience = models.JSONField(default=dict, blank=True)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    # Schedule as entered, local times in the area's zone, e.g.
    # {"kind": "daily", "time": "13:00", "weekday_times": {"4": "10:00"}, "until": "2021-12-31",
    #  "quiet_hours": {"start": "21:00", "end": "06:00"}}; empty means not scheduled yet.
    schedule = models.JSONField(default=dict, blank=True)
    # The next occurrence in UTC; the scheduler polls rows whose time has come.
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # How long an operator may take to deliver before undelivered messages expire.
    validity_minutes = models.PositiveIntegerField(default=24 * 60)

    # Area broadcast only.
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    repeat_policy = models.CharField(max_length=20, choices=RepeatPolicy.choices, default=RepeatPolicy.ONCE_PER_WINDOW)
    # Operator slugs to use; empty means every active operator.
    operator_slugs = models.JSONField(default=list, blank=True)
    exercise = models.BooleanField(default=False, help_text="Training campaign: test endpoints only.")

    # CAP 1.2 fields (area broadcast export); defaults follow priority.
    cap_category = models.CharField(max_length=20, default="Health")
    cap_event = models.CharField(max_length=200, blank=True)
    cap_urgency = models.CharField(max_length=20, blank=True)
    cap_severity = models.CharField(max_length=20, blank=True)
    cap_certainty = models.CharField(max_length=20, blank=True)
    instruction = models.TextField(blank=True)
    # Identifier of the CAP alert this draft was imported from, to match a later Cancel.
    cap_source_identifier = models.CharField(max_length=300, blank=True, db_index=True)
    cap_source_sender = models.CharField(max_length=300, blank=True)
    # [sender, identifier] of the messages an imported Update supersedes: a Cancel of the update ends them too.
    cap_source_references = models.JSONField(default=list, blank=True)

    status = models.CharField(max_length=32, choices=Status.choices, default=Status.DRAFT, db_index=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="campaigns")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.title


class Approval(models.Model):
    """An approver's decision on one exact version of a campaign (its content hash)."""

    class Decision(models.TextChoices):
        APPROVED = "approved"  # binds content_hash; dispatch re-checks it
        REJECTED = "rejected"  # reason says what to change

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    content_hash = models.CharField(max_length=64)
    reason = models.TextField(blank=True)
    # The campaign content as reviewed, so a resubmission can be diffed against it.
    snapshot = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when an edit voids the approval.
    voided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class CampaignRun(models.Model):
    """One occurrence of a campaign: its own recipients, batches and progress."""

    class Status(models.TextChoices):
        PENDING = "pending"  # due or waiting for quiet hours to end; nothing written yet
        FANNING_OUT = "fanning_out"  # deliveries and batches are being written
        SENDING = "sending"  # batches are being pushed to operators
        PAUSED = "paused"  # no new batch is leased until resumed
        COMPLETED = "completed"  # every delivery final, none failed
        COMPLETED_WITH_FAILURES = "completed_with_failures"  # every delivery final, some failed
        CANCELLED = "cancelled"  # stopped; unsent deliveries cancelled

    FINAL_STATUSES = frozenset({Status.COMPLETED, Status.COMPLETED_WITH_FAILURES, Status.CANCELLED})

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs")
    scheduled_for = models.DateTimeField()
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.PENDING, db_index=True)
    # What this run transmits, frozen at start and checked against the approval.
    content_hash = models.CharField(max_length=64)
    text = models.TextField()
    sender = models.CharField(max_length=16)
    segments = models.PositiveSmallIntegerField(default=1)
    encoding = models.CharField(max_length=4, default="GSM7")
    # Area broadcast: the area and window as sent.
    frozen = models.JSONField(default=dict, blank=True)
    # Fan-out resumes after the last subscriber id it wrote.
    fanout_cursor = models.BigIntegerField(default=0)
    fanout_done = models.BooleanField(default=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_progress_at = models.DateTimeField(null=True, blank=True)
    # When fan-out last wrote a chunk (or was started or resumed). Sends and reports move last_progress_at too,
    # so a fan-out that died is restarted by this mark alone.
    fanout_progress_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-scheduled_for", "-id"]
        constraints = [
            # A run never starts twice for the same occurrence.
            models.UniqueConstraint(fields=["campaign", "scheduled_for"], name="run_once_per_occurrence"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id}@{self.scheduled_for:%Y-%m-%d %H:%M}"


class DispatchBatch(models.Model):
    """Up to `operator.batch_size` recipients of one run for one operator; its id is the idempotency key."""

    class Status(models.TextChoices):
        PENDING = "pending"  # written by fan-out, waiting to be leased
        IN_FLIGHT = "in_flight"  # leased by a worker until lease_expires_at
        ACCEPTED = "accepted"  # the operator answered 202; its deliveries count as submitted
        RETRY_WAIT = "retry_wait"  # a transient error; leased again after next_attempt_at
        FAILED = "failed"  # permanent error or retry budget spent; deliveries failed
        CANCELLED = "cancelled"  # the run was cancelled before this batch was accepted

    FINAL_STATUSES = frozenset({Status.ACCEPTED, Status.FAILED, Status.CANCELLED})

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    run = models.ForeignKey(CampaignRun, on_delete=models.CASCADE, related_name="batches")
    operator = models.ForeignKey("operators.Operator", on_delete=models.PROTECT, related_name="batches")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    size = models.PositiveIntegerField(default=0)
    segments = models.PositiveIntegerField(default=0)  # size × segments per message
    attempts = models.PositiveSmallIntegerField(default=0)  # sends (leases) so far, throttled ones included
    # Attempts the operator answered 429 (slow down): they spend no retry budget, which counts the others.
    throttled = models.PositiveIntegerField("throttled (429)", default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    accepted_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["run", "status"], name="batch_run_status_idx"),
            models.Index(fields=["status", "lease_expires_at"], name="batch_lease_idx"),
        ]


class Delivery(models.Model):
    """One recipient of one run; its id is the message_id the operator reports against."""

    class Status(models.TextChoices):
        QUEUED = "queued"  # written at fan-out; counts as submitted once its batch is accepted
        SUBMITTED = "submitted"  # the operator reported it submitted
        DELIVERED = "delivered"  # final: reached the handset
        UNDELIVERED = "undelivered"  # final: the operator could not deliver
        EXPIRED = "expired"  # final: no report within the validity window
        REJECTED = "rejected"  # final: the operator refused this number
        FAILED = "failed"  # final: its batch failed for good
        SKIPPED = "skipped"  # final: not sent (opted out, invalid, quiet-hours rule); reason says why
        CANCELLED = "cancelled"  # final: the run was cancelled before it was sent

    FINAL_STATUSES = frozenset(
        {
            Status.DELIVERED,
            Status.UNDELIVERED,
            Status.EXPIRED,
            Status.REJECTED,
            Status.FAILED,
            Status.SKIPPED,
            Status.CANCELLED,
        }
    )

    # Fan-out writes a million of these per run: every index and foreign-key trigger slows it. run is
    # indexed by the (run, msisdn) constraint and batch by delivery_batch_idx. No foreign key has a
    # database-level constraint: its per-row check (deferred to the commit) cost as much as the COPY
    # itself. The run and batch rows are written before or with their deliveries and deleted only through
    # the ORM, which cascades; operators are never deleted (PROTECT).
    run = models.ForeignKey(
        CampaignRun, on_delete=models.CASCADE, related_name="deliveries", db_index=False, db_constraint=False
    )
    batch = models.ForeignKey(
        DispatchBatch,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,
        db_constraint=False,
    )
    operator = models.ForeignKey(
        "operators.Operator",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    msisdn = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    reason = models.CharField(max_length=200, blank=True)
    operator_ref = models.CharField(max_length=100, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            # Invariant 3: at most one send per recipient per run.
            models.UniqueConstraint(fields=["run", "msisdn"], name="delivery_once_per_run"),
        ]
        indexes = [
            models.Index(fields=["batch"], name="delivery_batch_idx"),
            models.Index(fields=["run", "status"], name="delivery_run_status_idx"),
        ]
