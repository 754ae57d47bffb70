import io

import pytest
from django.core.management import CommandError, call_command

from smsblast.management.commands import vendor_assets


def test_the_vendored_htmx_matches_its_pinned_upstream_checksum():
    out = io.StringIO()
    call_command("vendor_assets", "--offline", stdout=out)
    assert "htmx.min.js: verified the copy in the repository, SHA-256 checked." in out.getvalue()


def test_a_vendored_file_that_differs_from_upstream_is_refused(tmp_path, settings):
    asset = vendor_assets.ASSETS[0]
    target = tmp_path / asset.target
    target.parent.mkdir(parents=True)
    target.write_text(asset.header + "var htmx = 'tampered';")
    settings.BASE_DIR = tmp_path
    with pytest.raises(CommandError, match="does not match the pinned"):
        call_command("vendor_assets", "--offline", stdout=io.StringIO())


def test_a_missing_file_without_npm_says_what_to_install(tmp_path, settings):
    settings.BASE_DIR = tmp_path
    with pytest.raises(CommandError, match="install npm"):
        call_command("vendor_assets", "--offline", stdout=io.StringIO())
