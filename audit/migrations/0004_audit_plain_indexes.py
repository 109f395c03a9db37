"""Audit events: plain indexes for the exact-match filters instead of db_index=True (see AuditEvent.Meta).

db_index=True gave every varchar column a second varchar_pattern_ops ("_like") index on PostgreSQL that
no query uses; tenant_id alone is covered by audit_tenant_seq and result has two values. Dropped here by
name (introspected), not with AlterField: on SQLite AlterField rebuilds the table, which would drop the
append-only triggers of 0002.
"""
import copy

from django.db import migrations, models

COLUMNS = ("request_id", "job_id", "tenant_id", "action", "result", "card_uid", "aid")
NEW_INDEXES = [models.Index(fields=[column], name=f"audit_{column}")
               for column in ("action", "job_id", "request_id", "card_uid", "aid")]


def drop_column_indexes(apps, schema_editor):
    """Drop the single-column, non-unique indexes Django made for db_index=True on COLUMNS."""
    model = apps.get_model("audit", "AuditEvent")
    table = model._meta.db_table
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    for name, info in sorted(constraints.items()):
        if (info["index"] and not info["unique"] and not info["primary_key"]
                and len(info["columns"]) == 1 and info["columns"][0] in COLUMNS):
            schema_editor.execute(schema_editor._delete_index_sql(model, name))


def create_column_indexes(apps, schema_editor):
    """Reverse: the db_index=True indexes again (with their _like twins on PostgreSQL)."""
    model = apps.get_model("audit", "AuditEvent")
    for column in COLUMNS:
        field = copy.copy(model._meta.get_field(column))
        field.db_index = True  # the reverse runs with this migration's state: no db_index there
        schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))
        like = getattr(schema_editor, "_create_like_index_sql", None)
        statement = like(model, field) if like else None
        if statement is not None:
            schema_editor.execute(statement)


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0003_alert"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(model_name="auditevent", name="action",
                                      field=models.CharField(max_length=64)),
                migrations.AlterField(model_name="auditevent", name="aid",
                                      field=models.CharField(blank=True, max_length=32)),
                migrations.AlterField(model_name="auditevent", name="card_uid",
                                      field=models.CharField(blank=True, max_length=32)),
                migrations.AlterField(model_name="auditevent", name="job_id",
                                      field=models.CharField(blank=True, max_length=64)),
                migrations.AlterField(model_name="auditevent", name="request_id",
                                      field=models.CharField(blank=True, max_length=64)),
                migrations.AlterField(model_name="auditevent", name="result",
                                      field=models.CharField(default="success", max_length=32)),
                migrations.AlterField(model_name="auditevent", name="tenant_id",
                                      field=models.BigIntegerField(blank=True, null=True)),
            ],
            database_operations=[],
        ),
        # Reverse: the db_index=True indexes by their Django names (and _like twins), as 0001 made them.
        migrations.RunPython(drop_column_indexes, create_column_indexes),
    ] + [migrations.AddIndex(model_name="auditevent", index=index) for index in NEW_INDEXES]
