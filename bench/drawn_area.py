"""Benchmark the pages and API answers that read a drawn polygon, as a map client moving it would call them.

    .venv/bin/python bench/drawn_area.py      # database <DATABASE_URL's>_bench_drawn, else smsblast_bench_drawn
    .venv/bin/python bench/drawn_area.py --repeat 9 --subscribers 100000

Recreates the database, loads the real area table with every published boundary (provinces, regencies, the
example kecamatan, Kab. Blitar's desa), seeds four operators, subscribers over Kab. Blitar's desa, an officer of
Kab. Blitar and an officer without a jurisdiction. For each drawn polygon it then times, through Django's test
client in this one process, with the polygon moved a little at every call (a drag on a map):

- `POST /api/v1/audience/preview/` (the targeted audience of the polygon),
- `PATCH /api/v1/campaigns/{id}/` of an area broadcast (saving the moved polygon; its answer carries the estimate),
- `GET /api/v1/campaigns/{id}/broadcast/`, `POST /campaigns/preview/` (the compose page's preview of that edit)
  and `GET /campaigns/{id}/` for the polygon saved last,

and prints the first call (what a fresh web process pays, its boundary caches empty) and the median of the rest.
"""

import argparse
import io
import json
import math
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import benchdb  # noqa: E402

WILAYAH = ROOT.parent / "shared" / "data" / "wilayah"
BOUNDARY_FILES = (
    "batas_provinsi.geojson",
    "batas_kabupaten.geojson",
    "batas_kecamatan_contoh.geojson",
    "batas_desa_3505.geojson",
)


def lasso(points: int, *, centre=(112.25, -8.2), radius: float = 0.08, crossing: bool = False) -> dict:
    """Return a loop of `points` points (closing point included) wobbling as a hand draws, over Kab. Blitar.

    With `crossing`, two neighbouring points are swapped: the outline crosses itself, as when a hand slips.
    """
    ring = []
    for i in range(points - 1):
        turn = 2 * math.pi * i / (points - 1)
        reach = radius * (1 + 0.18 * math.sin(3 * turn) + 0.07 * math.sin(7 * turn) + 0.02 * math.sin(23 * turn))
        ring.append([round(centre[0] + reach * math.cos(turn), 7), round(centre[1] + reach * math.sin(turn), 7)])
    if crossing:
        ring[10], ring[11] = ring[11], ring[10]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def boundary(name: str, code: str) -> dict:
    with open(WILAYAH / name) as handle:
        return next(f["geometry"] for f in json.load(handle)["features"] if f["properties"]["kode"] == code)


def moved(polygon: dict, step: int) -> dict:
    """Return the polygon moved east by `step` × 0.0005° (about 55 m)."""

    def shift(ring):
        return [[round(lon + step * 0.0005, 7), lat] for lon, lat in ring]

    if polygon["type"] == "Polygon":
        return {"type": "Polygon", "coordinates": [shift(ring) for ring in polygon["coordinates"]]}
    return {"type": "MultiPolygon", "coordinates": [[shift(ring) for ring in part] for part in polygon["coordinates"]]}


def seed(subscribers: int) -> None:
    from django.core.management import call_command
    from django.db import connection

    from operators.models import Operator
    from smsblast.services import areas_load

    call_command("migrate", verbosity=0)
    areas_load(
        path=WILAYAH / "kode_wilayah.csv",
        population_path=WILAYAH / "penduduk.csv",
        boundary_paths=[WILAYAH / name for name in BOUNDARY_FILES],
    )
    for slug, tariff in (("telkomsel", 250), ("indosat", 230), ("xl", 230), ("smartfren", 200)):
        Operator.objects.create(
            name=slug.title(),
            slug=slug,
            tariff_per_segment=tariff,
            adapter="http_batch_v1",
            base_url=f"http://127.0.0.1:9/{slug}",
        )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO smsblast_subscriber (msisdn, name, language, opted_out_at, latitude, longitude,
                                             created_at, updated_at, area_id, operator_id)
            SELECT '+62812' || lpad(g::text, 8, '0'), '', 'id', NULL,
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
    # The tokens they print are not needed: the test client logs in.
    call_command("create_user", "officer", "--role", "officer", "--area", "35.05", stdout=io.StringIO())
    call_command("create_user", "officer_all", "--role", "officer", stdout=io.StringIO())


