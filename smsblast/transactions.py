"""Enqueue Celery work once the current transaction has committed."""

from django.db import transaction


def enqueue_on_commit(callback) -> None:
    """Run `callback` (an enqueue) after the transaction commits; a broker outage is logged, not raised.

    The rows are committed either way and the reconciler re-drives what was never enqueued (invariant 4).
    """

    def enqueue() -> None:
        callback()

    # Django names the failed callback by __qualname__ when it logs, which a partial lacks.
    enqueue.__wrapped__ = callback
    transaction.on_commit(enqueue, robust=True)
