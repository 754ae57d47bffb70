"""Django's createsuperuser, audited as the user admin audits a user it adds (`user.create`, with no actor)."""

from django.contrib.auth.management.commands import createsuperuser
from django.db.models.signals import post_save

from smsblast.models import User
from smsblast.roles import user_record_access_change
from smsblast.transactions import atomic_from_first_save


class Command(createsuperuser.Command):
    def handle(self, *args, **options):
        new_users = []

        # Django's command creates the user after its prompts, deep inside handle: its save says which user it was.
        def remember(sender, instance, created, **kwargs):
            if created:
                new_users.append(instance)

        post_save.connect(remember, sender=User, weak=False)
        try:
            # The transaction opens once the prompts are answered, at the save: the user and its event commit together.
            with atomic_from_first_save(User):
                super().handle(*args, **options)
                for user in new_users:
                    user_record_access_change(user=user, before={}, actor=None, action="user.create")
        finally:
            post_save.disconnect(remember, sender=User)