def time_cases(client, polygon: dict, repeat: int) -> dict[str, tuple[float, list[float]]]:
    """Return, per case, the first call's seconds and those of the `repeat` calls after it."""
    from django.utils import timezone

    starts_at = timezone.now() + timedelta(days=1)
    created = client.post(
        "/api/v1/campaigns/",
        json.dumps(
            {
                "title": "Banjir",
                "text": "Waspada banjir, hindari bantaran sungai.",
                "sender": "BPBD",
                "mode": "area_broadcast",
                "polygon": polygon,
                "starts_at": starts_at.isoformat(),
                "ends_at": (starts_at + timedelta(hours=2)).isoformat(),
            }
        ),
        content_type="application/json",
    )
    assert created.status_code == 201, created.content[:300]
    pk = created.json()["id"]
    # The bodies are written before the clock starts: a client's own JSON is not the server's time.
    bodies = [json.dumps({"polygon": moved(polygon, step)}) for step in range(repeat + 1)]
    calls = {
        "audience preview (moved)": lambda i: client.post(
            "/api/v1/audience/preview/", bodies[i], content_type="application/json"
        ),
        "PATCH campaign (moved)": lambda i: client.patch(
            f"/api/v1/campaigns/{pk}/", bodies[i], content_type="application/json"
        ),
        "GET …/broadcast/ estimate": lambda i: client.get(f"/api/v1/campaigns/{pk}/broadcast/"),
        "compose preview (edit)": lambda i: client.post(
            "/campaigns/preview/", {"campaign": pk, "mode": "area_broadcast", "text": "Waspada banjir."}
        ),
        "campaign page": lambda i: client.get(f"/campaigns/{pk}/"),
    }
    results = {}
    for label, call in calls.items():
        timings = []
        for i in range(repeat + 1):
            began = time.perf_counter()
            response = call(i)
            timings.append(time.perf_counter() - began)
            assert response.status_code == 200, (label, response.status_code, response.content[:300])
        results[label] = (timings[0], timings[1:])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    url = benchdb.bench_database_from_env("_bench_drawn", what="The drawn-area benchmark")
    benchdb.django_in_fresh_database(url)
    from django.test import Client

    from operators import broadcasts
    from smsblast import selectors
    from smsblast.models import User

    started = time.perf_counter()
    seed(args.subscribers)
    took = time.perf_counter() - started
    print(f"seeded the areas with every boundary and {args.subscribers:,} subscribers in {took:.1f} s")
    polygons = [
        ("20,000-point loop over Kab. Blitar", "officer", lasso(20_000)),
        ("the same, crossing itself twice", "officer", lasso(20_000, crossing=True)),
        ("Kab. Blitar's boundary (236 points)", "officer_all", boundary("batas_kabupaten.geojson", "35.05")),
        ("Kab. Raja Ampat's boundary (15,968)", "officer_all", boundary("batas_kabupaten.geojson", "96.03")),
        ("Papua Barat Daya's boundary (16,442)", "officer_all", boundary("batas_provinsi.geojson", "96")),
    ]
    for title, username, polygon in polygons:
        # Each polygon starts as a fresh web process would: no boundary read yet.
        selectors._boundary_cache.clear()
        broadcasts._regency_cache.clear()
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(User.objects.get(username=username))
        print(f"\n{title}")
        for label, (first, rest) in time_cases(client, polygon, args.repeat).items():
            print(
                f"  {label:28} first {first * 1000:7,.0f} ms   median {statistics.median(rest) * 1000:7,.0f} ms "
                f"(min {min(rest) * 1000:,.0f}, max {max(rest) * 1000:,.0f}) over {len(rest)}"
            )


if __name__ == "__main__":
    main()
