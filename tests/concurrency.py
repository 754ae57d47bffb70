"""Make two database sessions meet at a row lock in a known order (PostgreSQL), to test concurrent services."""

import threading
import time

import pytest
from django.db import connection, connections, transaction


def skip_unless_postgresql() -> None:
    """Skip the calling test on SQLite, which serializes writers by design: there is no race to force."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need a server database; SQLite serializes them by design")


def wait_until_blocked_on_a_lock(count: int, *, unless: threading.Thread | None = None) -> None:
    """Wait until `count` other sessions of this database wait on a lock (a rendezvous, not a timing assert).

    With `unless`, it is enough that that thread has ended: a service that takes no lock the others hold
    goes straight through.
    """

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if unless is not None and not unless.is_alive():
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= count:
                return
        time.sleep(0.01)
    raise AssertionError("the sessions never met at the lock")


def start_in_thread(target, errors: list) -> threading.Thread:
    """Start `target()` in a thread of its own database session; an exception it raises is appended to `errors`."""

    def body():
        try:
            target()
        except Exception as exc:  # noqa: BLE001 - reported by the caller's assertion
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=body)
    thread.start()
    return thread


def race_behind_a_row(row, first, second, *, second_may_pass: bool = False) -> list:
    """Run `first()` then `second()` in threads queued in that order behind a lock on `row`; return errors.

    With `second_may_pass`, `second()` may also finish without waiting: the race is then the lock order
    of `second()` against a `first()` that holds `row` next.
    """

    holding, release = threading.Event(), threading.Event()
    errors = []

    def hold_the_run_row():
        try:
            with transaction.atomic():
                type(row).objects.select_for_update().get(pk=row.pk)
                holding.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_run_row)
    holder.start()
    holding.wait(30)
    threads = [holder]
    for waiting, target in enumerate((first, second), start=1):
        thread = start_in_thread(target, errors)
        threads.append(thread)
        wait_until_blocked_on_a_lock(waiting, unless=thread if second_may_pass and waiting == 2 else None)
    release.set()
    for thread in threads:
        thread.join(30)
    return errors
