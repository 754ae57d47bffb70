"""Benchmark the subscriber import against the plain approach, on PostgreSQL.

    make bench-import                       # <DATABASE_URL's database>_bench_import, else smsblast_bench_import
    make bench-import BENCH_ARGS="--rows 200000 --repeat 1"

Generates messy, realistic Indonesian numbers (about 5% invalid, 3% repeated in another form, mixed
forms: 0812-…, +62 812 …, 62812…, 812…, with dots, dashes and spaces) as two CSV files in a temporary
directory: half with commas and English headers, half with semicolons and Indonesian headers. Each
repetition recreates the database, loads the real area table and the four operators, then imports
both files:

- smsblast: the import service (streamed, fast-path normalisation, COPY + INSERT … ON CONFLICT);
- plain: csv.DictReader, phonenumbers parse + validate per row (smsblast.phones.normalize_slow),
  Subscriber objects and bulk_create(update_conflicts=True) in batches of 5,000.

Prints rows/s of each, their ratio and the medians over the repetitions.
"""

import argparse
import csv
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import benchdb  # noqa: E402
from benchdb import recreate_database  # noqa: E402

DEFAULT_URL = benchdb.DEFAULT_URL
WILAYAH = ROOT.parent / "shared" / "data" / "wilayah"


def bench_database_url(url: str) -> str:
    """Return url naming this benchmark's own database beside the one in url, which is never touched."""
    return benchdb.bench_database_url(url, "_bench_import")


