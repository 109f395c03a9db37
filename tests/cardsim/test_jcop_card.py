"""Behaviour of the virtual JCOP 4: lockout, life cycle, PUT KEY KCVs, registry protection, STORE DATA,
memory, GET DATA/STATUS, state round trip and faults.

Driven by our host (`cardproto`); the protocol bytes themselves are pinned by
published traces in test_jcop_kat.py.
"""
from __future__ import annotations

import json
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardproto import tlv
from cardproto.apdu import CommandAPDU
from cardproto.errors import CryptogramError, MacError, StatusWordError
from cardproto.gp import commands as gp
from cardproto.gp import content, scp02, scp03
from cardproto.gp.channel import PlainChannel
from cardproto.keys import KeyType, StaticKeys
from cardsim.base import CardRemoved
from cardsim.jcop import JCOP4Card
from cardsim.jcop.card import SW_BRICKED

h = bytes.fromhex
GP_KEY = bytes(range(0x40, 0x50))
# pySim KEYSET_AES128 and its published KCVs C35280 / 013808 / 840DE5
# (osmocom/pysim tests/unittests/test_globalplatform.py::SCP03_KCV_Test)
PYSIM_KEYS = (h("000102030405060708090a0b0c0d0e0f"), h("101112131415161718191a1b1c1d1e1f"),
              h("202122232425262728292a2b2c2d2e2f"))
PYSIM_KCVS = ["c35280", "013808", "840de5"]
PACKAGE_AID, APPLET_AID = h("D2760000850101"), h("D276000085010101")


def default_keys(kvn: int = 0x30) -> StaticKeys:
    return StaticKeys.single(GP_KEY, kvn=kvn)


def open03(card: JCOP4Card, level: int = 0x33, keys: StaticKeys | None = None, **options
           ) -> scp03.Scp03Channel:
    gp.select(card, gp.ISD_AID)
    return scp03.open_channel(card, keys or default_keys(), level, sd_aid=gp.ISD_AID, **options)


def send(channel, cla_ins_p1_p2: str, data: bytes = b"", *, expected=(0x9000,)):
    cla, ins, p1, p2 = h(cla_ins_p1_p2)
    return channel.send(CommandAPDU(cla, ins, p1, p2, data, le=0), command="test", expected=expected)


def refused(sw: int, function, *args, **kwargs) -> None:
    with pytest.raises(StatusWordError) as caught:
        function(*args, **kwargs)
    assert caught.value.sw == sw, f"expected {sw:04X}, card said {caught.value.sw:04X}"


def bad_external_authenticate(card: JCOP4Card, *, right_mac: bool, kvn: int = 0x30) -> bytes:
    """INITIALIZE UPDATE, then an EXTERNAL AUTHENTICATE with a wrong host cryptogram (MAC right or wrong)."""
    host_challenge = os.urandom(8)
    answer = card.transmit(bytes((0x80, 0x50, kvn, 0x00, 0x08)) + host_challenge + b"\x00")
    assert answer[-2:] == b"\x90\x00"
    session = scp03.derive_session_keys(default_keys(), host_challenge, answer[13:21])
    header, wrong = h("8482010010"), bytes(8)
    mac = bytes(8) if not right_mac else bytes(scp03.aes_cmac(session.s_mac, bytes(16) + header + wrong)[:8])
    return card.transmit(header + wrong + mac)


# --- identity -------------------------------------------------------------------------------------
def test_card_needs_no_arguments_and_a_seed_makes_its_identity_repeatable():
    assert JCOP4Card().identity != JCOP4Card().identity
    assert JCOP4Card(seed=7).identity == JCOP4Card(seed=7).identity
    assert JCOP4Card(seed=7).identity != JCOP4Card(seed=8).identity
    card = JCOP4Card(seed=7)
    cplc = gp.cplc(card)
    assert cplc.ic_fabricator == h("4790") and cplc.ic_type == h("D321")  # NXP, P71D321 (seed 000)
    assert card.transmit(h("FFCA000000"))[:-2] == card.identity.uid and len(card.identity.uid) == 7
    # SELECT answer as a real J3R180 gives it (GlobalPlatformPro issue #383)
    assert card.transmit(h("00A4040000")) == h("6F108408A000000151000000A5049F6501FF9000")
    assert gp.get_data(card, 0x00CF) == h("CF0A") + card.identity.kdd


