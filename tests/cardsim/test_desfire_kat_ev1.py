"""Known answers: the virtual card replays a published real DESFire EV1 trace (ISO/AES auth, CMAC chain).

Source: "DESFire EV1 Communication Examples" (Elmue), github.com/sotechcllc/RFDoorLock,
file "Desfire EV1 Communication Examples.htm" (a PN532 talking to a real EV1 card),
sections "Selftest" (PICC level, DES), "2K3DES" and "AES", as transcribed in native
framing in tests/cardproto/test_desfire_ev1_{aes,des}.py. Every card answer below
is the published one; the card's RndB is the published E(K, RndB) decrypted with
the published key (AES/DES from `cryptography`, not the card's code).
"""
from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cardsim.desfire import DESFireCard
from cardsim.desfire.model import Key

KEY_B = bytes.fromhex("10 18 20 28 30 38 40 48 50 58 60 68 70 78 80 88")
APP_AES, APP_DES = bytes.fromhex("16AE00"), bytes.fromhex("16DE00")


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def rnd_b(encrypted: str, key: bytes) -> bytes:
    enc = h(encrypted)
    algorithm = algorithms.AES(key) if len(enc) == 16 else TripleDES(key[:8] * 3)
    decryptor = Cipher(algorithm, modes.CBC(bytes(len(enc)))).decryptor()
    return decryptor.update(enc) + decryptor.finalize()


def feed(*values: bytes):
    pool = bytearray(b"".join(values))

    def rng(n: int) -> bytes:
        out = bytes(pool[:n])
        del pool[:n]
        return out

    return rng


def replay(card: DESFireCard, script: list[tuple[str, str]]) -> None:
    """Send each native command ISO-wrapped; the card must give the published native answer."""
    for step, (command, expected) in enumerate(script):
        native = h(command)
        body = bytes((len(native) - 1,)) + native[1:] if len(native) > 1 else b""
        apdu = bytes((0x90, native[0], 0, 0)) + body
        answer = card.transmit(apdu + b"\x00")
        status, data = h(expected)[0], h(expected)[1:]
        assert answer == data + bytes((0x91, status)), f"step {step}: {command}"


def auth(ins: str, key_no: str, rnd_b_enc: str, token: str, rnd_a_enc: str) -> list[tuple[str, str]]:
    return [(f"{ins} {key_no}", "AF " + rnd_b_enc), ("AF " + token, "00 " + rnd_a_enc)]


def aes_card(rng) -> DESFireCard:
    card = DESFireCard("ev1", rng=rng)
    replay(card, [("CA 16 AE 00 0F 82", "00"), ("5A 16 AE 00", "00")])
    return card


def test_aes_auth_and_file_commands_answer_with_the_published_cmacs():
    data = bytes(range(0x50))
    enc_b = "B3 51 CB 24 65 D4 F3 3A C6 27 FD 6E 87 A1 68 F2"
    card = aes_card(feed(rnd_b(enc_b, KEY_B)))
    card.apps[APP_AES].keys[1] = Key("aes", bytearray(KEY_B), 0x10)
    replay(card, auth("AA", "01", enc_b,
                      "04 4B 6C AC 34 3A 08 65 89 51 49 64 9C A8 DD E1"
                      "F5 AC 4E C6 7B D2 08 90 0A F0 2F 04 9E 05 F0 B0",
                      "A2 EE 14 4B 10 12 FB EB 7B 2F 11 13 2D 95 A4 54") + [
        ("CD 05 00 11 00 50 00 00", "00 A7 53 16 AD 15 96 B9 53"),
        ("6F", "00 05 2D 5F F6 7F FE C9 D2 D3"),
        ("F5 05", "00 00 00 11 00 50 00 00 2A AC 75 17 02 4E 09 DC"),
        ("3D 05 00 00 00 34 00 00 " + data[:0x34].hex(), "00 76 5C 9D AA 50 EC B6 2F"),
        ("3D 05 34 00 00 1C 00 00 " + data[0x34:].hex(), "00 3E 0A ED 98 6B 8B 0F 37"),
        ("BD 05 00 00 00 30 00 00", "00 " + data[:0x30].hex() + "4C 65 F1 F8 42 26 2B AC"),
        ("BD 05 30 00 00 20 00 00", "00 " + data[0x30:].hex() + "F0 22 05 CF 91 3C 03 C9"),
        ("DF 05", "00 1B EF 0D 32 B6 D1 D7 F9"),
        ("6F", "00 FC 19 4E A9 3E 3E F8 E7"),
    ])


