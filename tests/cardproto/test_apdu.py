"""ISO 7816-4 APDUs: the four cases, short and extended, chaining, GET RESPONSE and wrong-Le handling."""
from __future__ import annotations

import pytest

from cardproto.apdu import CommandAPDU, ResponseAPDU, exchange
from cardproto.errors import ShortResponseError, StatusWordError
from tests.cardproto.scripted import ScriptedTransport

h = bytes.fromhex


@pytest.mark.parametrize("apdu, encoded", [
    (CommandAPDU(0x00, 0xA4, 0x04, 0x00), "00A40400"),  # case 1
    (CommandAPDU(0x80, 0xCA, 0x9F, 0x7F, le=0), "80CA9F7F00"),  # case 2S, Le 256
    (CommandAPDU(0x80, 0xF0, 0x80, 0x7F, b"\x01"), "80F0807F0101"),  # case 3S
    (CommandAPDU(0x00, 0xA4, 0x04, 0x00, h("A000000151000000"), le=0), "00A4040008A00000015100000000"),
    (CommandAPDU(0x80, 0xE2, 0x00, 0x00, bytes(300)), "80E20000" "00012C" + "00" * 300),  # case 3E
    (CommandAPDU(0x00, 0xB0, 0x00, 0x00, le=65536), "00B00000000000"),  # case 2E, Le 65536
    (CommandAPDU(0x80, 0xE2, 0x00, 0x00, bytes(256), le=0), "80E20000000100" + "00" * 256 + "0000"),
])
def test_encodes_iso_cases_and_parses_them_back(apdu, encoded):
    assert apdu.to_bytes() == h(encoded)
    parsed = CommandAPDU.parse(h(encoded))
    assert parsed.to_bytes() == h(encoded)


def test_forced_short_apdu_with_long_data_is_refused():
    with pytest.raises(ValueError):
        CommandAPDU(0x80, 0xE2, 0, 0, bytes(256), extended=False)


def test_chaining_sets_cla_bit_on_all_but_last_and_keeps_le_on_last():
    blocks = CommandAPDU(0x00, 0xDA, 0x01, 0x02, bytes(600), le=0).chained()
    assert [b.cla for b in blocks] == [0x10, 0x10, 0x00]
    assert [b.le for b in blocks] == [None, None, 0]


def test_extended_apdu_is_not_chained():
    apdu = CommandAPDU(0x80, 0xE2, 0, 0, bytes(600), extended=True)
    assert apdu.chained() == [apdu]


def test_exchange_follows_61xx_with_get_response():
    card = ScriptedTransport([("80CA9F7F00", "612D"), ("00C000002D", "AA" * 0x2D + "9000")])
    answer = exchange(card, CommandAPDU(0x80, 0xCA, 0x9F, 0x7F, le=0), command="GET DATA")
    assert answer.data == b"\xAA" * 0x2D


def test_exchange_repeats_once_with_the_le_the_card_asks_for():
    card = ScriptedTransport([("00B0000000", "6C10"), ("00B0000010", "00" * 16 + "9000")])
    assert exchange(card, CommandAPDU(0, 0xB0, 0, 0, le=0), command="READ BINARY").data == bytes(16)


def test_exchange_raises_status_word_error_with_command_and_header_only():
    card = ScriptedTransport([(None, "6A82")])
    with pytest.raises(StatusWordError) as caught:
        exchange(card, CommandAPDU(0, 0xA4, 4, 0, h("A0000001515350")), command="SELECT")
    assert caught.value.sw == 0x6A82 and caught.value.apdu == h("00A4040007")
    assert caught.value.as_dict()["meaning"] == "Application or file not found"


def test_response_shorter_than_sw_is_a_short_response_error():
    with pytest.raises(ShortResponseError):
        ResponseAPDU.parse(b"\x90")
