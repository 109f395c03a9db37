"""GP card commands: APDU layouts (GP Card Spec 2.3 ch. 11, Amendment D 7.2) and card data parsing."""
from __future__ import annotations

import pytest

from cardproto.apdu import CommandAPDU, ResponseAPDU
from cardproto.crypto import aes_cbc_decrypt, aes_cbc_encrypt
from cardproto.errors import KcvMismatchError, ProtocolUsageError, StatusWordError
from cardproto.gp import commands as gp
from cardproto.gp import content
from cardproto.gp.data import parse_cplc, parse_key_information, parse_status_entries
from cardproto.keys import KeyType, StaticKeys
from tests.cardproto.scripted import ScriptedTransport

h = bytes.fromhex
# pySim KEYSET_AES128 with its published KCVs C35280 / 013808 / 840DE5 (SCP03_KCV_Test)
NEW_KEYS = StaticKeys(h("000102030405060708090a0b0c0d0e0f"), h("101112131415161718191a1b1c1d1e1f"),
                      h("202122232425262728292a2b2c2d2e2f"), kvn=0x31)
DEK = h("404142434445464748494A4B4C4D4E4F")


class _StubScp03:
    """Stands for an open SCP03 channel: records plain commands, encrypts key components with a DEK."""

    secure = True
    key_type = KeyType.AES

    def __init__(self, answers: list[ResponseAPDU]) -> None:
        self.answers = answers
        self.sent: list[tuple[CommandAPDU, bool]] = []

    def encrypt_key(self, key):
        return aes_cbc_encrypt(DEK, bytes(key))

    def send(self, apdu, *, command, expected=(0x9000,), redact=False):
        self.sent.append((apdu, redact))
        return self.answers.pop(0).check(command=command, expected=expected)


def test_put_key_uses_amendment_d_layout_and_accepts_matching_kcvs():
    channel = _StubScp03([ResponseAPDU(h("31C35280013808840DE5"), 0x9000)])
    gp.put_key(channel, NEW_KEYS, replace_kvn=0x30)
    apdu, redacted = channel.sent[0]
    assert (apdu.cla, apdu.ins, apdu.p1, apdu.p2) == (0x80, 0xD8, 0x30, 0x81)
    assert redacted  # the trace must not show the encrypted keys
    data = apdu.data
    assert data[0] == 0x31
    blocks = [data[1 + i * 23:1 + (i + 1) * 23] for i in range(3)]
    for block, key, kcv in zip(blocks, (NEW_KEYS.enc, NEW_KEYS.mac, NEW_KEYS.dek),
                               ("C35280", "013808", "840DE5"), strict=True):
        assert block[:3] == h("881110")
        assert aes_cbc_decrypt(DEK, block[3:19]) == key
        assert block[19:] == h("03") + h(kcv)


def test_put_key_kcv_mismatch_raises_kcv_error():
    channel = _StubScp03([ResponseAPDU(h("31C35280013808840DE6"), 0x9000)])
    with pytest.raises(KcvMismatchError):
        gp.put_key(channel, NEW_KEYS, replace_kvn=0x30)


def test_put_key_refuses_a_plain_transport():
    with pytest.raises(ProtocolUsageError):
        gp.put_key(gp.as_channel(ScriptedTransport([])), NEW_KEYS)


@pytest.mark.parametrize("aid", ["A0000001515350", "A000000151000000"])
def test_delete_of_jcop_system_package_is_refused(aid):
    # seed 000: deleting these bricks the P71 (JCOP 4)
    card = ScriptedTransport([])
    with pytest.raises(ProtocolUsageError):
        content.delete(card, h(aid))
    assert card.sent == []


def test_delete_builds_aid_tlv():
    card = ScriptedTransport([("80E40080094F07D276000085010100", "009000")])
    content.delete(card, h("D2760000850101"), related=True)


def test_store_data_frames_dgi_and_numbers_blocks_with_last_bit():
    apdus = list(gp.store_data_blocks(gp.dgi(0x8010, bytes(300)), block_size=200))
    assert [(a.p1, a.p2) for a in apdus] == [(0x08, 0), (0x88, 1)]
    assert apdus[0].data[:5] == h("8010FF012C")  # DGI 8010, length FF 012C (300)


