"""Writes of the core app: loading areas, importing subscribers, opting numbers out and in."""

import contextlib
import csv
import hashlib
import json
import logging
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from shapely.errors import ShapelyError
from shapely.geometry import shape

from smsblast import importer, selectors
from smsblast.audit import audit_history, audit_record, audit_record_table
from smsblast.errors import ServiceConflict, ServiceInvalid
from smsblast.models import (
    Area,
    AreaLevel,
    Subscriber,
    SubscriberImport,
    SubscriberImportRejection,
    User,
    area_code_within,
)
from smsblast.phones import PrefixTable, normalize
from smsblast.text import search_key, spreadsheet_text

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

# ---------------------------------------------------------------------------------------------------------------
# Areas
# ---------------------------------------------------------------------------------------------------------------

_LEVEL_ORDER = {AreaLevel.PROVINSI: 0, AreaLevel.KABUPATEN: 1, AreaLevel.KECAMATAN: 2, AreaLevel.DESA: 3}
_LEVEL_BY_WORD = {
    "provinsi": AreaLevel.PROVINSI,
    "kabupaten": AreaLevel.KABUPATEN,
    "kota": AreaLevel.KABUPATEN,
    "kecamatan": AreaLevel.KECAMATAN,
    "desa": AreaLevel.DESA,
    "kelurahan": AreaLevel.DESA,
}
AREA_CHUNK = 5000
# Renames and moves a load names one by one in its audit event; the counts cover every one.
AREA_CHANGES_AUDITED = 1000


@dataclass
class AreasLoadResult:
    """What a load of the area table changed and what it could not use."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    # Codes in the database but not in the file: kept (subscribers and campaigns may point at them).
    not_in_file: list[str] = field(default_factory=list)
    # (line, reason) of rows that could not be used.
    skipped: list[tuple[int, str]] = field(default_factory=list)
    populations: int = 0
    boundaries: int = 0
    unknown_boundary_codes: list[str] = field(default_factory=list)
    # Codes whose boundary's coordinates could not be read as a polygon: not attached.
    unreadable_boundary_codes: list[str] = field(default_factory=list)


def _level_of(code: str) -> str:
    return (AreaLevel.PROVINSI, AreaLevel.KABUPATEN, AreaLevel.KECAMATAN, AreaLevel.DESA)[code.count(".")]


class _NotJsonNumber(ValueError):
    """NaN or Infinity in a JSON file: Python reads them, but they are not JSON and no JSON column stores them."""


def _refuse_constant(name: str):
    raise _NotJsonNumber(f"{name} is not a number JSON allows")


@contextlib.contextmanager
def _readable(path: Path):
    """Turn a file that cannot be read, or is not UTF-8 text, valid JSON or readable CSV, into ServiceInvalid naming
    the file."""
    try:
        yield
    except UnicodeDecodeError:
        raise ServiceInvalid(f"{path.name} is not UTF-8 text.") from None
    except (json.JSONDecodeError, _NotJsonNumber) as exc:
        raise ServiceInvalid(f"{path.name} is not valid JSON: {exc}.") from None
    except RecursionError:
        raise ServiceInvalid(f"{path.name} is not valid JSON: nested too deeply.") from None
    except csv.Error as exc:
        raise ServiceInvalid(f"{path.name} is not a readable CSV file: {exc}.") from None
    except OSError as exc:  # no permission to read it, a read error of the disk
        raise ServiceInvalid(f"{path.name} cannot be read: {exc.strerror or exc}.") from None


def _read_area_rows(path: Path, result: AreasLoadResult) -> dict[str, tuple[str, str, str | None]]:
    """Return code -> (name, level, parent code) of a kode_wilayah CSV, skipping malformed rows."""
    rows: dict[str, tuple[str, str, str | None]] = {}
    with _readable(path), open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        # Without induk only provinces could be read: another file with kode and nama (penduduk.csv) would rename
        # them and skip the rest, so it is refused instead. tingkat may be left out: the code gives the level.
        missing = {"kode", "nama", "induk"} - set(reader.fieldnames or [])
        if missing:
            raise ServiceInvalid(
                f"{path.name} has no column {', '.join(sorted(missing))}; expected kode,nama,tingkat,induk."
            )
        for record in reader:
            code = (record.get("kode") or "").strip()
            name = (record.get("nama") or "").strip()
            if importer.area_code_of(code) != code or not name:
                result.skipped.append((reader.line_num, f"not a Kemendagri code or no name: {code!r}"))
                continue
            if "\x00" in name:  # a damaged file; PostgreSQL cannot store the character
                result.skipped.append((reader.line_num, f"a NUL character in the name of {code}"))
                continue
            level = _LEVEL_BY_WORD.get((record.get("tingkat") or "").strip().casefold(), _level_of(code))
            if level != _level_of(code):
                result.skipped.append((reader.line_num, f"level {level} does not match code {code}"))
                continue
            parent = (record.get("induk") or "").strip() or None
            expected_parent = code.rsplit(".", 1)[0] if "." in code else None
            if parent != expected_parent:
                result.skipped.append((reader.line_num, f"parent {parent!r} of {code} should be {expected_parent!r}"))
                continue
            rows[code] = (name[:100], level, parent)
    return rows


@transaction.atomic
def areas_load(
    *,
    path: Path,
    population_path: Path | None = None,
    boundary_paths: Iterable[Path] = (),
    progress: Progress | None = None,
    actor: User | None = None,
) -> AreasLoadResult:
    """Create or update the area table from a kode_wilayah CSV; never delete an area.

    Parents are written before children (level by level), in chunks. An area in the database that
    the file lacks is reported, not deleted: subscribers and campaigns may refer to it.
    The load is audited as one `area.load` event (invariant 6), committed with it: its counts, its files by name
    and SHA-256, and each renamed or moved area from and to. A load that changes nothing records that too.
    """
    say = progress or (lambda message: None)
    boundary_paths = [Path(boundary_path) for boundary_path in boundary_paths]  # read twice: loaded, then audited
    result = AreasLoadResult()
    rows = _read_area_rows(Path(path), result)
    say(f"read {len(rows):,} areas from {Path(path).name}")
    existing = {
        code: (name, level, parent_id)
        for code, name, level, parent_id in Area.objects.values_list("code", "name", "level", "parent_id")
    }
    known = set(existing) | set(rows)
    for code, (_name, _level, parent) in sorted(rows.items(), key=lambda item: _LEVEL_ORDER[item[1][1]]):
        if parent is not None and parent not in known:
            result.skipped.append((0, f"parent {parent} of {code} is unknown"))
            known.discard(code)
    ordered = sorted((code for code in rows if code in known), key=lambda code: (code.count("."), code))
    if not ordered:
        # Nothing to write: the wrong file or form (undotted BPS codes), not a load that succeeded.
        if not result.skipped:
            raise ServiceInvalid(f"{Path(path).name} has a header but no rows.")
        line, reason = result.skipped[0]
        count = len(result.skipped)
        skipped = "its only row was skipped" if count == 1 else f"all {count:,} were skipped"
        raise ServiceInvalid(
            f"{Path(path).name} has no row to load: {skipped} ({f'line {line}: ' if line else ''}{reason}). "
            "Codes are dotted, as 35, 35.05, 35.05.01."
        )
    to_create, to_update = [], []
    for code in ordered:
        name, level, parent = rows[code]
        # A search form can outgrow its name ("ß" searches as "ss"); cut to the column as the name is.
        search_name = search_key(name)[:100]
        if code not in existing:
            to_create.append((code, name, search_name, level, parent))
        elif existing[code] != (name, level, parent):
            to_update.append((name, search_name, level, parent, code))
        else:
            result.unchanged += 1
    # Plain executemany: building 90,000 model instances would cost more than writing the rows.
    # Sorted by depth, so every chunk's parents were written by an earlier chunk or are already there.
    table = Area._meta.db_table
    with connection.cursor() as cursor:
        for start in range(0, len(to_create), AREA_CHUNK):
            cursor.executemany(
                f"INSERT INTO {table} (code, name, search_name, level, parent_id) VALUES (%s, %s, %s, %s, %s)",  # noqa: S608
                to_create[start : start + AREA_CHUNK],
            )
            say(f"created {min(start + AREA_CHUNK, len(to_create)):,} of {len(to_create):,} new areas")
        for start in range(0, len(to_update), AREA_CHUNK):
            cursor.executemany(
                f"UPDATE {table} SET name = %s, search_name = %s, level = %s, parent_id = %s WHERE code = %s",  # noqa: S608
                to_update[start : start + AREA_CHUNK],
            )
            say(f"updated {min(start + AREA_CHUNK, len(to_update)):,} of {len(to_update):,} changed areas")
    result.created, result.updated = len(to_create), len(to_update)
    result.not_in_file = sorted(set(existing) - set(rows))
    if population_path is not None:
        result.populations = _areas_load_population(Path(population_path))
        say(f"set the population of {result.populations:,} areas")
    for boundary_path in boundary_paths:
        attached, unknown, unreadable = _areas_load_boundaries(boundary_path)
        result.boundaries += attached
        result.unknown_boundary_codes.extend(unknown)
        result.unreadable_boundary_codes.extend(unreadable)
        say(f"attached {attached:,} boundaries from {boundary_path.name}")
    changed = {}
    for name, _search_name, level, parent, code in to_update[:AREA_CHANGES_AUDITED]:
        before = dict(zip(("name", "level", "parent_id"), existing[code], strict=True))
        after = {"name": name, "level": level, "parent_id": parent}
        changed[code] = {
            key: {"from": before[key], "to": value} for key, value in after.items() if before[key] != value
        }
    audit_record_table(
        actor=actor,
        action="area.load",
        model=Area,
        details={
            "areas_file": _audited_file(Path(path)),
            "population_file": _audited_file(Path(population_path)) if population_path is not None else None,
            "boundary_files": [_audited_file(boundary_path) for boundary_path in boundary_paths],
            "created": result.created,
            "updated": result.updated,
            "unchanged": result.unchanged,
            "skipped": len(result.skipped),
            "populations": result.populations,
            "boundaries": result.boundaries,
            "changed": changed,
        },
    )
    return result


def _audited_file(path: Path) -> dict:
    """Return a file's name and SHA-256, which tie an audit event to the exact content it loaded."""
    digest = hashlib.sha256()
    with _readable(path), open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "sha256": digest.hexdigest()}


