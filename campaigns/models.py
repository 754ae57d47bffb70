"""Campaigns, approvals, runs, dispatch batches and per-recipient deliveries."""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from smsblast.ids import uuid7


class Mode(models.TextChoices):
    TARGETED = "targeted", _("targeted")  # the system holds the numbers and sends to each
    AREA_BROADCAST = "area_broadcast", _("area broadcast")  # operators send to every handset in or entering the area


class Priority(models.TextChoices):
    NORMAL = "normal", _("normal")  # waits out quiet hours
    URGENT = "urgent", _("urgent")  # ignores quiet hours


class RepeatPolicy(models.TextChoices):
    # each handset receives the broadcast once per window
    ONCE_PER_WINDOW = "once_per_window", _("once per handset in the window")
    ONCE_PER_DAY = "once_per_day", _("once per handset each day")  # each handset again on each day of the window


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("draft")  # editable by its author (or an admin); nothing can be sent
        # frozen until the approver approves or rejects
        PENDING_APPROVAL = "pending_approval", _("waiting for approval")
        APPROVED = "approved", _("approved")  # an approval binds the current content hash; no schedule set yet
        SCHEDULED = "scheduled", _("scheduled")  # approved and waiting for its next run time
        SENDING = "sending", _("sending")  # a run is fanning out or pushing batches
        PAUSED = "paused", _("paused")  # a run is halted; no new batch leaves until resumed
        COMPLETED = "completed", _("completed")  # every delivery of the last run is final and none failed
        # every delivery final, some failed
        COMPLETED_WITH_FAILURES = "completed_with_failures", _("completed with failures")
        REJECTED = "rejected", _("rejected")  # the approver sent it back with a reason; editing returns it to draft
        CANCELLED = "cancelled", _("cancelled")  # stopped for good; unsent deliveries are cancelled

    FINAL_STATUSES = frozenset({Status.COMPLETED, Status.COMPLETED_WITH_FAILURES, Status.CANCELLED})

    title = models.CharField(max_length=200, verbose_name=_("title"))
    text = models.TextField(verbose_name=_("text"))
    sender = models.CharField(
        max_length=16,
        help_text=_("Alphanumeric sender ID, at most 16 characters; handsets show the first 11."),
        verbose_name=_("sender"),
    )
    mode = models.CharField(max_length=20, choices=Mode.choices, default=Mode.TARGETED, verbose_name=_("mode"))
    # Kemendagri codes; each includes everything below it.
    area_codes = models.JSONField(default=list, blank=True, verbose_name=_("area codes"))
    # A drawn GeoJSON polygon, instead of or besides codes.
    polygon = models.JSONField(null=True, blank=True, verbose_name=_("polygon"))
    # The deepest area holding the whole target: its codes and the known boundary around its polygon ("" for
    # more than one province, or a polygon no known boundary holds); a campaign without a target yet belongs to
    # its author's jurisdiction. Set by the services; which officers and approvers see it follows from it.
    area_scope = models.CharField(max_length=13, blank=True, default="", verbose_name=_("area scope"))
    # Audience filters for targeted mode, e.g. {"languages": ["id"]}; empty means everyone in the area.
    audience = models.JSONField(default=dict, blank=True, verbose_name=_("audience"))
    priority = models.CharField(
        max_length=10, choices=Priority.choices, default=Priority.NORMAL, verbose_name=_("priority")
    )
    # Schedule as entered, local times in the area's zone, e.g.
    # {"kind": "daily", "time": "13:00", "weekday_times": {"4": "10:00"}, "until": "2021-12-31",
    #  "quiet_hours": {"start": "21:00", "end": "06:00"}}; empty means not scheduled yet.
    schedule = models.JSONField(default=dict, blank=True, verbose_name=_("schedule"))
    # The next occurrence in UTC; the scheduler polls rows whose time has come.
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True, verbose_name=_("next run at"))
    # How long an operator may take to deliver before undelivered messages expire.
    validity_minutes = models.PositiveIntegerField(default=24 * 60, verbose_name=_("validity minutes"))

    # Area broadcast only.
    starts_at = models.DateTimeField(null=True, blank=True, verbose_name=_("starts at"))
    ends_at = models.DateTimeField(null=True, blank=True, verbose_name=_("ends at"))
    repeat_policy = models.CharField(
        max_length=20,
        choices=RepeatPolicy.choices,
        default=RepeatPolicy.ONCE_PER_WINDOW,
        verbose_name=_("repeat policy"),
    )
    # Operator slugs to use; empty means every active operator.
    operator_slugs = models.JSONField(default=list, blank=True, verbose_name=_("operator slugs"))
    exercise = models.BooleanField(
        default=False, help_text=_("Training campaign: test endpoints only."), verbose_name=_("exercise")
    )

    # CAP 1.2 fields (area broadcast export); defaults follow priority.
    cap_category = models.CharField(max_length=20, default="Health", verbose_name=_("CAP category"))
    cap_event = models.CharField(max_length=200, blank=True, verbose_name=_("CAP event"))
    cap_urgency = models.CharField(max_length=20, blank=True, verbose_name=_("CAP urgency"))
    cap_severity = models.CharField(max_length=20, blank=True, verbose_name=_("CAP severity"))
    cap_certainty = models.CharField(max_length=20, blank=True, verbose_name=_("CAP certainty"))
    instruction = models.TextField(blank=True, verbose_name=_("instruction"))
    # Identifier of the CAP alert this draft was imported from, to match a later Cancel.
    cap_source_identifier = models.CharField(
        max_length=300, blank=True, db_index=True, verbose_name=_("CAP source identifier")
    )
    cap_source_sender = models.CharField(max_length=300, blank=True, verbose_name=_("CAP source sender"))
    # [sender, identifier] of the messages an imported Update supersedes: a Cancel of the update ends them too.
    cap_source_references = models.JSONField(default=list, blank=True, verbose_name=_("CAP source references"))

    status = models.CharField(
        max_length=32, choices=Status.choices, default=Status.DRAFT, db_index=True, verbose_name=_("status")
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="campaigns", verbose_name=_("author")
    )
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    class Meta:
        verbose_name = _("campaign")
        verbose_name_plural = _("campaigns")
        ordering = ["-created_at", "-id"]
        constraints = [
            # A CAP message (its sender and identifier) becomes one campaign per area, even when posted twice at
            # once; officers of regencies side by side each import their part (campaigns.cap_import).
            models.UniqueConstraint(
                fields=["cap_source_sender", "cap_source_identifier", "area_scope"],
                condition=~models.Q(cap_source_identifier=""),
                name="campaign_cap_source_once",
            ),
        ]

    def __str__(self) -> str:
        return self.title


