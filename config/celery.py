"""Celery application: `celery -A config worker`."""

import logging
import os

from celery import Celery, bootsteps
from celery.signals import after_setup_logger, after_setup_task_logger, task_postrun, task_prerun

# Production unless told otherwise (`make run` and the tests say which): a deploy that forgets to say never
# runs with DEBUG on and a development key.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.prod")

app = Celery("smsblast")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Area-broadcast tasks live in operators.broadcast_tasks, beside the batch tasks.
app.autodiscover_tasks(related_name="broadcast_tasks")


@task_prerun.connect
@task_postrun.connect
def close_old_database_connections(task=None, **kwargs) -> None:
    """Treat each task like a request: reuse the connection within CONN_MAX_AGE, drop broken ones.

    Celery's Django fixup would otherwise open a new connection for every task (about 18 ms and a backend
    process each time); CELERY_DB_REUSE_MAX in the settings turns that off. An eager task runs inside its
    caller's transaction, whose connection must stay open.
    """
    from django.db import close_old_connections

    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()


class SendingWorkerMark(bootsteps.StartStopStep):
    """Mark in Redis, every few seconds, that a worker taking the default or an operator's queue is running.

    The dashboard warns when no mark is fresh: beat's housekeeping on the control queue goes on, yet no run fans out
    and no batch leaves. Workers of the control or mail queue alone do not mark.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.timer_entry = None

    def start(self, consumer) -> None:
        from smsblast.health import WORKER_MARK_SECONDS

        self.mark(consumer)
        self.timer_entry = consumer.timer.call_repeatedly(WORKER_MARK_SECONDS, self.mark, (consumer,), priority=10)

    def stop(self, consumer) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    def mark(self, consumer) -> None:
        from smsblast.health import health_mark_dispatch_worker

        names = [queue.name for queue in consumer.task_consumer.queues]
        if any(name == "default" or name.startswith("dispatch.") for name in names):
            health_mark_dispatch_worker()


app.steps["consumer"].add(SendingWorkerMark)


# Beat sends these every second or two; their "received" and "succeeded" lines would bury the ones about
# campaigns. Warnings and errors from them still show.
HOUSEKEEPING_TASKS = frozenset(
    {
        "campaigns.tasks.start_due_runs",
        "campaigns.tasks.reconcile_dispatch",
        "operators.area_broadcasts_tick",
        "smsblast.notifications_redrive",
        "smsblast.subscriber_imports_redrive",
        "campaigns.tasks.prune_deliveries",
    }
)


def _broker_outage(exc: BaseException | None) -> bool:
    """Return whether an exception is, or was raised while handling, a failure to reach the broker."""
    from kombu.exceptions import OperationalError

    while exc is not None:
        if isinstance(exc, OperationalError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class HousekeepingFilter(logging.Filter):
    """Drop INFO and DEBUG records about one run of a housekeeping task."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            if record.name == "celery.beat" and record.exc_info and _broker_outage(record.exc_info[1]):
                # Beat logs two stacks (about 150 lines) for every send it cannot make, several a second while
                # Redis is down; the first line says what failed.
                record.msg, record.args = "Message Error: %s", (record.exc_info[1],)
                record.exc_info = record.exc_text = None
            return True
        if isinstance(record.args, dict):  # the worker's "Task %(name)s[%(id)s] ..." lines
            return record.args.get("name") not in HOUSEKEEPING_TASKS
        return not any(name in record.getMessage() for name in HOUSEKEEPING_TASKS)  # beat's "Sending due task"


@after_setup_logger.connect
@after_setup_task_logger.connect
def mask_subscribers_numbers(logger: logging.Logger, **kwargs) -> None:
    """Mask subscribers' numbers in what a worker or beat logs, as the settings' handler does in the web process.

    Celery replaces the root logger's handlers (the settings' LOGGING) with its own when a worker or beat starts, and
    gives its task logger handlers of its own: the filter goes on each of them.
    """
    from smsblast.redaction import NumbersMaskedFilter

    for handler in logger.handlers:
        if not any(isinstance(installed, NumbersMaskedFilter) for installed in handler.filters):
            handler.addFilter(NumbersMaskedFilter())


@after_setup_logger.connect
def quiet_housekeeping_tasks(**kwargs) -> None:
    """Install HousekeepingFilter where the worker logs task receipt and outcome and beat logs its sends."""
    for name in ("celery.worker.strategy", "celery.app.trace", "celery.beat"):
        logging.getLogger(name).addFilter(HousekeepingFilter())
