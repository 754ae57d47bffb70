"""Vendor the front-end packages the pages use into static/vendor/ (run by `make assets`).

Each asset is pinned by version and by the SHA-256 of the upstream file. With npm on the machine the package is
fetched from the npm registry (`npm pack`), checked and written; without npm the copy kept in the repository is
checked instead, so a machine with only Python can still run `make run`. Nothing is fetched at run time.
"""

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


@dataclass(frozen=True)
class VendoredAsset:
    package: str  # npm package name
    version: str
    member: str  # path inside the npm tarball
    target: str  # path under the repository
    sha256: str  # of the upstream file, before the header line
    header: str  # one-line licence comment put in front of it


ASSETS = [
    VendoredAsset(
        package="htmx.org",
        version="2.0.11",
        member="package/dist/htmx.min.js",
        target="static/vendor/htmx/htmx.min.js",
        sha256="d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717",
        header="/*! htmx 2.0.11 | https://htmx.org | Zero-Clause BSD (0BSD), see static/vendor/README.md */\n",
    ),
]


def upstream_digest(content: bytes, header: str) -> str:
    """Return the SHA-256 of a vendored file without its header line."""
    body = content[len(header.encode()) :] if content.startswith(header.encode()) else content
    return hashlib.sha256(body).hexdigest()


class Command(BaseCommand):
    help = "Fetch (with npm) or verify (without) the pinned front-end packages in static/vendor/."

    def add_arguments(self, parser):
        parser.add_argument("--offline", action="store_true", help="Only verify the copies in the repository.")

    def handle(self, *args, offline: bool, **options):
        npm = None if offline else shutil.which("npm")
        for asset in ASSETS:
            target = Path(settings.BASE_DIR) / asset.target
            fetched = None
            if npm:
                try:
                    fetched = self.fetch(npm, asset)
                except CommandError as error:
                    if not target.exists():
                        raise
                    # The registry being unreachable must not stop a build that has a checked copy.
                    self.stderr.write(f"{error} Using the copy in the repository.")
            if fetched is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(asset.header.encode() + fetched)
                how = f"fetched {asset.package}@{asset.version} from npm"
            elif target.exists():
                how = "verified the copy in the repository" + ("" if offline else " (npm not found)")
            else:
                raise CommandError(f"{asset.target} is missing; install npm so that it can fetch {asset.package}.")
            digest = upstream_digest(target.read_bytes(), asset.header)
            if digest != asset.sha256:
                raise CommandError(f"{asset.target}: SHA-256 {digest} does not match the pinned {asset.sha256}.")
            self.stdout.write(f"{asset.target}: {how}, SHA-256 checked.")

    def fetch(self, npm: str, asset: VendoredAsset) -> bytes:
        with tempfile.TemporaryDirectory() as workdir:
            try:
                done = subprocess.run(  # noqa: S603 - fixed arguments, npm found on PATH
                    [npm, "pack", f"{asset.package}@{asset.version}", "--silent"],
                    cwd=workdir,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=False,
                )
            except subprocess.TimeoutExpired as error:
                raise CommandError(f"npm pack {asset.package}@{asset.version} timed out.") from error
            if done.returncode != 0:
                raise CommandError(f"npm pack {asset.package}@{asset.version} failed: {done.stderr.strip()}")
            tarball = Path(workdir) / done.stdout.strip().splitlines()[-1]
            with tarfile.open(tarball) as archive:
                member = archive.extractfile(asset.member)
                if member is None:
                    raise CommandError(f"{asset.member} not found in {tarball.name}.")
                body = member.read()
        if hashlib.sha256(body).hexdigest() != asset.sha256:
            raise CommandError(f"{asset.package}@{asset.version} from npm does not match the pinned SHA-256.")
        return body
