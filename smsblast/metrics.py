"""Figures a monitoring system scrapes: `GET /metrics` in the Prometheus text format, with a bearer token.

Off unless `METRICS_TOKEN` is set (the path is then an ordinary 404). Gauges only, each read when scraped from the
database and the broker with one indexed query apiece, so a scrape every 15 s costs nothing a run notices:

- `smsblast_up{part}`: 1 when the database, the broker (Redis) and the reconciler answer, and (`workers`) when a
  worker that fans out and sends marked itself in the last minute (see smsblast.health).
- `smsblast_campaigns{status}`, `smsblast_runs_unfinished{status}`.
- `smsblast_batches_unsent{operator,status}`: batches waiting, in flight or waiting to retry.
- `smsblast_batch_oldest_unsent_seconds`: how long the longest-waiting batch that could be sent now has waited
  since it became due; one that keeps growing is what to alert on (an operator down, no worker). Batches held on
  purpose do not count: those of a paused run, of a run in its quiet hours, or waiting until a later time (a retry's
  backoff, an operator's Retry-After, a deactivated operator).
- `smsblast_queue_tasks{queue}`: tasks waiting in each Celery queue (default, control, mail, one per operator).
- `smsblast_notifications_unsent{status}`: emails ready, being sent, or failed for good.

Answered before the rest of the middleware, as /healthz is: a scraper calls the app server directly, by address.
"""

import hmac
import logging

from django.conf import settings
from django.db import Error as DatabaseError
from django.db.models import Count, Min, Q
from django.db.models.functions import Coalesce
from django.http import HttpResponse
from django.utils import timezone

from smsblast.health import health_dispatch_workers, health_status

logger = logging.getLogger(__name__)

METRICS_PATHS = ("/metrics", "/metrics/")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

HELP = {
    "smsblast_up": "1 when the part answers: database, redis, reconciler and workers (marked in the last minute).",
    "smsblast_campaigns": "Campaigns by status.",
    "smsblast_runs_unfinished": "Runs not finished, by status.",
    "smsblast_batches_unsent": "Batches not accepted, failed or cancelled yet, by operator and status.",
    "smsblast_batch_oldest_unsent_seconds": (
        "Seconds the longest-waiting batch that could be sent now has waited since it became due (0 when none)."
    ),
    "smsblast_queue_tasks": "Tasks waiting in each Celery queue.",
    "smsblast_notifications_unsent": "Email notifications not sent: ready, sending or failed.",
}


