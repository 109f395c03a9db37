"""EV2 authentication and secure messaging against NXP AN12196 and AN12343 worked examples.

AN12196 ("NTAG 424 DNA and NTAG 424 DNA TagTamper features and hints") values
as transcribed in github.com/icedevml/nfc-ev2-crypto, file test_ev2.py (each
test there names the AN12196 section and page). AN12343 ("MIFARE DESFire Light
features and hints") page 54 values as transcribed in RfidResearchGroup/proxmark3
client/src/mifare/desfiretest.c (TestEV2MAC). NTAG 424 DNA and DESFire Light use
the same EV2 secure messaging as DESFire EV2/EV3.
"""
import pytest

from cardproto.desfire import AccessRights, CommMode, DESFire, KeyType
from cardproto.desfire.constants import AuthMode
from cardproto.errors import AuthenticationRejectedError, CryptogramError, MacError, ProtocolUsageError
from tests.cardproto.desfire_script import RandomFeed, ScriptedCard, h


def _ev2_session(df: DESFire, *, enc: str, mac: str, ti: str, ctr: int = 0) -> None:
    """Put a published session (keys, TI, CmdCtr) in place, as after AuthenticateEV2First."""
    s = df._channel.session
    s.mode, s.key_no, s.key_type, s.ses_enc, s.ses_mac, s.ti, s.cmd_ctr = (
        AuthMode.EV2, 0, KeyType.AES, bytearray(h(enc)), bytearray(h(mac)), h(ti), ctr)


AUTH1 = [  # AN12196 section 6.6 page 28, key 0x00 = 16 zero bytes
    (h("9071000002000000"), h("A04C124213C186F22399D33AC2A3021591AF")),
    (h("90AF00002035C3E05A752E0144BAC0DE51C1F22C56B34408A23D8AEA266CAB947EA8E0118D00"),
     h("3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F081206639100")),
]
RND_A1 = "13C5DB8A5930439FC3DEF9A4C675360F"


def test_authenticate_ev2_first_matches_an12196_and_derives_session_keys():
    card = ScriptedCard(AUTH1)
    df = DESFire(card, random_bytes=RandomFeed(RND_A1))
    df.authenticate_ev2_first(0, bytearray(16))
    s = df._channel.session
    assert s.ti == h("9D00C4DF") and s.cmd_ctr == 0
    assert s.ses_enc == h("1309C877509E5A215007FF0ED19CA564")
    assert s.ses_mac == h("4C6626F5E72EA694202139295C7A7FC7")
    assert df.pd_cap2 == bytes(6) and df.pcd_cap2 == bytes(6)
    assert card.done()


def test_authenticate_ev2_first_second_example_then_full_mode_write():
    # AN12196 section 6.10 page 34 (authentication) and 6.12 page 36 (WriteData 0x8D in FULL mode).
    card = ScriptedCard([
        (h("9071000002000000"), h("B875CEB0E66A6C5CD00898DC371F92D191AF")),
        (h("90AF000020FF0306E47DFBC50087C4D8A78E88E62DE1E8BE457AA477C707E2F0874916A8B100"),
         h("0CC9A8094A8EEA683ECAAC5C7BF20584206D0608D477110FC6B3D5D3F65C3A6A9100")),
        (h("908D00001F030000000A00006B5E6804909962FC4E3FF5522CF0F8436C0C53315B9C73AA00"),
         h("C26D236E4A7C046D9100")),
    ])
    df = DESFire(card, random_bytes=RandomFeed("B98F4C50CF1C2E084FD150E33992B048"))
    df.authenticate_ev2_first(0, bytearray(16))
    assert df._channel.session.ti == h("7614281A")
    df._channel.command(0x8D, h("030000000A0000"), h("0102030405060708090A"), tx=CommMode.FULL,
                        rx=CommMode.MAC)
    assert df._channel.session.cmd_ctr == 1
    assert card.done()