@transaction.atomic
def areas_set_population(*, path: Path, codes: Iterable[str] | None = None, actor: User | None = None) -> int:
    """Set Area.population from a penduduk CSV, only for `codes` when given; return how many areas got one.

    Each area whose population changes is audited as the area admin audits it (`area.update`, from → to).
    """
    populations = _read_populations(Path(path), codes=codes)
    before = areas_audit_values(populations)
    count = _areas_write_populations(populations)
    areas_record_changes(before=before, after=areas_audit_values(populations), actor=actor)
    return count


@transaction.atomic
def areas_attach_boundaries(*, path: Path, codes: Iterable[str] | None = None, actor: User | None = None) -> int:
    """Attach the GeoJSON boundaries of a file to their areas, only for `codes` when given; return how many.

    Each area whose boundary changes is audited as the area admin audits it (`area.update`, by SHA-256).
    """
    geometries, _unreadable = _read_boundaries(Path(path), codes=codes)
    before = areas_audit_values(geometries)
    attached, _unknown = _areas_write_boundaries(geometries)
    areas_record_changes(before=before, after=areas_audit_values(geometries), actor=actor)
    return attached


# What the audit trail records of an area, in the area admin and wherever else one area is written.
AREA_AUDITED_FIELDS = ("code", "name", "level", "parent_id", "population", "boundary")


def area_boundary_digest(boundary: dict | None) -> str | None:
    """Return a boundary as the audit trail records it: by its SHA-256, since one may run to megabytes."""
    if boundary is None:
        return None
    canonical = json.dumps(boundary, sort_keys=True, separators=(",", ":"))
    return f"sha256:{hashlib.sha256(canonical.encode()).hexdigest()}"


def areas_audit_values(codes: Iterable[str]) -> dict[str, dict]:
    """Return the audited fields of the areas with these codes as stored, by code (read them before and after)."""
    rows = Area.objects.filter(code__in=list(codes)).values(*AREA_AUDITED_FIELDS)
    return {row["code"]: {**row, "boundary": area_boundary_digest(row["boundary"])} for row in rows}


def areas_record_changes(*, before: dict[str, dict], after: dict[str, dict], actor: User | None) -> None:
    """Audit each area created or changed between two readings of areas_audit_values, as the area admin does
    (`area.create` with every field, `area.update` with each changed field from → to); nothing for one unchanged."""
    for code, values in after.items():
        if code not in before:
            action, changed = "area.create", {name: {"to": value} for name, value in values.items()}
        else:
            action = "area.update"
            changed = {
                name: {"from": before[code][name], "to": value}
                for name, value in values.items()
                if before[code][name] != value
            }
            if not changed:
                continue
        audit_record(actor=actor, action=action, obj=Area(code=code), details={"changed": changed})


def _areas_load_population(path: Path, codes: Iterable[str] | None = None) -> int:
    """Set Area.population from a penduduk CSV (kode,total); return how many areas got one."""
    return _areas_write_populations(_read_populations(path, codes=codes))


def _read_populations(path: Path, codes: Iterable[str] | None = None) -> dict[str, int]:
    """Return code -> population of a penduduk CSV (kode,...,total), only for `codes` when given."""
    wanted = None if codes is None else set(codes)
    populations = {}
    with _readable(path), open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in ("kode", "total") if column not in (reader.fieldnames or [])]
        if missing:
            raise ServiceInvalid(f"{path.name} has no column {', '.join(missing)}; expected kode,...,total.")
        for record in reader:
            code, total = (record.get("kode") or "").strip(), (record.get("total") or "").strip()
            if code and total.isdigit() and (wanted is None or code in wanted):
                populations[code] = int(total)
    return populations


def _areas_write_populations(populations: dict[str, int]) -> int:
    """Set the population of each area named; return how many areas there are of them."""
    areas = list(Area.objects.filter(code__in=list(populations)).only("code", "population"))
    for area in areas:
        area.population = populations[area.code]
    Area.objects.bulk_update(areas, ["population"], batch_size=AREA_CHUNK)
    return len(areas)


def _areas_load_boundaries(path: Path, codes: Iterable[str] | None = None) -> tuple[int, list[str], list[str]]:
    """Attach the geometry of each feature of a GeoJSON file to the area named by its `kode` property.

    Return how many were attached, the codes naming no area and those whose coordinates cannot be read
    (left unattached, so that the boundaries around the area stand in for it).
    """
    geometries, unreadable = _read_boundaries(path, codes=codes)
    attached, unknown = _areas_write_boundaries(geometries)
    return attached, unknown, unreadable


