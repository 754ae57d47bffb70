"""Enqueue Celery work once the current transaction has committed; run one item of a sweep on its own."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def isolated(log: logging.Logger, message: str, *args) -> Iterator[None]:
    """Run one item of a periodic sweep in its own transaction: a failure is rolled back whole and logged, not raised.

    So one campaign or run that raises (a fault in its data or ours) holds back none of the others; it stays due and
    the next sweep tries it again, logged each time. Within an outer transaction the item is a savepoint.
    """
    try:
        with transaction.atomic():
            yield
    except Exception:
        log.exception(message, *args)
