"""BER-TLV (ISO/IEC 7816-4 annex D): tags, lengths, nesting, and refusal of malformed card data."""
from __future__ import annotations

import pytest

from cardproto import tlv
from cardproto.errors import MalformedResponseError

h = bytes.fromhex


def test_parses_two_byte_tag_and_long_form_length():
    value = bytes(0x2A)
    items = tlv.parse(h("9F7F2A") + value)
    assert items == [tlv.Tlv(0x9F7F, value)]
    assert tlv.parse(h("C48180") + bytes(128))[0].value == bytes(128)


def test_nested_template_children():
    # GlobalPlatformPro TestParseTags.testParseISD registry entry
    entry = tlv.parse(h("E3144F07A00000015100009F700107C50180EA028000"))[0]
    assert entry.constructed
    assert [c.tag for c in entry.children()] == [0x4F, 0x9F70, 0xC5, 0xEA]


@pytest.mark.parametrize("length, encoded", [(0x7F, "7F"), (0x80, "8180"), (0xFF, "81FF"), (0x100, "820100")])
def test_length_encoding_follows_ber(length, encoded):
    assert tlv.encode_length(length) == h(encoded)


@pytest.mark.parametrize("raw", ["9F", "4F05A0", "4F80", "4F85FFFFFFFFFF", "5F1F"])
def test_malformed_tlv_raises_malformed_response(raw):
    with pytest.raises(MalformedResponseError):
        tlv.parse(h(raw))


def test_primitive_tag_has_no_children():
    with pytest.raises(MalformedResponseError):
        tlv.parse(h("4F01AA"))[0].children()