def test_full_mode_long_write_matches_an12196_section_5_4():
    # AN12196 section 5.4 page 22: 128 data bytes encrypted, session of section 6.6.
    plain_apdu = h(  # the plain command as written in nfc-ev2-crypto test_full1
        "908D000087020000008000000051D1014D550463686F6F73652E75726C2E636F"
        "6D2F6E7461673432343F653D3030303030303030303030303030303030303030"
        "30303030303030303030303026633D3030303030303030303030303030303000"
        "0000000000000000000000000000000000000000000000000000000000000000"
        "00000000000000000000000000")
    plain = plain_apdu[12:-1]
    assert len(plain) == 0x80
    card = ScriptedCard([(h(
        "908D00009F02000000800000421C73A27D827658AF481FDFF20A5025B559D0E3"
        "AA21E58D347F343CFFC768BFE596C706BC00F2176781D4B0242642A0FF5A42C4"
        "61AAF894D9A1284B8C76BCFA658ACD40555D362E08DB15CF421B51283F9064BC"
        "BE20E96CAE545B407C9D651A3315B27373772E5DA2367D2064AE054AF996C6F1"
        "F669170FA88CE8C4E3A4A7BBBEF0FD971FF532C3A802AF745660F2B4D1D9A849"
        "9661EBF300"), h("FC222E5F7A5424529100"))])
    df = DESFire(card, frame_size=255)
    _ev2_session(df, enc="1309C877509E5A215007FF0ED19CA564", mac="4C6626F5E72EA694202139295C7A7FC7",
                 ti="9D00C4DF")
    df._channel.command(0x8D, h("02000000800000"), plain, tx=CommMode.FULL, rx=CommMode.MAC)
    assert card.done()


def test_get_card_uid_decrypts_full_mode_answer_an12196_section_7_3():
    card = ScriptedCard([(h("90510000088E2C155ADDA99BE300"),
                          h("70756055688505B52A5E26E59E329CD6595F672298EA41B79100"))])
    df = DESFire(card)
    _ev2_session(df, enc="2B4D963C014DC36F24F69A50A394F875", mac="379D32130CE61705DD5FD8C36B95D764",
                 ti="DF055522")
    assert df.get_card_uid() == h("04958CAA5C5E80")


def test_get_file_settings_in_mac_mode_an12196_section_5_3():
    card = ScriptedCard([(h("90F5000009026597A457C8CD442C00"),
                          h("0040EEEE000100D1FE001F00004400004400002000006A00002A474282E7A479869100"))])
    df = DESFire(card)
    _ev2_session(df, enc="00" * 16, mac="8248134A386E86EB7FAF54A52E536CB6", ti="7A21085E")
    settings = df.get_file_settings(2)
    assert settings.size == 256 and settings.comm_mode == CommMode.PLAIN


def test_mac_mode_write_and_read_chain_the_command_counter_an12343():
    # AN12343 page 54 via Proxmark3 TestEV2MAC: WriteData 0x8D then ReadData 0xAD, CmdCtr 0 -> 2.
    data = b"\x22" * 25
    card = ScriptedCard([
        (h("908D000028 00000000190000") + data + h("68F2C28C575A1628 00"), h("0820F68898C2A7F1 9100")),
        (h("90AD00000F 00000000300000 0D9BE191D5960834 00"),
         data + bytes(23) + h("A49A44222D926666 9100")),
    ])
    df = DESFire(card)
    _ev2_session(df, enc="00" * 16, mac="9366FA195EB566F5BD2BAD4020B83002", ti="E2D3AF69")
    df._channel.command(0x8D, h("00000000190000"), data, tx=CommMode.MAC, rx=CommMode.MAC)
    assert df._channel.command(0xAD, h("00000000300000"), tx=CommMode.MAC, rx=CommMode.MAC) \
        == data + bytes(23)
    assert df._channel.session.cmd_ctr == 2


def test_bad_response_mac_raises_mac_error_and_ends_session():
    card = ScriptedCard([(h("90F5000009026597A457C8CD442C00"),
                          h("0040EEEE000100D1FE001F00004400004400002000006A00002A474282E7A479879100"))])
    df = DESFire(card)
    _ev2_session(df, enc="00" * 16, mac="8248134A386E86EB7FAF54A52E536CB6", ti="7A21085E")
    with pytest.raises(MacError) as info:
        df.get_file_settings(2)
    assert info.value.command == "DESFire GetFileSettings" and info.value.sw == 0x9100
    assert df.auth_mode == AuthMode.NONE