class Approval(models.Model):
    """An approver's decision on one exact version of a campaign (its content hash)."""

    class Decision(models.TextChoices):
        APPROVED = "approved", _("approved")  # binds content_hash; dispatch re-checks it
        REJECTED = "rejected", _("rejected")  # reason says what to change

    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="approvals", verbose_name=_("campaign")
    )
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", verbose_name=_("approver")
    )
    decision = models.CharField(max_length=10, choices=Decision.choices, verbose_name=_("decision"))
    content_hash = models.CharField(max_length=64, verbose_name=_("content hash"))
    reason = models.TextField(blank=True, verbose_name=_("reason"))
    # The campaign content as reviewed, so a resubmission can be diffed against it.
    snapshot = models.JSONField(default=dict, verbose_name=_("snapshot"))
    # An approved area broadcast's area as GeoJSON geometries (its areas' boundaries and drawn polygon) when approved:
    # its window sends this, so a boundary edited afterwards does not move what was approved (invariant 1).
    area_shapes = models.JSONField(null=True, blank=True, verbose_name=_("area shapes"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    # Set when an edit voids the approval.
    voided_at = models.DateTimeField(null=True, blank=True, verbose_name=_("voided at"))

    class Meta:
        verbose_name = _("approval")
        verbose_name_plural = _("approvals")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.campaign_id} {self.get_decision_display()}"


class CampaignRun(models.Model):
    """One occurrence of a campaign: its own recipients, batches and progress."""

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")  # due or waiting for quiet hours to end; nothing written yet
        FANNING_OUT = "fanning_out", _("preparing recipients")  # deliveries and batches are being written
        SENDING = "sending", _("sending")  # batches are being pushed to operators
        PAUSED = "paused", _("paused")  # no new batch is leased until resumed
        COMPLETED = "completed", _("completed")  # every delivery final, none failed
        # every delivery final, some failed
        COMPLETED_WITH_FAILURES = "completed_with_failures", _("completed with failures")
        CANCELLED = "cancelled", _("cancelled")  # stopped; unsent deliveries cancelled

    FINAL_STATUSES = frozenset({Status.COMPLETED, Status.COMPLETED_WITH_FAILURES, Status.CANCELLED})

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs", verbose_name=_("campaign"))
    scheduled_for = models.DateTimeField(verbose_name=_("scheduled for"))
    status = models.CharField(
        max_length=32, choices=Status.choices, default=Status.PENDING, db_index=True, verbose_name=_("status")
    )
    # What this run transmits, frozen at start and checked against the approval.
    content_hash = models.CharField(max_length=64, verbose_name=_("content hash"))
    text = models.TextField(verbose_name=_("text"))
    sender = models.CharField(max_length=16, verbose_name=_("sender"))
    segments = models.PositiveSmallIntegerField(default=1, verbose_name=_("segments"))
    encoding = models.CharField(max_length=4, default="GSM7", verbose_name=_("encoding"))
    # Area broadcast: the area and window as sent.
    frozen = models.JSONField(default=dict, blank=True, verbose_name=_("frozen"))
    # Fan-out resumes after the last subscriber id it wrote.
    fanout_cursor = models.BigIntegerField(default=0, verbose_name=_("fan-out cursor"))
    fanout_done = models.BooleanField(default=False, verbose_name=_("fan-out done"))
    started_at = models.DateTimeField(null=True, blank=True, verbose_name=_("started at"))
    finished_at = models.DateTimeField(null=True, blank=True, verbose_name=_("finished at"))
    expires_at = models.DateTimeField(null=True, blank=True, verbose_name=_("expires at"))
    last_progress_at = models.DateTimeField(null=True, blank=True, verbose_name=_("last progress at"))
    # When fan-out last wrote a chunk (or was started or resumed). Sends and reports move last_progress_at too,
    # so a fan-out that died is restarted by this mark alone.
    fanout_progress_at = models.DateTimeField(null=True, blank=True, verbose_name=_("fan-out progress at"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))

    class Meta:
        verbose_name = _("campaign run")
        verbose_name_plural = _("campaign runs")
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
        PENDING = "pending", _("pending")  # written by fan-out, waiting to be leased
        IN_FLIGHT = "in_flight", _("being sent")  # leased by a worker until lease_expires_at
        # the operator answered 202; its deliveries count as submitted
        ACCEPTED = "accepted", _("accepted by the operator")
        RETRY_WAIT = "retry_wait", _("waiting to retry")  # a transient error; leased again after next_attempt_at
        FAILED = "failed", _("failed")  # permanent error or retry budget spent; deliveries failed
        CANCELLED = "cancelled", _("cancelled")  # the run was cancelled before this batch was accepted

    FINAL_STATUSES = frozenset({Status.ACCEPTED, Status.FAILED, Status.CANCELLED})

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False, verbose_name=_("ID"))
    run = models.ForeignKey(CampaignRun, on_delete=models.CASCADE, related_name="batches", verbose_name=_("run"))
    operator = models.ForeignKey(
        "operators.Operator", on_delete=models.PROTECT, related_name="batches", verbose_name=_("operator")
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, verbose_name=_("status"))
    size = models.PositiveIntegerField(default=0, verbose_name=_("size"))
    segments = models.PositiveIntegerField(default=0, verbose_name=_("segments"))  # size × segments per message
    attempts = models.PositiveSmallIntegerField(
        default=0, verbose_name=_("attempts")
    )  # sends (leases) so far, throttled ones included
    # Attempts the operator answered 429 (slow down): they spend no retry budget, which counts the others.
    throttled = models.PositiveIntegerField(_("throttled (429)"), default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True, verbose_name=_("lease expires at"))
    next_attempt_at = models.DateTimeField(null=True, blank=True, verbose_name=_("next attempt at"))
    accepted_count = models.PositiveIntegerField(default=0, verbose_name=_("accepted count"))
    last_error = models.TextField(blank=True, verbose_name=_("last error"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))
    accepted_at = models.DateTimeField(null=True, blank=True, verbose_name=_("accepted at"))

    class Meta:
        verbose_name = _("dispatch batch")
        verbose_name_plural = _("dispatch batches")
        indexes = [
            models.Index(fields=["run", "status"], name="batch_run_status_idx"),
            models.Index(fields=["status", "lease_expires_at"], name="batch_lease_idx"),
            # The operators page reads each operator's recent batches and its last error, whatever the history
            # behind them (a batch per thousand recipients, kept for good).
            models.Index(fields=["operator", "updated_at"], name="batch_operator_recent_idx"),
            models.Index(
                fields=["operator", "updated_at"], condition=~models.Q(last_error=""), name="batch_operator_error_idx"
            ),
        ]

    def __str__(self) -> str:
        return str(self.id)