def _read_boundaries(path: Path, codes: Iterable[str] | None = None) -> tuple[dict[str, dict], list[str]]:
    """Return code -> geometry of the readable polygons of a GeoJSON file (only for `codes` when given), and the
    codes whose coordinates cannot be read."""
    wanted = None if codes is None else set(codes)
    with _readable(path), open(path, encoding="utf-8") as handle:
        collection = json.load(handle, parse_constant=_refuse_constant)
    # A lone Feature or geometry has no features: refused rather than read as a collection of none.
    if not isinstance(collection, dict) or not isinstance(collection.get("features"), list):
        raise ServiceInvalid(f"{path.name} is not a GeoJSON FeatureCollection.")
    geometries = {}
    unreadable = []
    for feature in collection["features"]:
        if not isinstance(feature, dict) or not isinstance(feature.get("properties") or {}, dict):
            continue
        code = str((feature.get("properties") or {}).get("kode") or "").strip()
        geometry = feature.get("geometry")
        if wanted is not None and code not in wanted:
            continue
        if code and isinstance(geometry, dict) and geometry.get("type") in {"Polygon", "MultiPolygon"}:
            try:
                readable = not shape(geometry).is_empty
            except (ShapelyError, ValueError, TypeError, KeyError, IndexError, AttributeError):
                readable = False
            if readable:
                geometries[code] = geometry
            else:
                unreadable.append(code)
    return geometries, sorted(unreadable)


def _areas_write_boundaries(geometries: dict[str, dict]) -> tuple[int, list[str]]:
    """Attach each geometry to the area of its code; return how many were attached and the codes naming no area."""
    areas = list(Area.objects.filter(code__in=list(geometries)).only("code"))
    for area in areas:
        area.boundary = geometries[area.code]
    Area.objects.bulk_update(areas, ["boundary"], batch_size=200)
    return len(areas), sorted(set(geometries) - {area.code for area in areas})


# ---------------------------------------------------------------------------------------------------------------
# Subscriber import
# ---------------------------------------------------------------------------------------------------------------

_MISSING = object()
# Rows per chunk: each chunk's subscribers, counts and line cursor commit together.
IMPORT_CHUNK = 50_000
# Rows read, of any kind, that end a chunk however few of them were accepted: a file mostly rejected or repeated
# (an officer's import of the whole province's list, say) still shows its progress and signs of life as it is read.
IMPORT_CHUNK_ROWS_READ = 4 * IMPORT_CHUNK
# Rejected and repeated rows kept in the database for display; all of them go to the rejected file.
KEPT_REJECTIONS = 1000
_UPLOAD_DIR = "imports"
# What an import's `error` says when a run stops on an exception: what failed and what to do, for the officer
# who reads it on the page or in the API. The exception itself, with its traceback, goes to the log only.
IMPORT_FAILED_FILE = (
    "The server could not read the file or write the list of rejected rows (its disk may be full). Resume the "
    "import; if it stops again, ask an administrator to look at the server's disk and log."
)
IMPORT_FAILED_DATABASE = (
    "The database could not save the rows. Resume the import; if it stops again, ask an administrator to look "
    "at the database and the server's log."
)
IMPORT_FAILED = (
    "An unexpected error stopped the import. Resume it; if it stops again, ask an administrator to look at the "
    "server's log."
)
IMPORT_INTERRUPTED = "Interrupted: the worker running it stopped."
# States an import may be resumed from at once: it ended before its last line and no worker holds it.
RESUMABLE_IMPORT_STATES = (SubscriberImport.State.FAILED, SubscriberImport.State.STOPPED)
IMPORT_NOT_STORED = (
    "The server could not store the file (its disk may be full or not writable). Try again later; if it happens "
    "again, ask an administrator."
)


def _imports_dir() -> Path:
    directory = Path(settings.MEDIA_ROOT) / _UPLOAD_DIR
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def subscriber_import_create(*, uploaded_file, user: User | None) -> SubscriberImport:
    """Store an uploaded CSV, check it and create its import job, run by a worker after commit.

    A file larger than SUBSCRIBER_IMPORT_MAX_BYTES, not a CSV text, with no number column or with no rows
    is refused (ServiceInvalid) and nothing is kept; nor is the file when the job cannot be recorded.
    """
    size = getattr(uploaded_file, "size", None) or 0
    if size > settings.SUBSCRIBER_IMPORT_MAX_BYTES:
        raise ServiceInvalid(
            f"The file is {size:,} bytes, more than the {settings.SUBSCRIBER_IMPORT_MAX_BYTES:,} an upload may be. "
            "Split it and upload the parts, or run manage.py import_subscribers on the server.",
            {"file": "too_large"},
        )
    path = None
    try:
        path = _imports_dir() / f"{uuid.uuid4().hex}.csv"
        with open(path, "wb") as handle:
            for block in uploaded_file.chunks():
                handle.write(block)
    except OSError:
        logger.exception("an uploaded subscriber file could not be stored")
        if path is not None:
            path.unlink(missing_ok=True)
        raise ServiceInvalid(IMPORT_NOT_STORED, {"file": "not_stored"}) from None
    try:
        return subscriber_import_create_from_path(
            path=path, user=user, original_name=getattr(uploaded_file, "name", "") or "", enqueue=True
        )
    except BaseException:  # refused, or the job not recorded (a database error): no import leads to the copy
        path.unlink(missing_ok=True)
        raise


@transaction.atomic
def subscriber_import_create_from_path(
    *, path: Path, user: User | None, original_name: str = "", enqueue: bool = False
) -> SubscriberImport:
    """Check a CSV on the server's disk and create its import job (queued for a worker when `enqueue`).

    The job keeps the user's jurisdiction: its rows may only home subscribers within it (see `_home_refusal`).
    """
    path = Path(path).resolve()
    try:
        importer.inspect(path)
    except importer.FileRefused as exc:
        raise ServiceInvalid(str(exc), {"file": exc.code}) from None
    except OSError as exc:
        raise ServiceInvalid(f"The file cannot be read: {exc.strerror}.", {"file": "unreadable"}) from None
    stat = path.stat()
    job = SubscriberImport.objects.create(
        file_path=str(path),
        original_name=original_name or path.name,
        uploaded_by=user,
        area_scope=selectors.subscriber_jurisdiction(user) or "",
        file_size=stat.st_size,
        file_mtime_ns=stat.st_mtime_ns,
    )
    audit_record(
        actor=user,
        action="subscriber_import.create",
        obj=job,
        to_state=job.state,
        details={"file": job.original_name, "bytes": job.file_size, "area_scope": job.area_scope},
    )
    if enqueue:
        from smsblast.tasks import subscriber_import_run as task

        # robust: with the broker down the upload still succeeds and the job waits, pending, for a rerun.
        transaction.on_commit(lambda: task.delay(job.pk), robust=True)
    return job