# --- lockout (seed 000) ---------------------------------------------------------------------------
def test_wrong_host_cryptogram_is_refused_and_counted_and_the_card_bricks_at_the_limit():
    card = JCOP4Card(max_failed_authentications=3)
    gp.select(card, gp.ISD_AID)
    assert bad_external_authenticate(card, right_mac=True) == h("6300")
    assert bad_external_authenticate(card, right_mac=False) == h("6982")
    assert card.failed_authentications == 2 and not card.bricked
    assert bad_external_authenticate(card, right_mac=True) == h("6300")
    assert card.bricked
    # from now on nothing useful, to anything, forever (and the right keys do not help)
    for apdu in ("00A4040008A000000151000000", "80CA9F7F00", "8050000008" + "00" * 8 + "00", "FFCA000000"):
        assert card.transmit(h(apdu)) == SW_BRICKED.to_bytes(2, "big")
    assert JCOP4Card.from_state(card.to_state()).transmit(h("80CA9F7F00")) == h("6F00")


def test_a_successful_authentication_resets_the_failure_count():
    card = JCOP4Card(max_failed_authentications=3)
    gp.select(card, gp.ISD_AID)
    bad_external_authenticate(card, right_mac=True)
    bad_external_authenticate(card, right_mac=True)
    open03(card)
    assert card.failed_authentications == 0
    bad_external_authenticate(card, right_mac=True)
    bad_external_authenticate(card, right_mac=True)
    assert not card.bricked


def test_default_lockout_limit_is_ten_and_initialize_update_alone_never_counts():
    card = JCOP4Card()
    assert card.max_failed_authentications == 10
    gp.select(card, gp.ISD_AID)
    with pytest.raises(CryptogramError):  # our host stops before EXTERNAL AUTHENTICATE
        scp03.open_channel(card, StaticKeys.single(bytes(16), kvn=0x30), 0x01)
    assert card.failed_authentications == 0
    for _ in range(9):
        bad_external_authenticate(card, right_mac=True)
    assert not card.bricked
    bad_external_authenticate(card, right_mac=True)
    assert card.bricked


def test_unsupported_level_is_refused_before_the_cryptogram_and_not_counted():
    card = JCOP4Card(scp03_i=0x00)  # no R-MAC support: levels 00, 01, 03 only
    gp.select(card, gp.ISD_AID)
    answer = card.transmit(h("8050300008") + bytes(8) + b"\x00")
    assert answer[12] == 0x00
    assert card.transmit(h("8482330010") + bytes(16)) == h("6A86")
    assert card.failed_authentications == 0
    assert card.transmit(h("8482010010") + bytes(16)) == h("6985")  # no INITIALIZE UPDATE pending any more


# --- life cycle -----------------------------------------------------------------------------------
def test_card_life_cycle_moves_forward_and_lock_unlock_follow_gp():
    card = JCOP4Card()
    channel = open03(card)
    refused(0x6985, gp.lock_card, channel)  # OP_READY cannot lock: GP 2.3 locks a SECURED card
    gp.set_status(channel, gp.StatusScope.ISD, gp.CardLifeCycle.INITIALIZED)
    gp.secure_card(channel)
    refused(0x6985, send, channel, "80F08007")  # no way back to INITIALIZED
    gp.lock_card(channel)
    assert card.life_cycle == 0x7F
    refused(0x6985, gp.get_status, channel, gp.StatusScope.ISD)
    refused(0x6985, send, channel, "80F08007")
    gp.set_status(channel, gp.StatusScope.ISD, gp.CardLifeCycle.TERMINATED)  # allowed from any state
    assert card.life_cycle == 0xFF


