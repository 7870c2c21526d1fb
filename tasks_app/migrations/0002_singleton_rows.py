from django.db import migrations


def create_rows(apps, schema_editor):
    db = schema_editor.connection.alias
    apps.get_model("tasks_app", "SchedulerSwitch").objects.using(db).get_or_create(pk=1)
    apps.get_model("tasks_app", "SlotLock").objects.using(db).get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [("tasks_app", "0001_initial")]
    operations = [migrations.RunPython(create_rows, migrations.RunPython.noop)]
