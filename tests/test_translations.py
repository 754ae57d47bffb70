"""The Indonesian catalogue: every string the pages mark for translation has a finished Indonesian translation."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
CATALOGUE = Path("locale") / "id" / "LC_MESSAGES" / "django.po"
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]")


def catalogue_entries(path: Path) -> list[dict]:
    """Return the entries of a .po file (its header left out): msgid, msgid_plural, msgstr…, and `fuzzy`."""
    entries = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        entry: dict = {"fuzzy": False}
        key = None
        for line in block.strip().splitlines():
            if line.startswith("#,"):
                entry["fuzzy"] = entry["fuzzy"] or "fuzzy" in line
            elif match := re.match(r"(msgctxt|msgid|msgid_plural|msgstr(?:\[\d+\])?) (\".*\")$", line):
                key = match.group(1)
                entry[key] = ast.literal_eval(match.group(2))
            elif line.startswith('"') and key:
                entry[key] += ast.literal_eval(line)
        if entry.get("msgid"):
            entries.append(entry)
    return entries


def translations(entry: dict) -> list[str]:
    return [value for key, value in entry.items() if key.startswith("msgstr")]


def test_every_message_has_a_finished_indonesian_translation():
    unfinished = [
        entry["msgid"]
        for entry in catalogue_entries(BASE_DIR / CATALOGUE)
        if entry["fuzzy"] or not all(translations(entry))
    ]
    assert unfinished == []


def test_every_translation_keeps_the_placeholders_of_its_message():
    mismatched = []
    for entry in catalogue_entries(BASE_DIR / CATALOGUE):
        expected = set(PLACEHOLDER.findall(entry["msgid"] + entry.get("msgid_plural", "")))
        for translation in translations(entry):
            if set(PLACEHOLDER.findall(translation)) - expected or (
                "msgid_plural" not in entry and set(PLACEHOLDER.findall(translation)) != expected
            ):
                mismatched.append(entry["msgid"])
    assert mismatched == []


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="gettext is not installed")
def test_the_catalogue_holds_every_string_the_code_and_templates_mark(tmp_path):
    # makemessages writes into the tree it reads, so it runs on a copy of the sources.
    ignored = shutil.ignore_patterns(".*", "__pycache__", "var", "staticfiles", "media", "*.mo", "*.sqlite3")
    copy = tmp_path / "src"
    shutil.copytree(BASE_DIR, copy, ignore=ignored)
    subprocess.run(
        [sys.executable, "manage.py", "makemessages", "-l", "id", "--no-obsolete", "--no-location", "-v", "0"],
        cwd=copy,
        check=True,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "config.settings.test"},
    )
    marked = {entry["msgid"] for entry in catalogue_entries(copy / CATALOGUE)}
    kept = {entry["msgid"] for entry in catalogue_entries(BASE_DIR / CATALOGUE)}
    assert sorted(marked - kept) == []


def test_a_broadcast_window_has_one_indonesian_name_throughout():
    # "Jangka waktu" on the compose form, the review page and the campaign page; another word reads as another thing.
    named_otherwise = [
        entry["msgid"]
        for entry in catalogue_entries(BASE_DIR / CATALOGUE)
        if any("jendela" in translation.lower() for translation in translations(entry))
    ]
    assert named_otherwise == []
