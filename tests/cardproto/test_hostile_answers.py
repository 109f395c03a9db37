"""Hypothesis-generated card answers, by category, fed to every host command of cardproto (issue 6).

Categories: wrong lengths (well-formed, well-MACed answers of any length), bad MACs (a sealed answer with
one bit flipped; for SCP02, whose answers carry no MAC, the card cryptogram of the opening), unknown status
words, truncated chains (91AF / 61xx / 6310 then silence or half a status word). Every command of the
DESFire host (sessions: none, legacy, EV1 AES/2K3DES/3K3DES, EV2 secure messaging, which EV3 cards speak
too) and of the GlobalPlatform host (plain, SCP03 at every level, SCP02) meets every category; each answer
ends in success or a named CardError carrying command, SW, meaning and no key bytes (`assert_named`).

The command lists are test_properties.py's; `test_every_host_command_meets_hostile_answers` derives the
host's commands from the code (public DESFire methods, GP functions taking a channel, channel methods)
so that a new command fails here until it is fed hostile answers. Cases per category go to
test-artifacts/proof/ (bench/proof_report.py prints them).
"""
from __future__ import annotations

import collections
import inspect
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardproto.desfire import DESFire
from cardproto.desfire.constants import AuthMode
from cardproto.errors import CardError, MacError, ShortResponseError, StatusWordError
from cardproto.gp import commands, content, scp02, scp03
from cardproto.gp.secure import SecureChannelBase as SecureChannel
from cardproto.keys import KeyType as GpKeyType
from cardproto.keys import StaticKeys
from cardproto.sw import describe
from tests.cardproto.test_properties import (
    DESFIRE_COMMANDS,
    GP_PLAIN_COMMANDS,
    GP_PLAIN_ONLY,
    GP_SECURE_COMMANDS,
    PYSIM_HOST_CHALLENGE,
    PYSIM_INIT_UPDATE,
    PYSIM_SCP02_INIT,
    PYSIM_SCP02_KEYS,
    PYSIM_SCP03_KEYS,
    SESSIONS,
    OracleCard,
    RandomTransport,
    _scp03_seal,
    _session,
    assert_named,
)
from tests.support.proof import record

h = bytes.fromhex
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "10"))  # per command and category
CATEGORIES = ("wrong_length", "bad_mac", "unknown_sw", "truncated_chain")

# Commands the lists in test_properties.py lack (found when this file derived the list from the code).
EXTRA_GP = [("SECURE card", lambda t: commands.secure_card(t))]
GP_PLAIN = [*GP_PLAIN_COMMANDS, *GP_PLAIN_ONLY, *EXTRA_GP]
GP_SECURE = [*GP_SECURE_COMMANDS, *EXTRA_GP]
# Public host methods that send nothing to the card (checked below: they never transmit).
SENDS_NOTHING = {
    "close": "wipes the session keys",
    "acknowledge_auth_failure": "lets the caller authenticate again after recording a failure",
    "wrap": "builds the protected C-APDU (send transmits it)",
    "encrypt_key": "encrypts key bytes for PUT KEY with the session's DEK",
    "unwrap": "checks the card's answer; run by send on every answer",
}
# GP functions that build APDUs or TLVs from host data (no channel, no card answer).
GP_BUILDERS = {"dgi", "store_data_blocks", "delete_apdu", "install_for_install_apdu", "install_for_load_apdu",
               "load_apdus"}


def _called(entries) -> set[str]:
    names: set[str] = set()
    for _, call in entries:
        names |= set(call.__code__.co_names)
    return names


def _host_commands() -> dict[str, set[str]]:
    desfire = {name for name, member in inspect.getmembers(DESFire, inspect.isfunction)
               if not name.startswith("_")}
    gp = set()
    for module in (commands, content):
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ != module.__name__ or name.startswith("_"):
                continue
            first = next(iter(inspect.signature(function).parameters), "")
            if first in ("channel", "transport", "transport_or_channel"):
                gp.add(name)
            else:
                assert name in GP_BUILDERS, f"gp.{module.__name__}.{name}({first}, ...): new, not classified"
    channel = set()
    for cls in (SecureChannel, scp02.Scp02Channel, scp03.Scp03Channel):
        channel |= {name for name, _ in inspect.getmembers(cls, inspect.isfunction)
                    if not name.startswith("_")}
    return {"desfire": desfire, "gp": gp, "gp channel": channel}


