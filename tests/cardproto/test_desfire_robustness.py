"""Framing, chaining and hostile-card behaviour of the DESFire host: every failure is a named CardError."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardproto.desfire import AccessRights, CommMode, DESFire, KeyType
from cardproto.desfire.constants import AuthMode
from cardproto.desfire.crypto import BlockCipher
from cardproto.errors import (
    CardError,
    MacError,
    MalformedResponseError,
    ProtocolUsageError,
    ShortResponseError,
    StatusWordError,
)
from tests.cardproto.desfire_script import ScriptedCard, h


def test_long_command_is_sent_in_additional_frames():
    # frame_size 8: WriteData header (7 bytes) + 9 data bytes go as 8 + 8, the second as 90 AF.
    card = ScriptedCard([
        (h("903D0000 08 0100000009000001 00"), h("91AF")),
        (h("90AF0000 08 0203040506070809 00"), h("9100")),
    ])
    df = DESFire(card, frame_size=8)
    df.write_data(1, 0, bytes(range(1, 10)))
    assert card.done()


def test_card_refusing_a_middle_frame_raises_status_word_error():
    card = ScriptedCard([(None, h("91AF")), (None, h("917E"))])
    df = DESFire(card, frame_size=8)
    with pytest.raises(StatusWordError) as info:
        df.write_data(1, 0, bytes(9))
    assert info.value.sw == 0x917E and info.value.command == "DESFire WriteData"
    assert "length" in info.value.meaning


def test_iso_level_status_word_is_reported_with_meaning():
    df = DESFire(ScriptedCard([(None, h("6A82"))]))
    with pytest.raises(StatusWordError) as info:
        df.get_application_ids()
    assert info.value.sw == 0x6A82 and info.value.apdu == h("906A000000")


def test_unknown_desfire_status_is_still_described():
    df = DESFire(ScriptedCard([(None, h("9177"))]))
    with pytest.raises(StatusWordError) as info:
        df.free_memory()
    assert "unknown status code 77" in str(info.value)


def test_one_byte_response_raises_short_response_error():
    df = DESFire(ScriptedCard([(None, h("91"))]))
    with pytest.raises(ShortResponseError):
        df.get_version()


def test_endless_additional_frames_are_cut_off():
    class Endless:
        def transmit(self, apdu):
            return h("00 91AF")

    with pytest.raises(MalformedResponseError):
        DESFire(Endless()).get_application_ids()


def test_mac_and_full_modes_need_an_authentication():
    df = DESFire(ScriptedCard([]))
    with pytest.raises(ProtocolUsageError):
        df.write_data(1, 0, b"x", CommMode.FULL)
    with pytest.raises(ProtocolUsageError):
        df.change_key(0, bytearray(16), 1)


def test_changing_another_key_without_old_key_is_refused_before_sending():
    card = ScriptedCard([])
    df = DESFire(card)
    _ev1_session(df)
    with pytest.raises(ProtocolUsageError):
        df.change_key(1, bytearray(16), 1)
    assert card.sent == []


def test_ev1_bad_response_cmac_ends_session():
    df = DESFire(ScriptedCard([(None, h("10 0000000000000000 9100"))]))
    _ev1_session(df)
    with pytest.raises(MacError):
        df.get_key_version(0)
    assert df.auth_mode == AuthMode.NONE


def test_close_wipes_session_keys_and_repr_hides_them():
    df = DESFire(ScriptedCard([]))
    _ev1_session(df)
    key_buffer = df._channel.session.cipher._key
    assert "F4" not in repr(df).upper().replace("AUTH", "")
    df.close()
    assert key_buffer == bytearray(len(key_buffer)) and df.auth_mode == AuthMode.NONE


def test_access_rights_pack_as_published_file_settings():
    # Elmue trace (sotechcllc/RFDoorLock): GetFileSettings "00 00 11 00 50 00 00" = Rd+Wr 1, Change 1.
    assert AccessRights(read=0, write=0, read_write=1, change=1).to_bytes() == h("1100")
    assert AccessRights.from_bytes(h("1100")) == AccessRights(0, 0, 1, 1)


# ------------------------------------------------------------------ property tests
def _ev1_session(df: DESFire) -> None:
    s = df._channel.session
    s.mode, s.key_no, s.key_type = AuthMode.EV1, 0, KeyType.AES
    s.cipher, s.iv = BlockCipher(h("F44B26F5C05DDD7110772281C4D066E8")), bytearray(16)


def _ev2_session(df: DESFire) -> None:
    s = df._channel.session
    s.mode, s.key_no, s.key_type = AuthMode.EV2, 0, KeyType.AES
    s.ses_enc, s.ses_mac, s.ti, s.cmd_ctr = bytearray(16), bytearray(range(16)), h("01020304"), 7


class RandomCard:
    def __init__(self, answers):
        self.answers = list(answers)

    def transmit(self, apdu):
        return self.answers.pop(0) if self.answers else b""


status_words = st.sampled_from([h("9100"), h("91AF"), h("91AE"), h("911E"), h("910C"), h("9000"),
                                h("6A82"), h("9177")]) | st.binary(min_size=2, max_size=2)
answers = st.lists(st.one_of(st.builds(lambda d, sw: d + sw, st.binary(max_size=48), status_words),
                             st.binary(max_size=1)), max_size=6)

COMMANDS = [
    lambda df: df.get_version(), lambda df: df.get_card_uid(), lambda df: df.free_memory(),
    lambda df: df.get_application_ids(), lambda df: df.get_key_settings(),
    lambda df: df.get_key_version(1), lambda df: df.get_file_ids(), lambda df: df.get_file_settings(1),
    lambda df: df.read_data(1, 0, 0, CommMode.FULL), lambda df: df.read_data(1, 0, 5, CommMode.MAC),
    lambda df: df.read_data(1, 0, 0, CommMode.PLAIN), lambda df: df.get_value(2, CommMode.FULL),
    lambda df: df.read_records(3, 0, 0, CommMode.FULL), lambda df: df.credit(2, 5, CommMode.FULL),
    lambda df: df.write_data(1, 0, bytes(70), CommMode.MAC), lambda df: df.commit_transaction(),
    lambda df: df.change_key(1, bytearray(16), 1, old_key=bytearray(16)),
    lambda df: df.change_key(0, bytearray(16), 1), lambda df: df.change_key_settings(0x0F),
    lambda df: df.select_application(h("010203")),
    lambda df: df.authenticate_aes(0, bytearray(16)),
    lambda df: df.authenticate_ev2_first(0, bytearray(16)),
    lambda df: df.authenticate_legacy(0, bytearray(16)),
    lambda df: df.authenticate_legacy(0, bytearray(24), KeyType.TDES3K),
]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(command=st.sampled_from(COMMANDS), session=st.sampled_from(["none", "ev1", "ev2"]), replies=answers)
def test_random_card_answers_only_ever_raise_card_errors(command, session, replies):
    df = DESFire(RandomCard(replies))
    {"none": lambda d: None, "ev1": _ev1_session, "ev2": _ev2_session}[session](df)
    try:
        command(df)
    except CardError:
        pass