class _SubscriberWriter:
    """Upserts chunks of accepted rows through a temporary table; counts created and updated rows.

    PostgreSQL gets the chunk by COPY, other databases by executemany. One INSERT … SELECT … ON CONFLICT
    then merges it, in number order so the unique index is filled page by page. A cell left empty
    keeps the stored value (an empty language cell means Indonesian, the default); a column the file
    lacks is left alone; opted_out_at is never written, so an import cannot undo an opt-out.
    """

    TEMP = "smsblast_import_rows"
    COLUMNS = ("msisdn", "area_id", "operator_id", "name", "language", "latitude", "longitude")

    def __init__(self, *, update_language: bool) -> None:
        self.postgres = connection.vendor == "postgresql"
        table = Subscriber._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {self.TEMP} (msisdn varchar(16), area_id varchar(13), "
                "operator_id bigint, name varchar(120), language varchar(8), "
                "latitude double precision, longitude double precision)"
            )
        updates = [
            "area_id = COALESCE(excluded.area_id, s.area_id)",
            "operator_id = COALESCE(excluded.operator_id, s.operator_id)",
            "name = CASE WHEN excluded.name = '' THEN s.name ELSE excluded.name END",
            "latitude = COALESCE(excluded.latitude, s.latitude)",
            "longitude = COALESCE(excluded.longitude, s.longitude)",
            "updated_at = excluded.updated_at",
        ]
        if update_language:
            updates.append("language = excluded.language")
        self._count_existing = f"SELECT count(*) FROM {self.TEMP} t JOIN {table} s ON s.msisdn = t.msisdn"  # noqa: S608
        self._merge = (
            f"INSERT INTO {table} AS s (msisdn, area_id, operator_id, name, language, latitude, longitude, "  # noqa: S608
            "created_at, updated_at) "
            "SELECT msisdn, area_id, operator_id, COALESCE(name, ''), language, latitude, longitude, %s, %s "
            f"FROM {self.TEMP} WHERE true ORDER BY msisdn "
            f"ON CONFLICT (msisdn) DO UPDATE SET {', '.join(updates)}"
        )

    def write(self, rows: list[tuple]) -> tuple[int, int]:
        """Upsert rows (tuples in COLUMNS order, numbers unique); return (created, updated)."""
        if not rows:
            return 0, 0
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {self.TEMP}")  # noqa: S608
            if self.postgres:
                # Room to sort a chunk by number in memory rather than on disk.
                cursor.execute("SET LOCAL work_mem = '64MB'")
                with cursor.copy(f"COPY {self.TEMP} ({', '.join(self.COLUMNS)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                # xmax is 0 only in a row version this statement inserted, so the merge counts its own inserts.
                cursor.execute(
                    f"WITH merged AS ({self._merge} RETURNING (xmax = 0) AS inserted) "  # noqa: S608
                    "SELECT count(*) FILTER (WHERE inserted) FROM merged",
                    [now, now],
                )
                created = cursor.fetchone()[0]
                return created, len(rows) - created
            placeholders = ", ".join(["%s"] * len(self.COLUMNS))
            cursor.executemany(f"INSERT INTO {self.TEMP} VALUES ({placeholders})", rows)  # noqa: S608
            cursor.execute(self._count_existing)
            updated = cursor.fetchone()[0]
            cursor.execute(self._merge, [now, now])
        return len(rows) - updated, updated


@dataclass
class _Chunk:
    """The rows read since the last commit, and where reading stopped."""

    rows: list[tuple] = field(default_factory=list)
    rows_read: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)
    kept: list[SubscriberImportRejection] = field(default_factory=list)
    line: int = 0
    bytes_read: int = 0
    # The prefix table its rows' operators were read from.
    routed_by: dict[str, int] = field(default_factory=dict)


# Taken by every chunk of an import and by every re-route, so that each routes by the table the other committed.
_ROUTING_LOCK = 0x736D7362  # "smsb"


