"""Core records: users and roles, areas, subscribers and imports, API tokens, notifications and the audit trail."""

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from smsblast.sealing import SealedTextField


class Role(models.TextChoices):
    OFFICER = "officer", _("officer")  # Dinas Kominfo staff: composes, schedules, watches campaigns
    APPROVER = "approver", _("approver")  # Satgas chair: approves or rejects what officers submit
    OPERATOR = "operator", _("operator")  # a cellular operator, API only, scoped to its own data
    ADMIN = "admin", _("administrator")  # system administrator


class User(AbstractUser):
    """A person or an operator's API identity; the role is the user's group."""

    # The kabupaten/kota (or province) an officer or approver works for: they see, write and decide only
    # campaigns whose targets lie within it, and see and change only the subscribers homed within it.
    # Empty: the whole country. Admins are never limited.
    jurisdiction = models.ForeignKey(
        "Area",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text=_(
            "Officers and approvers see and target only campaigns within this area; empty for all of Indonesia."
        ),
        verbose_name=_("jurisdiction"),
    )

    @property
    def jurisdiction_code(self) -> str | None:
        """Return the code of the area this user's campaigns must lie within, or None when not limited."""
        if self.jurisdiction_id is None or self.has_role(Role.ADMIN):
            return None
        return self.jurisdiction_id

    def has_role(self, *roles: str) -> bool:
        if not self.is_active:
            return False
        if self.is_superuser and Role.ADMIN in roles:
            return True
        return self.role in roles

    @property
    def role(self) -> str | None:
        cached = getattr(self, "_role_cache", None)
        if cached is None:
            names = {g.name for g in self.groups.all()}
            cached = next((r.value for r in Role if r.value in names), "")
            if not cached and self.is_superuser:
                cached = Role.ADMIN.value
            self._role_cache = cached
        return cached or None


