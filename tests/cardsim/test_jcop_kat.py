"""Known answers on the CARD side of the virtual JCOP: published SCP03/SCP02 traces replayed byte for byte.

The card is configured as the card of each trace was (KDD, KVN, i, SD AID,
sequence counter; a random card challenge is injected through `rng`), the
host's recorded commands are sent to it, and its answers must equal the
recorded ones. Sources are the same the host tests use
(tests/cardproto/test_scp03.py, test_scp02.py, test_kdf.py):
- miketlk/omfgp tests/omfgp/scp_test.py, scp03_test.py, scp02_test.py
- osmocom/pysim tests/unittests/test_globalplatform.py
- martinpaljak/GlobalPlatformPro TestPlaintextKeys.java
"""
# ruff: noqa: E501  -- vector tables are kept as published, one APDU per string
from __future__ import annotations

import pytest

from cardsim.jcop import JCOP4Card
from cardsim.jcop.crypto import aes_kcv, des3_kcv, scp03_derive
from cardsim.jcop.scp import Scp02Session, pseudo_random_challenge
from tests.cardproto.test_scp03 import CASES, EID_PLAIN, OMFGP, PYSIM, PYSIM_KEYS

h = bytes.fromhex
GP_KEY = h("404142434445464748494A4B4C4D4E4F")
PYSIM_ISD_R = h("A0000005591010FFFFFFFF8900000100")  # the eUICC ISD-R the pySim trace talks to
# What our card answers to the four plain pySim CASES once unwrapped. Case 3 carries "5C 05" followed by
# four bytes only: a card that reads the TLV strictly answers 6A80, which shows the C-DEC plaintext is
# exactly pySim's (a wrong decryption fails the padding check first: 6982).
CASE_SWS = (0x9000, 0x9000, 0x6A80, 0x9000)


def _fixed(value: bytes):
    def rng(n: int) -> bytes:
        assert n == len(value), "the card asked for a challenge of another size"
        return value

    return rng


def sw(answer: bytes) -> int:
    return int.from_bytes(answer[-2:], "big")


# --- derivations: omfgp and pySim values, computed by the card's own functions -----------------------------
def test_session_key_derivation_matches_omfgp():
    # miketlk/omfgp tests/omfgp/scp03_test.py::test_derive_data
    context = h("68E9C8799FF8CB46F8D89D88BA1287BF")
    assert scp03_derive(GP_KEY, 0x04, context, 128) == h("3C64070C595D1D72BDEE692DA99B7AE4")
    assert scp03_derive(GP_KEY, 0x06, context, 128) == h("6E8468B74A707842E3D3696F338D2657")
    assert scp03_derive(GP_KEY, 0x07, context, 128) == h("FDD1D7C84750994815D0082734C31D88")
    s_mac = h("6E8468B74A707842E3D3696F338D2657")
    assert scp03_derive(s_mac, 0x00, context, 64) == h("9B5C9D42D5059430")  # card cryptogram
    assert scp03_derive(s_mac, 0x01, context, 64) == h("F3C7624565B5894F")  # host cryptogram


def test_pseudo_random_card_challenge_matches_omfgp():
    # miketlk/omfgp tests/omfgp/scp03_test.py::test_derive_card_challenge
    assert pseudo_random_challenge(GP_KEY, h("00002A"), h("A000000018434D08090A0B0C000000"), 8) == h("A3F5F144D19BE66E")


def test_aes_kcv_matches_pysim():
    # osmocom/pysim tests/unittests/test_globalplatform.py::SCP03_KCV_Test
    assert aes_kcv(h("000102030405060708090a0b0c0d0e0f")) == h("C35280")
    assert aes_kcv(h("101112131415161718191a1b1c1d1e1f")) == h("013808")
    assert aes_kcv(h("202122232425262728292a2b2c2d2e2f")) == h("840DE5")


