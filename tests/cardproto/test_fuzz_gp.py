"""Property tests: random card bytes reach every GP parser and unwrapper; only named CardErrors come out.

Decision: `CommandAPDU.parse` takes *host* input (a script's raw step) and
raises ValueError on bad bytes; every parser of *card* output raises a
CardError subclass (MalformedResponseError, ShortResponseError, MacError...).
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cardproto import tlv
from cardproto.apdu import CommandAPDU, ResponseAPDU
from cardproto.errors import CardError
from cardproto.gp import data, scp02, scp03
from cardproto.keys import KeyType, StaticKeys
from tests.cardproto.scripted import ScriptedTransport

blobs = st.binary(max_size=300)
h = bytes.fromhex


def _only_card_errors(function, *args, **kwargs):
    try:
        function(*args, **kwargs)
    except CardError:
        pass


@settings(max_examples=300)
@given(blobs)
def test_random_bytes_into_card_parsers_raise_only_card_errors(raw):
    for parser in (tlv.parse, data.parse_cplc, data.parse_key_information, data.parse_status_entries):
        _only_card_errors(parser, raw)
    _only_card_errors(ResponseAPDU.parse, raw)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from([0x4F, 0x9F70, 0xC5, 0xC4, 0xCE, 0x84, 0xCC, 0xE3, 0xC0, 0xE0]),
                          st.binary(max_size=20)), max_size=6))
def test_structured_random_tlv_into_card_parsers_raise_only_card_errors(items):
    raw = b"".join(tlv.encode(tag, value) for tag, value in items)
    for wrapped in (raw, tlv.encode(0xE3, raw), tlv.encode(0xE0, raw)):
        for parser in (data.parse_key_information, data.parse_status_entries):
            _only_card_errors(parser, wrapped)


@settings(max_examples=300)
@given(blobs)
def test_random_bytes_into_command_apdu_parse_raise_only_value_error(raw):
    try:
        CommandAPDU.parse(raw)
    except ValueError:
        pass


@given(st.binary(min_size=0, max_size=300), st.integers(0, 0xFFFF))
def test_tlv_encode_parse_round_trip(value, tag_seed):
    tag = 0x5F00 | (tag_seed & 0x7F) if tag_seed & 1 else 0x80 | (tag_seed & 0x1E)
    assert tlv.parse(tlv.encode(tag, value)) == [tlv.Tlv(tag, value)]


def _open_pysim_scp03(level: int):
    # osmocom/pySim SCP03_Test_AES128_33 opening, reused to reach unwrap with a live session
    card = ScriptedTransport([
        ("8050300008fdf38259a1e0de4400",
         "000000000000000000003003703b1aca81e821f219081cdc01c26b372d0000039000"),
        (None, "9000")])
    keys = StaticKeys(h("000102030405060708090a0b0c0d0e0f"), h("101112131415161718191a1b1c1d1e1f"),
                      h("202122232425262728292a2b2c2d2e2f"), kvn=0x30)
    return scp03.open_channel(card, keys, level, h("fdf38259a1e0de44"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([0x9000, 0x6310, 0x6A88, 0x6982]))
def test_scp03_unwrap_of_random_response_raises_only_card_errors(body, sw):
    channel = _open_pysim_scp03(0x33)
    channel.wrap(CommandAPDU(0x80, 0xCA, 0x00, 0x66, le=0))
    _only_card_errors(channel.unwrap, ResponseAPDU(body, sw), command="GET DATA")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40))
def test_scp02_and_scp03_init_update_with_random_answer_never_sends_external_authenticate(answer):
    for opener, keys in ((scp03.open_channel, StaticKeys.single(bytes(16))),
                         (scp02.open_channel, StaticKeys.single(bytes(16), key_type=KeyType.DES3))):
        card = ScriptedTransport([(None, answer.hex() + "9000")])
        _only_card_errors(opener, card, keys, 0x01)
        assert card.ins_sent() == [0x50]
