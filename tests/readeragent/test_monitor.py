"""What the monitor reads from a presented card: UID via GET DATA FF CA, and the DESFire generation."""
from __future__ import annotations

import pytest

from readeragent.monitor import detect_chip_type, read_uid

from . import flows


class PyscardLike:
    """A virtual card behind pyscard's connection API: transmit(list) -> (data, sw1, sw2)."""

    def __init__(self, card) -> None:
        self.card = card

    def transmit(self, apdu: list[int]):
        answer = self.card.transmit(bytes(apdu))
        return list(answer[:-2]), answer[-2], answer[-1]


@pytest.mark.parametrize("flavour", ["ev1", "ev2", "ev3"])
def test_desfire_uid_and_generation(flavour):
    card = flows.make_desfire_card(flavour=flavour)
    connection = PyscardLike(card)
    assert read_uid(connection) == flows.DESFIRE_UID
    assert detect_chip_type(connection) == f"desfire_{flavour}"
    # GetVersion's three frames were read to the end: the card takes the next command normally
    assert connection.transmit([0x90, 0x6A, 0x00, 0x00, 0x00])[1:] == (0x91, 0x00)


def test_jcop_uid_and_no_desfire_hint():
    card = flows.make_jcop_card()
    connection = PyscardLike(card)
    assert read_uid(connection) == flows.jcop_uid(card)
    assert detect_chip_type(connection) is None
