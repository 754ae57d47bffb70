"""Celery tasks of area broadcasts: thin wrappers that take ids and call the services in operators.broadcasts."""

from celery import shared_task

from operators import broadcasts


@shared_task(name="operators.area_broadcasts_tick", ignore_result=True)
def area_broadcasts_tick() -> dict:
    """Start due windows, pass cancels on, end windows, and enqueue the sends and cancels that are due."""
    due = broadcasts.area_broadcasts_tick()
    for broadcast_id in due["sends"]:
        area_broadcast_send.delay(broadcast_id)
    for broadcast_id in due["cancels"]:
        area_broadcast_cancel.delay(broadcast_id)
    return due


@shared_task(name="operators.area_broadcast_send", ignore_result=True, acks_late=True)
def area_broadcast_send(broadcast_id: str) -> None:
    """Send one operator's area broadcast if it is due; a row already final or in flight is left alone."""
    broadcasts.area_broadcast_send(broadcast_id=broadcast_id)


@shared_task(name="operators.area_broadcast_cancel", ignore_result=True, acks_late=True)
def area_broadcast_cancel(broadcast_id: str) -> None:
    """Deliver the cancel of one acknowledged area broadcast if it is due."""
    broadcasts.area_broadcast_cancel_send(broadcast_id=broadcast_id)