def metrics_samples() -> dict[str, list[tuple[dict[str, str], float]]]:
    """Return each metric's samples as (labels, value); a part that cannot be read leaves its metrics out."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in HELP}
    health = health_status()
    for part, state in health.items():
        samples["smsblast_up"].append(({"part": part}, 1.0 if state == "ok" else 0.0))
    samples["smsblast_up"].append(({"part": "workers"}, 1.0 if health_dispatch_workers() == "ok" else 0.0))
    if health["database"] == "ok":
        try:
            _database_samples(samples)
        except DatabaseError as exc:
            logger.warning("Metrics: the database could not be read: %s", exc)
    if health["redis"] == "ok":
        samples["smsblast_queue_tasks"] = _queue_samples()
    return samples


def _database_samples(samples: dict) -> None:
    from campaigns.models import Campaign, CampaignRun, DispatchBatch
    from smsblast.models import Notification

    by_status = dict(Campaign.objects.order_by().values_list("status").annotate(n=Count("id")))
    samples["smsblast_campaigns"] = [({"status": s}, float(by_status.get(s, 0))) for s in Campaign.Status.values]
    runs = (
        CampaignRun.objects.exclude(status__in=CampaignRun.FINAL_STATUSES)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    )
    samples["smsblast_runs_unfinished"] = [({"status": status}, float(n)) for status, n in sorted(runs)]
    # The unsent statuses named, not the final ones excluded: the status index then finds the few unsent among a
    # year's batches, where an exclusion reads the whole table on every scrape.
    unsent_statuses = sorted(set(DispatchBatch.Status.values) - DispatchBatch.FINAL_STATUSES)
    unsent = DispatchBatch.objects.filter(status__in=unsent_statuses).order_by()
    batches = unsent.values_list("operator__slug", "status").annotate(n=Count("id"))
    samples["smsblast_batches_unsent"] = [
        ({"operator": slug, "status": status}, float(n)) for slug, status, n in sorted(batches)
    ]
    samples["smsblast_batch_oldest_unsent_seconds"] = [({}, _oldest_due_batch_age(unsent))]
    notifications = (
        Notification.objects.filter(status__in=sorted(set(Notification.Status.values) - {Notification.Status.SENT}))
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    )
    samples["smsblast_notifications_unsent"] = [({"status": status}, float(n)) for status, n in sorted(notifications)]


def _oldest_due_batch_age(unsent) -> float:
    """Return the seconds since the longest-waiting batch that could be sent now became due, or 0."""
    from campaigns.dispatch import is_quiet_for
    from campaigns.models import CampaignRun
    from operators.services import SENDABLE_RUN_STATUSES

    now = timezone.now()
    due = unsent.filter(run__status__in=SENDABLE_RUN_STATUSES).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    # A batch is due from its next attempt, or from when it was written; per run, as only a few runs send at once.
    oldest_by_run = dict(due.values_list("run_id").annotate(due_at=Min(Coalesce("next_attempt_at", "created_at"))))
    runs = CampaignRun.objects.filter(pk__in=oldest_by_run).only("id", "frozen")
    due_at = [oldest_by_run[run.pk] for run in runs if is_quiet_for(run, now) is None]
    return round(max((now - min(due_at)).total_seconds(), 0.0), 3) if due_at else 0.0


def _queue_samples() -> list[tuple[dict[str, str], float]]:
    from config.celery import app
    from operators.models import Operator

    queues = {settings.CELERY_TASK_DEFAULT_QUEUE}
    queues.update(route["queue"] for route in settings.CELERY_TASK_ROUTES.values() if "queue" in route)
    try:
        queues.update(Operator(slug=slug).queue for slug in Operator.objects.values_list("slug", flat=True))
    except DatabaseError:
        pass  # the database is down: the queues beat and the web use are still counted
    found = []
    try:
        with app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, interval_start=0)
            channel = broker.default_channel
            for queue in sorted(queues):
                found.append(({"queue": queue}, float(channel.queue_declare(queue=queue).message_count)))
    except Exception as exc:  # noqa: BLE001 - the broker's trouble is reported by smsblast_up, not by a 500
        logger.warning("Metrics: the Celery queues could not be counted: %s", exc)
    return found


def metrics_text(samples: dict[str, list[tuple[dict[str, str], float]]]) -> str:
    """Render samples in the Prometheus text exposition format (version 0.0.4)."""
    lines = []
    for name, rows in samples.items():
        lines.append(f"# HELP {name} {HELP[name]}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in rows:
            rendered = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
            number = _number(value)
            lines.append(f"{name}{{{rendered}}} {number}" if rendered else f"{name} {number}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    # Every digit: the "g" format keeps six, so 1,234,567 tasks would read 1.23457e+06.
    return str(int(value)) if value.is_integer() else repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class MetricsMiddleware:
    """Answer `GET /metrics` carrying `Authorization: Bearer <METRICS_TOKEN>`; without the setting, pass it on."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = settings.METRICS_TOKEN
        if not token or request.path_info not in METRICS_PATHS or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            hint = "Send Authorization: Bearer <METRICS_TOKEN>.\n"
            response = HttpResponse(hint, status=401, content_type=CONTENT_TYPE)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        response = HttpResponse(metrics_text(metrics_samples()), content_type=CONTENT_TYPE)
        response["Cache-Control"] = "no-store"
        return response
