"""Load the demo: users per role, Kab. Blitar, the four operators and 20,000 subscribers."""

import os
import random
import secrets
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import URLValidator
from django.db import transaction

from operators.models import Operator
from operators.services import operator_record_change, operator_settings
from smsblast.audit import audit_record_table
from smsblast.errors import ServiceInvalid
from smsblast.fixtures import demo
from smsblast.models import Area, AreaLevel, Role, Subscriber, User
from smsblast.phones import carrier_prefixes
from smsblast.roles import role_groups_sync, user_access, user_record_access_change, user_role_set
from smsblast.services import (
    areas_attach_boundaries,
    areas_audit_values,
    areas_record_changes,
    areas_set_population,
    subscriber_routing_lock,
    subscribers_reroute,
)
from smsblast.text import search_key

# Boundary and population files of the shared reference data, beside the repository (see its README).
REFERENCE_DIR = Path(settings.BASE_DIR).parent / "shared" / "data" / "wilayah"
REFERENCE_FILES = ("batas_kabupaten.geojson", "batas_kecamatan_contoh.geojson", "penduduk.csv")

DEMO_USERS = [
    ("officer", Role.OFFICER, "officer-demo"),
    ("officer2", Role.OFFICER, "officer2-demo"),
    ("approver", Role.APPROVER, "approver-demo"),
    ("admin", Role.ADMIN, "admin-demo"),
    ("telkomsel", Role.OPERATOR, "telkomsel-demo"),
    ("indosat", Role.OPERATOR, "indosat-demo"),
    ("xl", Role.OPERATOR, "xl-demo"),
    ("smartfren", Role.OPERATOR, "smartfren-demo"),
]
# Roles limited to a jurisdiction; the demo is Kab. Blitar's office, so its officers and approver work for it.
JURISDICTION_ROLES = (Role.OFFICER, Role.APPROVER)


