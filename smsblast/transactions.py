"""Enqueue Celery work once the current transaction has committed; run one item of a sweep on its own; open a
transaction only once a command's prompts are answered."""

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from django.db import models, transaction
from django.db.models.signals import pre_save


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


@contextmanager
def atomic_from_first_save(model: type[models.Model]) -> Iterator[None]:
    """Run the block in a transaction opened at its first save of a `model` row and closed when the block ends.

    Django's changepassword and createsuperuser prompt, then save: wrapped in this rather than in atomic(), their
    prompts wait with no transaction open (a person slow to type would hold its snapshot and locks), while the save
    and what the block writes after it (the audit event) commit together or not at all.
    """
    with ExitStack() as stack:
        opened = []

        def open_transaction(sender, using: str, **kwargs) -> None:
            if not opened:
                opened.append(stack.enter_context(transaction.atomic(using=using)))

        pre_save.connect(open_transaction, sender=model, weak=False)
        try:
            yield
        finally:
            pre_save.disconnect(open_transaction, sender=model)
