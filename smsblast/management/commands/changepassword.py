"""Django's changepassword, audited as the user admin audits a password set (`user.password_set`, never the value)."""

import getpass

from django.contrib.auth.management.commands import changepassword

from smsblast.models import User
from smsblast.roles import user_record_password_set
from smsblast.transactions import atomic_from_first_save


class Command(changepassword.Command):
    def handle(self, *args, **options):
        database = options["database"]
        # The user Django's command changes: the one named, else the one running it.
        username = options["username"] or getpass.getuser()
        users = User._default_manager.using(database).filter(**{User.USERNAME_FIELD: username})
        before = users.values_list("password", flat=True).first()
        # The transaction opens once the prompts are answered, at the save: the password and its event commit together.
        with atomic_from_first_save(User):
            message = super().handle(*args, **options)
            user = users.get()
            if user.password != before:
                user_record_password_set(user=user, actor=None)
        return message