class Delivery(models.Model):
    """One recipient of one run; its id is the message_id the operator reports against."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")  # written at fan-out; counts as submitted once its batch is accepted
        SUBMITTED = "submitted", _("submitted")  # the operator reported it submitted
        DELIVERED = "delivered", _("delivered")  # final: reached the handset
        UNDELIVERED = "undelivered", _("undelivered")  # final: the operator could not deliver
        EXPIRED = "expired", _("expired")  # final: no report within the validity window
        REJECTED = "rejected", _("rejected")  # final: the operator refused this number
        FAILED = "failed", _("failed")  # final: its batch failed for good
        SKIPPED = "skipped", _("skipped")  # final: not sent (opted out, invalid, quiet-hours rule); reason says why
        CANCELLED = "cancelled", _("cancelled")  # final: the run was cancelled before it was sent

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
        CampaignRun,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,
        db_constraint=False,
        verbose_name=_("run"),
    )
    batch = models.ForeignKey(
        DispatchBatch,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,
        db_constraint=False,
        verbose_name=_("batch"),
    )
    operator = models.ForeignKey(
        "operators.Operator",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
        verbose_name=_("operator"),
    )
    msisdn = models.CharField(max_length=16, verbose_name=_("MSISDN"))
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, verbose_name=_("status"))
    reason = models.CharField(max_length=200, blank=True, verbose_name=_("reason"))
    operator_ref = models.CharField(max_length=100, blank=True, verbose_name=_("operator ref"))
    error_code = models.CharField(max_length=40, blank=True, verbose_name=_("error code"))
    done_at = models.DateTimeField(null=True, blank=True, verbose_name=_("done at"))
    updated_at = models.DateTimeField(null=True, blank=True, verbose_name=_("updated at"))

    class Meta:
        verbose_name = _("delivery")
        verbose_name_plural = _("deliveries")
        constraints = [
            # Invariant 3: at most one send per recipient per run.
            models.UniqueConstraint(fields=["run", "msisdn"], name="delivery_once_per_run"),
        ]
        indexes = [
            models.Index(fields=["batch"], name="delivery_batch_idx"),
            models.Index(fields=["run", "status"], name="delivery_run_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} {self.msisdn}"


class RunSummary(models.Model):
    """A run's figures, kept when the retention policy removes its deliveries (each recipient's number and state).

    Written in one transaction, from the deliveries themselves, before the first of them is deleted. From then on
    every page, API answer and report reads the run's figures here, whatever rows are still left to delete: a
    pass cut off midway is finished by the next one, and nothing shows a mix of the two.
    """

    run = models.OneToOneField(
        CampaignRun, on_delete=models.CASCADE, primary_key=True, related_name="summary", verbose_name=_("run")
    )
    # What the readers counted from the deliveries (campaigns.retention.run_figures): counts by operator, status,
    # batch and reason, the delivered messages over time, and the recipients by home area. No number.
    figures = models.JSONField(default=dict, verbose_name=_("figures"))
    recipients = models.PositiveIntegerField(default=0, verbose_name=_("recipients"))
    # The retention in force: deliveries of runs that ended before the cutoff are removed.
    retention_days = models.PositiveIntegerField(verbose_name=_("retention days"))
    cutoff = models.DateTimeField(verbose_name=_("cutoff"))
    created_at = models.DateTimeField(verbose_name=_("created at"))
    removed = models.PositiveBigIntegerField(default=0, verbose_name=_("deliveries removed"))
    # Null while deliveries of the run remain to be deleted.
    removed_at = models.DateTimeField(null=True, blank=True, verbose_name=_("removed at"))

    class Meta:
        verbose_name = _("run summary")
        verbose_name_plural = _("run summaries")

    def __str__(self) -> str:
        return str(self.run_id)
