"""EV1 DES/2K3DES/3K3DES (AuthenticateISO 0x1A) sessions against a published card trace.

Source: "DESFire EV1 Communication Examples" (Elmue), github.com/sotechcllc/RFDoorLock,
file "Desfire EV1 Communication Examples.htm": the "Selftest" (PICC level, DES),
"2K3DES" and "3K3DES" sections. Native frames are re-wrapped in ISO 7816 form.
"""
from cardproto.desfire import DESFire, KeyType
from cardproto.desfire.constants import AuthMode
from tests.cardproto.desfire_script import RandomFeed, ScriptedCard, answer, h, wrap


def _auth(key_no: str, rnd_b_enc: str, token: str, rnd_a_enc: str) -> list:
    return [(wrap("1A " + key_no), answer("AF " + rnd_b_enc)),
            (wrap("AF " + token), answer("00 " + rnd_a_enc))]


def test_picc_session_with_des_key_chains_cmac_over_multi_frame_answers():
    card = ScriptedCard(
        [(wrap("5A 00 00 00"), answer("00")),
         (wrap("64 00"), answer("00 00"))]
        + _auth("00", "5D 99 4C E0 85 F2 40 89", "21 D0 AD 5F 2F D9 74 54 A7 46 CC 80 56 7F 1B 1C",
                "91 3C 6D ED 84 22 1C 41")
        + [(wrap("60"), answer("AF 04 01 01 01 00 1A 05")),
           (wrap("AF"), answer("AF 04 01 01 01 04 1A 05")),
           (wrap("AF"), answer("00 04 06 3F 72 63 34 80 BA 45 19 E3 20 49 13 CD C8 10 BA FA 40 17 59")),
           (wrap("FC"), answer("00 9C 2C 81 3A 06 5C 45 F7")),
           (wrap("CA 16 DE 00 0F 02"), answer("00 0A 13 79 B0 1D 85 AD 47")),
           (wrap("CA 24 DE 00 0F 42"), answer("00 5D 73 AE 52 87 A1 BB E4")),
           (wrap("CA 16 AE 00 0F 82"), answer("00 3B 68 D7 2A 3B E0 D2 0C")),
           (wrap("CA CC BB AA 0F 01"), answer("00 F1 1A C0 73 8E F8 38 78")),
           (wrap("6A"), answer("00 16 DE 00 24 DE 00 16 AE 00 CC BB AA 27 39 15 4E 26 30 D6 50")),
           (wrap("DA CC BB AA"), answer("00 A9 AF 19 05 22 92 F6 62")),
           (wrap("6A"), answer("00 16 DE 00 24 DE 00 16 AE 00 52 0E 51 E0 0A F0 6D 5E"))])
    df = DESFire(card, random_bytes=RandomFeed("84 9B 36 C5 F8 BF 4A 09"))
    df.select_application(h("000000"))
    assert df.get_key_version(0) == 0  # before authentication: plain, no CMAC
    df.authenticate_legacy(0, bytearray(16), KeyType.DES)
    version = df.get_version()
    assert version.uid == h("04 06 3F 72 63 34 80") and version.batch == h("BA 45 19 E3 20")
    assert (version.production_week, version.production_year) == (0x49, 0x13)  # BCD: week 49, 2013
    assert version.storage_size == 8192
    df.format_picc()
    df.create_application(h("16 DE 00"), 0x0F, 2, KeyType.DES)
    df.create_application(h("24 DE 00"), 0x0F, 2, KeyType.TDES3K)
    df.create_application(h("16 AE 00"), 0x0F, 2, KeyType.AES)
    df.create_application(h("CC BB AA"), 0x0F, 1, KeyType.DES)
    assert df.get_application_ids() == [h("16DE00"), h("24DE00"), h("16AE00"), h("CCBBAA")]
    df.delete_application(h("CC BB AA"))
    assert df.get_application_ids() == [h("16DE00"), h("24DE00"), h("16AE00")]
    assert card.done()


def test_change_key_settings_is_encrypted_on_the_chained_iv():
    card = ScriptedCard(
        [(wrap("5A 16 DE 00"), answer("00"))]
        + _auth("00", "84 76 D1 CF 30 24 B7 C7", "DA C6 7A B7 43 76 3D C9 FA F8 A0 AE 50 4E 80 C5",
                "13 E9 E4 FA 43 88 BF 16")
        + [(wrap("45"), answer("00 0F 02 25 DD 8D 77 31 B1 CF D5")),
           (wrap("54 27 88 28 05 FC 3F D4 9D"), answer("00 A6 28 37 83 74 27 0A CD")),
           (wrap("45"), answer("00 0D 02 61 3F B2 D3 F4 53 D2 E4"))])
    df = DESFire(card, random_bytes=RandomFeed("49 EC 63 DE CD E0 07 72"))
    df.select_application(h("16 DE 00"))
    df.authenticate_legacy(0, bytearray(16))
    settings = df.get_key_settings()
    assert (settings.settings, settings.max_keys, settings.key_type) == (0x0F, 2, KeyType.DES)
    df.change_key_settings(0x0D)
    assert df.get_key_settings().settings == 0x0D
    assert card.done()