def test_a_locked_card_refuses_everything_but_select_get_data_and_the_unlock_path():
    card = JCOP4Card(life_cycle=0x0F)
    channel = open03(card)
    content.install_for_load(channel, PACKAGE_AID)
    content.load(channel, _cap())
    final_aid = APPLET_AID + b"\xff"
    content.install_for_install(channel, PACKAGE_AID, APPLET_AID, APPLET_AID)
    content.install_for_install(channel, PACKAGE_AID, APPLET_AID, final_aid, privileges=b"\x02")
    gp.lock_card(channel)
    for step in (lambda: gp.get_status(channel),
                 lambda: gp.put_key(channel, StaticKeys(*PYSIM_KEYS, kvn=0x31)),
                 lambda: gp.store_data(channel, 0x0101, b"x"),
                 lambda: content.delete(channel, PACKAGE_AID)):
        refused(0x6985, step)
    assert channel.is_open
    assert gp.cplc(channel).ic_fabricator == h("4790")
    gp.select(card, gp.ISD_AID)
    assert gp.cplc(card).ic_fabricator == h("4790")
    assert card.transmit(b"\x00\xa4\x04\x00" + bytes((len(APPLET_AID),)) + APPLET_AID) == h("6A82")
    assert card.transmit(b"\x00\xa4\x04\x00" + bytes((len(final_aid),)) + final_aid) == h("9000")
    channel = open03(card)  # authentication still works: it is the unlock path
    gp.secure_card(channel)
    assert card.life_cycle == 0x0F
    gp.store_data(channel, 0x0101, b"x")


def test_a_terminated_card_only_answers_get_data():
    card = JCOP4Card()
    channel = open03(card)
    gp.set_status(channel, gp.StatusScope.ISD, gp.CardLifeCycle.TERMINATED)
    assert card.life_cycle == 0xFF and card.session is None
    gp.select(card, gp.ISD_AID)
    assert gp.cplc(card).ic_type == h("D321")
    assert card.transmit(h("8050300008") + bytes(8) + b"\x00") == h("6985")


# --- PUT KEY, DELETE KEY --------------------------------------------------------------------------
@pytest.mark.parametrize("level", [0x01, 0x03, 0x33])
def test_put_key_adds_a_key_set_and_returns_the_published_kcvs(level):
    card = JCOP4Card()
    channel = open03(card, level)
    answer = gp.put_key(channel, StaticKeys(*PYSIM_KEYS, kvn=0x31))  # our host checks the KCVs too
    assert answer == h("31") + h("".join(PYSIM_KCVS))
    held = {(k["kvn"], k["key_id"]): k["kcv"] for k in card.keys_held()["a000000151000000"]}
    assert [held[(0x31, key_id)] for key_id in (1, 2, 3)] == PYSIM_KCVS
    assert held[(0x30, 1)] == "504a77"  # added, not replaced
    open03(card, 0x33, StaticKeys(*PYSIM_KEYS, kvn=0x31))
    open03(card, 0x33, default_keys())


def test_put_key_replaces_a_version_and_the_old_keys_stop_working():
    card = JCOP4Card()
    channel = open03(card)
    new = StaticKeys.single(os.urandom(32), kvn=0x31)  # AES-256
    gp.put_key(channel, new, replace_kvn=0x30)
    assert 0x30 not in card.key_sets and card.key_sets[0x31].keys[1] == new.enc
    open03(card, 0x33, new)
    gp.select(card, gp.ISD_AID)
    refused(0x6A88, scp03.open_channel, card, default_keys(), 0x33)


def test_put_key_with_a_wrong_kcv_or_an_existing_kvn_changes_nothing():
    card = JCOP4Card()
    channel = open03(card)
    good = gp._key_block(channel, bytearray(PYSIM_KEYS[0]), KeyType.AES)[0]
    bad = good[:-1] + bytes((good[-1] ^ 1,))
    refused(0x6A80, send, channel, "80D80081", h("31") + bad + good + good)
    channel = open03(card)
    refused(0x6A80, send, channel, "80D80081", h("30") + good + good + good)  # 30 exists: replace with P1 30
    assert sorted(card.key_sets) == [0x20, 0x30]