def test_aes_change_of_another_key_is_accepted_and_answered_with_the_published_cmac():
    enc_b = "ED DA F0 C5 D9 A7 CF 42 B8 80 8B E2 01 38 99 A1"
    card = aes_card(feed(rnd_b(enc_b, bytes(16))))
    replay(card, auth("AA", "00", enc_b,
                      "D8 10 5F 87 4E 2C A5 7B 76 C3 54 A8 06 6B 0D 78"
                      "80 B0 C4 EC 39 9D BF 25 34 38 DB 46 D7 5F 8F 60",
                      "45 9C 76 B7 1A B9 F1 73 64 13 F5 AC D7 3E 7D F9") + [
        ("C4 01 E7 EC CB 6B D1 CA 64 BC 16 1A 12 B1 C0 24 F7 14"
         "30 33 74 08 C8 A8 7E AC AB 7A 1F F1 89 51 FC A3",
         "00 21 28 D3 CD 9C 9A CF FF"),
        ("C4 01 28 41 93 8C 40 A4 BC 2C 33 06 44 82 FE AD A5 F4"
         "3E C5 35 D3 42 55 B0 28 6C 23 52 CD 17 38 63 C7",
         "00 CA F3 BF 0B 28 36 E9 DE"),
    ])
    key = card.apps[APP_AES].keys[1]
    assert bytes(key.value) == KEY_B and key.version == 0x10


def test_des_picc_session_get_version_and_application_management_match_published_cmacs():
    enc_b = "5D 99 4C E0 85 F2 40 89"
    card = DESFireCard("ev1", uid=h("04 06 3F 72 63 34 80"), memory_size=8192, batch=h("BA 45 19 E3 20"),
                       production=h("49 13"), rng=feed(rnd_b(enc_b, bytes(8))))
    replay(card, [("5A 00 00 00", "00"), ("64 00", "00 00")]
           + auth("1A", "00", enc_b, "21 D0 AD 5F 2F D9 74 54 A7 46 CC 80 56 7F 1B 1C",
                  "91 3C 6D ED 84 22 1C 41")
           + [("60", "AF 04 01 01 01 00 1A 05"), ("AF", "AF 04 01 01 01 04 1A 05"),
              ("AF", "00 04 06 3F 72 63 34 80 BA 45 19 E3 20 49 13 CD C8 10 BA FA 40 17 59"),
              ("FC", "00 9C 2C 81 3A 06 5C 45 F7"),
              ("CA 16 DE 00 0F 02", "00 0A 13 79 B0 1D 85 AD 47"),
              ("CA 24 DE 00 0F 42", "00 5D 73 AE 52 87 A1 BB E4"),
              ("CA 16 AE 00 0F 82", "00 3B 68 D7 2A 3B E0 D2 0C"),
              ("CA CC BB AA 0F 01", "00 F1 1A C0 73 8E F8 38 78"),
              ("6A", "00 16 DE 00 24 DE 00 16 AE 00 CC BB AA 27 39 15 4E 26 30 D6 50"),
              ("DA CC BB AA", "00 A9 AF 19 05 22 92 F6 62"),
              ("6A", "00 16 DE 00 24 DE 00 16 AE 00 52 0E 51 E0 0A F0 6D 5E")])


def test_des_change_key_settings_is_decrypted_on_the_chained_iv():
    enc_b = "84 76 D1 CF 30 24 B7 C7"
    card = DESFireCard("ev1", rng=feed(rnd_b(enc_b, bytes(8))))
    replay(card, [("CA 16 DE 00 0F 02", "00"), ("5A 16 DE 00", "00")]
           + auth("1A", "00", enc_b, "DA C6 7A B7 43 76 3D C9 FA F8 A0 AE 50 4E 80 C5",
                  "13 E9 E4 FA 43 88 BF 16")
           + [("45", "00 0F 02 25 DD 8D 77 31 B1 CF D5"),
              ("54 27 88 28 05 FC 3F D4 9D", "00 A6 28 37 83 74 27 0A CD"),
              ("45", "00 0D 02 61 3F B2 D3 F4 53 D2 E4")])
    assert card.apps[APP_DES].key_settings == 0x0D
