"""SCP03 host: published traces from osmocom/pySim and miketlk/omfgp, and the no-retry safety rules."""
# ruff: noqa: E501  -- vector tables are kept as published, one APDU per string
from __future__ import annotations

import pytest

from cardproto.apdu import CommandAPDU, ResponseAPDU
from cardproto.errors import AuthenticationRejectedError, CryptogramError, MacError, ProtocolUsageError
from cardproto.gp import scp03
from cardproto.keys import StaticKeys
from tests.cardproto.scripted import ScriptedTransport

h = bytes.fromhex

# --- osmocom/pysim tests/unittests/test_globalplatform.py (SCP03_Test_AES*), S8, i=70 -------------------
PYSIM_KEYS = {
    128: ("000102030405060708090a0b0c0d0e0f", "101112131415161718191a1b1c1d1e1f",
          "202122232425262728292a2b2c2d2e2f", 0x30),
    192: ("000102030405060708090a0b0c0d0e0f0001020304050607", "101112131415161718191a1b1c1d1e1f1011121314151617",
          "202122232425262728292a2b2c2d2e2f2021222324252627", 0x31),
    256: ("000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f",
          "101112131415161718191a1b1c1d1e1f101112131415161718191a1b1c1d1e1f",
          "202122232425262728292a2b2c2d2e2f202122232425262728292a2b2c2d2e2f", 0x32),
}
# (bits, level, init update cmd, init update rsp, ext auth cmd, get eid cmd, get eid rsp, case1..case4)
PYSIM = [
    (128, 0x11, "8050300008b13e5f938fc108c400", "000000000000000000003003703eb51047495b249f66c484c1d2ef1948000002",
     "84821100107d5f5826a993ebc89eea24957fa0b3ce", "84e291000ebf3e035c015a558d036518a2829700",
     "bf3e125a1089882119900000000000000000000005971be68992dbbdfa",
     "84f220020863a63f8959827fb2", "84ca006608a0c6a4a74166f7ce00",
     "84f22002124f0212345c054f9f70c52249b50272656536", "84f280020a4f00e91443f6dce6b8ed00"),
    (128, 0x03, "80503000088e1552d0513c60f300", "0000000000000000000030037030760cd2c47c1dd395065fe5ead8a9d7000001",
     "8482030010fd4721a14d9b07003c451d2f8ae6bb21", "84e2910018ca9c00f6713d79bc8baa642bdff51c3f6a4082d3bd9ad26c00",
     "bf3e125a1089882119900000000000000000000005",
     "84f2200208c9811b11f1264cf1", "84ca006608e10ab60b3054798800",
     "84f22002184e2908bdb48b2315a55482e9e936ca122d6ecfae7d17416e",
     "84f28002180dd10a6b6193e5340b9e77d32d5a179cd710ac2773aefb2800"),
    (128, 0x33, "8050300008fdf38259a1e0de4400", "000000000000000000003003703b1aca81e821f219081cdc01c26b372d000003",
     "84823300108c36f96bcc00724a4e13ad591d7da3f0", "84e2910018267a85dfe4a98fca6fb0527e0dfecce4914e40401433c87f00",
     "f3ba2b1013aa6224f5e1c138d71805c569e5439b47576260b75fc021b25097cb2e68f8a0144975b9",
     "84f2200208ac6a59024bed84cc", "84ca006608409912ad8fb7aed000",
     "84f22002185f3dafc3ac14c381536a488bf44e06d056df9d74dbd21e5a",
     "84f280021865165105be3373347d0424d4400af2ac393f569ec779389e00"),
    (192, 0x11, "80503100087396430b768b085b00", "000000000000000000003103708cfc23522ffdbf1e5df5542cac8fd866000003",
     "84821100102145ed30b146f5db252fb7e624cec244", "84e291000ebf3e035c015aff42cf801d14394400",
     "bf3e125a1089882119900000000000000000000005162fbd33e04940a9",
     "84f22002084584e4f6784811ee", "84ca006608937776ebe190fa3000",
     "84f22002124f0212345c054f9f70c59a52bddf3040368c", "84f280020a4f009804b11411f7393d00"),
    (192, 0x03, "805031000869c65da8202bf19f00", "00000000000000000000310370b570a67be38446717729d6dd3d2ec5b1000001",
     "848203001065df4f1a356a887905466516d9e5b7c1", "84e2910018d2c6fb477c5d4afe4fd4d21f17eff10d3578ec1774a12a2d00",
     "bf3e125a1089882119900000000000000000000005",
     "84f2200208964e188f0b1bb697", "84ca006608f0820035a41d3e1800",
     "84f220021806b076ed452cd1fa84f77f5c08a146aa77a9286757dea791",
     "84f2800218d06527e39222dce091fabdb8e9b898417a67a6852d3577db00"),
    (192, 0x33, "80503100089b3f2eef0e8c937400", "00000000000000000000310370f6bb305a15bae1a68f79fb08212fbed7000002",
     "84823300109100bc22d58b45b86a26365ce39ff3cf", "84e29100188f7f946c84f70d17994bc6e8791251bb1bb1bf02cf8de58900",
     "c05176c1b6f72aae50c32cbee63b0e95998928fd4dfb2be9f27ffde8c8476f5909b4805cc4039599",
     "84f2200208d5d97754b6b3d2ba", "84ca006608516c82b8e30adbeb00",
     "84f2200218cc247f4761e6944277a4e0d6e32e44025b1e31537e2fc668",
     "84f2800218ba22b63d509bef5d093b43e5eaed03ed23144ab2d9cb51de00"),
    (256, 0x11, "805032000811666d57866c6f5400", "0000000000000000000032037053ea8847efa7674e41498a4d66cf0dee000003",
     "84821100102f2ad190eff2fafc4908996d1cebd310", "84e291000ebf3e035c015af4b680372542b59d00",
     "bf3e125a10898821199000000000000000000000058012dd7f01f1c4c1",
     "84f2200208d618b7da68d5fe52", "84ca0066088f3e055db23ad5e500",
     "84f22002124f0212345c054f9f70c5b6e15cc42404915e", "84f280020a4f00aa124aa74afe7f7500"),
    (256, 0x03, "8050320008c6066990fc426e1d00", "000000000000000000003203708682cd81bbd8919f2de3f2664581f118000001",
     "848203001077c493b632edadaf865a1e64acc07ce9", "84e29100183ddaa60594963befaada3525b492ede23c2ab2c1ce3afe4400",
     "bf3e125a1089882119900000000000000000000005",
     "84f2200208480ddc8e419da38d", "84ca0066083e9d6a6c0b2d732000",
     "84f22002183ebfef2da8b04af2a85f491f299b76973df76ff08a4031be",
     "84f2800218783fff80990f5585b1055010ea95094a26e4a8f1ef4b18e100"),
    (256, 0x33, "805032000897b2055fe58599fd00", "00000000000000000000320370a8439a22cedf045fa9f1903b2834f26e000002",
     "8482330010508a0fd959d2e547c6b33154a6be2057", "84e29100187a5ef717eaf1e135ae92fe54429d0e465decda65f5fe5aea00",
     "ea90dbfa648a67c5eb6abc57f8530b97d0cd5647c5e8732016b55203b078dd2ace7f8bc5d1c1cd99",
     "84f2200208bcc5c17275545d93", "84ca00660804806aba9d543bb600",
     "84f2200218717222491556ec81a45f49ce48be33320024801a1c4cb0e0",
     "84f2800218561f105bccd3a1642904b251ccc1228beb80a82370a8637000"),
]
GET_EID = "80E2910006BF3E035C015A00"
EID_PLAIN = "bf3e125a1089882119900000000000000000000005"
CASES = ("80F22002", "80ca006600", "80F220020a4f0212345c054f9f70c5", "80f28002024f0000")


