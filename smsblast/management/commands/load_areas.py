"""Load or refresh the Kemendagri area table, its population and its boundaries."""

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from smsblast.errors import ServiceInvalid
from smsblast.services import areas_load


class Command(BaseCommand):
    help = (
        "Create or update areas from a kode_wilayah CSV (kode,nama,tingkat,induk); re-runnable, never deletes. "
        "A penduduk.csv beside it sets populations; --boundaries attaches GeoJSON polygons by their `kode`."
    )

    def add_arguments(self, parser):
        parser.add_argument("csv", type=Path, help="kode_wilayah CSV: kode,nama,tingkat,induk (tingkat optional).")
        parser.add_argument("--population", type=Path, help="penduduk CSV (kode,...,total); default: beside the CSV")
        parser.add_argument("--no-population", action="store_true", help="Do not look for penduduk.csv.")
        parser.add_argument("--boundaries", type=Path, nargs="*", default=[], help="GeoJSON files, property kode.")

    def handle(self, *args, csv: Path, population: Path | None, no_population: bool, boundaries, **options):
        for path in [csv, population, *boundaries]:
            if path is not None and path.is_dir():
                raise CommandError(f"{path} is a folder, not a file.")
            if path is not None and not path.is_file():
                raise CommandError(f"{path} does not exist.")
        if population is None and not no_population and (csv.parent / "penduduk.csv").is_file():
            population = csv.parent / "penduduk.csv"
        started = time.monotonic()
        try:
            result = areas_load(
                path=csv,
                population_path=population,
                boundary_paths=boundaries,
                progress=lambda message: self.stdout.write(f"  {message}"),
            )
        except ServiceInvalid as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            # Ctrl-C: areas_load writes in one transaction, which the interrupt rolled back.
            raise CommandError("Interrupted: no area, population or boundary was changed.") from None
        for line, reason in result.skipped[:20]:
            self.stderr.write(f"  skipped{f' line {line}' if line else ''}: {reason}")
        if len(result.skipped) > 20:
            self.stderr.write(f"  … and {len(result.skipped) - 20} more skipped rows")
        if result.not_in_file:
            shown = ", ".join(result.not_in_file[:10])
            self.stdout.write(f"  kept {len(result.not_in_file)} areas that the file lacks: {shown}")
        if result.unknown_boundary_codes:
            shown = ", ".join(result.unknown_boundary_codes[:10])
            self.stdout.write(f"  {len(result.unknown_boundary_codes)} boundaries name unknown areas: {shown}")
        if result.unreadable_boundary_codes:
            shown = ", ".join(result.unreadable_boundary_codes[:10])
            self.stdout.write(f"  {len(result.unreadable_boundary_codes)} boundaries cannot be read: {shown}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Areas: {result.created:,} created, {result.updated:,} updated, {result.unchanged:,} unchanged, "
                f"{len(result.skipped):,} skipped; {result.populations:,} populations, "
                f"{result.boundaries:,} boundaries ({time.monotonic() - started:.1f} s)."
            )
        )