def test_scp02_session_keys_match_omfgp_and_globalplatformpro():
    key = bytearray(GP_KEY)
    # miketlk/omfgp tests/omfgp/scp02_test.py::test_derive_key (sequence counter 0007)
    session = Scp02Session(key, key, key, kvn=0x20, host_challenge=bytes(8), card_challenge=bytes(6),
                           sequence_counter=h("0007"), i=0x55)
    assert session.s_mac == h("7A227D376A9DBE23AB50B7DCB45B2093")
    assert session.s_enc == h("A2268F71917EFE0F33CC6166E1154E27")
    # GlobalPlatformPro TestPlaintextKeys.testSessionKeys_SCP02 (counter 0000): KCVs of ENC, C-MAC, DEK
    session = Scp02Session(key, key, key, kvn=0x20, host_challenge=bytes(8), card_challenge=bytes(6),
                           sequence_counter=h("0000"), i=0x55)
    assert [des3_kcv(k).hex().upper() for k in (session.s_enc, session.s_mac, session.dek)] == [
        "F2DCDD", "5FCC69", "85272E"]


# --- miketlk/omfgp tests/omfgp/scp_test.py: a real card's whole GET STATUS exchange --------------------------
def _omfgp_card(level: int, iu_rsp: str) -> JCOP4Card:
    answer = h(iu_rsp)
    kdd, kvn, i = answer[:10], answer[10], answer[12]
    challenge = answer[13:21]
    options = {"kdd": kdd, "scp03_keys": GP_KEY, "scp03_kvn": kvn, "scp03_i": i, "scp02_keys": None}
    if i & 0x10:
        options["sequence_counter"] = int.from_bytes(answer[29:32], "big")
    else:
        options["rng"] = _fixed(challenge)
    return JCOP4Card(**options)


@pytest.mark.parametrize("vector", OMFGP, ids=[f"level-{v[0]:02x}" for v in OMFGP])
def test_card_answers_like_the_omfgp_card(vector):
    level, host_challenge, iu_rsp, ea_data, exchanges = vector
    card = _omfgp_card(level, iu_rsp)
    assert card.transmit(h("00A4040008A000000151000000"))[-2:] == b"\x90\x00"
    assert card.transmit(h("8050000008" + host_challenge + "00")) == h(iu_rsp + "9000")
    assert card.transmit(h(f"8482{level:02X}0010" + ea_data)) == h("9000")
    for p1, wrapped, response, _plain in exchanges:
        answer = card.transmit(h(wrapped))
        if level & 0x10 and response is not None:
            # R-MAC (and R-ENC at 33) over the card's own registry: byte for byte the recorded answer
            assert answer == h(response + "9000"), f"GET STATUS P1={p1}"
        elif p1 == "40":
            assert answer == h("6A88")  # no applications installed, on both cards
        else:
            # levels 01/03 (i=00): the recorded card had other content; the C-MAC (and C-DEC) verified
            assert sw(answer) == 0x9000
        assert card.session is not None and card.session.authenticated


# --- osmocom/pysim tests/unittests/test_globalplatform.py: SCP03 AES-128/192/256 at 11, 03, 33 ----------------
def _pysim_card(bits: int, iu_rsp: str) -> JCOP4Card:
    enc, mac, dek, kvn = PYSIM_KEYS[bits]
    return JCOP4Card(kdd=bytes(10), isd_aid=PYSIM_ISD_R, scp03_keys=(h(enc), h(mac), h(dek)), scp03_kvn=kvn,
                     scp03_i=0x70, scp02_keys=None, sequence_counter=int(iu_rsp[-6:], 16))