def test_every_host_command_meets_hostile_answers():
    host = _host_commands()
    fed = {"desfire": _called(DESFIRE_COMMANDS), "gp": _called(GP_SECURE) | _called(GP_PLAIN),
           "gp channel": _called(GP_SECURE)}
    missing = {kind: sorted(names - fed[kind] - set(SENDS_NOTHING)) for kind, names in host.items()}
    assert missing == {"desfire": [], "gp": [], "gp channel": []}, \
        "host commands no hostile answer reaches: add them to the lists in test_properties.py"
    assert len(host["desfire"]) >= 35 and len(host["gp"]) >= 10


def test_host_methods_said_to_send_nothing_send_nothing():
    class Refusing:
        def transmit(self, apdu):
            raise AssertionError(f"sent {bytes(apdu).hex()}")

    df = DESFire(Refusing())
    df.acknowledge_auth_failure()
    df.close()
    assert set(SENDS_NOTHING) <= _host_commands()["desfire"] | _host_commands()["gp channel"]


# ------------------------------------------------------------------------------------------- answers
def _unknown(sw: int) -> bool:
    return "unknown" in describe(sw).meaning.lower()


unknown_sws = st.binary(min_size=2, max_size=2).filter(lambda sw: _unknown(int.from_bytes(sw, "big")))
desfire_unknown_sws = st.integers(0, 255).map(lambda code: bytes((0x91, code))).filter(
    lambda sw: _unknown(int.from_bytes(sw, "big")))
bodies = st.binary(max_size=64)
half_sw = st.sampled_from([b"", b"\x91", b"\x90", b"\x61"])

DESFIRE_ANSWERS = {
    # well sealed for the live session (or plain 9100), so the length checks behind the MAC are reached
    "wrong_length": st.lists(st.one_of(
        st.builds(lambda how, body: ("sealed", how, body, 0x00), st.sampled_from(["mac", "full"]), bodies),
        st.builds(lambda body: ("raw", body + h("9100")), bodies)), min_size=1, max_size=3),
    "bad_mac": st.lists(st.builds(lambda how, body, at, bit: ("damaged", how, body, 0x00, at, bit),
                                  st.sampled_from(["mac", "full"]), bodies, st.integers(0, 200),
                                  st.integers(0, 7)), min_size=1, max_size=2),
    "unknown_sw": st.lists(st.builds(lambda body, sw: ("raw", body + sw), bodies,
                                     st.one_of(unknown_sws, desfire_unknown_sws)), min_size=1, max_size=2),
    "truncated_chain": st.builds(lambda frames, end: [("raw", body + h("91AF")) for body in frames] + end,
                                 st.lists(bodies, min_size=1, max_size=3),
                                 st.one_of(st.just([]), half_sw.map(lambda tail: [("raw", tail)]))),
}


class DamagingOracle(OracleCard):
    """OracleCard, plus ("damaged", how, body, status, at, bit): sealed, then one bit of it flipped."""

    def transmit(self, apdu: bytes) -> bytes:
        if self.recipes and self.recipes[0][0] == "damaged":
            _, how, body, status, at, bit = self.recipes.pop(0)
            sealed = bytearray(self._seal(how, body, status) or b"\x00")
            sealed[at % len(sealed)] ^= 1 << bit
            return bytes(sealed) + bytes((0x91, status))
        return super().transmit(apdu)


