"""Celery application: `celery -A config worker`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("smsblast")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Area-broadcast tasks live in operators.broadcast_tasks, beside the batch tasks.
app.autodiscover_tasks(related_name="broadcast_tasks")
