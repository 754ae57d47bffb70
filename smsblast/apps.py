from django.apps import AppConfig


class SmsblastConfig(AppConfig):
    name = "smsblast"
    verbose_name = "smsblast core"
