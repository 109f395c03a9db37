"""Value files with free GetValue (DESFire CreateValueFile option byte bit 1, next to LimitedCredit's bit 0):
the profile field reaches the card, which then answers GetValue without authentication (cardsim)."""
from __future__ import annotations

import copy

import pytest

from cardproto.desfire import DESFire
from cardproto.errors import CardError
from cards.models import Card, CardProfile
from cardsim.desfire import DESFireCard

from .conftest import DESFIRE_SPEC, DESFIRE_UID
from .test_virtual_cards import _run

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


def _spec(free: bool) -> dict:
    spec = copy.deepcopy(DESFIRE_SPEC)
    spec["picc"]["transport_key"] = {"master": None, "key_type": "aes128"}
    value = next(f for f in spec["applications"][0]["files"] if f["type"] == "value")
    value["free_get_value"] = free
    return spec


@pytest.mark.parametrize("free", [True, False], ids=["free-get-value", "get-value-needs-a-key"])
def test_free_get_value_reaches_the_card(cms, station, acme, masters, order_for, free):
    profile = CardProfile.objects.create(tenant=acme, name=f"purse-{free}", chip_family="desfire",
                                         spec=_spec(free))
    order_for(profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID, chip_type="desfire_ev2"))
    envelope = cms.last_envelope()
    create = next(s for s in envelope["script"]["steps"]
                  if s["op"] == "desfire.create_file" and s["type"] == "value")
    assert create.get("free_get_value", False) is free
    card = DESFireCard("ev2", uid=bytes.fromhex(DESFIRE_UID))
    result = _run(station, envelope, card)
    assert result["state"] == "succeeded", result["error"]
    assert cms.result(result)["state"] == "succeeded"
    assert Card.objects.get(uid=DESFIRE_UID).state == "active"

    df = DESFire(card)
    df.select_application(bytes.fromhex("F0A001"))
    if free:
        assert df.get_value(3) == 10  # the profile's initial value, read without any key
    else:
        with pytest.raises(CardError):
            df.get_value(3)
