"""Cellular operators (endpoints, credentials, limits and tariffs) and their area broadcasts."""

import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from smsblast.sealing import SealedTextField


class Operator(models.Model):
    """A cellular operator that receives batches (or area broadcasts) through an adapter."""

    name = models.CharField(max_length=100, verbose_name=_("name"))
    slug = models.SlugField(max_length=40, unique=True, verbose_name=_("slug"))
    # E.164 digit prefixes routed to this operator, e.g. ["62811", "62812"]; longest match wins.
    prefixes = models.JSONField(default=list, blank=True, verbose_name=_("prefixes"))
    adapter = models.CharField(max_length=40, default="http_batch_v1", verbose_name=_("adapter"))
    base_url = models.URLField(blank=True, verbose_name=_("base URL"))
    # Credentials we present to the operator; they must be readable to sign requests, so they are sealed at rest
    # (encrypted with a key derived from SECRET_KEY), not hashed. The admin form keeps them to 200 characters.
    api_key = SealedTextField(blank=True, verbose_name=_("API key"))
    signing_secret = SealedTextField(blank=True, verbose_name=_("signing secret"))
    segments_per_second = models.PositiveIntegerField(default=100, verbose_name=_("segments per second"))
    batch_size = models.PositiveIntegerField(default=1000, verbose_name=_("batch size"))
    tariff_per_segment = models.PositiveIntegerField(
        default=250, help_text=_("Rupiah per SMS segment."), verbose_name=_("tariff per segment")
    )
    active = models.BooleanField(default=True, verbose_name=_("active"))
    # Training ("exercise") area broadcasts go only to operators marked as test endpoints.
    is_test_endpoint = models.BooleanField(default=False, verbose_name=_("is test endpoint"))
    # Most polygon points the operator accepts for an area broadcast.
    vertex_limit = models.PositiveIntegerField(default=250, verbose_name=_("vertex limit"))
    # The operator's API identity for the inbound API (delivery reports, pull mode, MO messages).
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="operator",
        verbose_name=_("user"),
    )
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    class Meta:
        verbose_name = _("operator")
        verbose_name_plural = _("operators")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        """Return the Celery queue that carries this operator's batches."""
        return f"dispatch.{self.slug}"


class BroadcastSettings(models.Model):
    """Admin-settable figures for area broadcasts and CAP import; a single row (pk 1)."""

    # Share of residents who carry a phone that can receive the broadcast; multiplies population.
    phone_ownership_rate = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.850"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
        help_text=_("Handsets per resident, between 0 and 1."),
        verbose_name=_("phone ownership rate"),
    )
    # An imported CAP alert's text is cut to fit this many SMS segments.
    max_import_segments = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(10)], verbose_name=_("max import segments")
    )

    class Meta:
        verbose_name = _("broadcast settings")
        verbose_name_plural = _("broadcast settings")

    def __str__(self) -> str:
        return "Broadcast settings"

    def save(self, *args, **kwargs):
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> "BroadcastSettings":
        """Return the settings row, created with defaults the first time."""
        settings_row, _ = cls.objects.get_or_create(pk=1)
        return settings_row