def test_set_status_lock_card_is_p1_80_p2_7f():
    card = ScriptedTransport([("80F0807F", "9000")])
    gp.lock_card(card)


def test_set_status_refuses_seed_002_p1():
    with pytest.raises(ValueError):
        gp.set_status(ScriptedTransport([]), gp.StatusScope(0x0F), 0x00)


def test_get_status_follows_6310_with_next_occurrence():
    first = "E3144F07A00000015100009F700107C50180EA028000"  # GlobalPlatformPro TestParseTags.testParseISD
    card = ScriptedTransport([("80F24002024F0000", first + "6310"), ("80F24003024F0000", first + "9000")])
    entries = gp.get_status(card, gp.StatusScope.APPLICATIONS)
    assert len(entries) == 2
    assert entries[0].aid == h("A0000001510000") and entries[0].life_cycle == 0x07


def test_status_word_error_names_command_and_meaning():
    card = ScriptedTransport([("80CA9F7F00", "6A88")])
    with pytest.raises(StatusWordError) as caught:
        gp.cplc(card)
    assert caught.value.sw == 0x6A88 and "GET DATA 9F7F" in str(caught.value)


def test_cplc_parses_published_jcop_dump():
    # fidesmo/fdsm FidesmoCardTest: GET DATA 9F7F answer of a JCOP card
    cplc = parse_cplc(h("9F7F2A47906B644700E4D80300816500485399064800000000000000005758594E4E4E4E4E"
                        "0000000000000000"))
    assert cplc.ic_fabricator == h("4790") and cplc.os_id == h("4700")
    assert cplc.ic_serial_number == h("00485399") and cplc.ic_batch_identifier == h("0648")


def test_key_information_template_basic_and_extended():
    # GlobalPlatformPro TestGPKeyInfo
    basic = parse_key_information(h("E020C00401018820C00402018820C00403018820C0060170A180A003C00401718010"))
    assert len(basic) == 5
    assert (basic[0].key_id, basic[0].kvn, basic[0].key_type, basic[0].length) == (1, 1, 0x88, 32)
    extended = parse_key_information(h(
        "E081B0C00A0120FF80001001000100C00A0220FF80001001000100C00A0320FF80001001000100C00A0101FF80001001000100"
        "C00A0201FF80001001000100C00A0301FF80001001000100C00A0102FF88001001000100C00E0202FF880010FF10000101000100"
        "C00A0302FF88001001000100C00A0103FF88001001000100C00E0203FF880010FF10000101000100C00A0303FF88001001000100"
        "C00A1403FF85001001000100C00A1503FF88001001000100"))
    assert len(extended) == 14
    assert (extended[6].key_id, extended[6].kvn, extended[6].key_type, extended[6].length) == (1, 2, 0x88, 16)


def test_registry_entry_parses_isd_entry():
    # GlobalPlatformPro TestParseTags.testParsePartialISD
    entries = parse_status_entries(h("E3464F08A0000000030000009F700101C5039EFE80CF0140CF0141CF0142CF0143"
                                     "CF0180CF0181CF0182CF0183C40BD276000005AAFFCAFE0001CE020001CC08A000000003000000"))
    assert entries[0].privileges == h("9EFE80") and entries[0].version == h("0001")


def test_install_and_load_framing():
    apdu = content.install_for_load_apdu(h("D2760000850101"), h("A000000151000000"))
    assert apdu.to_bytes() == h("80E6020014" "07D2760000850101" "08A000000151000000" "000000" "00")
    blocks = list(content.load_apdus(bytes(300), block_size=200))
    assert blocks[0].data[:4] == h("C482012C") and [b.p1 for b in blocks] == [0x00, 0x80]
    install = content.install_for_install_apdu(h("D2760000850101"), h("D276000085010101"),
                                               h("D276000085010101"))
    assert install.p1 == 0x0C and install.data.endswith(h("01" "00" "02C900" "00"))