GP_CHAIN_SWS = st.one_of(st.integers(0, 255).map(lambda n: bytes((0x61, n))), st.just(h("6310")))
GP_ANSWERS = {
    "wrong_length": st.lists(st.builds(lambda body: body + h("9000"), bodies), min_size=1, max_size=4),
    "unknown_sw": st.lists(st.builds(lambda body, sw: body + sw, bodies, unknown_sws), min_size=1,
                           max_size=3),
    "truncated_chain": st.builds(lambda frames, end: frames + end,
                                 st.lists(st.builds(lambda body, sw: body + sw, bodies, GP_CHAIN_SWS),
                                          min_size=1, max_size=3),
                                 st.one_of(st.just([]), half_sw.map(lambda tail: [tail]))),
}
SEALED_SCP03 = st.builds(lambda body, enc: ("sealed", body, 0x9000, enc), bodies,
                         st.sampled_from(["pad", "nopad", ""]))
SCP03_ANSWERS = {
    **GP_ANSWERS,
    "wrong_length": st.lists(st.one_of(SEALED_SCP03, st.builds(lambda body: body + h("9000"), bodies)),
                             min_size=1, max_size=4),
    "bad_mac": st.lists(st.builds(lambda sealed, at, bit: ("damaged", *sealed[1:], at, bit), SEALED_SCP03,
                                  st.integers(0, 200), st.integers(0, 7)), min_size=1, max_size=2),
}
# SCP02 answers carry no MAC here (C-MAC / C-DECRYPTION levels): its bad MAC is the card cryptogram.
SCP02_ANSWERS = {**GP_ANSWERS, "bad_mac": st.tuples(st.integers(12, 27), st.integers(0, 7))}


# ------------------------------------------------------------------------------------------- runs
class Tally:
    def __init__(self, host: str, commands_total: int, note: str = "") -> None:
        self.host, self.commands_total, self.note = host, commands_total, note
        self.unnamed = 0
        self.cases: collections.Counter = collections.Counter()
        self.outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.commands: dict[str, set] = collections.defaultdict(set)

    def run(self, category: str, name: str, call) -> None:
        self.cases[category] += 1
        self.commands[category].add(name)
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - the property is what escapes
            self.unnamed += not isinstance(exc, CardError)
            assert_named(exc)
            self.outcomes[category][type(exc).__name__] += 1
            return exc
        self.outcomes[category]["ok"] += 1
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        # Written whatever happened: a failing run records its unnamed errors too.
        record(f"cardproto_hostile_{self.host}", {
            "group": "cardproto_hostile_answers", "cases": sum(self.cases.values()),
            "commands": self.commands_total, "unnamed_errors": self.unnamed,
            **{f"cases_{category}": count for category, count in sorted(self.cases.items())},
            "outcomes": {f"{self.host} {category}": dict(counts)
                         for category, counts in self.outcomes.items()},
            **({f"note_{self.host}": self.note} if self.note else {})})
        if exc[0] is None:
            assert set(self.cases) == set(CATEGORIES) or self.note
            for category in self.cases:
                assert len(self.commands[category]) == self.commands_total


def _examples(strategy, body, n=EXAMPLES, **more):
    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(answers=strategy, **more)
    def run(answers, **drawn):
        body(answers, **drawn)

    run()


def test_desfire_every_command_every_category():
    note = ("bad_mac: ok = an answer no MAC protects (SelectApplication, ChangeKey of the session key, "
            "EV2 CommMode.Plain)")
    with Tally("desfire", len(DESFIRE_COMMANDS), note) as tally:
        _desfire(tally)


def _desfire(tally: Tally) -> None:
    for name, command in DESFIRE_COMMANDS:
        for category, strategy in DESFIRE_ANSWERS.items():
            # bad MACs: sessions whose answers the oracle MACs (legacy D40 answers here carry none)
            sessions = SESSIONS if category != "bad_mac" else [s for s in SESSIONS
                                                               if s not in ("none", "legacy")]

            def body(answers, session, name=name, command=command, category=category):
                holder: list = []
                df = DESFire(DamagingOracle(answers, holder), frame_size=32)
                holder.append(df)
                _session(df, session)
                exc = tally.run(category, name, lambda: command(df))
                if isinstance(exc, StatusWordError | MacError) or (isinstance(exc, ShortResponseError)
                                                                    and exc.sw is None):
                    assert df.auth_mode == AuthMode.NONE, f"session kept after {type(exc).__name__}: {exc}"

            _examples(strategy, body, session=st.sampled_from(sessions))