def _pysim_keys(bits: int) -> StaticKeys:
    enc, mac, dek, kvn = PYSIM_KEYS[bits]
    return StaticKeys(h(enc), h(mac), h(dek), kvn=kvn)


@pytest.mark.parametrize("vector", PYSIM, ids=[f"aes{v[0]}-{v[1]:02x}" for v in PYSIM])
def test_channel_reproduces_pysim_scp03_trace(vector):
    bits, level, iu_cmd, iu_rsp, ea_cmd, eid_cmd, eid_rsp, *cases = vector
    card = ScriptedTransport([(iu_cmd, iu_rsp + "9000"), (ea_cmd, "9000"), (eid_cmd, eid_rsp + "9000")])
    channel = scp03.open_channel(card, _pysim_keys(bits), level, h(iu_cmd)[5:13])
    answer = channel.send(CommandAPDU.parse(h(GET_EID)), command="GET DATA EID")
    assert answer.data == h(EID_PLAIN)
    for plain, wrapped in zip(CASES, cases, strict=True):
        assert channel.wrap(CommandAPDU.parse(h(plain))).to_bytes() == h(wrapped)


# --- miketlk/omfgp tests/omfgp/scp_test.py, static keys 40..4F, S8 -----------------------------------------
GP_DEFAULT = StaticKeys.single(h("404142434445464748494A4B4C4D4E4F"))
ISD_STATUS = "E3264F08A0000001510000009F700101C5039EFE80C407A0000001515350CC08A000000151000000"
ELF_STATUS = "E3254F07A00000015153509F700101CE02FFFF8408A000000151535041CC08A000000151000000"
OMFGP = [
    # level, host challenge, init update response, ext auth data, [(plain GET STATUS P1, wrapped, response)]
    (0x01, "68E9C8799FF8CB46", "00008048007283073469FF0300F8D89D88BA1287BF9B5C9D42D5059430",
     "F3C7624565B5894F16EF5681573C34A2",
     [("80", "84F280020A4F004C4C51B5DFA7A181", "E32A4F08A0000001510000009F700107C5039EFE80C407A0000000620001CE02"
       "0100CC08A000000151000000", "E32A4F08A0000001510000009F700107C5039EFE80C407A0000000620001CE020100CC08"
       "A000000151000000"),
      ("40", "84F240020A4F002108D3E0BA43B673", None, None)]),
    (0x03, "CC8A0407F63066E8", "00008048007283073469FF0300EF23AAB4C343EDDE5B283674A8983749",
     "112355D07180C24547A5EB3BD470F7C5",
     [("80", "84F28002184EE4C1127567676E7E08833B785051FD96FDFE1EC5BD293F", None, None),
      ("40", "84F2400218E33CB507A6FFF09CE7A44EEB7498295D99F96B9F2470A782", None, None)]),
    (0x11, "CB6DA009E0404A67", "0000013628140599538231037021428DA9468C2D5A8D05CE9657FBD5ED00001D",
     "CC606C998B98BF8AF0746E4F50D3F65E",
     [("80", "84F280020A4F002987243A9C15F44A", ISD_STATUS + "7D5F8BBC66683F42", ISD_STATUS),
      ("40", "84F240020A4F00EB20CB18E1CE889F", None, None),
      ("10", "84F210020A4F00B334705EAFAB9FB1", ELF_STATUS + "4457D7641E95465F", ELF_STATUS)]),
    (0x13, "F70E1C5D67085E4B", "000001362814059953823103707B9EAD94A8B88028F47137A2FB093F5E000021",
     "2E2057B873FCD25D175D4D63C5CD4CEB",
     [("80", "84F2800218E9170B7D79EA80AF507247375BB3F8EDE6F54FDD858BAE89", ISD_STATUS + "707D9895B36C6F6B",
       ISD_STATUS),
      ("40", "84F240021804B77FFA640854E3BA8611F944C9B99F938E8E1A5FF70E98", None, None),
      ("10", "84F2100218291B45B303C43B6222834BC0011A83A91BDD0CFD8BACD09B", ELF_STATUS + "39B68A29F735CFCC",
       ELF_STATUS)]),
    (0x33, "0C980267C298D194", "00000136281405995382310370730BE014C03B4558A2155798D5B2C602000023",
     "9716680D938E0CE764738F77E5E39408",
     [("80", "84F2800218AFB12C966FF538690FA04199550D8E93AF7F2569E92DEC66",
       "0C7A219212D7B6E7B1F602BA291660368CA6E7C959E343FDBCDA20285A5A2A52143C8AA1ED5580A5DDB8A1D54730F461424520"
       "A6C56622FD", ISD_STATUS),
      ("40", "84F240021851EF5596042E756C67E7A031A33F88C25E0F05398B4ADFBA", None, None),
      ("10", "84F2100218CEB683FB79244285024670A969C17182CE2534871478DDA2",
       "123AB3A33146D67BC317E3873631F83DFC1C680D88E8147DD9CB2899433878847B911D7678CA6879E2FD674F02A778D56B56"
       "3952AFA82611", ELF_STATUS)]),
]


