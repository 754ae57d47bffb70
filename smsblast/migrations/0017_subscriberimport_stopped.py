from django.db import migrations, models

# What an import stopped by its officer held in `error` while it was marked failed.
STOPPED_ERROR = "Stopped by an officer. The rows saved before stay; resuming goes on from there."


def mark_stopped(apps, schema_editor):
    SubscriberImport = apps.get_model("smsblast", "SubscriberImport")
    SubscriberImport.objects.filter(state="failed", error=STOPPED_ERROR).update(state="stopped", error="")


def mark_failed(apps, schema_editor):
    SubscriberImport = apps.get_model("smsblast", "SubscriberImport")
    SubscriberImport.objects.filter(state="stopped").update(state="failed", error=STOPPED_ERROR)


class Migration(migrations.Migration):
    dependencies = [
        ("smsblast", "0016_subscriberimport_file_mtime_ns"),
    ]

    operations = [
        migrations.AlterField(
            model_name="subscriberimport",
            name="state",
            field=models.CharField(
                choices=[
                    ("pending", "pending"),
                    ("running", "running"),
                    ("completed", "completed"),
                    ("failed", "failed"),
                    ("stopped", "stopped"),
                ],
                default="pending",
                max_length=16,
                verbose_name="state",
            ),
        ),
        migrations.RunPython(mark_stopped, mark_failed),
    ]
