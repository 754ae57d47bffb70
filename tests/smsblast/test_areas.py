"""Areas: loading the Kemendagri table with populations and boundaries, re-runs, and the areas API."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from smsblast.models import Area, AreaLevel, AuditEvent
from smsblast.services import areas_attach_boundaries, areas_load, areas_set_population
from tests.smsblast.factories import AreaFactory, SubscriberFactory

WILAYAH = Path(settings.BASE_DIR).parent / "shared" / "data" / "wilayah"


def square(lng: float, lat: float, size: float = 0.1) -> dict:
    return {
        "type": "Polygon",
        "coordinates": [[[lng, lat], [lng + size, lat], [lng + size, lat + size], [lng, lat + size], [lng, lat]]],
    }


def write_csv(tmp_path: Path, rows: list[str], name: str = "wilayah.csv") -> Path:
    path = tmp_path / name
    path.write_text("kode,nama,tingkat,induk\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.django_db
def test_load_areas_loads_the_whole_kemendagri_table_with_populations_and_boundaries_and_reruns(capsys):
    call_command(
        "load_areas",
        str(WILAYAH / "kode_wilayah.csv"),
        "--boundaries",
        str(WILAYAH / "batas_kabupaten.geojson"),
        str(WILAYAH / "batas_kecamatan_contoh.geojson"),
    )
    out = capsys.readouterr().out

    assert "Areas: 91,599 created, 0 updated, 0 unchanged, 0 skipped" in out
    assert "created 5,000 of 91,599 new areas" in out  # progress
    assert Area.objects.count() == 91_599
    counts = {level: Area.objects.filter(level=level).count() for level in AreaLevel}
    assert counts[AreaLevel.PROVINSI] == 38
    blitar = Area.objects.get(code="35.05")
    assert (blitar.name, blitar.level, blitar.parent_id, blitar.search_name) == (
        "Kabupaten Blitar",
        AreaLevel.KABUPATEN,
        "35",
        "kabupaten blitar",
    )
    assert blitar.population > 1_000_000  # penduduk.csv beside the CSV is read by default
    assert blitar.boundary["type"] in {"Polygon", "MultiPolygon"}
    assert Area.objects.get(code="35.05.01").boundary is not None  # a kecamatan of an example regency
    assert Area.objects.filter(parent_id="35.05.01", level=AreaLevel.DESA).exists()

    call_command("load_areas", str(WILAYAH / "kode_wilayah.csv"), "--no-population")
    assert "Areas: 0 created, 0 updated, 91,599 unchanged" in capsys.readouterr().out
    assert Area.objects.get(code="35.05").boundary is not None  # a re-run keeps what it was not given


def test_rerun_updates_names_adds_codes_and_keeps_areas_the_file_lacks(tmp_path, db):
    first = write_csv(
        tmp_path, ["35,Jawa Timur,provinsi,", "35.05,Kab. Blitar,kabupaten,35", "35.05.01,Wonodadi,kecamatan,35.05"]
    )
    areas_load(path=first)
    SubscriberFactory(area_id="35.05.01")

    second = write_csv(
        tmp_path,
        [
            "35,Jawa Timur,provinsi,",
            "35.05,Kabupaten Blitar,kabupaten,35",
            "35.05.02,Udanawu,kecamatan,35.05",
            "35.05.02.2001,Bendosari,desa,35.05.02",
        ],
        name="second.csv",
    )
    result = areas_load(path=second)

    assert (result.created, result.updated, result.unchanged) == (2, 1, 1)
    assert result.not_in_file == ["35.05.01"]
    assert Area.objects.get(code="35.05").name == "Kabupaten Blitar"
    assert Area.objects.get(code="35.05").search_name == "kabupaten blitar"
    assert Area.objects.filter(code="35.05.01").exists()  # in use by a subscriber, and never deleted anyway
    assert Area.objects.get(code="35.05.02.2001").parent_id == "35.05.02"


def test_malformed_rows_are_skipped_and_reported(tmp_path, db):
    path = write_csv(
        tmp_path,
        [
            "35,Jawa Timur,provinsi,",
            "35.5,Bad code,kabupaten,35",
            "35.05,Kabupaten Blitar,kecamatan,35",
            "35.06,Kabupaten Kediri,kabupaten,34",
            "36.01,Kabupaten Pandeglang,kabupaten,36",
            "35.07,,kabupaten,35",
        ],
    )
    result = areas_load(path=path)

    assert result.created == 1
    assert [line for line, _ in result.skipped] == [3, 4, 5, 7, 0]
    assert "parent 36 of 36.01 is unknown" in result.skipped[-1][1]


def test_load_areas_given_a_folder_says_it_is_not_a_file(tmp_path, db):
    with pytest.raises(CommandError, match=f"{tmp_path} is a folder, not a file."):
        call_command("load_areas", str(tmp_path))
    with pytest.raises(CommandError, match=f"{tmp_path / 'none.csv'} does not exist."):
        call_command("load_areas", str(tmp_path / "none.csv"))


def test_a_name_holding_a_nul_character_is_skipped_by_line_instead_of_stopping_the_load(tmp_path, db, capsys):
    path = write_csv(tmp_path, ["35,Jawa Timur,provinsi,", "35.05,Kabupaten\x00 Blitar,kabupaten,35"])

    call_command("load_areas", str(path), "--no-population")

    assert list(Area.objects.values_list("code", flat=True)) == ["35"]
    assert "skipped line 3: a NUL character in the name of 35.05" in capsys.readouterr().err


# Python's json module reads these, but they are not JSON and no database column of JSON takes them.
INFINITE_BOUNDARY = (
    b'{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"kode": "35"}, "geometry": '
    b'{"type": "Polygon", "coordinates": [[[Infinity, 0], [1, 0], [1, 1], [Infinity, 0]]]}}]}'
)
NAN_BBOX = (
    b'{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"kode": "35"}, "geometry": '
    b'{"type": "Polygon", "bbox": [NaN, 0, 1, 1], "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}'
)


def test_a_name_whose_search_form_grows_past_the_column_is_loaded(tmp_path, db):
    # "ß" searches as "ss": a name of 100 characters can have a search form of 200, as long as the column twice over.
    path = write_csv(tmp_path, ["35,Jawa Timur,provinsi,", f"35.05,{'ß' * 100},kabupaten,35"])

    call_command("load_areas", str(path), "--no-population")

    area = Area.objects.get(code="35.05")
    assert (area.name, area.search_name) == ("ß" * 100, "s" * 100)


@pytest.mark.parametrize(
    ("option", "content", "message"),
    [
        (None, b"kode,nama\n35,Jaw\xe1 Timur\n", "wilayah.csv is not UTF-8 text."),
        ("--population", b"kode,total\n35,4\xff\n", "penduduk.csv is not UTF-8 text."),
        ("--population", b"code;population\n35;4\n", "penduduk.csv has no column kode, total"),
        ("--boundaries", b"not json", "batas.geojson is not valid JSON"),
        ("--boundaries", b"[1, 2]", "batas.geojson is not a GeoJSON FeatureCollection."),
        ("--boundaries", b'{"type": "Feature", "geometry": null}', "batas.geojson is not a GeoJSON FeatureCollection."),
        ("--boundaries", b"{}", "batas.geojson is not a GeoJSON FeatureCollection."),
        ("--boundaries", INFINITE_BOUNDARY, "batas.geojson is not valid JSON: Infinity is not a number JSON allows."),
        ("--boundaries", NAN_BBOX, "batas.geojson is not valid JSON: NaN is not a number JSON allows."),
        ("--boundaries", b"[" * 100_000 + b"]" * 100_000, "batas.geojson is not valid JSON: nested too deeply."),
    ],
)
def test_load_areas_with_an_unreadable_file_says_which_and_writes_nothing(tmp_path, db, option, content, message):
    csv_path = write_csv(tmp_path, ["35,Jawa Timur,provinsi,"])
    names = {None: "wilayah.csv", "--population": "penduduk.csv", "--boundaries": "batas.geojson"}
    bad = tmp_path / names[option]
    bad.write_bytes(content)
    args = [str(bad)] if option is None else [str(csv_path), option, str(bad)]

    with pytest.raises(CommandError, match=message):
        call_command("load_areas", *args)
    assert not Area.objects.exists()


def test_load_areas_given_the_population_file_instead_is_refused_and_renames_nothing(db):
    # penduduk.csv lies beside kode_wilayah.csv and also has kode and nama, but no parents: it is not an area table.
    AreaFactory(code="96", name="Papua Barat Daya")

    with pytest.raises(CommandError, match="penduduk.csv has no column induk; expected kode,nama,tingkat,induk."):
        call_command("load_areas", str(WILAYAH / "penduduk.csv"))

    assert Area.objects.get(code="96").name == "Papua Barat Daya"
    assert Area.objects.count() == 1


def test_load_areas_interrupted_says_nothing_was_changed_and_keeps_nothing(tmp_path, db, monkeypatch):
    csv_path = write_csv(tmp_path, ["35,Jawa Timur,provinsi,", "35.05,Kabupaten Blitar,kabupaten,35"])
    boundaries = tmp_path / "batas.geojson"
    boundaries.write_text('{"type": "FeatureCollection", "features": []}')

    def interrupted(*args, **kwargs):  # Ctrl-C while the boundaries are read, after the areas were written
        raise KeyboardInterrupt

    monkeypatch.setattr("smsblast.services._areas_load_boundaries", interrupted)

    with pytest.raises(CommandError, match="Interrupted: no area, population or boundary was changed."):
        call_command("load_areas", str(csv_path), "--no-population", "--boundaries", str(boundaries))
    assert not Area.objects.exists()


def test_each_load_areas_run_is_audited_once_with_its_counts_files_and_renames(tmp_path, db):
    import hashlib
    import json

    first = write_csv(
        tmp_path, ["35,Jawa Timur,provinsi,", "35.05,Kab. Blitar,kabupaten,35", "35.06,Kediri,kabupaten,35"]
    )
    geojson = tmp_path / "batas.geojson"
    features = [{"type": "Feature", "properties": {"kode": "35.05"}, "geometry": square(112, -8)}]
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    penduduk = tmp_path / "penduduk.csv"
    penduduk.write_text("kode,nama,pria,wanita,total\n35.05,Blitar,2,2,4\n")

    call_command("load_areas", str(first), "--boundaries", str(geojson))

    # One event for the whole run, never one per area (a first load of the real table creates 91,599).
    loaded = AuditEvent.objects.get()
    assert (loaded.action, loaded.actor, loaded.object_type, loaded.object_id) == (
        "area.load",
        None,
        "smsblast.area",
        "",
    )
    assert loaded.details == {
        "areas_file": {"name": "wilayah.csv", "sha256": hashlib.sha256(first.read_bytes()).hexdigest()},
        "population_file": {"name": "penduduk.csv", "sha256": hashlib.sha256(penduduk.read_bytes()).hexdigest()},
        "boundary_files": [{"name": "batas.geojson", "sha256": hashlib.sha256(geojson.read_bytes()).hexdigest()}],
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "skipped": 0,
        "populations": 1,
        "boundaries": 1,
        "changed": {},
    }

    # A rename and a move are recorded from and to, as the area admin records them.
    second = write_csv(
        tmp_path,
        ["35,Jawa Timur,provinsi,", "35.05,Kabupaten Blitar,kabupaten,35", "35.06,Kediri,kabupaten,35"],
        name="second.csv",
    )
    call_command("load_areas", str(second), "--no-population")

    renamed = AuditEvent.objects.filter(action="area.load").last()
    assert (renamed.details["created"], renamed.details["updated"], renamed.details["unchanged"]) == (0, 1, 2)
    assert renamed.details["changed"] == {"35.05": {"name": {"from": "Kab. Blitar", "to": "Kabupaten Blitar"}}}
    assert (renamed.details["population_file"], renamed.details["boundary_files"]) == (None, [])

    # A rerun that changes nothing still says that it ran, on which file, and that it changed nothing.
    call_command("load_areas", str(second), "--no-population")

    again = AuditEvent.objects.filter(action="area.load").last()
    assert (again.details["created"], again.details["updated"], again.details["unchanged"]) == (0, 0, 3)
    assert again.details["changed"] == {}
    assert AuditEvent.objects.count() == 3


def test_a_load_areas_run_that_fails_records_no_audit_event(tmp_path, db):
    path = write_csv(tmp_path, ["35,Jawa Timur,provinsi,"])
    broken = tmp_path / "batas.geojson"
    broken.write_text("not json")

    with pytest.raises(CommandError, match="batas.geojson is not valid JSON"):
        call_command("load_areas", str(path), "--no-population", "--boundaries", str(broken))

    assert not Area.objects.exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "wilayah.csv has a header but no rows."),
        (
            ["3505,Kabupaten Blitar,kabupaten,35", "3506,Kabupaten Kediri,kabupaten,35"],
            "wilayah.csv has no row to load: all 2 were skipped (line 2: not a Kemendagri code or no name: '3505').",
        ),
        (
            ["35.05,Kabupaten Blitar,kabupaten,35"],
            "wilayah.csv has no row to load: its only row was skipped (parent 35 of 35.05 is unknown).",
        ),
    ],
)
def test_load_areas_with_no_row_it_can_load_fails_saying_why(tmp_path, db, rows, message):
    # Undotted BPS codes, or regencies of a province neither in the file nor loaded: nothing is loaded, so it failed.
    path = write_csv(tmp_path, rows)

    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("load_areas", str(path), "--no-population")
    assert not Area.objects.exists()


def test_boundaries_of_unknown_areas_are_reported(tmp_path, db):
    import json

    AreaFactory(code="35", name="Jawa Timur")
    geojson = tmp_path / "batas.geojson"
    features = [{"type": "Feature", "properties": {"kode": code}, "geometry": square(112, -8)} for code in ("35", "99")]
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    result = areas_load(path=write_csv(tmp_path, ["35,Jawa Timur,provinsi,"]), boundary_paths=[geojson])

    assert (result.boundaries, result.unknown_boundary_codes) == (1, ["99"])
    assert Area.objects.get(code="35").boundary == square(112, -8)


def test_a_boundary_whose_coordinates_cannot_be_read_is_reported_and_not_attached(tmp_path, db, capsys):
    import json

    geojson = tmp_path / "batas.geojson"
    features = [
        {"type": "Feature", "properties": {"kode": "35"}, "geometry": {"type": "Polygon", "coordinates": "x"}},
        {"type": "Feature", "properties": {"kode": "35.05"}, "geometry": square(112, -8)},
    ]
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    path = write_csv(tmp_path, ["35,Jawa Timur,provinsi,", "35.05,Kabupaten Blitar,kabupaten,35"])

    call_command("load_areas", str(path), "--no-population", "--boundaries", str(geojson))

    assert Area.objects.get(code="35").boundary is None  # its children's boundaries stand in for it
    assert Area.objects.get(code="35.05").boundary == square(112, -8)
    assert "1 boundaries cannot be read: 35" in capsys.readouterr().out


def test_boundaries_and_populations_can_be_attached_to_chosen_areas_only(tmp_path, db):
    import json

    for code in ("35", "35.05", "35.06"):
        AreaFactory(code=code, name=code)
    geojson = tmp_path / "batas.geojson"
    features = [{"type": "Feature", "properties": {"kode": c}, "geometry": square(112, -8)} for c in ("35.05", "35.06")]
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    penduduk = tmp_path / "penduduk.csv"
    penduduk.write_text("kode,nama,pria,wanita,total\n35,Jatim,1,1,2\n35.05,Blitar,2,2,4\n35.06,Kediri,3,3,6\n")

    assert areas_attach_boundaries(path=geojson, codes=["35.05"]) == 1
    assert areas_set_population(path=penduduk, codes=["35", "35.05"]) == 2

    assert dict(Area.objects.filter(boundary__isnull=False).values_list("code", "population")) == {"35.05": 4}
    assert Area.objects.get(code="35").population == 2
    assert Area.objects.get(code="35.06").population is None
    assert areas_attach_boundaries(path=geojson) == 2  # no codes: every area in the file


def test_boundaries_and_populations_attached_to_chosen_areas_are_audited_from_and_to(tmp_path, db):
    import hashlib
    import json

    for code in ("35", "35.05"):
        AreaFactory(code=code, name=code)
    geojson = tmp_path / "batas.geojson"
    features = [{"type": "Feature", "properties": {"kode": c}, "geometry": square(112, -8)} for c in ("35", "35.05")]
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    penduduk = tmp_path / "penduduk.csv"
    penduduk.write_text("kode,nama,pria,wanita,total\n35,Jatim,1,1,2\n35.05,Blitar,2,2,4\n")

    areas_set_population(path=penduduk, codes=["35.05"])
    areas_attach_boundaries(path=geojson, codes=["35.05"])

    events = list(AuditEvent.objects.all())
    assert [(event.action, event.actor, event.object_type, event.object_id) for event in events] == [
        ("area.update", None, "smsblast.area", "35.05"),
        ("area.update", None, "smsblast.area", "35.05"),
    ]
    assert events[0].details == {"changed": {"population": {"from": None, "to": 4}}}
    # As the area admin records a boundary: by its digest, not copied whole into the trail.
    canonical = json.dumps(square(112, -8), sort_keys=True, separators=(",", ":")).encode()
    digest = f"sha256:{hashlib.sha256(canonical).hexdigest()}"
    assert events[1].details == {"changed": {"boundary": {"from": None, "to": digest}}}

    areas_set_population(path=penduduk, codes=["35.05"])
    areas_attach_boundaries(path=geojson, codes=["35.05"])
    assert AuditEvent.objects.count() == 2, "attached again unchanged: nothing to record"


# --- API --------------------------------------------------------------------------------------------------------


@pytest.fixture
def tree(db):
    AreaFactory(code="35", name="Jawa Timur", boundary=square(111, -8, 2))
    AreaFactory(code="35.05", name="Kabupaten Blitar", boundary=square(112, -8.3, 0.5))
    AreaFactory(code="35.72", name="Kota Blitar")
    AreaFactory(code="35.05.01", name="Wonodadi")
    AreaFactory(code="35.05.02", name="Udanawu")
    AreaFactory(code="35.05.01.2001", name="Blitaran")
    AreaFactory(code="73", name="Sulawesi Selatan")
    AreaFactory(code="73.01", name="Kabupaten Kepulauan Selayar")
    AreaFactory(code="91", name="Papua")
    AreaFactory(code="32", name="Jawa Barat")
    AreaFactory(code="32.01", name="Kabupaten Bogor")
    AreaFactory(code="32.01.01", name="Cibinong Blitaŕ")  # an accented name, invented to test search
    SubscriberFactory(area_id="35.05.01.2001")
    SubscriberFactory(area_id="35.05.01")
    SubscriberFactory(area_id="35.05.02")
    from django.utils import timezone

    SubscriberFactory(area_id="35.05.02", opted_out_at=timezone.now())


def test_children_of_an_area_with_counts_boundary_flag_and_zone(api_client_for, officer, tree):
    response = api_client_for(officer).get("/api/v1/areas/", {"parent": "35.05"})

    assert response.status_code == 200
    assert response.json() == {
        "count": 2,
        "results": [
            {
                "code": "35.05.01",
                "name": "Wonodadi",
                "level": "kecamatan",
                "parent": "35.05",
                "subscriber_count": 2,
                "has_boundary": False,
                "zone": "WIB",
                "time_zone": "Asia/Jakarta",
            },
            {
                "code": "35.05.02",
                "name": "Udanawu",
                "level": "kecamatan",
                "parent": "35.05",
                "subscriber_count": 1,  # the opted-out one is not counted
                "has_boundary": False,
                "zone": "WIB",
                "time_zone": "Asia/Jakarta",
            },
        ],
    }


def test_without_parent_the_provinces_are_listed_with_their_zones(api_client_for, approver, tree):
    results = api_client_for(approver).get("/api/v1/areas/").json()["results"]

    assert [(area["code"], area["zone"], area["subscriber_count"]) for area in results] == [
        ("32", "WIB", 0),
        ("35", "WIB", 3),
        ("73", "WITA", 0),
        ("91", "WIT", 0),
    ]
    assert [area["has_boundary"] for area in results] == [False, True, False, False]


def test_search_is_case_and_accent_insensitive_and_lists_kabupaten_kota_first(api_client_for, officer, tree):
    response = api_client_for(officer).get("/api/v1/areas/", {"q": "BLÍT"})

    codes = [area["code"] for area in response.json()["results"]]
    assert codes == ["35.05", "35.72", "32.01.01", "35.05.01.2001"]
    assert response.json()["results"][0]["subscriber_count"] == 3


def test_a_search_with_a_parent_finds_only_the_areas_below_that_parent(api_client_for, officer, tree):
    """Desa names repeat across Indonesia: `?parent=35.05&q=…` looks for the name within Kab. Blitar only."""
    client = api_client_for(officer)

    within = client.get("/api/v1/areas/", {"parent": "35.05", "q": "blit"})
    assert within.status_code == 200
    assert [area["code"] for area in within.json()["results"]] == ["35.05.01.2001"]
    assert [area["code"] for area in client.get("/api/v1/areas/", {"parent": "32", "q": "blit"}).json()["results"]] == [
        "32.01.01"
    ]
    assert client.get("/api/v1/areas/", {"parent": "99", "q": "blit"}).status_code == 404


def test_a_search_starting_with_a_digit_finds_areas_by_their_kemendagri_code(api_client_for, officer, tree):
    """As the compose page's area picker does: larger areas first, then by code."""
    client = api_client_for(officer)

    found = client.get("/api/v1/areas/", {"q": "35.05"}).json()["results"]
    assert [area["code"] for area in found] == ["35.05", "35.05.01", "35.05.02", "35.05.01.2001"]
    assert found[0]["subscriber_count"] == 3
    assert [
        area["code"] for area in client.get("/api/v1/areas/", {"q": "35.05.01", "parent": "35.05"}).json()["results"]
    ] == [
        "35.05.01",
        "35.05.01.2001",
    ]
    assert client.get("/api/v1/areas/", {"q": "99"}).json() == {"count": 0, "results": []}