@pytest.mark.parametrize("vector", OMFGP, ids=[f"level-{v[0]:02x}" for v in OMFGP])
def test_channel_reproduces_omfgp_get_status_trace(vector):
    level, host_challenge, iu_rsp, ea_data, exchanges = vector
    script = [("8050000008" + host_challenge + "00", iu_rsp + "9000"),
              (f"8482{level:02X}0010" + ea_data, "9000")]
    for _, wrapped, response, _ in exchanges:
        script.append((wrapped, (response or "") + ("9000" if response else "6A88")))
    card = ScriptedTransport(script)
    channel = scp03.open_channel(card, GP_DEFAULT, level, h(host_challenge))
    for p1, _, response, plain in exchanges:
        apdu = CommandAPDU(0x80, 0xF2, int(p1, 16), 0x02, h("4F00"))
        answer = channel.send(apdu, command="GET STATUS", expected=(0x9000, 0x6A88))
        assert answer == ResponseAPDU(h(plain) if response else b"", 0x9000 if response else 0x6A88)
    assert card.done


def test_pseudo_random_card_challenge_matches_omfgp():
    # miketlk/omfgp tests/omfgp/scp03_test.py::test_derive_card_challenge
    challenge = scp03.pseudo_random_card_challenge(h("404142434445464748494A4B4C4D4E4F"), h("00002A"),
                                                   h("A000000018434D08090A0B0C000000"))
    assert challenge == h("A3F5F144D19BE66E")


