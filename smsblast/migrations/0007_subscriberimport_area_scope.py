from django.db import migrations, models


def fill_area_scope(apps, schema_editor):
    # An import already uploaded by an officer or approver with a jurisdiction stays within it (a failed one may be
    # resumed); an admin's, an unlimited officer's and the command line's keep "". As for a new upload, the role is
    # the first role group a user is in (officer, approver, operator, admin), and a superuser is never limited.
    SubscriberImport = apps.get_model("smsblast", "SubscriberImport")
    limited = (
        SubscriberImport.objects.filter(
            uploaded_by__jurisdiction__isnull=False,
            uploaded_by__is_superuser=False,
            uploaded_by__groups__name__in=["officer", "approver"],
        )
        .values_list("pk", "uploaded_by__jurisdiction_id")
        .order_by()
        .distinct()
    )
    for pk, jurisdiction in limited.iterator():
        SubscriberImport.objects.filter(pk=pk).update(area_scope=jurisdiction)


class Migration(migrations.Migration):
    dependencies = [
        ("smsblast", "0006_auditevent_append_only"),
    ]

    operations = [
        migrations.AddField(
            model_name="subscriberimport",
            name="area_scope",
            field=models.CharField(blank=True, default="", max_length=13),
        ),
        migrations.RunPython(fill_area_scope, migrations.RunPython.noop),
    ]