def subscriber_routing_lock() -> None:
    """Wait until no import chunk or re-route is writing operators, and keep them out until this transaction ends.

    PostgreSQL only; SQLite serializes writers already.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ROUTING_LOCK])


class _ChunkCommitter:
    """Commits chunks: their subscribers, kept rejections, counts and line cursor in one transaction each.

    Each commit also names this run's rejected file the job's, under the same ownership check as the rows,
    and the first one removes the file of the run it follows.

    On PostgreSQL outside a transaction the commits run on a second thread with its own connection, so
    the database merges one chunk while this thread reads the next (psycopg releases the GIL while it
    waits); at most one chunk waits in between. Elsewhere, and inside an open transaction, they run inline.
    """

    def __init__(self, job: SubscriberImport, *, rejected_path: str, update_language: bool, say: Progress) -> None:
        self.job = job
        self.rejected_path = rejected_path
        self.replaced_path = job.rejected_path if job.rejected_path != rejected_path else ""
        self.update_language = update_language
        self.say = say
        self.writer: _SubscriberWriter | None = None
        # A prefix table newer than the one the reader routes by, found by a commit; the reader takes it up.
        self.newer_table: dict[str, int] | None = None
        self.started = time.monotonic()
        self.threaded = connection.vendor == "postgresql" and not connection.in_atomic_block
        self.error: BaseException | None = None
        if self.threaded:
            self.queue: queue.Queue[_Chunk | None] = queue.Queue(maxsize=1)
            self.thread = threading.Thread(target=self._drain, name=f"subscriber-import-{job.pk}", daemon=True)
            self.thread.start()

    def submit(self, chunk: _Chunk) -> None:
        if not self.threaded:
            self._commit(chunk)
            return
        if self.error is not None:
            raise self.error
        self.queue.put(chunk)

    def close(self) -> None:
        """Wait for the last commit; raise the error that stopped the commits, if any."""
        if self.threaded:
            self.queue.put(None)
            self.thread.join()
            if self.error is not None:
                raise self.error

    def _drain(self) -> None:
        try:
            while (chunk := self.queue.get()) is not None:
                if self.error is None:
                    self._commit(chunk)
        except BaseException as exc:  # handed to the reading thread, which raises it
            self.error = exc
            while self.queue.get() is not None:
                pass
        finally:
            connection.close()

    def _commit(self, chunk: _Chunk) -> None:
        job = self.job
        with transaction.atomic():
            # The admin may have changed the prefixes since the rows were routed: route them by the table now.
            subscriber_routing_lock()
            table = selectors.operators_by_prefix()
            if table != chunk.routed_by:
                operator_for = _operator_lookup(table)
                chunk.rows = [(row[0], row[1], operator_for(row[0]), *row[3:]) for row in chunk.rows]
                self.newer_table = table
            if self.writer is None:
                self.writer = _SubscriberWriter(update_language=self.update_language)
            created, updated = self.writer.write(chunk.rows)
            SubscriberImportRejection.objects.bulk_create(chunk.kept)
            job.refresh_from_db(fields=["rejected_by_reason"])
            job.rows_read += chunk.rows_read
            job.created += created
            job.updated += updated
            job.duplicates += chunk.duplicates
            job.rejected += sum(chunk.rejected.values())
            job.rejected_by_reason = dict(sorted((Counter(job.rejected_by_reason) + chunk.rejected).items()))
            job.lines_done = chunk.line
            job.bytes_read = chunk.bytes_read
            job.rejected_path = self.rejected_path
            # Rolls the chunk back if another run took the job over meanwhile.
            _import_owned_update(
                job, heartbeat_at=timezone.now(), **{name: getattr(job, name) for name in _PROGRESS_FIELDS}
            )
        if self.replaced_path:  # the earlier run's rejected file, listing no more than this run's now does
            Path(self.replaced_path).unlink(missing_ok=True)
            self.replaced_path = ""
        rate = job.rows_read / max(time.monotonic() - self.started, 1e-6)
        self.say(
            f"{job.rows_read:,} of ~{job.total_rows:,} rows: {job.created:,} created, {job.updated:,} updated, "
            f"{job.duplicates:,} duplicates, {job.rejected:,} rejected ({rate:,.0f} rows/s)"
        )


_PROGRESS_FIELDS = [
    "rows_read",
    "created",
    "updated",
    "duplicates",
    "rejected",
    "rejected_by_reason",
    "lines_done",
    "bytes_read",
    "rejected_path",
]


def _import_owned_update(job: SubscriberImport, **fields) -> None:
    """Update a running job only while this run owns it (the job still bears its start), else raise ServiceConflict.

    A job judged dead and resumed is claimed again with a new start, so the run it replaced writes nothing more.
    """
    owned = SubscriberImport.objects.filter(
        pk=job.pk, state=SubscriberImport.State.RUNNING, started_at=job.started_at
    ).update(**fields)
    if not owned:
        raise ServiceConflict(f"Import #{job.pk} was stopped, or resumed by another run; this run stops.")


def _area_resolver(layout: importer.Layout) -> Callable[[str], str | None] | None:
    """Return a function from an area cell to a known area code ("" -> None), or None without an area column.

    A cell is a code (dotted or not) or the name of an area ("Kab. Blitar", "Udanawu"); a name is taken only
    when exactly one area bears it, since most village names repeat across the country.
    """
    if "area" not in layout.columns:
        return None
    known = set(Area.objects.values_list("code", flat=True))
    cache: dict[str, str | bool] = {}
    by_name: dict[str, str | None] = {}  # search name -> its one code, or None when several areas share it

    def code_named(cell: str) -> str | None:
        if not by_name:  # read only when a file names its areas
            for code, name in Area.objects.values_list("code", "search_name").iterator(chunk_size=10_000):
                by_name[name] = None if name in by_name else code
        return by_name.get(selectors.area_search_key(cell))

    def resolve(cell: str):
        found = cache.get(cell)
        if found is None:
            code = importer.area_code_of(cell)
            if code is None and any(character.isalpha() for character in cell):
                code = code_named(cell)
            found = cache[cell] = code if code in known else False
        return found

    return resolve


def subscriber_import_run(
    *, subscriber_import: SubscriberImport, progress: Progress | None = None, resume_failed: bool = True
) -> SubscriberImport:
    """Read an import's file and upsert its subscribers, chunk by chunk; resume after the last committed chunk.

    A pending job is claimed, and a failed or stopped one unless `resume_failed` is false (a queued task: a job
    stopped by its officer since it was queued waits for them to resume it).

    Each chunk commits its subscribers, its counts and the line reached together, so a job stopped
    half-way holds whole chunks and a rerun skips the lines already done (re-reading them only to
    rebuild the numbers seen and the line of each, so duplicates stay counted and listed once). Every
    rejected row, and every repeat of a number with the line it repeats, goes to the rejected file, the
    first KEPT_REJECTIONS also to the database.
    """
    pk = subscriber_import.pk
    now = timezone.now()
    # Each move of the job's state commits with its audit event (invariant 6): start, then complete or fail.
    with transaction.atomic():
        from_state = SubscriberImport.objects.filter(pk=pk).values_list("state", flat=True).first()
        claimable = [SubscriberImport.State.PENDING] + (list(RESUMABLE_IMPORT_STATES) if resume_failed else [])
        claimed = SubscriberImport.objects.filter(pk=pk, state=from_state, state__in=claimable).update(
            state=SubscriberImport.State.RUNNING, started_at=now, heartbeat_at=now, error=""
        )
        job = SubscriberImport.objects.get(pk=pk)
        if not claimed:
            if job.state == SubscriberImport.State.COMPLETED:
                return job
            raise ServiceConflict(f"Import #{pk} is already {job.state}.")
        audit_record(actor=None, action="subscriber_import.start", obj=job, from_state=from_state, to_state=job.state)
    try:
        _subscriber_import_read(job, progress or (lambda message: None))
        with transaction.atomic():
            _import_owned_update(
                job, state=SubscriberImport.State.COMPLETED, total_rows=job.rows_read, finished_at=timezone.now()
            )
            job.refresh_from_db()
            audit_record(
                actor=None,
                action="subscriber_import.complete",
                obj=job,
                from_state=SubscriberImport.State.RUNNING,
                to_state=job.state,
                details={"created": job.created, "updated": job.updated, "rejected": job.rejected},
            )
    except Exception as exc:
        if isinstance(exc, ServiceConflict):  # stopped, taken over or deleted meanwhile: nothing went wrong here
            logger.info("subscriber import %s: %s", pk, exc)
        else:
            logger.exception("subscriber import %s failed", pk)
        message = _import_failure_message(exc)
        with transaction.atomic():
            failed = SubscriberImport.objects.filter(
                pk=pk, state=SubscriberImport.State.RUNNING, started_at=job.started_at
            ).update(state=SubscriberImport.State.FAILED, error=message, finished_at=timezone.now())
            if not SubscriberImport.objects.filter(pk=pk).exists():  # deleted in the admin
                raise ServiceConflict(f"Import #{pk} was deleted while it ran.") from None
            job.refresh_from_db()
            if not failed:  # stopped, or another run took the job over; it is that run's to finish
                return job
            audit_record(
                actor=None,
                action="subscriber_import.fail",
                obj=job,
                from_state=SubscriberImport.State.RUNNING,
                to_state=job.state,
                details={"error": message, "lines_done": job.lines_done},
            )
    return job


def _import_failure_message(exc: Exception) -> str:
    """Say what stopped an import in words for its officer; the exception's own text may name paths or SQL."""
    if isinstance(exc, OSError):
        return IMPORT_FAILED_FILE
    if isinstance(exc, DatabaseError | InterfaceError):
        return IMPORT_FAILED_DATABASE
    return IMPORT_FAILED


def subscriber_import_file_changed(*, subscriber_import: SubscriberImport) -> bool:
    """Whether an import's file was changed since the job was created (its size or modification time differ).

    A file no longer there is not changed: callers say that it is gone.
    """
    try:
        stat = Path(subscriber_import.file_path).stat()
    except FileNotFoundError:
        return False
    if stat.st_size != subscriber_import.file_size:
        return True
    return subscriber_import.file_mtime_ns is not None and stat.st_mtime_ns != subscriber_import.file_mtime_ns


def subscriber_import_file_changed_message(job: SubscriberImport) -> str:
    return (
        f"The file of import #{job.pk} changed since the import began: resuming would skip its first "
        f"{job.lines_done:,} lines as they read now, and rows there would never be imported. Import the file again "
        "as a new import."
    )


@transaction.atomic
def subscriber_import_resume(*, subscriber_import: SubscriberImport, actor: User | None) -> SubscriberImport:
    """Queue an import again (→ pending): a worker continues after the last chunk committed.

    A failed or stopped import may be resumed at once; a pending or running one only when it has shown no sign of
    life for SUBSCRIBER_IMPORT_STALE_SECONDS (its task was lost or its worker killed). A run it replaces, should it
    still be alive, writes nothing more (see `_import_owned_update`).
    """
    job = subscriber_import
    if not Path(job.file_path).is_file():
        raise ServiceConflict(f"The file of import #{job.pk} is no longer kept; upload it again.")
    job.refresh_from_db(fields=["state", "lines_done"])
    if job.lines_done and subscriber_import_file_changed(subscriber_import=job):
        raise ServiceConflict(subscriber_import_file_changed_message(job))
    from_state = job.state
    changed = (
        SubscriberImport.objects.filter(pk=job.pk, state=from_state)
        .filter(Q(state__in=RESUMABLE_IMPORT_STATES) | selectors.subscriber_imports_stalled_q())
        .update(state=SubscriberImport.State.PENDING, error="", finished_at=None, heartbeat_at=timezone.now())
    )
    if not changed:
        job.refresh_from_db()
        minutes = round(settings.SUBSCRIBER_IMPORT_STALE_SECONDS / 60)
        raise ServiceConflict(
            f"Only a failed import, a stopped one, or a pending or running one that has shown no sign of life for "
            f"{minutes} minutes, can be resumed; import #{job.pk} is {job.state}."
        )
    job.refresh_from_db()
    audit_record(
        actor=actor,
        action="subscriber_import.resume",
        obj=job,
        from_state=from_state,
        to_state=job.state,
        details={"lines_done": job.lines_done},
    )
    from smsblast.tasks import subscriber_import_run as task

    transaction.on_commit(lambda: task.delay(job.pk), robust=True)
    return job


