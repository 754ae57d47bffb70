"""Benchmark the broadcast-area smoothing on real boundaries: every province and a few regencies.

    .venv/bin/python bench/area_geometry.py [--vertex-limit 250]

For each area it prints the input points and parts, the output points and parts, whether the result contains
the original, how much larger it is, and the time `broadcast_area` took. No database: the boundaries are read
from ../shared/data/wilayah beside the repository.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from shapely.geometry import shape

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from operators.areageom import broadcast_area, point_count  # noqa: E402

WILAYAH = BASE_DIR.parent / "shared" / "data" / "wilayah"
REGENCIES = ("35.05", "33.16", "33.27", "62.12", "16.74")


def _features(name: str) -> list[dict]:
    with open(WILAYAH / name) as handle:
        return json.load(handle)["features"]


def _parts(geometry: dict) -> int:
    return len(geometry["coordinates"]) if geometry["type"] == "MultiPolygon" else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vertex-limit", type=int, default=250)
    args = parser.parse_args()
    areas = [f for f in _features("batas_kabupaten.geojson") if f["properties"]["kode"] in REGENCIES]
    areas += _features("batas_provinsi.geojson")
    print(f"{'code':<6} {'name':<28} {'in pts':>7} {'parts':>5} {'out pts':>7} {'parts':>5} contains  growth  seconds")
    slowest = 0.0
    for feature in areas:
        geometry = feature["geometry"]
        started = time.perf_counter()
        result = broadcast_area([geometry], vertex_limit=args.vertex_limit)
        took = time.perf_counter() - started
        slowest = max(slowest, took)
        original, smoothed = shape(geometry), shape(result)
        print(
            f"{feature['properties']['kode']:<6} {feature['properties']['nama'][:28]:<28} "
            f"{point_count(geometry):>7} {_parts(geometry):>5} {point_count(result):>7} {_parts(result):>5} "
            f"{str(smoothed.contains(original)):>8} {smoothed.area / original.area:>6.2f}x {took:>8.3f}"
        )
    print(f"slowest: {slowest:.3f} s")


if __name__ == "__main__":
    main()
