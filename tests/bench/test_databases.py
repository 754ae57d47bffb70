"""The benchmarks recreate a database of their own, never the one DATABASE_URL names."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
APP_URL = "postgres://smsblast:secret@db.example:5432/smsblast_live"


def bench_module(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize(
    ("script", "database"),
    [
        ("dispatch", "smsblast_live_bench_dispatch"),
        ("import_subscribers", "smsblast_live_bench_import"),
        ("preview", "smsblast_live_bench_preview"),
        ("pages", "smsblast_live_bench_pages"),
    ],
)
def test_benchmark_recreates_a_suffixed_database_beside_the_app_database(script, database):
    url = bench_module(script).bench_database_url(APP_URL)

    assert url == f"postgres://smsblast:secret@db.example:5432/{database}"


@pytest.mark.parametrize("script", ["import_subscribers", "preview", "pages"])
def test_benchmark_without_database_url_uses_its_local_bench_database(script):
    module = bench_module(script)

    assert module.bench_database_url(module.DEFAULT_URL).endswith(f"/smsblast_bench_{script.split('_')[0]}")
