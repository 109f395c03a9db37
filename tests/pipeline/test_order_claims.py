"""An order's `cards_claimed`: the cards it has taken of its quantity, kept as jobs are claimed, refused and
take late results (it replaced a COUNT of the order's jobs, read twice for every card presented, that grew
with the order). What it must keep: a refused job gives its card back, a late result takes it again, a
resume takes nothing new, and the migration counts what orders had taken before the column existed."""
from __future__ import annotations

import importlib

import pytest
from django.apps import apps as django_apps

from cards.models import Job, Order

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]
OTHER_UID = "04A1B2C3D4E5F6"
EXPIRED = {"kind": "ProtocolError", "message": "job expired before it started", "authentication": False,
           "reason": "expired"}


def _claimed(order) -> int:
    return Order.objects.get(pk=order.pk).cards_claimed


def test_each_card_takes_one_and_the_order_refuses_the_card_after_its_last(cms, station, desfire_profile,
                                                                          order_for):
    order = order_for(desfire_profile, quantity=1)
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["status"] == "dispatched"
    assert _claimed(order) == 1
    outcome = cms.report(station.report("card_presented", uid=OTHER_UID))
    assert outcome == {"status": "refused", "reason": "no_order"}, outcome
    assert _claimed(order) == 1 and not Job.objects.filter(card__uid=OTHER_UID).exists()


def test_a_refused_job_gives_its_card_back_and_its_late_result_takes_it_again(cms, station, desfire_profile,
                                                                             order_for):
    order = order_for(desfire_profile, quantity=1)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    envelope = cms.last_envelope()
    assert cms.result(station.result(envelope, state="refused", upto=0, error=dict(EXPIRED)))["state"] \
        == "refused"
    assert _claimed(order) == 0  # the card never ran it: the order's one card is free again
    # the earlier copy did run on the card: its result takes the order's card back
    assert cms.result(station.result(envelope))["state"] == "succeeded"
    order.refresh_from_db()
    assert (order.cards_claimed, order.cards_done, order.state) == (1, 1, "completed")


def test_a_resume_takes_nothing_new(cms, station, desfire_profile, order_for):
    order = order_for(desfire_profile, quantity=2)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    first = cms.last_envelope()
    interrupted = station.result(first, state="interrupted", upto=3,
                                 error={"kind": "CardRemovedError", "message": "the card left the field"})
    assert cms.result(interrupted)["state"] == "interrupted"
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["status"] == "dispatched"
    assert cms.last_envelope()["job_id"] != first["job_id"]
    assert _claimed(order) == 1  # the same card, resumed under the same order
    assert cms.report(station.report("card_presented", uid=OTHER_UID))["status"] == "dispatched"
    assert _claimed(order) == 2


def test_the_migration_counts_the_cards_orders_had_taken(cms, station, desfire_profile, order_for):
    order = order_for(desfire_profile, quantity=3)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    cms.report(station.report("card_presented", uid=OTHER_UID))
    refused = cms.last_envelope()
    cms.result(station.result(refused, state="refused", upto=0, error=dict(EXPIRED)))
    Order.objects.filter(pk=order.pk).update(cards_claimed=0)  # as before the column existed
    migration = importlib.import_module("cards.migrations.0006_order_cards_claimed")
    migration.count_claims(django_apps, None)
    assert _claimed(order) == 1  # the refused card's job does not count