def test_card_rnd_a_mismatch_raises_cryptogram_error_and_blocks_retry():
    # AN12196 6.6 exchange, but the host's RndA differs from the one the card answers for.
    card = ScriptedCard([AUTH1[0], (None, AUTH1[1][1])])
    df = DESFire(card, random_bytes=RandomFeed("00" * 16))
    with pytest.raises(CryptogramError):
        df.authenticate_ev2_first(0, bytearray(16))
    assert df.auth_mode == AuthMode.NONE
    with pytest.raises(ProtocolUsageError):  # never retried without a person deciding
        df.authenticate_ev2_first(0, bytearray(16))
    assert card.done()


def test_wrong_key_status_raises_authentication_rejected_with_meaning():
    card = ScriptedCard([AUTH1[0], (None, h("91AE"))])
    df = DESFire(card, random_bytes=RandomFeed(RND_A1))
    with pytest.raises(AuthenticationRejectedError) as info:
        df.authenticate_ev2_first(0, bytearray(16))
    assert info.value.sw == 0x91AE
    assert "authentication status" in info.value.meaning


@pytest.mark.parametrize("enc, mac, ti, ctr, new_key, version, cryptogram_and_mac", [
    # AN12196 Table 26 (Cmd.ChangeKey, key 0 while authenticated with key 0, CmdCtr 3).
    ("4CF3CB41A22583A61E89B158D252FC53", "5529860B2FC5FB6154B7F28361D30BF9", "7614281A", 3,
     "5004BF991F408672B1EF00F08F9E8647", 0x01,
     "C0EB4DEEFEDDF0B513A03A95A75491818580503190D4D05053FF75668A01D6FD A6610234BDED6432"),
    # AN12343 Table 40 (DESFire Light, key 0, CmdCtr 0).
    ("E156C8522F7C8DC82B0C99BA847DE723", "45D50C1570000D2F173DF949288E3CAD", "94297F4D", 0,
     "01234567890123456789012345678901", 0x00,
     "BF5400DC97A1FBD65BE870716D6F11F8161BB4CA472856DB94AB94B2EC1A13E6 27CE07CF56C11091"),
])
def test_change_same_key_in_ev2_matches_application_notes(enc, mac, ti, ctr, new_key, version,
                                                          cryptogram_and_mac):
    # Values as quoted in github.com/drusifer/ntag424_sdm_provisioner tests/test_crypto_components.py.
    card = ScriptedCard([(h("90C4000029 00") + h(cryptogram_and_mac) + h("00"), h("9100"))])
    df = DESFire(card)
    df.aid = h("010000")  # an application, not the PICC level: no key-type bits in the key number
    _ev2_session(df, enc=enc, mac=mac, ti=ti, ctr=ctr)
    df.change_key(0, bytearray(h(new_key)), version)
    assert df.auth_mode == AuthMode.NONE  # the card ends the session after changing the key in use
    assert card.done()


def test_ev2_plain_write_is_answered_bare_and_still_counts_an12196_table24():
    # AN12196 Table 24 (session B after AuthenticateEV2NonFirst, Table 23: CmdCtr 1): WriteData in
    # CommMode.Plain to the CC file, offset 0x0E, 18 bytes, answered by a bare 91 00; Table 25 then
    # changes key 2 at CmdCtr 2. APDUs as transcribed in github.com/trustchain-dev/pylibsdm
    # tests/tag/test_ntag424dna.py (MockType4Tag.apdu_map). NTAG 424 uses the ISO-chaining code
    # 0x8D; the native WriteData is 0x3D, and in CommMode.Plain the code enters no MAC, so the
    # rest of the command is the published one byte for byte.
    card = ScriptedCard([
        (h("903D000019 010E0000120000 FF0506E1050080828300000000000000000000"), h("9100")),
        (h("90C4000029 02 2CF362B7BF4311FF3BE1DAA295E8C68DE09050560D19B9E16C2393AE9CD1FAC7")
         + h("5D0CE20BCD1D06E6 00"), h("203BB55D1089D587 9100")),
    ])
    df = DESFire(card)
    df.aid = h("010000")  # an application: no key-type bits in ChangeKey's key number
    _ev2_session(df, enc="4CF3CB41A22583A61E89B158D252FC53", mac="5529860B2FC5FB6154B7F28361D30BF9",
                 ti="7614281A", ctr=1)
    df.write_data(1, 0x0E, h("FF0506E10500808283000000000000000000"), CommMode.PLAIN)
    assert df._channel.session.cmd_ctr == 2 and df.auth_mode == AuthMode.EV2
    # Table 25's answer MAC only verifies over CmdCtr 3: the plain write must have counted.
    df.change_key(2, bytearray(h("F3847D627727ED3BC9C4CC050489B966")), 0x01, old_key=bytearray(16))
    assert df._channel.session.cmd_ctr == 3
    assert card.done()