def subscriber_imports_redrive() -> int:
    """Queue again the imports whose task never reached a worker (the broker was down or lost it); return how many.

    Only pending ones, once silent for SUBSCRIBER_IMPORT_STALE_SECONDS: a running one as silent had a worker die
    half-way, and its officer resumes it (the file itself may be what killed the worker, so it is not retried
    unattended). A second task for a job already taken finds it running and leaves it.
    """
    lost = SubscriberImport.objects.filter(
        selectors.subscriber_imports_stalled_q(), state=SubscriberImport.State.PENDING
    )
    queued = 0
    for job in lost.order_by("pk"):
        try:
            subscriber_import_resume(subscriber_import=job, actor=None)
        except ServiceConflict as exc:  # its file is gone, or a worker took it meanwhile
            logger.info("Import #%s was not queued again: %s", job.pk, exc)
            continue
        queued += 1
    return queued


@transaction.atomic
def subscriber_import_interrupt(*, subscriber_import: SubscriberImport, actor: User | None = None) -> SubscriberImport:
    """Mark a job left running by a worker that died as failed, so that it can be resumed."""
    changed = SubscriberImport.objects.filter(pk=subscriber_import.pk, state=SubscriberImport.State.RUNNING).update(
        state=SubscriberImport.State.FAILED,
        error=IMPORT_INTERRUPTED,
        finished_at=timezone.now(),
    )
    subscriber_import.refresh_from_db()
    if changed:
        audit_record(
            actor=actor,
            action="subscriber_import.interrupt",
            obj=subscriber_import,
            from_state=SubscriberImport.State.RUNNING,
            to_state=subscriber_import.state,
            details={"lines_done": subscriber_import.lines_done},
        )
    return subscriber_import


@transaction.atomic
def subscriber_import_stop(*, subscriber_import: SubscriberImport, actor: User | None) -> SubscriberImport:
    """Stop a pending or running import (→ stopped, audited): its worker writes nothing more, nor does its queued task.

    The chunks committed before stay, and resuming goes on after them; the chunk its worker is writing is rolled
    back (see `_import_owned_update`).
    """
    from_state = SubscriberImport.objects.filter(pk=subscriber_import.pk).values_list("state", flat=True).first()
    stopped = SubscriberImport.objects.filter(
        pk=subscriber_import.pk,
        state=from_state,
        state__in=[SubscriberImport.State.PENDING, SubscriberImport.State.RUNNING],
    ).update(state=SubscriberImport.State.STOPPED, error="", finished_at=timezone.now())
    subscriber_import.refresh_from_db()
    if not stopped:
        raise ServiceConflict(
            f"Only a pending or running import can be stopped; import #{subscriber_import.pk} is "
            f"{subscriber_import.state}."
        )
    audit_record(
        actor=actor,
        action="subscriber_import.stop",
        obj=subscriber_import,
        from_state=from_state,
        to_state=subscriber_import.state,
        details={"lines_done": subscriber_import.lines_done},
    )
    return subscriber_import


# Rows read ahead at a time, in an import limited to a jurisdiction, to look up where their numbers are homed.
HOME_LOOKUP_ROWS = 900


def _records_with_stored_homes(records: Iterable[tuple], homes: dict[str, str | None], *, number_col: int):
    """Yield `records` unchanged, a block at a time, after filling `homes` with the block's stored numbers.

    `homes` maps each number of the block that is already a subscriber to its home area code (None when it has
    none), read in one query per block, so a limited import checks each row against where its number lives.
    """
    block: list[tuple] = []

    def flush():
        numbers = set()
        for _line, _last_line, fields, _raw in block:
            if fields is not None and number_col < len(fields) and (number := normalize(fields[number_col])).ok:
                numbers.add(number.e164)
        homes.clear()
        homes.update(Subscriber.objects.filter(msisdn__in=numbers).values_list("msisdn", "area_id"))
        yield from block
        block.clear()

    for record in records:
        block.append(record)
        if len(block) >= HOME_LOOKUP_ROWS:
            yield from flush()
    yield from flush()


def _home_refusal(e164: str, area: str | None, *, scope: str, homes: dict[str, str | None]) -> str | None:
    """Return why a limited import may not write this number (an importer.Reject), or None when it may.

    Its row's area (None when the row gives none) already lies within `scope`. The number must not be a
    subscriber homed outside it (another region's to change), and one not yet homed within it needs an area.
    """
    stored = homes.get(e164)
    if stored is not None and not area_code_within(stored, scope):
        return importer.Reject.HOMED_OUTSIDE_JURISDICTION
    if area is None and stored is None:
        return importer.Reject.MISSING_AREA
    return None