def generate(directory: Path, rows: int, prefixes: list[str], areas: list[str], seed: int = 7) -> list[Path]:
    """Write two CSV files holding `rows` messy rows between them; return their paths."""
    rng = random.Random(seed)
    first_names = ["Siti", "Budi", "Agus", "Dewi", "Sri", "Wahyu", "Eko", "Rina", "Joko", "Nur", "Ahmad", "Putri"]
    last_names = ["Rahayu", "Santoso", "Wibowo", "Lestari", "Hidayat", "Saputra", "Kurniawan", "Susanti", ""]
    issued: list[str] = []

    def messy(national: str) -> str:
        form = rng.random()
        if form < 0.40:
            return "0" + national
        if form < 0.55:
            return f"0{national[:3]}-{national[3:7]}-{national[7:]}"
        if form < 0.70:
            return f"+62 {national[:3]} {national[3:7]} {national[7:]}"
        if form < 0.82:
            return "62" + national
        if form < 0.90:
            return f"0{national[:3]}.{national[3:7]}.{national[7:]}"
        if form < 0.95:
            return national
        return f" (0{national[:3]}) {national[3:]} "

    def invalid() -> str:
        kind = rng.random()
        if kind < 0.3:
            return "0812" + "".join(rng.choices("0123456789", k=rng.randint(2, 4)))  # too short
        if kind < 0.5:
            return "021" + "".join(rng.choices("0123456789", k=8))  # Jakarta landline
        if kind < 0.7:
            return "08" + "".join(rng.choices("0123456789", k=14))  # too long
        if kind < 0.85:
            return rng.choice(["-", "n/a", "tidak ada", "08xx-xxxx", "#N/A"])
        return "+1 415 555 " + "".join(rng.choices("0123456789", k=4))  # not Indonesian

    paths = []
    halves = [(",", ["msisdn", "area_code", "name", "language"]), (";", ["no_hp", "kode_wilayah", "nama", "bahasa"])]
    per_file = rows // 2
    for index, (delimiter, header) in enumerate(halves):
        path = directory / f"subscribers-{index + 1}.csv"
        with open(path, "w", encoding="utf-8-sig" if index else "utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow(header)
            count = per_file if index == 0 else rows - per_file
            for _ in range(count):
                draw = rng.random()
                if draw < 0.05:
                    number = invalid()
                elif draw < 0.08 and issued:
                    number = messy(rng.choice(issued))  # the same subscriber again, written differently
                else:
                    prefix = rng.choice(prefixes)[2:]  # national digits of the operator prefix
                    national = prefix + "".join(rng.choices("0123456789", k=11 - len(prefix)))
                    issued.append(national)
                    number = messy(national)
                name = f"{rng.choice(first_names)} {rng.choice(last_names)}".strip()
                writer.writerow([number, rng.choice(areas), name, "id" if rng.random() < 0.97 else "en"])
        paths.append(path)
    return paths


def prepare() -> None:
    """Migrate, load the real areas and seed the four operators with their prefixes."""
    from django.core.management import call_command

    from operators.models import Operator
    from smsblast.phones import carrier_prefixes
    from smsblast.services import areas_load

    call_command("migrate", verbosity=0)
    areas_load(path=WILAYAH / "kode_wilayah.csv")
    by_slug: dict[str, list[str]] = {}
    for prefix, slug in sorted(carrier_prefixes().items()):
        by_slug.setdefault(slug, []).append(prefix)
    for slug, prefixes in by_slug.items():
        Operator.objects.create(name=slug.title(), slug=slug, prefixes=prefixes)


def run_smsblast(paths: list[Path]) -> float:
    from smsblast.services import subscriber_import_create_from_path, subscriber_import_run

    started = time.perf_counter()
    for path in paths:
        job = subscriber_import_create_from_path(path=path, user=None)
        job = subscriber_import_run(subscriber_import=job)
        assert job.state == "completed", job.error
        print(
            f"    {path.name}: {job.rows_read:,} rows, {job.created:,} created, {job.updated:,} updated, "
            f"{job.duplicates:,} duplicates, {job.rejected:,} rejected {job.rejected_by_reason}"
        )
    return time.perf_counter() - started


def run_plain(paths: list[Path]) -> float:
    """Import the way a first version would: phonenumbers for every row and bulk_create."""
    from operators.models import Operator
    from smsblast.models import Area, Subscriber
    from smsblast.phones import PrefixTable, normalize_slow

    started = time.perf_counter()
    known_areas = set(Area.objects.values_list("code", flat=True))
    table = PrefixTable({p: op.pk for op in Operator.objects.all() for p in op.prefixes})
    seen: set[str] = set()
    for path in paths:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            delimiter = ";" if ";" in handle.readline() else ","
            handle.seek(0)
            reader = csv.DictReader(handle, delimiter=delimiter)
            batch: list[Subscriber] = []
            for record in reader:
                number = record.get("msisdn") or record.get("no_hp") or ""
                area = record.get("area_code") or record.get("kode_wilayah") or None
                result = normalize_slow(number)
                if not result.ok or (area and area not in known_areas) or result.e164 in seen:
                    continue
                seen.add(result.e164)
                batch.append(
                    Subscriber(
                        msisdn=result.e164,
                        area_id=area,
                        operator_id=table.operator_for(result.e164),
                        name=record.get("name") or record.get("nama") or "",
                        language=record.get("language") or record.get("bahasa") or "id",
                    )
                )
                if len(batch) >= 5000:
                    _plain_flush(batch)
                    batch = []
            _plain_flush(batch)
    return time.perf_counter() - started


def _plain_flush(batch) -> None:
    from smsblast.models import Subscriber

    Subscriber.objects.bulk_create(
        batch,
        update_conflicts=True,
        unique_fields=["msisdn"],
        update_fields=["area", "operator", "name", "language", "updated_at"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    url = benchdb.bench_database_from_env("_bench_import", what="bench-import")
    benchdb.django_in_fresh_database(url)
    from django.conf import settings
    from django.db import connection

    from smsblast.phones import carrier_prefixes

    fast_rates, plain_rates = [], []
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        settings.MEDIA_ROOT = tmp
        prefixes = sorted(carrier_prefixes())
        areas = [line.split(",", 1)[0] for line in (WILAYAH / "kode_wilayah.csv").read_text().splitlines()[1:]]
        areas = [code for code in areas if code.startswith(("35.", "33.", "16.74", "62.12"))] + [""]
        started = time.perf_counter()
        paths = generate(Path(tmp), args.rows, prefixes, areas)
        size = sum(path.stat().st_size for path in paths) / 1e6
        print(f"generated {args.rows:,} rows ({size:.0f} MB) in {time.perf_counter() - started:.1f} s")
        for repetition in range(1, args.repeat + 1):
            for label, runner, rates in (("smsblast", run_smsblast, fast_rates), ("plain", run_plain, plain_rates)):
                connection.close()
                recreate_database(url)
                prepare()
                print(f"  run {repetition} {label}:")
                seconds = runner(paths)
                rates.append(args.rows / seconds)
                print(f"  run {repetition} {label}: {seconds:.1f} s, {rates[-1]:,.0f} rows/s")
            print(f"  run {repetition} ratio: {fast_rates[-1] / plain_rates[-1]:.2f}")
    fast, plain = statistics.median(fast_rates), statistics.median(plain_rates)
    print(
        f"median over {args.repeat} runs of {args.rows:,} rows on PostgreSQL: smsblast {fast:,.0f} rows/s, "
        f"plain {plain:,.0f} rows/s, ratio {fast / plain:.2f} (targets: >= 50,000 rows/s, ratio >= 2)"
    )
    connection.close()


if __name__ == "__main__":
    main()