def test_scp02_put_key_uses_the_session_dek_and_des_kcvs():
    card = JCOP4Card()
    gp.select(card, gp.ISD_AID)
    channel = scp02.open_channel(card, StaticKeys.single(GP_KEY, kvn=0x20, key_type=KeyType.DES3), 0x03)
    new = StaticKeys.single(h("0123456789ABCDEFFEDCBA9876543210"), kvn=0x21, key_type=KeyType.DES3)
    gp.put_key(channel, new)
    gp.select(card, gp.ISD_AID)
    scp02.open_channel(card, new, 0x01)


def test_delete_key_removes_a_version_but_never_the_last_one():
    card = JCOP4Card(scp02_keys=None)
    channel = open03(card)
    gp.put_key(channel, StaticKeys(*PYSIM_KEYS, kvn=0x31))
    gp.delete_key(channel, kvn=0x31)
    assert sorted(card.key_sets) == [0x30]
    refused(0x6A88, gp.delete_key, channel, kvn=0x31)
    refused(0x6985, gp.delete_key, channel, kvn=0x30)


# --- registry: system packages, INSTALL, LOAD, GET STATUS -----------------------------------------
def _cap(package: bytes = PACKAGE_AID, applets: tuple[bytes, ...] = (APPLET_AID,), padding: int = 0) -> bytes:
    """A minimal CAP: Header (1) and Applet (3) components (Java Card VM spec 6.4, 6.5), plus filler."""
    header = h("DECAFFED") + h("0202") + b"\x00" + h("0001") + bytes((len(package),)) + package
    applet = bytes((len(applets),)) + b"".join(bytes((len(a),)) + a + h("0010") for a in applets)
    filler = h("06") + padding.to_bytes(2, "big") + bytes(padding) if padding else b""
    return (b"\x01" + len(header).to_bytes(2, "big") + header
            + b"\x03" + len(applet).to_bytes(2, "big") + applet + filler)


@pytest.mark.parametrize("aid", ["A0000001515350", "A000000151000000", "A000000151535041"])
def test_system_packages_and_the_isd_cannot_be_deleted(aid):
    card = JCOP4Card()
    channel = open03(card)
    refused(0x6985, send, channel, "80E40000", tlv.encode(0x4F, h(aid)))
    refused(0x6985, send, channel, "80E40080", tlv.encode(0x4F, h(aid)))
    assert h("A0000001515350") in card.load_files


def test_load_install_select_and_delete_an_applet():
    card = JCOP4Card()
    free = int.from_bytes(tlv.parse(gp.get_data(card, 0xFF21))[0].children()[1].value, "big")
    assert free == 167_736  # seed 000's measured free EEPROM on a fresh card
    channel = open03(card)
    content.install_for_load(channel, PACKAGE_AID)
    content.load(channel, _cap(padding=1000), block_size=100)
    content.install_for_install(channel, PACKAGE_AID, APPLET_AID, APPLET_AID)
    apps = gp.get_status(channel, gp.StatusScope.APPLICATIONS)
    assert [(a.aid, a.life_cycle, a.load_file_aid) for a in apps] == [(APPLET_AID, 0x07, PACKAGE_AID)]
    modules = {e.aid: e.modules for e in gp.get_status(channel, gp.StatusScope.LOAD_FILES_AND_MODULES)}
    assert modules[PACKAGE_AID] == (APPLET_AID,)
    assert card.free_memory() < free - 1000
    refused(0x6985, send, channel, "80E40000", tlv.encode(0x4F, PACKAGE_AID))  # it has an instance
    gp.select(card, APPLET_AID)
    channel = open03(card)
    content.delete(channel, PACKAGE_AID, related=True)
    assert PACKAGE_AID not in card.load_files and not card.apps and card.free_memory() == free


def test_get_status_pages_with_6310():
    card = JCOP4Card()
    channel = open03(card)
    content.install_for_load(channel, PACKAGE_AID)
    content.load(channel, _cap())
    for n in range(20):
        content.install_for_install(channel, PACKAGE_AID, APPLET_AID, APPLET_AID + bytes((n,)))
    sent_before = card.ins_counts.get(0xF2, 0)
    assert len(gp.get_status(channel, gp.StatusScope.APPLICATIONS)) == 20
    assert card.ins_counts[0xF2] - sent_before > 1  # the host followed 6310 with P2 03


