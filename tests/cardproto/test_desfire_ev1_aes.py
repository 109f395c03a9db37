"""EV1 AES authentication, ChangeKey and CMAC-chained file commands against a published card trace.

Source of every value: "DESFire EV1 Communication Examples" (Elmue), published in
github.com/sotechcllc/RFDoorLock, file "Desfire EV1 Communication Examples.htm",
section "AES" (a Teensy + PN532 talking to a real DESFire EV1). The trace is in
native framing; `wrap`/`answer` put the same bytes in ISO 7816 wrapping.
"""
from cardproto.desfire import AccessRights, CommMode, DESFire, KeyType
from cardproto.desfire.constants import AuthMode
from tests.cardproto.desfire_script import RandomFeed, ScriptedCard, answer, h, wrap

ZERO = "00" * 16
KEY_A = "00 10 20 30 40 50 60 70 80 90 A0 B0 B0 A0 90 80"
KEY_B = "10 18 20 28 30 38 40 48 50 58 60 68 70 78 80 88"


APP_AES = "16 AE 00"  # application 0x00AE16, LSB first as on the wire


def _select(aid: str) -> list:
    return [(wrap("5A " + aid), answer("00"))]


def _auth(key_no: str, rnd_b_enc: str, token: str, rnd_a_enc: str) -> list:
    return [
        (wrap("AA " + key_no), answer("AF " + rnd_b_enc)),
        (wrap("AF " + token), answer("00 " + rnd_a_enc)),
    ]


def test_aes_authentication_matches_published_trace_and_builds_session_key():
    card = ScriptedCard(_auth("00", "B9 69 FD FE 56 FD 91 FC 9D E6 F6 F2 13 B8 FD 1E",
                              "36 AA D7 DF 6E 43 6B A0 8D 18 61 38 30 A7 0D 5A"
                              "D4 3E 3D 3F 4A 8D 47 54 1E EE 62 3A 93 4E 47 74",
                              "80 0D B6 80 BC 14 6B D1 21 D6 57 8F 2D 2E 20 59"))
    df = DESFire(card, random_bytes=RandomFeed("F4 4B 26 F5 68 6F 3A 39 1C D3 8E BD 10 77 22 81"))
    df.authenticate_aes(0, bytearray(16))
    assert df.auth_mode == AuthMode.EV1
    # Published SessKey: F4 4B 26 F5 C0 5D DD 71 10 77 22 81 C4 D0 66 E8
    assert bytes(df._channel.session.cipher._key) == h("F4 4B 26 F5 C0 5D DD 71 10 77 22 81 C4 D0 66 E8")
    assert card.done()


def test_change_same_key_then_reauthenticate_and_cmac_chain_through_get_key_version():
    card = ScriptedCard(
        _select(APP_AES)
        + _auth("00", "B9 69 FD FE 56 FD 91 FC 9D E6 F6 F2 13 B8 FD 1E",
              "36 AA D7 DF 6E 43 6B A0 8D 18 61 38 30 A7 0D 5A "
              "D4 3E 3D 3F 4A 8D 47 54 1E EE 62 3A 93 4E 47 74",
              "80 0D B6 80 BC 14 6B D1 21 D6 57 8F 2D 2E 20 59")
        + [(wrap("C4 00 E9 F8 5E 21 94 96 C2 B5 8C 10 90 DC 39 35 FA E9"
                 "E8 40 CF 61 B3 83 D9 53 19 46 25 6B 1F 11 0C 10"), answer("00"))]
        + _auth("00", "CC C8 31 6C 2B 26 13 FE 9A 18 9B AC 9C C8 9D 03",
                "C0 2E 06 1E 72 E1 77 26 48 9C AE EC 99 7C 52 37 "
                "58 BF 86 3E FE 76 71 C5 5B 46 65 D0 6A CC D9 7B",
                "72 AC CC 0B DE A4 82 B5 31 85 BB 5A D0 08 62 46")
        + [(wrap("C4 00 29 45 E3 76 0E 60 F4 A4 04 6B B8 A5 05 B3 1C F5"
                 "59 A3 A2 E0 52 13 BC 82 94 2C A6 AB 5D BC EC F5"), answer("00"))]
        + _auth("00", "3E 2B E6 26 C0 5E 77 98 EE 51 83 55 A7 51 64 8E",
                "FA BF 71 BB 0D C4 5B 8F 31 BA ED DF F7 F3 43 96 "
                "52 D4 09 4D F1 2C 17 EF 0C 94 35 3E 6D 77 70 C8",
                "1C E6 C5 74 E2 49 23 D4 04 E1 8B 6A 24 0C 1B 08")
        + [(wrap("64 00"), answer("00 10 8A 8F A3 6F 55 CD 21 0D")),
           (wrap("C4 00 63 53 75 E4 91 9F 8A F2 E9 E8 6B 1C 1B A5 5B 0C"
                 "08 07 EA F4 84 D7 A7 EF 6E 0C 30 84 16 0F 5A 61"), answer("00"))])
    df = DESFire(card, random_bytes=RandomFeed(
        "F4 4B 26 F5 68 6F 3A 39 1C D3 8E BD 10 77 22 81",
        "C2 A1 E4 7B 96 A5 58 9F AA E9 0C 03 FE 6D 00 A7",
        "90 F7 A2 01 C4 DB 76 05 38 FF 8A 49 EC 63 DE CD"))
    df.select_application(h(APP_AES))
    df.authenticate_aes(0, bytearray(16))
    df.change_key(0, bytearray(h(KEY_A)), 0x10)
    assert df.auth_mode == AuthMode.NONE  # changing the key in use ends the session
    df.authenticate_aes(0, bytearray(h(KEY_A)))
    df.change_key(0, bytearray(h(KEY_B)), 0x10)
    df.authenticate_aes(0, bytearray(h(KEY_B)))
    assert df.get_key_version(0) == 0x10  # RX CMAC 8A 8F A3 6F ... verified
    # The IV for this ChangeKey is the previous response CMAC (published "SessKey IV").
    df.change_key(0, bytearray(16), 0x00)
    assert card.done()