def test_gp_plain_every_command_every_category():
    with Tally("gp_plain", len(GP_PLAIN), "bad_mac: not applicable (plain answers carry no MAC)") as tally:
        _gp_plain(tally)


def _gp_plain(tally: Tally) -> None:
    for name, call in GP_PLAIN:
        for category, strategy in GP_ANSWERS.items():
            def body(answers, name=name, call=call, category=category):
                tally.run(category, name, lambda: call(RandomTransport(answers)))

            _examples(strategy, body)


def _scp03_channel(level: int, answers):
    holder: list = []

    def seal(recipe):
        sealed = _scp03_seal(holder[0], recipe[:4])
        if recipe[0] != "damaged":
            return sealed
        damaged = bytearray(sealed)
        damaged[recipe[4] % max(1, len(damaged) - 2)] ^= 1 << recipe[5]  # never the SW itself
        return bytes(damaged)

    transport = RandomTransport([PYSIM_INIT_UPDATE, h("9000"), *answers], sealer=seal)
    keys = StaticKeys(*PYSIM_SCP03_KEYS, kvn=0x30)
    channel = scp03.open_channel(transport, keys, level, PYSIM_HOST_CHALLENGE)
    holder.append(channel)
    return channel


def test_scp03_every_command_every_category():
    with Tally("scp03", len(GP_SECURE)) as tally:
        _scp03(tally)


def _scp03(tally: Tally) -> None:
    for name, call in GP_SECURE:
        for category, strategy in SCP03_ANSWERS.items():
            # a bad R-MAC needs a level with R-MAC
            levels = [0x13, 0x33] if category == "bad_mac" else [0x01, 0x03, 0x13, 0x33]

            def body(answers, level, name=name, call=call, category=category):
                channel = _scp03_channel(level, answers)
                exc = tally.run(category, name, lambda: call(channel))
                if category == "bad_mac" and any(a[0] == "damaged" for a in answers if isinstance(a, tuple)):
                    assert exc is not None, "a flipped bit in an R-MACed answer was accepted"

            _examples(strategy, body, level=st.sampled_from(levels))


def test_scp02_every_command_every_category():
    note = "bad_mac: the card cryptogram of INITIALIZE UPDATE (answers at 01/03 carry no MAC)"
    with Tally("scp02", len(GP_SECURE), note) as tally:
        _scp02(tally)


def _scp02(tally: Tally) -> None:
    keys = StaticKeys(*PYSIM_SCP02_KEYS, kvn=0x20, key_type=GpKeyType.DES3)

    def opened(level: int, answers, init=PYSIM_SCP02_INIT):
        transport = RandomTransport([init, h("9000"), *answers])
        return scp02.open_channel(transport, keys, level, h("40A62C37FA6304F8"), i_param=0x55)

    for name, call in GP_SECURE:
        for category, strategy in SCP02_ANSWERS.items():
            if category == "bad_mac":
                def body(answers, level, name=name, call=call):
                    at, bit = answers
                    init = bytearray(PYSIM_SCP02_INIT)
                    init[at] ^= 1 << bit  # counter, card challenge or cryptogram: the card's proof fails
                    exc = tally.run("bad_mac", name, lambda: call(opened(level, [], bytes(init))))
                    assert isinstance(exc, CardError), "a damaged card cryptogram opened the channel"
            else:
                def body(answers, level, name=name, call=call, category=category):
                    channel = opened(level, answers)
                    tally.run(category, name, lambda: call(channel))

            _examples(strategy, body, level=st.sampled_from([0x01, 0x03]))


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_category_has_answers_for_desfire_and_secure_gp(category):
    assert category in DESFIRE_ANSWERS and category in SCP03_ANSWERS and category in SCP02_ANSWERS
