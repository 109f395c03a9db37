from django.db import migrations, models

UNCOUNTED = ("refused", "cancelled")


def count_claims(apps, schema_editor):
    """Each order's claimed cards as cards.services.jobs counted them before the column existed."""
    Order = apps.get_model("cards", "Order")
    Job = apps.get_model("cards", "Job")
    for order in Order.objects.all().only("pk").iterator():
        claimed = (Job.objects.filter(order_id=order.pk).exclude(state__in=UNCOUNTED)
                   .values("card_id").distinct().count())
        if claimed:
            Order.objects.filter(pk=order.pk).update(cards_claimed=claimed)


class Migration(migrations.Migration):

    dependencies = [
        ("cards", "0005_station_key_roll"),
    ]

    operations = [
        migrations.AddField(
            model_name="order",
            name="cards_claimed",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.RunPython(count_claims, migrations.RunPython.noop),
    ]
