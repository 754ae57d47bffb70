"""Benchmark the audience preview on 1,000,000 subscribers in PostgreSQL.

    .venv/bin/python bench/preview.py      # database <DATABASE_URL's>_bench_preview, else smsblast_bench_preview
    .venv/bin/python bench/preview.py --subscribers 200000 --repeat 5

Recreates the database, loads the real area table with the Kab. Blitar boundaries, seeds four operators
and spreads the subscribers over the 248 desa of Kab. Blitar (2% opted out, a tenth with home
coordinates). Then times `audience_preview` for the regency, for its province, for one kecamatan and
for a drawn polygon, and prints the median of each.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import benchdb  # noqa: E402

DEFAULT_URL = benchdb.DEFAULT_URL
WILAYAH = ROOT.parent / "shared" / "data" / "wilayah"

# A box over the middle of Kab. Blitar (lng, lat).
DRAWN = {
    "type": "Polygon",
    "coordinates": [[[112.15, -8.15], [112.35, -8.15], [112.35, -8.0], [112.15, -8.0], [112.15, -8.15]]],
}


def bench_database_url(url: str) -> str:
    """Return url naming this benchmark's own database beside the one in url, which is never touched."""
    return benchdb.bench_database_url(url, "_bench_preview")


def seed(subscribers: int) -> None:
    from django.core.management import call_command
    from django.db import connection

    from operators.models import Operator
    from smsblast.services import areas_load

    call_command("migrate", verbosity=0)
    areas_load(
        path=WILAYAH / "kode_wilayah.csv",
        boundary_paths=[WILAYAH / name for name in ("batas_kabupaten.geojson", "batas_desa_3505.geojson")],
    )
    for slug, tariff in (("telkomsel", 250), ("indosat", 230), ("xl", 230), ("smartfren", 200)):
        Operator.objects.create(name=slug.title(), slug=slug, tariff_per_segment=tariff)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO smsblast_subscriber (msisdn, name, language, opted_out_at, latitude, longitude,
                                             created_at, updated_at, area_id, operator_id)
            SELECT '+62812' || lpad(g::text, 8, '0'), '', 'id',
                   CASE WHEN g %% 50 = 0 THEN now() END,
                   CASE WHEN g %% 10 = 0 THEN -8.3 + (g %% 997) / 2000.0 END,
                   CASE WHEN g %% 10 = 0 THEN 112.0 + (g %% 991) / 1500.0 END,
                   now(), now(), a.codes[1 + g %% a.n], o.ids[1 + g %% 4]
            FROM generate_series(1, %s) AS g,
                 (SELECT array_agg(code ORDER BY code) AS codes, count(*) AS n FROM smsblast_area
                  WHERE code LIKE '35.05.%%' AND level = 'desa') AS a,
                 (SELECT array_agg(id ORDER BY id) AS ids FROM operators_operator) AS o
            """,
            [subscribers],
        )
    connection.close()
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE smsblast_subscriber")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    url = benchdb.bench_database_from_env("_bench_preview", what="The preview benchmark")
    benchdb.django_in_fresh_database(url)
    from smsblast.selectors import audience_preview

    started = time.perf_counter()
    seed(args.subscribers)
    print(f"seeded {args.subscribers:,} subscribers in {time.perf_counter() - started:.1f} s")
    cases = [
        ("Kab. Blitar (35.05)", dict(area_codes=["35.05"])),
        ("Jawa Timur (35)", dict(area_codes=["35"])),
        ("one kecamatan (35.05.01)", dict(area_codes=["35.05.01"])),
        ("drawn polygon", dict(area_codes=[], polygon=DRAWN)),
    ]
    for label, kwargs in cases:
        timings = []
        for _ in range(args.repeat):
            began = time.perf_counter()
            preview = audience_preview(segments=2, **kwargs)
            timings.append(time.perf_counter() - began)
        print(
            f"{label:26} {preview['recipients']:>9,} recipients, {len(preview['by_kecamatan']):>3} kecamatan: "
            f"median {statistics.median(timings) * 1000:,.0f} ms (min {min(timings) * 1000:,.0f}, "
            f"max {max(timings) * 1000:,.0f}) over {args.repeat}"
        )


if __name__ == "__main__":
    main()