def test_search_is_limited(api_client_for, officer, tree):
    response = api_client_for(officer).get("/api/v1/areas/", {"q": "blit", "limit": 2})

    assert [area["code"] for area in response.json()["results"]] == ["35.05", "35.72"]
    assert api_client_for(officer).get("/api/v1/areas/", {"q": "blit", "limit": "x"}).status_code == 400


def test_detail_adds_the_boundary_population_and_ancestors(api_client_for, officer, tree):
    body = api_client_for(officer).get("/api/v1/areas/35.05/").json()

    assert body["boundary"] == square(112, -8.3, 0.5)
    assert body["has_boundary"] is True
    assert body["ancestors"] == [{"code": "35", "name": "Jawa Timur", "level": "provinsi"}]
    assert (body["children"], body["subscriber_count"], body["zone"]) == (2, 3, "WIB")
    assert api_client_for(officer).get("/api/v1/areas/35.05.01/").json()["boundary"] is None


def test_unknown_area_is_404(api_client_for, officer, tree):
    client = api_client_for(officer)

    assert client.get("/api/v1/areas/99.99/").status_code == 404
    assert client.get("/api/v1/areas/", {"parent": "99"}).status_code == 404


def test_areas_are_for_staff_roles_only(api_client_for, operator_user, tree):
    assert api_client_for(operator_user).get("/api/v1/areas/").status_code == 403