# --- STORE DATA and memory ------------------------------------------------------------------------
def test_store_data_keeps_dgis_sent_in_numbered_blocks():
    card = JCOP4Card()
    channel = open03(card)
    gp.store_data(channel, 0x0101, bytes(range(256)) * 2, block_size=100)
    gp.store_data(channel, 0x8201, b"payload")
    assert card.dgis == {0x0101: bytes(range(256)) * 2, 0x8201: b"payload"}
    refused(0x6A86, send, channel, "80E20801", gp.dgi(0x0102, b"x"))  # block 1 without block 0


def test_store_data_and_install_fail_with_6a84_when_memory_is_full():
    card = JCOP4Card(nvm_free=500)
    channel = open03(card)
    refused(0x6A84, gp.store_data, channel, 0x0101, bytes(700))
    assert card.dgis == {}
    content.install_for_load(channel, PACKAGE_AID)
    content.load(channel, _cap())
    refused(0x6A84, content.install_for_install, channel, PACKAGE_AID, APPLET_AID, APPLET_AID)
    assert card.apps == {}


def test_commands_that_change_the_card_need_an_authenticated_channel():
    card = JCOP4Card()
    gp.select(card, gp.ISD_AID)
    refused(0x6982, gp.store_data, card, 0x0101, b"x")
    refused(0x6982, gp.get_status, card)
    refused(0x6982, send, PlainChannel(card), "80F0800F")


# --- secure messaging rules -----------------------------------------------------------------------
def test_a_plain_command_inside_a_cmac_session_is_refused_and_ends_it():
    card = JCOP4Card()
    channel = open03(card, 0x01)
    assert card.transmit(h("80F28002024F0000")) == h("6982")
    assert card.session is None
    refused(0x6982, gp.get_status, channel)


def test_select_ends_the_secure_channel():
    card = JCOP4Card()
    channel = open03(card)
    gp.select(card, gp.ISD_AID)
    assert card.session is None
    refused(0x6982, gp.get_status, channel)


def test_get_data_objects():
    card = JCOP4Card(seed=3)
    keys = gp.key_information(card)
    assert sorted((k.kvn, k.key_id, k.key_type) for k in keys) == [
        (0x20, 1, 0x80), (0x20, 2, 0x80), (0x20, 3, 0x80), (0x30, 1, 0x88), (0x30, 2, 0x88), (0x30, 3, 0x88)]
    card_data = tlv.parse(gp.get_data(card, 0x0066))
    assert card_data[0].tag == 0x66 and h("2A864886FC6B040370") in card_data[0].value  # SCP03 i=70
    assert gp.get_data(card, 0x0045)[2:] == card.identity.cin
    assert gp.get_data(card, 0x0042)[:1] == h("42")
    refused(0x6A88, gp.get_data, card, 0x1234)


# --- state ----------------------------------------------------------------------------------------
def test_state_round_trips_through_json_without_the_session():
    card = JCOP4Card(seed=5)
    channel = open03(card)
    gp.put_key(channel, StaticKeys(*PYSIM_KEYS, kvn=0x31))
    gp.store_data(channel, 0x0101, b"data")
    content.install_for_load(channel, PACKAGE_AID)
    content.load(channel, _cap())
    content.install_for_install(channel, PACKAGE_AID, APPLET_AID, APPLET_AID)
    gp.secure_card(channel)
    copy = JCOP4Card.from_json(card.to_json())
    assert copy.to_state() == card.to_state()
    assert copy.keys_held() == card.keys_held()
    assert copy.session is None
    open03(copy, 0x33, StaticKeys(*PYSIM_KEYS, kvn=0x31))


def test_state_file_is_saved_after_every_command(tmp_path):
    path = tmp_path / "jcop.json"
    card = JCOP4Card(max_failed_authentications=2)
    card.attach_state_file(path)
    channel = open03(card)
    gp.put_key(channel, StaticKeys(*PYSIM_KEYS, kvn=0x31), replace_kvn=0x30)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reloaded = JCOP4Card()
    reloaded.attach_state_file(path)
    assert reloaded.keys_held() == card.keys_held()
    assert json.loads(path.read_text())["kind"] == "jcop4"
    gp.select(reloaded, gp.ISD_AID)
    assert bad_external_authenticate(reloaded, right_mac=False, kvn=0x31) == h("6982")
    assert JCOP4Card.from_state(json.loads(path.read_text())).failed_authentications == 1