def _subscriber_import_read(job: SubscriberImport, say: Progress) -> None:
    path = Path(job.file_path)
    layout = importer.inspect(path)
    if job.total_rows is None:
        job.total_rows = max(importer.count_lines(path) - 1, 0)
        SubscriberImport.objects.filter(pk=job.pk).update(total_rows=job.total_rows)
    columns = layout.columns
    number_col = columns["number"]
    area_col, name_col, language_col = columns.get("area"), columns.get("name"), columns.get("language")
    lat_col, lon_col = columns.get("latitude"), columns.get("longitude")
    resolve_area = _area_resolver(layout)
    scope = job.area_scope
    routed_by = selectors.operators_by_prefix()
    operator_for = _operator_lookup(routed_by)

    skip_through = job.lines_done  # lines committed by an earlier attempt
    kept_total = job.rejections.count()
    # Numbers accepted so far, as integers, each with the line it was accepted on, where a repeat of it points: about
    # 110 bytes a number (a set of the integers alone would take 70, of the numbers as strings 100, without lines).
    first_lines: dict[int, int] = {}
    delimiter = layout.delimiter
    # Each run writes every rejected row again into a file of its own, which becomes the job's with its first
    # commit: a run judged dead and replaced, should it still be reading, writes only into its own file.
    rejected_path = _imports_dir() / f"{job.pk}-rejected-{uuid.uuid4().hex[:12]}.csv"
    committer = _ChunkCommitter(
        job, rejected_path=str(rejected_path), update_language=language_col is not None, say=say
    )
    chunk = _Chunk(routed_by=routed_by)

    try:
        # Decoded in blocks by the io layer; a byte that is not UTF-8 becomes U+FFFD, which rejects its row.
        with (
            open(path, encoding=layout.encoding, errors="replace", newline="") as handle,
            # With a byte-order mark: a spreadsheet opening the download reads it as UTF-8, names and all.
            open(rejected_path, "w", encoding="utf-8-sig", newline="") as rejected_file,
        ):
            rejected_csv = csv.writer(rejected_file)
            rejected_csv.writerow(["line", "reason", "raw"])
            # The binary buffer's position (read ahead by at most one block) measures progress.
            position = handle.buffer.tell
            rows = importer.records(importer.lines_of(handle), delimiter)
            homes: dict[str, str | None] = {}
            if scope:
                rows = _records_with_stored_homes(rows, homes, number_col=number_col)
            # The header as importer.inspect found it: blank lines and lines naming no column above it are no rows.
            header, rows = importer.header_and_rows(rows)
            line, last_line, _fields, _raw = header or (0, 0, None, "")
            replaying = skip_through > 0

            def reject(reason: str, fields: list[str], *, first_line: int | None = None) -> None:
                """List the row at `line` as rejected, or as repeating the number accepted on `first_line`."""
                nonlocal kept_total
                raw = delimiter.join(fields)
                listed = reason if first_line is None else f"duplicate of line {first_line}"
                rejected_csv.writerow([line, listed, spreadsheet_text(raw)])
                if replaying:
                    return
                if first_line is None:
                    chunk.rejected[reason] += 1
                else:
                    chunk.duplicates += 1
                if kept_total < KEPT_REJECTIONS:
                    kept_total += 1
                    chunk.kept.append(
                        SubscriberImportRejection(
                            subscriber_import=job, line=line, raw=raw[:1000], reason=reason, first_line=first_line
                        )
                    )

            def commit() -> None:
                """Hand the chunk read through `last_line` to the committer and start the next one."""
                nonlocal chunk, routed_by, operator_for
                rejected_file.flush()
                chunk.line, chunk.bytes_read = last_line, position()
                committer.submit(chunk)
                if (newer := committer.newer_table) is not None and newer is not routed_by:
                    routed_by, operator_for = newer, _operator_lookup(newer)
                chunk = _Chunk(routed_by=routed_by)

            for record in rows:
                if chunk.rows_read >= IMPORT_CHUNK_ROWS_READ:  # before `last_line` moves on to this record
                    commit()
                line, last_line, fields, raw_line = record
                if replaying and last_line > skip_through:
                    replaying = False
                elif replaying and line % IMPORT_CHUNK == 0:  # reading the done lines again takes a while
                    _import_owned_update(job, heartbeat_at=timezone.now())
                if fields is None:
                    if not replaying:
                        chunk.rows_read += 1
                    reject(importer.Reject.MALFORMED_ROW, [raw_line])
                    continue
                if not any(fields):
                    continue  # a blank line is not a row
                count = len(fields)
                raw_number = fields[number_col] if number_col < count else ""
                blank_number = not raw_number.strip()
                if blank_number and not any(cell.strip() for cell in fields):
                    continue  # nor is a line of spaces
                if not replaying:
                    chunk.rows_read += 1
                if blank_number:
                    reject(importer.Reject.MISSING_NUMBER, fields)
                    continue
                normalized = normalize(raw_number)
                if normalized.reason is not None:
                    if importer.is_scientific_notation(raw_number):  # the fix is in the spreadsheet, not the row
                        reject(importer.Reject.SCIENTIFIC_NOTATION, fields)
                    else:
                        reject(normalized.reason.value, fields)
                    continue
                e164 = normalized.e164
                area = None
                if resolve_area is not None and area_col < count and (cell := fields[area_col].strip()):
                    area = resolve_area(cell)
                    if area is False:
                        if importer.is_area_code_as_number(cell):  # the fix is in the spreadsheet, not the row
                            reject(importer.Reject.AREA_CODE_AS_NUMBER, fields)
                        else:
                            reject(importer.Reject.UNKNOWN_AREA, fields)
                        continue
                if scope and area is not None and not area_code_within(area, scope):
                    reject(importer.Reject.OUTSIDE_JURISDICTION, fields)
                    continue
                language = "id"
                if language_col is not None and language_col < count and (cell := fields[language_col].strip()):
                    language = importer.language_of(cell)
                    if language is None:
                        reject(importer.Reject.INVALID_LANGUAGE, fields)
                        continue
                lat = lon = None
                if lat_col is not None and lon_col is not None and lat_col < count and lon_col < count:
                    lat_cell, lon_cell = fields[lat_col], fields[lon_col]
                    if lat_cell.strip() or lon_cell.strip():
                        point = importer.coordinates_of(lat_cell, lon_cell)
                        if point is None:
                            reject(importer.Reject.INVALID_COORDINATES, fields)
                            continue
                        lat, lon = point
                key = int(e164[1:])
                if (first_line := first_lines.get(key)) is not None:
                    reject(importer.Reject.DUPLICATE, fields, first_line=first_line)
                    continue
                if scope and (refused := _home_refusal(e164, area, scope=scope, homes=homes)):
                    reject(refused, fields)
                    continue
                first_lines[key] = line
                if replaying:
                    continue
                name = fields[name_col].strip()[:120] if name_col is not None and name_col < count else ""
                chunk.rows.append((e164, area, operator_for(e164), name, language, lat, lon))
                if len(chunk.rows) >= IMPORT_CHUNK:
                    commit()
            commit()
    finally:
        try:
            committer.close()
        finally:
            _rejected_file_drop_unless_published(job, rejected_path)


def _operator_lookup(operators_by_prefix: dict[str, int]) -> Callable[[str], int | None]:
    """Return a function from an E.164 number to the id of the operator this prefix table routes it to."""
    prefixes = PrefixTable(operators_by_prefix)
    # A number's operator depends only on its first digits, and a file holds few distinct beginnings.
    head_length = 1 + max(map(len, operators_by_prefix), default=0)
    operator_cache: dict[str, int | None] = {}

    def operator_for(e164: str) -> int | None:
        head = e164[:head_length]
        found = operator_cache.get(head, _MISSING)
        if found is _MISSING:
            found = operator_cache[head] = prefixes.operator_for(head)
        return found

    return operator_for


def subscriber_import_files_drop_on_commit(*, subscriber_import: SubscriberImport) -> None:
    """Remove the files a deleted import kept beside the uploads, once its deletion commits.

    Its upload and its rejected rows hold subscribers' numbers and names: with the job gone nothing leads to them,
    and they would stay on the server's disk for good. A file named on the command line (`import_subscribers CSV`)
    is the server's own and stays where it is.
    """
    uploads = _imports_dir().resolve()
    kept = [subscriber_import.file_path, subscriber_import.rejected_path]
    paths = [Path(name) for name in kept if name and Path(name).resolve().parent == uploads]

    def drop() -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    transaction.on_commit(drop)


def _rejected_file_drop_unless_published(job: SubscriberImport, path: Path) -> None:
    """Remove a run's rejected file unless it is the job's: the run committed nothing or was replaced."""
    try:
        published = SubscriberImport.objects.filter(pk=job.pk, rejected_path=str(path)).exists()
    except (DatabaseError, InterfaceError):  # unreachable: keep the file rather than hide why the run stopped
        return
    if not published:
        path.unlink(missing_ok=True)


def subscribers_reroute(*, prefixes: Iterable[str]) -> int:
    """Give the subscribers under these prefixes the operator the prefix table routes them to now; return how many.

    A subscriber's operator is set when it is imported or opted out; a run sends through that operator.
    So when the admin edits an operator's prefixes, the numbers under every prefix added or removed are
    routed again, longest prefix first as in PrefixTable, with one UPDATE per prefix involved. It waits for
    an import's chunk being written (which routes its rows by the table it finds under the same lock), so
    its UPDATEs see every chunk committed before, and later chunks see the new table.
    """
    subscriber_routing_lock()
    table = selectors.operators_by_prefix()
    routes = PrefixTable(table)
    changed = 0
    for prefix in sorted(set(prefixes)):
        nested = sorted(other for other in table if other.startswith(prefix) and other != prefix)
        for start in [prefix, *nested]:
            operator_id = routes.operator_for(start)
            rows = Subscriber.objects.filter(msisdn__startswith=f"+{start}")
            for other in nested:
                if other.startswith(start) and other != start:
                    rows = rows.exclude(msisdn__startswith=f"+{other}")
            changed += rows.exclude(operator_id=operator_id).update(operator_id=operator_id, updated_at=timezone.now())
    return changed