@pytest.mark.parametrize("query", ["Kab. Blitar", "kab blitar", "KAB.BLITAR", "Kabupaten Blitar"])
def test_search_reads_the_kab_abbreviation_as_kabupaten(api_client_for, officer, tree, query):
    response = api_client_for(officer).get("/api/v1/areas/", {"q": query})

    assert [area["code"] for area in response.json()["results"]] == ["35.05"]


def test_search_by_kota_finds_the_city(api_client_for, officer, tree):
    response = api_client_for(officer).get("/api/v1/areas/", {"q": "Kota Blitar"})

    assert [area["code"] for area in response.json()["results"]] == ["35.72"]


def test_listing_areas_reads_none_of_their_boundaries(api_client_for, approver, tree):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = api_client_for(approver)
    client.get("/api/v1/areas/")  # the token's first use is recorded once
    for params in ({}, {"parent": "35"}, {"q": "blit"}):
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/api/v1/areas/", params).status_code == 200
        assert [query["sql"] for query in captured if '"boundary" FROM' in query["sql"]] == []
    # Whether each has one is still answered.
    results = client.get("/api/v1/areas/", {"parent": "35"}).json()["results"]
    assert [(area["code"], area["has_boundary"]) for area in results] == [("35.05", True), ("35.72", False)]


def test_load_areas_on_a_file_it_may_not_read_says_so_in_one_line(tmp_path, db, monkeypatch):
    csv_path = write_csv(tmp_path, ["35,Jawa Timur,provinsi,"])
    real_open = open

    def refusing_open(file, *args, **kwargs):
        if str(file) == str(csv_path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(CommandError, match=rf"{csv_path.name} cannot be read: Permission denied\."):
        call_command("load_areas", str(csv_path), "--no-population")
    assert not Area.objects.exists()
