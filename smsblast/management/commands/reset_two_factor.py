"""Forget a user's authenticator app, so that the next log-in sets one up again: for an admin who lost the phone
and has no other admin to reset it in the admin site."""

from django.core.management.base import BaseCommand, CommandError

from smsblast.models import User
from smsblast.two_factor import two_factor_reset


class Command(BaseCommand):
    help = "Reset USERNAME's second factor: the next log-in sets up an authenticator app again (audited)."

    def add_arguments(self, parser):
        parser.add_argument("username", help="The user whose authenticator app is forgotten.")

    def handle(self, *args, username: str, **options):
        user = User.objects.filter(username=username.strip()).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        if two_factor_reset(user=user, actor=None):
            self.stdout.write(f"{user.username}: second factor reset; the next log-in sets up an authenticator app.")
        else:
            self.stdout.write(f"{user.username} had no authenticator app set up; nothing changed.")