def test_repr_and_keys_held_never_show_key_bytes():
    card = JCOP4Card()
    open03(card)
    text = repr(card) + repr(card.key_sets[0x30]) + repr(card.session) + json.dumps(card.keys_held())
    assert GP_KEY.hex() not in text.lower() and "404142" not in text


# --- faults ---------------------------------------------------------------------------------------
def test_removal_before_put_key_leaves_the_keys_and_after_it_the_host_never_hears():
    card = JCOP4Card()
    channel = open03(card)
    card.faults.remove_after = card.apdu_count
    with pytest.raises(CardRemoved):
        gp.put_key(channel, StaticKeys(*PYSIM_KEYS, kvn=0x31))
    assert 0x31 not in card.key_sets
    card.faults.remove_after = None
    card.power_on()
    channel = open03(card)
    card.faults.remove_after_executing = card.apdu_count
    with pytest.raises(CardRemoved):
        gp.put_key(channel, StaticKeys(*PYSIM_KEYS, kvn=0x31))
    assert 0x31 in card.key_sets  # done on the card: the CMS must probe (key information) before deciding


def test_corrupted_r_mac_is_caught_by_the_host():
    card = JCOP4Card()
    channel = open03(card, 0x33)
    card.faults.corrupt_next_mac = True
    with pytest.raises(MacError):
        gp.get_status(channel, gp.StatusScope.ISD)


def test_tear_during_store_data_keeps_whole_dgis_only():
    card = JCOP4Card()
    channel = open03(card)
    card.faults.tear_next_write = True
    blocks = gp.dgi(0x0101, b"a" * 10) + gp.dgi(0x0102, b"b" * 10) + gp.dgi(0x0103, b"c" * 10)
    with pytest.raises(CardRemoved):
        send(channel, "80E28800", blocks)
    assert card.dgis == {0x0101: b"a" * 10}


def test_tear_during_put_key_keeps_the_old_key_set():
    card = JCOP4Card()
    channel = open03(card)
    card.faults.tear_next_write = True
    with pytest.raises(CardRemoved):
        gp.put_key(channel, StaticKeys(*PYSIM_KEYS, kvn=0x31), replace_kvn=0x30)
    card.power_on()
    assert sorted(card.key_sets) == [0x20, 0x30]
    open03(card)


def test_delay_still_answers():
    card = JCOP4Card()
    card.faults.delay_s = 0.001
    open03(card, 0x03)
    assert card.ins_counts[0x50] == 1 and card.ins_counts[0x82] == 1


# --- robustness -----------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_get_a_status_word_never_a_crash(apdu):
    card = JCOP4Card(seed=1)
    answer = card.transmit(apdu)
    assert len(answer) >= 2


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([0xCA, 0xF2, 0xD8, 0xE4, 0xE2, 0xF0, 0xE6, 0xE8, 0x50, 0x82, 0xA4, 0xC0]),
       st.integers(0, 255), st.integers(0, 255), st.binary(max_size=240))
def test_random_commands_inside_a_session_never_crash(ins, p1, p2, data):
    card = JCOP4Card(seed=1, nvm_free=5000)
    channel = open03(card, 0x03)
    try:
        channel.send(CommandAPDU(0x80, ins, p1, p2, data, le=0), command="fuzz",
                     expected=tuple(range(0x0000, 0x10000)))
    except (StatusWordError, MacError):
        pass
    assert not card.bricked


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=4, max_size=60), max_size=12), st.sampled_from([None, 0x01, 0x03, 0x33]))
def test_random_apdu_sequences_keep_the_card_consistent(apdus, level):
    card = JCOP4Card(seed=2, max_failed_authentications=1000)
    if level is not None:
        open03(card, level)
    for apdu in apdus:
        assert len(card.transmit(apdu)) >= 2
    assert card.free_memory() == card.nvm_size - card.allocation()
    assert JCOP4Card.from_json(card.to_json()).to_state() == card.to_state()
