"""Celery application: housekeeping tasks stay out of the INFO log, everything else stays in."""

import logging

import pytest

from config.celery import HousekeepingFilter, quiet_housekeeping_tasks

LOGGERS = ("celery.worker.strategy", "celery.app.trace", "celery.beat")


@pytest.fixture
def quieted():
    quiet_housekeeping_tasks()
    yield
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for installed in [f for f in logger.filters if isinstance(f, HousekeepingFilter)]:
            logger.removeFilter(installed)


def test_housekeeping_lines_are_dropped_and_campaign_lines_kept(quieted, caplog):
    caplog.set_level(logging.INFO)
    received = logging.getLogger("celery.worker.strategy")
    trace = logging.getLogger("celery.app.trace")
    beat = logging.getLogger("celery.beat")
    received.info("Task %(name)s[%(id)s] received", {"name": "campaigns.tasks.start_due_runs", "id": "a"})
    trace.info(
        "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
        {"name": "operators.area_broadcasts_tick", "id": "b", "runtime": 0.01, "return_value": None},
    )
    beat.info("Scheduler: Sending due task %s (%s)", "reconcile-dispatch", "campaigns.tasks.reconcile_dispatch")
    received.info("Task %(name)s[%(id)s] received", {"name": "operators.tasks.send_batch", "id": "c"})
    beat.info("Scheduler: Sending due task %s (%s)", "other", "campaigns.tasks.fan_out_run")
    trace.error(
        "Task %(name)s[%(id)s] raised unexpected: %(exc)s",
        {"name": "campaigns.tasks.start_due_runs", "id": "d", "exc": "boom"},
    )

    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "Task operators.tasks.send_batch[c] received",
        "Scheduler: Sending due task other (campaigns.tasks.fan_out_run)",
        "Task campaigns.tasks.start_due_runs[d] raised unexpected: boom",
    ]


def test_beat_reports_a_send_the_broker_refused_in_one_line_without_its_stacks(quieted, caplog):
    from celery.beat import SchedulingError
    from kombu.exceptions import OperationalError

    beat = logging.getLogger("celery.beat")
    try:
        try:
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        except OperationalError as exc:
            raise SchedulingError(f"Couldn't apply scheduled task start-due-runs: {exc}")  # noqa: B904 - as beat does
    except SchedulingError as exc:
        # As celery.beat.Scheduler.apply_entry logs it, for every send while Redis is down.
        beat.error("Message Error: %s\n%s", exc, ["  File ...\n"] * 40, exc_info=True)
    try:
        raise SchedulingError("Couldn't apply scheduled task other: cannot serialize")
    except SchedulingError as exc:
        beat.error("Message Error: %s\n%s", exc, ["  File ...\n"], exc_info=True)

    outage, other = caplog.records
    assert caplog.handler.format(outage).splitlines() == [
        "ERROR    celery.beat:test_celery.py:"
        f"{outage.lineno} Message Error: Couldn't apply scheduled task start-due-runs: Error 111 connecting to "
        "127.0.0.1:6379. Connection refused."
    ]
    assert other.exc_info is not None, "an error that is not an outage keeps its traceback"


def test_every_housekeeping_task_exists():
    from config.celery import HOUSEKEEPING_TASKS, app

    app.loader.import_default_modules()
    assert HOUSEKEEPING_TASKS <= set(app.tasks)
    from django.conf import settings

    assert HOUSEKEEPING_TASKS == {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}


def test_housekeeping_goes_to_the_control_queue_and_the_rest_to_default():
    from config.celery import HOUSEKEEPING_TASKS, app

    def queue_of(task_name: str) -> str:
        return app.amqp.router.route({}, task_name)["queue"].name

    assert {queue_of(name) for name in HOUSEKEEPING_TASKS} == {"control"}
    assert queue_of("campaigns.tasks.fan_out_run") == "default"
    assert queue_of("campaigns.tasks.check_run_complete") == "default"


def test_the_procfile_runs_a_worker_for_the_control_queue_alone():
    from pathlib import Path

    from django.conf import settings

    procfile = (Path(settings.BASE_DIR) / "Procfile").read_text().splitlines()
    lines = dict(line.split(": ", 1) for line in procfile if line)
    assert "--queues control" in lines["control"]
    assert "--queues" not in lines["worker"]  # the main worker takes every queue, control included


@pytest.mark.django_db
def test_emails_go_to_a_process_of_their_own_neither_a_dispatch_worker_nor_the_control_one():
    # A mail server that never answers holds a process for EMAIL_TIMEOUT per attempt: never one sending batches,
    # nor the control process that starts due runs while the workers are busy.
    from pathlib import Path

    from django.conf import settings

    from campaigns.management.commands.run_worker import worker_queues
    from config.celery import app

    def queues(line: str) -> list[str]:
        return line.split("--queues ", 1)[1].split(" ", 1)[0].split(",")

    queue = app.amqp.router.route({}, "smsblast.notification_send")["queue"].name
    procfile = (Path(settings.BASE_DIR) / "Procfile").read_text().splitlines()
    lines = dict(line.split(": ", 1) for line in procfile if line)
    assert queue not in worker_queues()
    assert queues(lines["control"]) == ["control"]
    assert queues(lines["mail"]) == [queue]


def test_worker_and_beat_logs_mask_subscribers_numbers_as_the_web_process_does():
    """Celery replaces the settings' log handler with its own when a worker or beat starts: the masking must follow."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from django.conf import settings

    # What a worker and beat do to log (app.log.setup), then a task's module and a task logger naming a number.
    probe = (
        "import logging, django; django.setup()\n"
        "from celery.utils.log import get_task_logger\n"
        "from config.celery import app\n"
        "app.log.setup(loglevel='INFO')\n"
        "logging.getLogger('smsblast.services').info('opt-out of 0812-3456-7890 recorded')\n"
        "get_task_logger('smsblast.tasks').warning('retrying +6281234567891')\n"
        "try:\n"
        "    raise ValueError('Key (msisdn)=(+6281234567892) already exists.')\n"
        "except ValueError:\n"
        "    logging.getLogger('celery.app.trace').exception('Task failed')\n"
    )
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("DJANGO_")}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=Path(settings.BASE_DIR),
        env={**inherited, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    written = result.stdout + result.stderr
    assert result.returncode == 0, written
    assert "opt-out of +62812******90 recorded" in written
    assert "retrying +62812******91" in written
    assert "Key (msisdn)=(+62812******92) already exists." in written
    assert not any(number in written for number in ("0812-3456-7890", "81234567891", "81234567892")), written