@pytest.mark.parametrize("vector", PYSIM, ids=[f"aes{v[0]}-{v[1]:02x}" for v in PYSIM])
def test_card_reproduces_pysim_scp03_trace(vector):
    bits, level, iu_cmd, iu_rsp, ea_cmd, eid_cmd, eid_rsp, *cases = vector
    card = _pysim_card(bits, iu_rsp)
    # the card derives the same pseudo-random challenge and card cryptogram from its counter and AID
    assert card.transmit(h(iu_cmd)) == h(iu_rsp + "9000")
    assert card.transmit(h(ea_cmd)) == h("9000")
    # GET EID is an eUICC command; our card only has to accept its C-MAC/C-DEC (it stores the TLV) ...
    answer = card.transmit(h(eid_cmd))
    assert sw(answer) == 0x9000
    # ... and protect the eUICC's recorded answer exactly as the eUICC did (R-MAC, R-ENC at 33)
    assert card.session.wrap(h(EID_PLAIN), 0x9000) == h(eid_rsp)
    # the four wrapped cases verify (chained C-MAC, C-DEC counter) and, once unwrapped, are the plain
    # commands: GET STATUS of load files, GET DATA 0066, a malformed GET STATUS, GET STATUS of the ISD
    for plain, wrapped, expected in zip(CASES, cases, CASE_SWS, strict=True):
        answer = card.transmit(h(wrapped))
        assert sw(answer) == expected, f"{plain}: card answered {answer[-2:].hex()}"
        assert card.session is not None and card.session.authenticated


# --- osmocom/pysim SCP02 trace (ck_3des_70; i=55 behaviour: ICV encryption) ------------------------------------
PYSIM_SCP02_KEYS = (h("100102030405060708090a0b0c0d0e0f"), h("101102030405060708090a0b0c0d0e0f"),
                    h("102102030405060708090a0b0c0d0e0f"))
SCP02_IU_RSP = "00000000000000000000700200016B4524ABEE7CF32EA3838BC148F3"
SCP02_EXT_AUTH = "8482010010BA6961667737C5BCEBECE14C7D6A4376"
SCP02_CASES = ["84F220020814DB34FA4341DCA8", "84CA00660855ED7C5FF069512B00",
               "84F22002124F0212345C054F9F70C58FC1B380C4228AF8", "84F280020A4F003B95F09317DE6A4E00"]


def test_card_reproduces_pysim_scp02_trace():
    card = JCOP4Card(kdd=bytes(10), scp03_keys=None, scp02_keys=PYSIM_SCP02_KEYS, scp02_kvn=0x70, scp02_i=0x55,
                     scp02_sequence_counter=1, rng=_fixed(h("6B4524ABEE7C")))
    # pySim asks for KVN 20 and its card answers with its set 70; ours is asked for 70 directly
    assert card.transmit(h("805070000840A62C37FA6304F800")) == h(SCP02_IU_RSP + "9000")
    assert card.transmit(h(SCP02_EXT_AUTH)) == h("9000")
    for wrapped, expected in zip(SCP02_CASES, CASE_SWS, strict=True):
        answer = card.transmit(h(wrapped))
        assert sw(answer) == expected, f"{wrapped}: card answered {answer[-2:].hex()}"
        assert card.session is not None and card.session.authenticated
    assert card.scp02_sequence_counter == 2  # moved on after the successful EXTERNAL AUTHENTICATE


def test_card_reproduces_a_jcop_tools_scp02_initialize_update():
    # JCOP Tools trace posted in "External Authenticate outside Java" (java-index.com forum archive,
    # consumer-commerce-5136668): default keys 40..4F at KVN FF, sequence counter 0003
    card = JCOP4Card(kdd=h("00006251007139910372"), scp03_keys=None, scp02_keys=GP_KEY, scp02_kvn=0xFF,
                     scp02_sequence_counter=3, rng=_fixed(h("AD669A479C52")))
    answer = card.transmit(h("80500000085409F03DB343DDF800"))
    assert answer == h("00006251007139910372" "FF02" "0003" "AD669A479C52" "6410304679AC3323" "9000")


def test_tampered_pysim_scp02_cmac_is_refused_and_ends_the_session():
    card = JCOP4Card(kdd=bytes(10), scp03_keys=None, scp02_keys=PYSIM_SCP02_KEYS, scp02_kvn=0x70,
                     scp02_sequence_counter=1, rng=_fixed(h("6B4524ABEE7C")))
    card.transmit(h("805070000840A62C37FA6304F800"))
    card.transmit(h(SCP02_EXT_AUTH))
    tampered = h(SCP02_CASES[0])
    tampered = tampered[:-1] + bytes((tampered[-1] ^ 1,))
    assert card.transmit(tampered) == h("6982")
    assert card.session is None
