"""Start a Celery worker that consumes the default and control queues and every operator's dispatch queue."""

import argparse
import logging

import click
from celery import bootsteps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)


def worker_queues() -> list[str]:
    """Return "default", "control" and "dispatch.<slug>" for every operator (inactive ones too: an empty queue
    costs nothing). "control" carries beat's housekeeping; a dedicated `--queues control` worker keeps it on
    time when these workers are busy.

    A worker started without `--queues` reads the list again every WORKER_QUEUE_REFRESH_SECONDS (see
    OperatorQueues), so an operator added or renamed while it runs is sent to without a restart.
    """
    from operators.models import Operator

    try:
        slugs = list(Operator.objects.order_by("slug").values_list("slug", flat=True))
    except DatabaseError:
        # Not migrated yet: the default queue is all there is.
        slugs = []
    return ["default", "control", *(f"dispatch.{slug}" for slug in slugs)]


class OperatorQueues(bootsteps.StartStopStep):
    """Consume the dispatch queue of every operator added (or renamed) since the worker started."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.timer_entry = None

    def start(self, consumer) -> None:
        interval = settings.WORKER_QUEUE_REFRESH_SECONDS
        self.timer_entry = consumer.timer.call_repeatedly(interval, self.refresh, (consumer,), priority=10)

    def stop(self, consumer) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    def refresh(self, consumer) -> None:
        """Start consuming every operator queue not consumed yet; a queue is never dropped here."""
        try:
            queues = worker_queues()
        finally:
            # The worker's main process holds no connection between looks: pool processes it forks later
            # must not inherit one.
            connection.close()
        for queue in queues:
            if not consumer.task_consumer.consuming_from(queue):
                logger.info("Operator queue %s appeared; consuming it", queue)
                consumer.add_task_queue(queue)


class Command(BaseCommand):
    help = "Run a Celery worker on the default and control queues and every operator's dispatch queue."

    def add_arguments(self, parser):
        parser.add_argument("--concurrency", type=int, default=2, help="Worker processes (default 2).")
        parser.add_argument("--loglevel", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO).")
        parser.add_argument("--pool", default="prefork", help="Celery pool: prefork, threads, solo.")
        parser.add_argument("--hostname", default="", help="Node name, e.g. worker2@%%h, to run several workers.")
        parser.add_argument("--queues", default="", help="Comma-separated queues instead of all of them.")
        parser.add_argument("--print-queues", action="store_true", help="Print the queues and exit.")
        parser.add_argument("celery_args", nargs=argparse.REMAINDER, help="Further `celery worker` options.")

    def handle(self, *args, **options):
        queues = [name.strip() for name in options["queues"].split(",") if name.strip()] or worker_queues()
        if options["print_queues"]:
            self.stdout.write(",".join(queues))
            return
        from config.celery import app

        if not options["queues"]:
            app.steps["consumer"].add(OperatorQueues)
        argv = [
            "worker",
            "--queues",
            ",".join(queues),
            "--concurrency",
            str(options["concurrency"]),
            "--loglevel",
            options["loglevel"],
            "--pool",
            options["pool"],
        ]
        if options["hostname"]:
            argv += ["--hostname", options["hostname"]]
        argv += [arg for arg in options["celery_args"] if arg != "--"]
        try:
            app.worker_main(argv=argv)
        except click.ClickException as exc:  # an option celery refuses (--pool, --concurrency, a further option)
            raise CommandError(exc.format_message()) from None
