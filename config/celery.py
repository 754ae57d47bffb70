"""Celery application: `celery -A config worker`."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

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
