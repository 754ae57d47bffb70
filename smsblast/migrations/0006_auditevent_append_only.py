"""On PostgreSQL the database itself refuses to update or delete an audit event (invariant 6).

The ORM refuses both already (AuditEvent, AuditQuerySet); this holds for raw SQL and every other client too.
TRUNCATE, which clearing a whole test database uses, is a statement of its own and stays possible. SQLite, the
development default, keeps the ORM's refusal only.
"""

from django.db import migrations

FUNCTION = "smsblast_auditevent_append_only"
TRIGGER = "smsblast_auditevent_append_only"


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("smsblast", "AuditEvent")._meta.db_table)
    schema_editor.execute(
        f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'Audit events are append-only: % refused', TG_OP "
        "USING ERRCODE = 'insufficient_privilege'; END $$",
        None,  # no parameters: the % above is PL/pgSQL's, not a placeholder
    )
    schema_editor.execute(
        f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()"
    )


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("smsblast", "AuditEvent")._meta.db_table)
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {table}")
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")


class Migration(migrations.Migration):
    dependencies = [
        ("smsblast", "0005_user_jurisdiction"),
    ]

    operations = [migrations.RunPython(create_trigger, drop_trigger)]
