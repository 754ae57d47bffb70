from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SmsblastConfig(AppConfig):
    name = "smsblast"
    verbose_name = _("smsblast core")

    def ready(self) -> None:
        from smsblast import checks  # noqa: F401 - registers the deployment checks