def test_card_and_host_cryptograms_match_omfgp():
    # miketlk/omfgp tests/omfgp/scp03_test.py::test_derive_data
    s_mac = h("6E8468B74A707842E3D3696F338D2657")
    assert scp03.cryptogram(s_mac, 0, h("68E9C8799FF8CB46"), h("F8D89D88BA1287BF")) == h("9B5C9D42D5059430")
    assert scp03.cryptogram(s_mac, 1, h("68E9C8799FF8CB46"), h("F8D89D88BA1287BF")) == h("F3C7624565B5894F")


# --- safety: what the station must never do -----------------------------------------------------------------
IU_128_11 = PYSIM[0]


def test_card_cryptogram_mismatch_stops_before_external_authenticate():
    _, _, iu_cmd, iu_rsp, *_ = IU_128_11
    # flip one bit of the card cryptogram (bytes 21..28 of the answer)
    tampered = iu_rsp[:42] + "%02x" % (int(iu_rsp[42:44], 16) ^ 1) + iu_rsp[44:]
    card = ScriptedTransport([(iu_cmd, tampered + "9000")])
    with pytest.raises(CryptogramError) as caught:
        scp03.open_channel(card, _pysim_keys(128), 0x11, h(iu_cmd)[5:13])
    assert card.ins_sent() == [0x50]  # INITIALIZE UPDATE only: EXTERNAL AUTHENTICATE never sent
    assert "000102" not in str(caught.value)  # no key bytes in the message


