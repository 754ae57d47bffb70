"""Create or update a user in one role and print a new API token as the last line."""

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from smsblast.audit import audit_record
from smsblast.authentication import api_token_create
from smsblast.models import Area, Role, User
from smsblast.roles import user_role_set


class Command(BaseCommand):
    help = "Create or update USERNAME with --role and print a new API token (the last line of output)."

    def add_arguments(self, parser):
        parser.add_argument("username", help="The user to create, or to update if it exists.")
        parser.add_argument("--role", required=True, choices=Role.values, help="The user's only role.")
        parser.add_argument("--password", help="Set this password; without it a new user cannot log in to pages.")
        parser.add_argument("--email", default="", help="Where notifications go; without it an existing one stays.")
        parser.add_argument(
            "--area",
            metavar="CODE",
            help="Jurisdiction: the Kemendagri code (35.05) of the only area whose campaigns an officer or approver "
            "sees and targets. Without it a new user works for all of Indonesia and an existing one keeps its own.",
        )

    def handle(self, *args, username: str, role: str, password: str | None, email: str, area: str | None, **options):
        username = username.strip()
        if not username:
            raise CommandError("USERNAME must not be empty.")
        jurisdiction = None
        if area is not None and role not in (Role.OFFICER, Role.APPROVER):
            # An admin is never limited and an operator sees no campaign: an area would be printed but not hold.
            raise CommandError(f"--area limits only an officer or approver; the role {role} has no jurisdiction.")
        if area is not None:
            jurisdiction = Area.objects.filter(code=area.strip()).first()
            if jurisdiction is None:
                raise CommandError(f"Unknown area code {area!r}: give a loaded Kemendagri code such as 35.05.")
        for name, value in (("username", username), ("email", email)):
            try:
                User._meta.get_field(name).clean(value, None)
            except ValidationError as exc:
                raise CommandError(f"{name.upper()} {value!r}: {' '.join(exc.messages)}") from None
        if password:
            # The rules changepassword and the admin apply (AUTH_PASSWORD_VALIDATORS), the user's name and email
            # among them; the password itself is not repeated in the message.
            candidate = User.objects.filter(username=username).first() or User(username=username)
            candidate.email = email or candidate.email
            try:
                validate_password(password, user=candidate)
            except ValidationError as exc:
                raise CommandError(f"PASSWORD: {' '.join(exc.messages)}") from None
        with transaction.atomic():
            user, created = User.objects.get_or_create(username=username, defaults={"email": email})
            reactivated = not created and not user.is_active
            jurisdiction_before = "" if created else user.jurisdiction_id or ""
            # Where the user's notifications go: a new address on an existing user is audited with the rest.
            email_before = user.email
            if password:
                user.set_password(password)
            elif created:
                # An API-only identity (an operator, a script) until someone sets a password.
                user.set_unusable_password()
            if email:
                user.email = email
            if jurisdiction is not None:
                user.jurisdiction = jurisdiction
            user.is_active = True
            user.save()
            user_role_set(user=user, role=role)
            moved = jurisdiction is not None and jurisdiction.code != jurisdiction_before
            readdressed = not created and user.email != email_before
            if (not created and (password or reactivated or readdressed)) or moved:
                # Changed from the command line, so by no user (invariant 6); the role's event is user_role_set's.
                changed = {"password": "set"} if password and not created else {}
                if reactivated:
                    changed["is_active"] = {"from": False, "to": True}
                if readdressed:
                    changed["email"] = {"from": email_before, "to": user.email}
                if moved:
                    changed["jurisdiction"] = {"from": jurisdiction_before, "to": jurisdiction.code}
                audit_record(
                    actor=None, action="user.access", obj=user, details={"username": username, "changed": changed}
                )
            key = api_token_create(user=user, name="create_user")
        where = f" for {user.jurisdiction.code} {user.jurisdiction.name}" if user.jurisdiction_id else ""
        self.stdout.write(f"{'Created' if created else 'Updated'} user {username!r} with role {role}{where}.")
        self.stdout.write("API token (shown once; send it as 'Authorization: Bearer <token>'):")
        self.stdout.write(key)