# ---------------------------------------------------------------------------------------------------------------
# Opt-out and opt-in
# ---------------------------------------------------------------------------------------------------------------

OPTED_OUT, SUBSCRIBED = "opted_out", "subscribed"


def _msisdn_or_invalid(raw: str) -> str:
    normalized = normalize(str(raw or ""))
    if not normalized.ok:
        raise ServiceInvalid(
            f"{raw!r} is not an Indonesian mobile number ({normalized.reason}).", {"msisdn": "invalid"}
        )
    return normalized.e164


def _operator_id_for(e164: str) -> int | None:
    return PrefixTable(selectors.operators_by_prefix()).operator_for(e164)


@transaction.atomic
def subscriber_opt_out(
    *, msisdn: str, actor: User | None, source: str, at: datetime | None = None, details: dict | None = None
) -> tuple[Subscriber | None, bool]:
    """Opt a number out of every later run and of the unsent batches of runs under way; return (subscriber, changed).

    An unknown number is recorded as a new, opted-out subscriber, so that a later import of the same
    number keeps the opt-out instead of adding a reachable subscriber. An officer limited to a jurisdiction
    opts out only the subscribers homed within it: any other number, known elsewhere or not at all, gives
    (None, False) and changes nothing, as if it were not registered.

    A STOP received `at` a moment before the number's latest opt-in (an operator's late delivery of an older
    message) changes nothing and leaves it reachable; without `at` the opt-out takes effect now, whatever came
    before. A repeated STOP moves the opt-out to its own time, so a START sent between the two stays outdated.
    """
    e164 = _msisdn_or_invalid(msisdn)
    received = at is not None
    at = at or timezone.now()
    if selectors.subscriber_jurisdiction(actor) is not None:
        subscriber = selectors.subscribers_visible(actor).select_for_update().filter(msisdn=e164).first()
        if subscriber is None:
            return None, False
        created = False
    else:
        subscriber, created = Subscriber.objects.select_for_update().filter(msisdn=e164).first(), False
        if subscriber is None:
            # A new number is routed as an import chunk routes its rows: under the lock a re-route takes, by
            # the prefix table it left, so a prefix moving meanwhile cannot leave the number with its old operator.
            subscriber_routing_lock()
            subscriber, created = Subscriber.objects.select_for_update().get_or_create(
                msisdn=e164, defaults={"opted_out_at": at, "operator_id": _operator_id_for(e164)}
            )
    if not created:
        reachable = Subscriber.objects.filter(pk=subscriber.pk, opted_out_at__isnull=True)
        if received:
            reachable = reachable.filter(Q(opted_in_at__isnull=True) | Q(opted_in_at__lte=at))
        changed = reachable.update(opted_out_at=at, updated_at=timezone.now())
        if not changed:
            if subscriber.opted_out_at is None:
                return subscriber, False  # received before the number's latest opt-in, which stands
            if source == "sms":
                Subscriber.objects.filter(pk=subscriber.pk, opted_out_at__lt=at).update(
                    opted_out_at=at, updated_at=timezone.now()
                )
            if source == "sms" and not _opted_out_by_sms(subscriber):
                # The subscriber's own STOP over a hand-made opt-out: from now on only its START or REG undoes it
                # (subscriber_opt_in reads the latest opt-out's source), so it is recorded though nothing moved.
                audit_record(
                    actor=actor,
                    action="subscriber.opt_out",
                    obj=subscriber,
                    from_state=OPTED_OUT,
                    to_state=OPTED_OUT,
                    details={"source": source, "msisdn": e164, "already_opted_out": True, **(details or {})},
                )
            return subscriber, False
        subscriber.refresh_from_db()
    from campaigns.dispatch import deliveries_withdraw_opted_out  # campaigns builds on this app

    # Runs under way leave the number out of the batches they have not sent yet.
    withdrawn = deliveries_withdraw_opted_out(msisdn=e164, now=timezone.now())
    audit_record(
        actor=actor,
        action="subscriber.opt_out",
        obj=subscriber,
        from_state="" if created else SUBSCRIBED,
        to_state=OPTED_OUT,
        details={
            "source": source,
            "msisdn": e164,
            "new_subscriber": created,
            **({"withdrawn_from_runs": sorted(withdrawn)} if withdrawn else {}),
            **(details or {}),
        },
    )
    return subscriber, True


@transaction.atomic
def _opted_out_by_sms(subscriber: Subscriber) -> bool:
    """Return whether the subscriber's latest opt-out came by SMS from the number itself."""
    latest = (
        audit_history(subscriber)
        .filter(action="subscriber.opt_out")
        .order_by("-at", "-id")
        .values_list("details", flat=True)
        .first()
    )
    return bool(latest) and latest.get("source") == "sms"


@transaction.atomic
def subscriber_opt_in(
    *, msisdn: str, actor: User | None, source: str, at: datetime | None = None, details: dict | None = None
) -> tuple[Subscriber | None, bool]:
    """Make an opted-out number reachable again; return the subscriber (None when unknown) and whether it changed.

    For an officer limited to a jurisdiction a subscriber homed outside it is unknown.

    A number that opted out by SMS (STOP, BERHENTI, UNREG) comes back only by its own START or REG: an officer
    or an administrator may undo a hand-made opt-out, never the subscriber's own (ServiceConflict). A request
    made `at` a moment before the number's opt-out (an operator's late retry of an older START) changes nothing.
    The time of the number's own START or REG is kept (`opted_in_at`), so a STOP received before it changes nothing
    either; one from a number already reachable moves that time to its own. An officer's opt-in keeps no time: a
    STOP the subscriber sent before it, delivered late, still opts the number out.
    """
    e164 = _msisdn_or_invalid(msisdn)
    # Locked as subscriber_opt_out locks it: a STOP committing meanwhile is seen by the check below, not undone.
    subscribers = Subscriber.objects
    if selectors.subscriber_jurisdiction(actor) is not None:
        subscribers = selectors.subscribers_visible(actor)
    subscriber = subscribers.select_for_update().filter(msisdn=e164).first()
    if subscriber is None:
        return None, False
    if source != "sms" and subscriber.opted_out_at and _opted_out_by_sms(subscriber):
        raise ServiceConflict(f"{e164} opted out by SMS; only the subscriber can opt back in, by sending START or REG.")
    opted_out = Subscriber.objects.filter(pk=subscriber.pk, opted_out_at__isnull=False)
    if at is not None:
        opted_out = opted_out.filter(opted_out_at__lte=at)
    opted_in_at = at or timezone.now()
    updates = {"opted_out_at": None, "updated_at": timezone.now()}
    if source == "sms":
        # Only the number's own START or REG outdates a STOP it sent earlier: an officer undoing a hand-made opt-out
        # must not swallow the subscriber's STOP an operator delivers late.
        updates["opted_in_at"] = opted_in_at
    changed = opted_out.update(**updates)
    if not changed:
        if source == "sms" and subscriber.opted_out_at is None:
            Subscriber.objects.filter(pk=subscriber.pk).filter(
                Q(opted_in_at__isnull=True) | Q(opted_in_at__lt=opted_in_at)
            ).update(opted_in_at=opted_in_at, updated_at=timezone.now())
        return subscriber, False
    subscriber.refresh_from_db()
    audit_record(
        actor=actor,
        action="subscriber.opt_in",
        obj=subscriber,
        from_state=OPTED_OUT,
        to_state=SUBSCRIBED,
        details={"source": source, "msisdn": e164, **(details or {})},
    )
    return subscriber, True