def test_2k3des_keys_change_with_version_in_parity_bits_and_other_key_xor():
    k2a = "00 10 20 31 40 50 60 70 80 90 A0 B0 B0 A0 90 80"
    k2b = "10 18 20 29 30 38 40 48 50 58 60 68 70 78 80 88"
    card = ScriptedCard(
        [(wrap("5A 16 DE 00"), answer("00"))]
        + _auth("00", "DE 50 F9 23 10 CA F5 A5", "E0 06 16 66 87 04 D5 54 9C 8D 6A 13 A0 F8 FC ED",
                "1D 9D 29 54 69 7D E7 60")
        + [(wrap("C4 00 BE DE 0F C6 ED 34 7D CF 0D 51 C7 17 DF 75 D9 7D 2C 5A 2B A6 CA C7 47 9D"),
            answer("00"))]
        + _auth("00", "B2 95 57 99 26 15 5A E3", "70 F3 49 74 0C 94 5D AE 15 9B A9 FE DB CC 46 1A",
                "B8 FD 7F E5 6B 24 1F C4")
        + [(wrap("C4 00 94 E4 F7 09 DC 2A 2B 07 55 26 10 A1 96 6E 5C 49 EC 90 F6 16 ED EC A5 5B"),
            answer("00"))]
        + _auth("00", "94 14 81 9C C8 BB 62 C3", "93 7E 6B 18 54 A6 D9 2E 0F D9 75 D9 90 90 01 E8",
                "E0 55 D1 1D D9 53 50 60")
        + [(wrap("64 00"), answer("00 10 33 45 AA 95 F2 D9 56 CF")),
           (wrap("C4 00 FC 9E 20 FD 77 19 1E 2A AB 0C FD 53 D9 99 99 84 BC 59 E8 86 BF EB 42 D0"),
            answer("00"))]
        + _auth("00", "53 A6 70 D7 8C 0D FF D6", "B3 08 40 8B 57 5A 20 25 25 3D 49 D6 93 CC C2 9C",
                "52 5B B0 1E 5B 70 B7 94")
        + [(wrap("C4 01 4E B6 69 E4 8D CA 58 47 49 54 2E 1B E8 9C B4 C7 84 5A 38 C5 7D 19 DE 59"),
            answer("00 2E AD 04 DC F1 21 E0 FE")),
           (wrap("C4 01 FA 7B EF A6 78 2C 93 E8 D6 9C F7 35 2C FD 33 DF 5B C8 AC 4F BA 49 06 FC"),
            answer("00 CB 0A 50 64 05 51 28 93"))]
        + _auth("01", "87 D3 AC 1E 09 57 0A AD", "D8 2E 8C 09 26 31 FE 15 25 7D 67 62 9F C9 29 D5",
                "C4 13 2C EF 0D 13 F8 12"))
    df = DESFire(card, random_bytes=RandomFeed("C9 6C E3 5E 4D 60 87 F2", "53 0E 3D 90 F7 A2 01 C4",
                                               "DD B0 97 C2 A1 E4 7B 96", "CB A6 75 E8 EF BA B9 9C",
                                               "F7 A2 01 C4 DB 76 05 38"))
    df.select_application(h("16 DE 00"))
    df.authenticate_legacy(0, bytearray(16))
    df.change_key(0, bytearray(h(k2a)), 0x10)
    df.authenticate_legacy(0, bytearray(h(k2a)))
    df.change_key(0, bytearray(h(k2b)), 0x10)
    df.authenticate_legacy(0, bytearray(h(k2b)))
    assert df.get_key_version(0) == 0x10
    df.change_key(0, bytearray(16), 0x00)
    df.authenticate_legacy(0, bytearray(16))
    df.change_key(1, bytearray(h(k2a)), 0x10, old_key=bytearray(16))
    df.change_key(1, bytearray(h(k2b)), 0x10, old_key=bytearray(h(k2a)))
    df.authenticate_legacy(1, bytearray(h(k2b)))
    assert df.auth_mode == AuthMode.EV1 and df.authenticated_key_no == 1
    assert card.done()


def test_3k3des_authentication_and_same_key_change():
    k3 = "00 10 20 31 40 50 60 70 80 90 A0 B0 B0 A0 90 80 70 60 50 40 30 20 10 00"
    card = ScriptedCard(
        [(wrap("5A 24 DE 00"), answer("00"))]
        + _auth("00", "BC 1C 57 0B C9 48 15 61 87 13 23 64 E4 DC E1 76",
                "DD DC 9A 77 59 7F 03 A4 0C 7F AA 36 2F 45 A8 EA "
                "DB E4 6A 11 5D 98 19 8C BF 36 A6 E5 1B 39 D8 7C",
                "72 44 D9 35 ED 9A 13 06 CD 8C 84 1A 7C 1D E3 9A")
        + [(wrap("C4 00 F4 F8 65 F3 18 CB 9D E8 0B 2B 16 51 45 02 1F 4F"
                 "3A FE F1 24 4F EA 42 FC 99 77 26 FD E7 50 74 1D"), answer("00"))]
        + _auth("00", "FA 2F B9 A1 7B 35 9D 03 4D F3 EB 1C 41 79 20 7E",
                "7B F9 E1 AC 2D 7C 28 36 11 2E 64 2D 39 8F BA EF "
                "5C A6 1C C3 A6 29 FA 8B D5 2F 43 F9 D9 31 C0 43",
                "1E 30 51 B5 9B A3 1E 4C EF 64 BB E8 72 1B 7B D6"))
    df = DESFire(card, random_bytes=RandomFeed("36 C5 F8 BF 4A 09 AC 23 9E 8D A0 C7 32 51 D4 AB",
                                               "03 FE 6D 00 A7 92 31 34 8B 66 35 A8 AF 7A 79 5C"))
    df.select_application(h("24 DE 00"))
    df.authenticate_legacy(0, bytearray(24), KeyType.TDES3K)
    df.change_key(0, bytearray(h(k3)), 0x10)
    df.authenticate_legacy(0, bytearray(h(k3)), KeyType.TDES3K)
    assert bytes(df._channel.session.cipher._key) == h(
        "02 FE 6C 00 F4 D6 56 42 30 34 8A 66 3C 12 FA 8A AE 7A 78 5C 46 CE 7A 2E")
    assert card.done()