class ApiToken(models.Model):
    """A bearer token for the REST API; only its SHA-256 is stored."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens", verbose_name=_("user"))
    key_hash = models.CharField(max_length=64, unique=True, verbose_name=_("key hash"))
    # First characters of the key, so an admin can tell tokens apart without the secret.
    prefix = models.CharField(max_length=8, verbose_name=_("prefix"))
    name = models.CharField(max_length=100, blank=True, verbose_name=_("name"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    last_used_at = models.DateTimeField(null=True, blank=True, verbose_name=_("last used at"))
    revoked_at = models.DateTimeField(null=True, blank=True, verbose_name=_("revoked at"))

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self) -> str:
        return f"{self.user} {self.prefix}…"


class AreaLevel(models.TextChoices):
    PROVINSI = "provinsi", _("province")  # province, code "35"
    KABUPATEN = "kabupaten", _("regency or city")  # regency or city, code "35.05"
    KECAMATAN = "kecamatan", _("district")  # district, code "35.05.01"
    DESA = "desa", _("village")  # village or kelurahan, code "35.05.01.2001"


class AreaQuerySet(models.QuerySet):
    def within(self, codes) -> "AreaQuerySet":
        """Return the areas with these codes and everything below them (one indexed query)."""
        return self.filter(area_subtree_q("code", codes))


def area_subtree_q(field: str, codes) -> Q:
    """Return a Q matching `field` equal to any code or lying below it (dotted prefix)."""
    codes = list(codes)
    # One IN for the codes themselves, then one prefix test per code: SQLite refuses an expression over
    # 1,000 levels deep, which two ORed tests per code reach at 500 codes.
    q = Q(**{f"{field}__in": codes})
    for code in codes:
        q |= Q(**{f"{field}__startswith": f"{code}."})
    return q


def area_code_within(code: str, ancestor: str | None) -> bool:
    """Return whether an area code is `ancestor` or lies below it; every code lies within None or "" (Indonesia)."""
    return not ancestor or code == ancestor or code.startswith(f"{ancestor}.")


def area_common_ancestor(codes) -> str:
    """Return the deepest code every one of `codes` lies within ("" for codes of several provinces, or none)."""
    codes = [code.split(".") for code in codes]
    if not codes:
        return ""
    common = codes[0]
    for parts in codes[1:]:
        depth = 0
        while depth < min(len(common), len(parts)) and common[depth] == parts[depth]:
            depth += 1
        common = common[:depth]
    return ".".join(common)


class Area(models.Model):
    """A Kemendagri 2025 administrative area; its code is its key and its ancestry."""

    code = models.CharField(max_length=13, primary_key=True, verbose_name=_("code"))
    name = models.CharField(max_length=100, verbose_name=_("name"))
    # Lower-case, accent-free name for search.
    search_name = models.CharField(max_length=100, db_index=True, verbose_name=_("search name"))
    level = models.CharField(max_length=10, choices=AreaLevel.choices, verbose_name=_("level"))
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children", verbose_name=_("parent")
    )
    population = models.BigIntegerField(null=True, blank=True, verbose_name=_("population"))
    # GeoJSON geometry (Polygon or MultiPolygon, lng/lat) when a boundary is known.
    boundary = models.JSONField(null=True, blank=True, verbose_name=_("boundary"))

    objects = AreaQuerySet.as_manager()

    class Meta:
        verbose_name = _("area")
        verbose_name_plural = _("areas")
        ordering = ["code"]
        indexes = [
            # varchar_pattern_ops makes `code LIKE '35.05.%'` an index range scan on PostgreSQL.
            models.Index(fields=["code"], name="area_code_prefix_idx", opclasses=["varchar_pattern_ops"]),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"

    @property
    def province_code(self) -> str:
        return self.code.split(".")[0]


class Subscriber(models.Model):
    """A phone number that may receive targeted campaigns."""

    msisdn = models.CharField(max_length=16, verbose_name=_("MSISDN"))  # E.164, "+62812..."; unique (see Meta)
    # area_id holds the Kemendagri code itself, so subtree filters need no join. Indexed by
    # subscriber_area_prefix_idx alone, which serves equality as well as prefix lookups.
    area = models.ForeignKey(
        Area,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="subscribers",
        db_index=False,
        verbose_name=_("area"),
    )
    # No database constraint: a million-row import would pay a trigger per row for it, and the import
    # takes operators from the operator table itself. Django still applies SET_NULL when one is deleted.
    operator = models.ForeignKey(
        "operators.Operator",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="subscribers",
        db_constraint=False,
        verbose_name=_("operator"),
    )
    name = models.CharField(max_length=120, blank=True, verbose_name=_("name"))
    language = models.CharField(max_length=8, default="id", verbose_name=_("language"))
    opted_out_at = models.DateTimeField(null=True, blank=True, verbose_name=_("opted out at"))
    # When the number last asked back in by its own START or REG: a STOP received before it (an operator's late
    # delivery of an older message) changes nothing. Null until then; an officer's opt-in does not set it.
    opted_in_at = models.DateTimeField(null=True, blank=True, verbose_name=_("opted in at"))
    # Optional home coordinates, for polygon targeting.
    latitude = models.FloatField(null=True, blank=True, verbose_name=_("latitude"))
    longitude = models.FloatField(null=True, blank=True, verbose_name=_("longitude"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    class Meta:
        verbose_name = _("subscriber")
        verbose_name_plural = _("subscribers")
        indexes = [
            models.Index(fields=["area"], name="subscriber_area_prefix_idx", opclasses=["varchar_pattern_ops"]),
        ]
        constraints = [
            # A constraint rather than unique=True, which on PostgreSQL adds a second (LIKE) index that every
            # imported row would pay for.
            models.UniqueConstraint(fields=["msisdn"], name="subscriber_msisdn_unique"),
        ]

    def __str__(self) -> str:
        return self.msisdn


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionDenied("Audit events are append-only.")

    def delete(self):
        raise PermissionDenied("Audit events are append-only.")

    def bulk_update(self, *args, **kwargs):
        raise PermissionDenied("Audit events are append-only.")

    def bulk_create(self, objs, *args, update_conflicts: bool = False, **kwargs):
        # An insert that updates the row it conflicts with would rewrite an event.
        if update_conflicts:
            raise PermissionDenied("Audit events are append-only.")
        return super().bulk_create(objs, *args, **kwargs)


class AuditEvent(models.Model):
    """An append-only record of one state change: who, what, from, to, when."""

    actor = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.PROTECT, related_name="+", verbose_name=_("actor")
    )
    action = models.CharField(max_length=64, verbose_name=_("action"))
    object_type = models.CharField(max_length=64, verbose_name=_("object type"))
    object_id = models.CharField(max_length=64, verbose_name=_("object ID"))
    from_state = models.CharField(max_length=32, blank=True, verbose_name=_("from state"))
    to_state = models.CharField(max_length=32, blank=True, verbose_name=_("to state"))
    at = models.DateTimeField(auto_now_add=True, db_index=True, verbose_name=_("at"))
    details = models.JSONField(default=dict, blank=True, verbose_name=_("details"))

    objects = AuditQuerySet.as_manager()

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        # Django's own lookups go through the same refusing queryset, not a plain manager beside it.
        base_manager_name = "objects"
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object_idx")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.action} {self.object_type}#{self.object_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionDenied("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionDenied("Audit events are append-only.")


class SubscriberImport(models.Model):
    """One CSV file of subscribers being imported, with its progress and what it refused.

    The file is read in chunks; each chunk's rows, counts and `lines_done` commit together, so a job
    that stops half-way keeps whole chunks only and a rerun resumes after the last one.
    """

    class State(models.TextChoices):
        PENDING = "pending", _("pending")  # uploaded and checked, waiting for a worker
        RUNNING = "running", _("running")  # a worker is reading it; counts grow chunk by chunk
        COMPLETED = "completed", _("completed")  # every row read; counts are final
        FAILED = "failed", _("failed")  # stopped by an error (see `error`); a rerun resumes after `lines_done`
        STOPPED = "stopped", _("stopped")  # an officer stopped it (`error` empty); a rerun resumes after `lines_done`

    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING, verbose_name=_("state"))
    # Where the uploaded (or, from the command line, the given) file lies on the server.
    file_path = models.CharField(max_length=500, verbose_name=_("file path"))
    original_name = models.CharField(max_length=255, blank=True, verbose_name=_("original name"))
    # Every rejected row as CSV (line, reason, raw), beside the uploads; downloadable as rejected.csv.
    rejected_path = models.CharField(max_length=500, blank=True, verbose_name=_("rejected path"))
    uploaded_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", verbose_name=_("uploaded by")
    )
    # The jurisdiction of the officer who uploaded it ("" when not limited): its rows may only home subscribers
    # within it, and only users whose jurisdiction holds it see the job (smsblast.selectors.subscriber_imports_visible).
    area_scope = models.CharField(max_length=13, blank=True, default="", verbose_name=_("area scope"))
    # Bytes of the file, known at upload; progress is bytes_read / file_size (rows are unknown until read).
    file_size = models.BigIntegerField(default=0, verbose_name=_("file size"))
    # When the file was last modified (st_mtime_ns), known at upload: a resume skips the lines done by count, so
    # it refuses a file changed since (None for jobs from before it was kept: their size alone is compared).
    file_mtime_ns = models.BigIntegerField(null=True, blank=True, verbose_name=_("file modified"))
    bytes_read = models.BigIntegerField(default=0, verbose_name=_("bytes read"))
    # Physical lines of the file (header included) whose rows are committed; a rerun skips them.
    lines_done = models.PositiveIntegerField(default=0, verbose_name=_("lines done"))
    total_rows = models.PositiveIntegerField(
        null=True, blank=True, verbose_name=_("total rows")
    )  # data rows, known once completed
    rows_read = models.PositiveIntegerField(default=0, verbose_name=_("rows read"))
    created = models.PositiveIntegerField(default=0, verbose_name=_("created"))
    updated = models.PositiveIntegerField(default=0, verbose_name=_("updated"))
    duplicates = models.PositiveIntegerField(
        default=0, verbose_name=_("duplicates")
    )  # repeats of a number seen earlier in the same file
    rejected = models.PositiveIntegerField(default=0, verbose_name=_("rejected"))
    rejected_by_reason = models.JSONField(
        default=dict, blank=True, verbose_name=_("rejected by reason")
    )  # {"invalid": 12, "unknown_area": 3}
    error = models.TextField(blank=True, verbose_name=_("error"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    # Set when a run claims the job; a run writes only while the job still bears its start, so a run judged
    # dead and replaced cannot write beside the one that replaced it.
    started_at = models.DateTimeField(null=True, blank=True, verbose_name=_("started at"))
    finished_at = models.DateTimeField(null=True, blank=True, verbose_name=_("finished at"))
    # Last sign of life: queued, claimed, a chunk committed or read again. A pending or running job silent for
    # SUBSCRIBER_IMPORT_STALE_SECONDS lost its task or its worker, and may be resumed.
    heartbeat_at = models.DateTimeField(default=timezone.now, verbose_name=_("heartbeat at"))

    class Meta:
        verbose_name = _("subscriber import")
        verbose_name_plural = _("subscriber imports")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"import #{self.pk} {self.original_name or self.file_path}"


class SubscriberImportRejection(models.Model):
    """One of the first rejected or repeated rows of an import, kept for display; the rejected file lists them all."""

    subscriber_import = models.ForeignKey(
        SubscriberImport, on_delete=models.CASCADE, related_name="rejections", verbose_name=_("subscriber import")
    )
    line = models.PositiveIntegerField(verbose_name=_("line"))  # physical line in the file, header = 1
    raw = models.TextField(verbose_name=_("raw"))
    reason = models.CharField(max_length=32, verbose_name=_("reason"))
    # Of a number repeated in the file (reason "duplicate"): the line it was first accepted on; None otherwise.
    first_line = models.PositiveIntegerField(null=True, blank=True, verbose_name=_("first line"))

    class Meta:
        verbose_name = _("subscriber import rejection")
        verbose_name_plural = _("subscriber import rejections")
        ordering = ["line"]

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class Notification(models.Model):
    """An email to a user about something waiting for them or done for them, written with the change it reports.

    An outbox row: it commits with the change (a submit, an approval, a run's end), and a task sends it after
    the commit; the housekeeping task re-drives one whose task was lost or whose worker died.
    """

    class Status(models.TextChoices):
        READY = "ready", _("ready")  # committed with its change; a worker sends it next
        SENDING = "sending", _("sending")  # a worker is handing it to the mail server
        SENT = "sent", _("sent")  # the mail server took it
        FAILED = "failed", _("failed")  # no address, a deactivated user, or refused every attempt; `error` says why

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="notifications", verbose_name=_("user"))
    # What it is about, e.g. "campaign.submitted", and the id of that campaign or run, for the admin's filters.
    kind = models.CharField(max_length=40, verbose_name=_("kind"))
    object_id = models.CharField(max_length=64, blank=True, verbose_name=_("object ID"))
    subject = models.CharField(max_length=255, verbose_name=_("subject"))
    body = models.TextField(verbose_name=_("body"))
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY, verbose_name=_("status"))
    attempts = models.PositiveSmallIntegerField(default=0, verbose_name=_("attempts"))
    error = models.CharField(max_length=500, blank=True, verbose_name=_("error"))
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))
    updated_at = models.DateTimeField(default=timezone.now, verbose_name=_("updated at"))
    sent_at = models.DateTimeField(null=True, blank=True, verbose_name=_("sent at"))

    class Meta:
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "updated_at"], name="notification_status_idx")]

    def __str__(self) -> str:
        return f"{self.subject} → {self.user}"


class TwoFactorDevice(models.Model):
    """A user's authenticator app, confirmed with a first code, asked for at log-in (SMSBLAST_TWO_FACTOR_ROLES).

    Saved only once its first code was right; an admin's reset deletes it and the user enrols again.
    """

    user = models.OneToOneField(
        User, on_delete=models.CASCADE, related_name="two_factor_device", verbose_name=_("user")
    )
    # The shared secret (base32) the app computes codes from: shown once, at enrolment, and never in the admin.
    # Sealed at rest (smsblast.sealing): the server must read it to check codes, so it cannot be hashed.
    secret = SealedTextField(verbose_name=_("secret"))
    confirmed_at = models.DateTimeField(verbose_name=_("confirmed at"))
    # The 30-second step of the last code taken: a code of that step or an earlier one is refused (no replay).
    last_used_step = models.BigIntegerField(verbose_name=_("last used step"))

    class Meta:
        verbose_name = _("two-factor device")
        verbose_name_plural = _("two-factor devices")

    def __str__(self) -> str:
        return f"{self.user}"
