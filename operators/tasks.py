"""Celery tasks of the operator side of dispatch; each runs on the operator's own queue."""

from celery import shared_task

from operators import services


@shared_task(ignore_result=True, acks_late=True)
def send_batch(batch_id: str) -> None:
    """Send one DispatchBatch through its operator's adapter.

    Idempotent: the batch is leased by a conditional update, so a duplicate or redelivered task finds it
    leased or final and returns; acks_late lets the broker redeliver it if the worker dies.
    """
    services.batch_send(batch_id=batch_id)
