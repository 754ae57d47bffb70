"""The Makefile's install step."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def test_make_install_recreates_a_virtualenv_left_without_pip(tmp_path):
    # What `python3 -m venv` leaves on Debian when python3-venv is missing; installing it and running make again
    # must then work without removing .venv by hand.
    shutil.copy(BASE_DIR / "Makefile", tmp_path / "Makefile")
    (tmp_path / "requirements.txt").write_text("")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True)
    result = subprocess.run(
        ["make", "install", f"PYTHON={sys.executable}"],
        cwd=tmp_path,
        # Nothing to fetch: pip is upgraded only from what it already has.
        env={**os.environ, "PIP_NO_INDEX": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / ".venv" / "bin" / "pip").exists()
    assert (tmp_path / ".venv" / ".installed").exists()