def test_change_other_key_xors_old_key_and_appends_crc_of_new_key():
    card = ScriptedCard(
        _select(APP_AES)
        + _auth("00", "ED DA F0 C5 D9 A7 CF 42 B8 80 8B E2 01 38 99 A1",
              "D8 10 5F 87 4E 2C A5 7B 76 C3 54 A8 06 6B 0D 78 "
              "80 B0 C4 EC 39 9D BF 25 34 38 DB 46 D7 5F 8F 60",
              "45 9C 76 B7 1A B9 F1 73 64 13 F5 AC D7 3E 7D F9")
        + [(wrap("C4 01 E7 EC CB 6B D1 CA 64 BC 16 1A 12 B1 C0 24 F7 14"
                 "30 33 74 08 C8 A8 7E AC AB 7A 1F F1 89 51 FC A3"), answer("00 21 28 D3 CD 9C 9A CF FF")),
           (wrap("C4 01 28 41 93 8C 40 A4 BC 2C 33 06 44 82 FE AD A5 F4"
                 "3E C5 35 D3 42 55 B0 28 6C 23 52 CD 17 38 63 C7"), answer("00 CA F3 BF 0B 28 36 E9 DE"))])
    df = DESFire(card, random_bytes=RandomFeed("C2 A1 E4 7B 96 A5 58 9F AA E9 0C 03 FE 6D 00 A7"))
    df.select_application(h(APP_AES))
    df.authenticate_aes(0, bytearray(16))
    df.change_key(1, bytearray(h(KEY_A)), 0x10, old_key=bytearray(16))
    df.change_key(1, bytearray(h(KEY_B)), 0x10, old_key=bytearray(h(KEY_A)))
    assert df.auth_mode == AuthMode.EV1 and df.authenticated_key_no == 0
    assert card.done()


def test_file_commands_carry_and_verify_the_chained_cmac():
    data = bytes(range(0x50))
    card = ScriptedCard(
        _select(APP_AES)
        + _auth("01", "B3 51 CB 24 65 D4 F3 3A C6 27 FD 6E 87 A1 68 F2",
              "04 4B 6C AC 34 3A 08 65 89 51 49 64 9C A8 DD E1 "
              "F5 AC 4E C6 7B D2 08 90 0A F0 2F 04 9E 05 F0 B0",
              "A2 EE 14 4B 10 12 FB EB 7B 2F 11 13 2D 95 A4 54")
        + [(wrap("CD 05 00 11 00 50 00 00"), answer("00 A7 53 16 AD 15 96 B9 53")),
           (wrap("6F"), answer("00 05 2D 5F F6 7F FE C9 D2 D3")),
           (wrap("F5 05"), answer("00 00 00 11 00 50 00 00 2A AC 75 17 02 4E 09 DC")),
           (wrap("3D 05 00 00 00 34 00 00 " + data[:0x34].hex()), answer("00 76 5C 9D AA 50 EC B6 2F")),
        (wrap("3D 05 34 00 00 1C 00 00 " + data[0x34:].hex()), answer("00 3E 0A ED 98 6B 8B 0F 37")),
        (wrap("BD 05 00 00 00 30 00 00"), answer("00 " + data[:0x30].hex() + "4C 65 F1 F8 42 26 2B AC")),
        (wrap("BD 05 30 00 00 20 00 00"), answer("00 " + data[0x30:].hex() + "F0 22 05 CF 91 3C 03 C9")),
        (wrap("DF 05"), answer("00 1B EF 0D 32 B6 D1 D7 F9")),
        (wrap("6F"), answer("00 FC 19 4E A9 3E 3E F8 E7")),
    ])
    # frame_size 60: the published trace sent the 52-byte write as one native frame.
    df = DESFire(card, frame_size=60,
                 random_bytes=RandomFeed("40 E7 D2 71 74 CB A6 75 E8 EF BA B9 9C 53 0E 3D"))
    df.select_application(h(APP_AES))
    df.authenticate_aes(1, bytearray(h(KEY_B)))
    access = AccessRights(read=0, write=0, read_write=1, change=1)
    df.create_std_data_file(5, CommMode.PLAIN, access, 80)
    assert df.get_file_ids() == [5]
    settings = df.get_file_settings(5)
    assert (settings.comm_mode, settings.access, settings.size) == (CommMode.PLAIN, access, 80)
    df.write_data(5, 0, data[:0x34])
    df.write_data(5, 0x34, data[0x34:])
    assert df.read_data(5, 0, 0x30) + df.read_data(5, 0x30, 0x20) == data
    df.delete_file(5)
    assert df.get_file_ids() == []
    assert card.done()


def test_key_type_constant_matches_published_create_application_byte():
    # Same trace: CreateApplication(..., Type=AES) sends key count byte 0x82.
    assert 2 | KeyType.AES == 0x82 and 2 | KeyType.TDES3K == 0x42