@pytest.mark.parametrize("operation", [
    lambda df: df.write_data(1, 0, b"abc", CommMode.PLAIN),
    lambda df: df.write_record(1, 0, b"abc", CommMode.PLAIN),
    lambda df: df.credit(1, 5, CommMode.PLAIN),
    lambda df: df.debit(1, 5, CommMode.PLAIN),
    lambda df: df.limited_credit(1, 5, CommMode.PLAIN),
    lambda df: df.change_file_settings(1, CommMode.PLAIN, AccessRights(), plain=True),
])
def test_ev2_plain_mode_changes_send_no_mac_and_accept_a_bare_9100(operation):
    # Same rule as AN12196 Table 24 for every data-changing command in CommMode.Plain.
    card = ScriptedCard([(None, h("9100"))])
    df = DESFire(card)
    _ev2_session(df, enc="00" * 16, mac="00" * 16, ti="01020304", ctr=5)
    operation(df)
    sent = card.sent[0]
    assert len(sent) == 5 + sent[4] + 1 and sent[4] in (4, 5, 10)  # header and data only, no MACt
    assert df._channel.session.cmd_ctr == 6 and df.auth_mode == AuthMode.EV2


def test_authenticate_ev2_non_first_then_plain_write_and_change_key_an12196_tables_23_to_25():
    # AN12196 Table 23: AuthenticateEV2NonFirst with key 0 (16 zero bytes) inside session B (TI 7614281A,
    # CmdCtr 1 after Table 21). The command APDUs, RndA and the resulting session keys are the
    # published ones (same pylibsdm transcription as above); the card's last answer E(K0, RndA') is
    # built here with `cryptography`, because pylibsdm marks the published one as probably wrong.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    rnd_a = h("60BE759EDA560250AC57CDDC11743CF6")
    encryptor = Cipher(algorithms.AES(bytes(16)), modes.CBC(bytes(16))).encryptor()
    rnd_a_answer = encryptor.update(rnd_a[1:] + rnd_a[:1]) + encryptor.finalize()
    card = ScriptedCard([
        (h("9077000001 00 00"), h("A6A2B3C572D06C097BB8DB70463E22DC 91AF")),
        (h("90AF000020 BE7D45753F2CAB85F34BC60CE58B9407 63FE969658A532DF6D95EA2773F6E991 00"),
         rnd_a_answer + h("9100")),
        (h("903D000019 010E0000120000 FF0506E1050080828300000000000000000000"), h("9100")),
        (h("90C4000029 02 2CF362B7BF4311FF3BE1DAA295E8C68DE09050560D19B9E16C2393AE9CD1FAC7")
         + h("5D0CE20BCD1D06E6 00"), h("203BB55D1089D587 9100")),
    ])
    df = DESFire(card, random_bytes=RandomFeed(rnd_a.hex()))
    df.aid = h("010000")
    _ev2_session(df, enc="7A93D6571E4B180FCA6AC90C9A7488D4", mac="FC4AF159B62E549B5812394CAB1918CC",
                 ti="7614281A", ctr=1)
    df.authenticate_ev2_non_first(0, bytearray(16))
    s = df._channel.session
    assert s.ses_enc == h("4CF3CB41A22583A61E89B158D252FC53")
    assert s.ses_mac == h("5529860B2FC5FB6154B7F28361D30BF9")
    assert s.ti == h("7614281A") and s.cmd_ctr == 1  # NonFirst keeps TI and the command counter
    df.write_data(1, 0x0E, h("FF0506E10500808283000000000000000000"), CommMode.PLAIN)  # Table 24
    df.change_key(2, bytearray(h("F3847D627727ED3BC9C4CC050489B966")), 0x01, old_key=bytearray(16))
    assert card.done()


def test_exhausted_command_counter_is_refused_before_anything_is_sent():
    card = ScriptedCard([])
    df = DESFire(card)
    _ev2_session(df, enc="00" * 16, mac="00" * 16, ti="01020304", ctr=0xFFFF)
    with pytest.raises(ProtocolUsageError):
        df.write_data(1, 0, b"x", CommMode.FULL)
    assert card.sent == [] and df.auth_mode == AuthMode.NONE