def test_wrong_static_keys_stop_before_external_authenticate():
    _, _, iu_cmd, iu_rsp, *_ = IU_128_11
    card = ScriptedTransport([(iu_cmd, iu_rsp + "9000")])
    wrong = StaticKeys.single(h("404142434445464748494A4B4C4D4E4F"), kvn=0x30)
    with pytest.raises(CryptogramError):
        scp03.open_channel(card, wrong, 0x11, h(iu_cmd)[5:13])
    assert card.ins_sent() == [0x50]


def test_rejected_external_authenticate_is_raised_once_and_not_retried():
    _, level, iu_cmd, iu_rsp, ea_cmd, *_ = IU_128_11
    card = ScriptedTransport([(iu_cmd, iu_rsp + "9000"), (ea_cmd, "6300")])
    with pytest.raises(AuthenticationRejectedError) as caught:
        scp03.open_channel(card, _pysim_keys(128), level, h(iu_cmd)[5:13])
    assert caught.value.sw == 0x6300
    assert card.ins_sent() == [0x50, 0x82]


def test_pseudo_random_challenge_not_derived_from_aid_is_refused_before_external_authenticate():
    _, _, iu_cmd, iu_rsp, *_ = IU_128_11
    card = ScriptedTransport([(iu_cmd, iu_rsp + "9000")])
    with pytest.raises(CryptogramError):
        scp03.open_channel(card, _pysim_keys(128), 0x11, h(iu_cmd)[5:13], sd_aid=h("A000000151000000"))
    assert card.ins_sent() == [0x50]


def test_tampered_r_mac_raises_mac_error_and_closes_the_channel():
    _, level, iu_cmd, iu_rsp, ea_cmd, eid_cmd, eid_rsp, *_ = IU_128_11
    bad = eid_rsp[:-2] + ("00" if eid_rsp[-2:] != "00" else "01")
    card = ScriptedTransport([(iu_cmd, iu_rsp + "9000"), (ea_cmd, "9000"), (eid_cmd, bad + "9000")])
    channel = scp03.open_channel(card, _pysim_keys(128), level, h(iu_cmd)[5:13])
    with pytest.raises(MacError):
        channel.send(CommandAPDU.parse(h(GET_EID)), command="GET DATA EID")
    assert not channel.is_open
    with pytest.raises(ProtocolUsageError):
        channel.send(CommandAPDU.parse(h(GET_EID)), command="GET DATA EID")


def test_r_mac_level_refused_when_card_does_not_offer_it():
    level, host_challenge, iu_rsp, *_ = OMFGP[0]  # i=00: no R-MAC support
    card = ScriptedTransport([("8050000008" + host_challenge + "00", iu_rsp + "9000")])
    with pytest.raises(ProtocolUsageError):
        scp03.open_channel(card, GP_DEFAULT, 0x33, h(host_challenge))
    assert card.ins_sent() == [0x50]


def test_invalid_security_level_is_refused_before_anything_is_sent():
    card = ScriptedTransport([])
    with pytest.raises(ProtocolUsageError):
        scp03.open_channel(card, GP_DEFAULT, 0x02)
    assert card.sent == []


def test_channel_repr_and_key_repr_show_no_key_bytes():
    keys = _pysim_keys(128)
    assert "0001020304" not in repr(keys)
    _, level, iu_cmd, iu_rsp, ea_cmd, *_ = IU_128_11
    card = ScriptedTransport([(iu_cmd, iu_rsp + "9000"), (ea_cmd, "9000")])
    channel = scp03.open_channel(card, keys, level, h(iu_cmd)[5:13])
    assert "kvn=0x30" in repr(channel)
    channel.close()
    assert all(not any(secret) for secret in channel._secrets)
