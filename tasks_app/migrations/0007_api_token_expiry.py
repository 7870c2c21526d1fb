"""Tokens that expire: ``expires_at``, empty for one that never does."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("tasks_app", "0006_reservations")]
    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="expires_at",
            field=models.DateTimeField(
                blank=True,
                help_text="from then on, calls with the token answer 401; empty: it "
                "never expires",
                null=True,
            ),
        ),
    ]