class Command(BaseCommand):
    help = "Load demo users, Kab. Blitar, the four operators and synthetic subscribers (re-runnable)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--subscribers",
            type=int,
            default=20_000,
            help="Add subscribers until there are this many in all (default 20000); none is removed.",
        )
        parser.add_argument(
            "--simulator-url",
            # The same port the Procfile's simulator line listens on.
            default=f"http://127.0.0.1:{os.environ.get('SIMULATOR_PORT', '9100')}",
            help="Base URL of the operator simulator.",
        )
        parser.add_argument(
            "--reference-data",
            type=Path,
            default=REFERENCE_DIR,
            help="Folder with the area reference data: " + ", ".join(REFERENCE_FILES) + ".",
        )

    def handle(self, *args, subscribers: int, simulator_url: str, reference_data: Path, **options):
        if not settings.DEMO_DATA_ALLOWED:
            raise CommandError(
                "seed_demo creates users with published passwords; it does not run with production settings."
            )
        try:
            URLValidator(schemes=["http", "https"])(simulator_url)
        except ValidationError:
            # Written into every operator's base URL, where each batch would then fail to be sent.
            raise CommandError(
                f"--simulator-url {simulator_url!r} is not an http or https URL, such as http://127.0.0.1:9100."
            ) from None
        try:
            with transaction.atomic():
                role_groups_sync()
                self.seed_areas()
                users = self.seed_users()
                self.seed_area_reference(reference_data)
                operators = self.seed_operators(simulator_url, users)
        except ServiceInvalid as exc:  # a reference file that cannot be read; nothing above is kept
            raise CommandError(str(exc)) from None
        created = self.seed_subscribers(operators, subscribers)
        self.stdout.write(self.style.SUCCESS(f"Demo data ready ({created} new subscribers)."))
        for username, role, password in DEMO_USERS:
            where = f" (jurisdiction {demo.REGENCY[0]} {demo.REGENCY[1]})" if role in JURISDICTION_ROLES else ""
            self.stdout.write(f"  {role:9} {username} / {password}{where}")

    def seed_users(self) -> dict[str, User]:
        users = {}
        for username, role, password in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                # Well-known demo passwords; they exist only in the local demo database.
                user.set_password(password)
                user.save()
            if not user.email and role != Role.OPERATOR:
                # Notifications to demo users are printed by the mail process (EMAIL_URL unset).
                user.email = f"{username}@demo.smsblast.test"
                user.save(update_fields=["email"])
            if role in JURISDICTION_ROLES and user.jurisdiction_id != demo.REGENCY[0]:
                # Given, or moved back after a move in the admin: audited as those are (invariant 6).
                before = user_access(user)
                user.jurisdiction_id = demo.REGENCY[0]
                user.save(update_fields=["jurisdiction"])
                user_record_access_change(user=user, before=before, actor=None)
            user_role_set(user=user, role=role)
            users[username] = user
        return users

    def seed_areas(self) -> None:
        # Created, or given back their demo names after an edit in the admin: audited as those are (invariant 6).
        codes = [demo.PROVINCE[0], demo.REGENCY[0], *(code for code, _ in demo.KECAMATAN)]
        before = areas_audit_values(codes)
        self.write_areas()
        areas_record_changes(before=before, after=areas_audit_values(codes), actor=None)

    def write_areas(self) -> None:
        province = Area.objects.update_or_create(
            code=demo.PROVINCE[0],
            defaults={
                "name": demo.PROVINCE[1],
                "search_name": search_key(demo.PROVINCE[1]),
                "level": AreaLevel.PROVINSI,
            },
        )[0]
        code, name, population = demo.REGENCY
        regency = Area.objects.update_or_create(
            code=code,
            defaults={
                "name": name,
                "search_name": search_key(name),
                "level": AreaLevel.KABUPATEN,
                "parent": province,
                "population": population,
            },
        )[0]
        for code, name in demo.KECAMATAN:
            Area.objects.update_or_create(
                code=code,
                defaults={
                    "name": name,
                    "search_name": search_key(name),
                    "level": AreaLevel.KECAMATAN,
                    "parent": regency,
                },
            )

    def seed_area_reference(self, folder: Path) -> None:
        """Attach the boundaries and populations of the demo areas from the reference data, if it is there."""
        files = [folder / name for name in REFERENCE_FILES]
        missing = [path.name for path in files if not path.is_file()]
        if missing:
            self.stdout.write(f"Area boundaries were not attached: {', '.join(missing)} not found in {folder}.")
            return
        kabupaten, kecamatan_file, penduduk = files
        # Only the demo's areas, so that re-running stays quick.
        regency = demo.REGENCY[0]
        kecamatan = [code for code, _ in demo.KECAMATAN]
        boundaries = areas_attach_boundaries(path=kabupaten, codes=[regency])
        boundaries += areas_attach_boundaries(path=kecamatan_file, codes=kecamatan)
        populations = areas_set_population(path=penduduk, codes=[demo.PROVINCE[0], regency])
        self.stdout.write(f"Attached {boundaries} area boundaries and {populations} populations.")

    def seed_operators(self, simulator_url: str, users: dict[str, User]) -> list[tuple[Operator, float, list[str]]]:
        prefixes_by_slug: dict[str, list[str]] = {}
        for prefix, slug in sorted(carrier_prefixes().items()):
            prefixes_by_slug.setdefault(slug, []).append(prefix)
        seeded = []
        # Waits for an import's chunk being routed, as an admin's edit of the prefixes does.
        subscriber_routing_lock()
        changed_prefixes: set[str] = set()
        # A prefix an admin gave to an operator of their own stays there: one prefix routes to one operator, as the
        # admin's form requires, and the demo operator goes without it.
        demo_slugs = [slug for slug, *_ in demo.OPERATORS]
        held_elsewhere = {
            prefix: name
            for name, prefixes in Operator.objects.exclude(slug__in=demo_slugs).values_list("name", "prefixes")
            for prefix in prefixes or []
        }
        for slug, name, share, sps, tariff in demo.OPERATORS:
            operator, created = Operator.objects.get_or_create(
                slug=slug,
                defaults={
                    "name": name,
                    "segments_per_second": sps,
                    "tariff_per_segment": tariff,
                    # Random per database: demo credentials are never in the repository.
                    "api_key": secrets.token_urlsafe(24),
                    "signing_secret": secrets.token_urlsafe(32),
                    "is_test_endpoint": True,
                },
            )
            before = None if created else operator_settings(operator)
            prefixes = [prefix for prefix in prefixes_by_slug.get(slug, []) if prefix not in held_elsewhere]
            for prefix in sorted(set(prefixes_by_slug.get(slug, [])) - set(prefixes)):
                self.stdout.write(
                    f"Prefix {prefix} stays with {held_elsewhere[prefix]}, to which it is routed; "
                    f"{operator.name} is given its other demo prefixes."
                )
            changed_prefixes |= set(operator.prefixes or []) ^ set(prefixes)
            operator.prefixes = prefixes
            operator.base_url = f"{simulator_url.rstrip('/')}/{slug}"
            if slug in users:
                operator.user = users[slug]
            operator.save()
            # Created, or given back its demo settings after an edit in the admin: audited as those are (invariant 6).
            operator_record_change(operator=operator, before=before, actor=None)
            seeded.append((operator, share, operator.prefixes))
        # Prefixes given back after an edit in the admin take back the numbers under them, as the admin's edit did.
        subscribers_reroute(prefixes=changed_prefixes)
        return seeded

    def seed_subscribers(self, operators, count: int) -> int:
        existing = Subscriber.objects.count()
        if existing >= count:
            return 0
        rng = random.Random(settings.SECRET_KEY[:0] + "smsblast-demo")  # deterministic numbers
        kecamatan = [code for code, _ in demo.KECAMATAN]
        weights = [share for _, share, _ in operators]
        rows, seen = [], set(Subscriber.objects.values_list("msisdn", flat=True))
        while len(seen) < count:
            operator, _, prefixes = rng.choices(operators, weights=weights)[0]
            if not prefixes:
                continue
            prefix = rng.choice(prefixes)
            msisdn = "+" + prefix + "".join(rng.choices("0123456789", k=13 - len(prefix)))
            if msisdn in seen:
                continue
            seen.add(msisdn)
            rows.append(
                Subscriber(
                    msisdn=msisdn,
                    area_id=rng.choice(kecamatan),
                    operator=operator,
                    language="id" if rng.random() < 0.97 else "en",
                )
            )
        with transaction.atomic():
            Subscriber.objects.bulk_create(rows, batch_size=2000, ignore_conflicts=True)
            # Audited once, with how many, as an import is (invariant 6): not one event per synthetic number.
            details = {"created": len(rows), "subscribers": Subscriber.objects.count()}
            audit_record_table(actor=None, action="subscriber.demo_create", model=Subscriber, details=details)
        return len(rows)
