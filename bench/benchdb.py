"""The database a benchmark works in: its own, beside the one DATABASE_URL names, which is never touched."""

import os
import sys
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URL = "postgres://smsblast:smsblast-ci@127.0.0.1:5432/smsblast"


def bench_database_url(url: str, suffix: str) -> str:
    """Return url naming the database `<name><suffix>` on the same server as the one in url."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "smsblast"
    return urlunsplit(parts._replace(path=f"/{name}{suffix}"))


def bench_database_from_env(suffix: str, *, what: str, default: str | None = DEFAULT_URL) -> str:
    """Return the benchmark's database URL from DATABASE_URL (else `default`); exit unless it is PostgreSQL."""
    url = os.environ.get("DATABASE_URL") or default or ""
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(f"{what} measures PostgreSQL: set DATABASE_URL to a postgres:// URL.")
    return bench_database_url(url, suffix)


def recreate_database(url: str) -> None:
    """Drop and create the database named in url, connecting to the server's `postgres` database."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def django_in_fresh_database(url: str) -> None:
    """Point this process's Django at `url` (dev settings, quiet logs), recreate that database, set Django up."""
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    recreate_database(url)
    django.setup()