class AreaBroadcast(models.Model):
    """One operator's provider message for one area-broadcast run; its id is the broadcast_id sent."""

    class State(models.TextChoices):
        PENDING = "pending", _("pending")  # created at the start of the window; nothing sent yet
        SENDING = "sending", _("sending")  # a send request is in flight
        ACKNOWLEDGED = "acknowledged", _("acknowledged")  # the operator took the broadcast; reach reports may arrive
        ERROR = "error", _("error, retrying")  # the last send failed transiently; retried at next_attempt_at
        # final: never acknowledged (budget spent, refused, window over)
        RETRIES_EXHAUSTED = "retries_exhausted", _("not acknowledged")
        # cancelled by us once the operator may hold it (acknowledged, or sent unanswered); the cancel is retried
        CANCEL_PENDING = "cancel_pending", _("cancelling")
        CANCELLED = "cancelled", _("cancelled")  # final: the operator confirmed the cancel, or nothing had been sent
        COMPLETED = "completed", _("completed")  # final: the window ended while acknowledged; reach figures stand

    FINAL_STATES = frozenset({State.RETRIES_EXHAUSTED, State.CANCELLED, State.COMPLETED})

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False, verbose_name=_("ID"))
    run = models.ForeignKey(
        "campaigns.CampaignRun", on_delete=models.CASCADE, related_name="area_broadcasts", verbose_name=_("run")
    )
    operator = models.ForeignKey(
        Operator, on_delete=models.PROTECT, related_name="area_broadcasts", verbose_name=_("operator")
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING, verbose_name=_("state"))
    # The area as sent to this operator: simplified to its vertex limit, frozen at the start of the window.
    area = models.JSONField(default=dict, verbose_name=_("area"))
    attempts = models.PositiveSmallIntegerField(default=0, verbose_name=_("attempts"))
    cancel_attempts = models.PositiveSmallIntegerField(default=0, verbose_name=_("cancel attempts"))
    next_attempt_at = models.DateTimeField(null=True, blank=True, verbose_name=_("next attempt at"))
    # Set when the campaign is cancelled; the cancel request waits for the operator's acknowledgement.
    cancel_requested_at = models.DateTimeField(null=True, blank=True, verbose_name=_("cancel requested at"))
    operator_ref = models.CharField(max_length=100, blank=True, verbose_name=_("operator ref"))
    # Cumulative handsets the operator reports as reached; only ever grows.
    handsets_reached = models.PositiveIntegerField(default=0, verbose_name=_("handsets reached"))
    reached_at = models.DateTimeField(null=True, blank=True, verbose_name=_("reached at"))
    last_error = models.TextField(blank=True, verbose_name=_("last error"))
    acknowledged_at = models.DateTimeField(null=True, blank=True, verbose_name=_("acknowledged at"))
    finished_at = models.DateTimeField(null=True, blank=True, verbose_name=_("finished at"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    class Meta:
        verbose_name = _("area broadcast")
        verbose_name_plural = _("area broadcasts")
        ordering = ["run", "operator__name"]
        constraints = [
            models.UniqueConstraint(fields=["run", "operator"], name="area_broadcast_once_per_operator"),
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="area_broadcast_due_idx")]

    def __str__(self) -> str:
        return f"{self.operator_id}:{self.id}"


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionDenied("This log is append-only.")

    def delete(self):
        raise PermissionDenied("This log is append-only.")


class AreaBroadcastEvent(models.Model):
    """An append-only entry of a provider message's status log."""

    broadcast = models.ForeignKey(
        AreaBroadcast, on_delete=models.CASCADE, related_name="events", verbose_name=_("broadcast")
    )
    state = models.CharField(max_length=20, choices=AreaBroadcast.State.choices, verbose_name=_("state"))
    at = models.DateTimeField(auto_now_add=True, verbose_name=_("at"))
    # What happened: HTTP status, error text, attempt number, operator reference.
    details = models.JSONField(default=dict, blank=True, verbose_name=_("details"))

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        verbose_name = _("area broadcast event")
        verbose_name_plural = _("area broadcast events")
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.broadcast_id} {self.get_state_display()}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionDenied("This log is append-only.")
        super().save(*args, **kwargs)


class AreaBroadcastReach(models.Model):
    """One reach report: cumulative handsets reached by one operator at a moment, for reach over time."""

    broadcast = models.ForeignKey(
        AreaBroadcast, on_delete=models.CASCADE, related_name="reach_reports", verbose_name=_("broadcast")
    )
    handsets_reached = models.PositiveIntegerField(verbose_name=_("handsets reached"))
    # When the operator counted, as it reported; received_at is when it reached us.
    at = models.DateTimeField(verbose_name=_("at"))
    received_at = models.DateTimeField(auto_now_add=True, verbose_name=_("received at"))

    class Meta:
        verbose_name = _("area broadcast reach")
        verbose_name_plural = _("area broadcast reaches")
        ordering = ["at", "id"]
        constraints = [
            # A repeated report is stored once, which makes the report endpoint idempotent.
            models.UniqueConstraint(fields=["broadcast", "at", "handsets_reached"], name="area_reach_once"),
        ]

    def __str__(self) -> str:
        return f"{self.broadcast_id} {self.handsets_reached}"
