"""Moving the test database back to an earlier migration state and forward again, to test data migrations."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate_to(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


@contextmanager
def models_before(targets) -> Iterator[Apps]:
    """Migrate back to `targets` and yield that state's apps (its historical models); migrate to the latest after."""
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    migrate_to(targets)
    try:
        yield MigrationExecutor(connection).loader.project_state(targets).apps
    finally:
        migrate_to(latest)
