"""The profile -> script compiler: golden plans for both seed flows, resume from a ledger, probes.

The golden step lists are the reviewed form of seed 003 (DESFire: authenticate to the PICC with the
transport key, change it, create each application, change its keys from default, key 0 last, files,
data, commit) and seed 002 (JCOP 4: SCP03 with transport keys, PUT KEY, proof, STORE DATA, lock).
They are pure functions of the spec and the ledger, so they are compared whole.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from cards.compiler import Held, Ledger, PlanError, compile_plan
from readeragent import protocol

from .conftest import DESFIRE_SPEC, DESFIRE_UID, JCOP_SPEC, JCOP_UID

DESFIRE = SimpleNamespace(spec=DESFIRE_SPEC, chip_family="desfire")
JCOP = SimpleNamespace(spec=JCOP_SPEC, chip_family="jcop")
NEW_DESFIRE = SimpleNamespace(uid=DESFIRE_UID, chip_type="desfire_ev2")
NEW_JCOP = SimpleNamespace(uid=JCOP_UID, chip_type="jcop4")
ACCESS_1 = {"read": 1, "write": 2, "read_write": 0, "change": 0}
ACCESS_2 = {"read": 1, "write": 0, "read_write": 0, "change": 0}

# A new DESFire card whose pending versions exist: picc.0 -> kv-11, app keys 0, 1, 2 -> kv-20, 21, 22.
PENDING = {"picc.0": Held(11, 1), "app.F0A001.0": Held(20, 1), "app.F0A001.1": Held(21, 1),
           "app.F0A001.2": Held(22, 1)}

GOLDEN_DESFIRE_NEW = [
    {"op": "desfire.select_application", "aid": "000000"},
    {"op": "desfire.authenticate", "key_no": 0, "key": "default-2k3des", "key_type": "2k3des"},
    {"op": "desfire.change_key", "key_no": 0, "new_key": "kv-11", "new_version": 1, "key_type": "aes128",
     "label": "picc.0.change", "confirms": {"key_version": 11}},
    {"op": "desfire.authenticate", "key_no": 0, "key": "kv-11", "key_type": "aes128"},
    {"op": "desfire.create_application", "aid": "F0A001", "key_settings": 0x0F, "num_keys": 3,
     "key_type": "aes128", "label": "app.F0A001.create"},
    {"op": "desfire.select_application", "aid": "F0A001"},
    {"op": "desfire.authenticate", "key_no": 0, "key": "default-aes128", "key_type": "aes128"},
    {"op": "desfire.change_key", "key_no": 1, "new_key": "kv-21", "new_version": 1, "key_type": "aes128",
     "old_key": "default-aes128", "label": "app.F0A001.1.change", "confirms": {"key_version": 21}},
    {"op": "desfire.change_key", "key_no": 2, "new_key": "kv-22", "new_version": 1, "key_type": "aes128",
     "old_key": "default-aes128", "label": "app.F0A001.2.change", "confirms": {"key_version": 22}},
    {"op": "desfire.change_key", "key_no": 0, "new_key": "kv-20", "new_version": 1, "key_type": "aes128",
     "label": "app.F0A001.0.change", "confirms": {"key_version": 20}},
    {"op": "desfire.authenticate", "key_no": 0, "key": "kv-20", "key_type": "aes128"},
    {"op": "desfire.create_file", "file_no": 1, "type": "standard", "comm_mode": "full", "access": ACCESS_1,
     "size": 32, "label": "app.F0A001.file.1.create"},
    {"op": "desfire.write_data", "file_no": 1, "data_hex": "C0FFEE", "offset": 0, "comm_mode": "full",
     "label": "app.F0A001.file.1.data"},
    {"op": "desfire.create_file", "file_no": 2, "type": "backup", "comm_mode": "mac", "access": ACCESS_2,
     "size": 16, "label": "app.F0A001.file.2.create"},
    {"op": "desfire.write_data", "file_no": 2, "data_hex": "0102", "offset": 0, "comm_mode": "mac",
     "label": "app.F0A001.file.2.data"},
    {"op": "desfire.commit", "label": "app.F0A001.file.2.data.commit"},
    {"op": "desfire.create_file", "file_no": 3, "type": "value", "comm_mode": "full", "access": ACCESS_1,
     "lower_limit": 0, "upper_limit": 1000, "value": 10, "limited_credit": False,
     "label": "app.F0A001.file.3.create"},
    {"op": "desfire.change_key_settings", "key_settings": 0x0B, "label": "app.F0A001.key_settings"},
    {"op": "desfire.select_application", "aid": "000000"},
    {"op": "desfire.authenticate", "key_no": 0, "key": "kv-11", "key_type": "aes128"},
    {"op": "desfire.change_key_settings", "key_settings": 0x0B, "label": "picc.key_settings"},
]

GOLDEN_JCOP_NEW = [
    {"op": "select", "aid": "A000000151000000"},
    {"op": "gp.open_scp03", "keys": {"enc": "mkv-4-static", "mac": "mkv-4-static", "dek": "mkv-4-static"},
     "kvn": 0x30, "security_level": 0x33},
    {"op": "gp.put_key", "keys": {"enc": "kv-31", "mac": "kv-32", "dek": "kv-33"}, "kvn": 0x31,
     "replace_kvn": 0x30, "label": "isd.put_key", "confirms": {"key_versions": [31, 32, 33]}},
    {"op": "select", "aid": "A000000151000000"},
    {"op": "gp.open_scp03", "keys": {"enc": "kv-31", "mac": "kv-32", "dek": "kv-33"}, "kvn": 0x31,
     "security_level": 0x33},
    {"op": "gp.store_data", "dgi": "0101", "data_hex": "F1E2D3C4", "redact": True, "label": "store_data.0"},
    {"op": "gp.set_status", "scope": "isd", "state": 0x0F, "label": "secure"},
    {"op": "gp.lock_card", "label": "lock"},
]
ISD_PENDING = {"isd.enc": Held(31, 1), "isd.mac": Held(32, 1), "isd.dek": Held(33, 1)}


def test_golden_desfire_plan_for_a_new_card():
    plan = compile_plan(NEW_DESFIRE, DESFIRE, Ledger(pending=dict(PENDING)))
    assert plan.steps == GOLDEN_DESFIRE_NEW
    assert plan.ready and not plan.probe
    assert protocol.check_script(plan.script)  # valid for the agent, every ref listed
    assert plan.refs == ["default-2k3des", "default-aes128", "kv-11", "kv-20", "kv-21", "kv-22"]


def test_golden_jcop_plan_for_a_new_card():
    plan = compile_plan(NEW_JCOP, JCOP, Ledger(pending=dict(ISD_PENDING), masters={"gp-test-key": 4}))
    assert plan.steps == GOLDEN_JCOP_NEW
    protocol.check_script(plan.script)
    assert plan.refs == ["kv-31", "kv-32", "kv-33", "mkv-4-static"]


def test_diversified_transport_keys_are_named_per_role():
    spec = {**JCOP_SPEC, "isd": {**JCOP_SPEC["isd"], "transport_keys": {
        "master": "isd-transport", "kvn": 0x30, "diversified": True, "method": "kdf3"}}}
    plan = compile_plan(NEW_JCOP, SimpleNamespace(spec=spec, chip_family="jcop"),
                        Ledger(pending=dict(ISD_PENDING), masters={"isd-transport": 7}))
    assert plan.steps[1]["keys"] == {"enc": "mkv-7-isd_enc", "mac": "mkv-7-isd_mac", "dek": "mkv-7-isd_dek"}


def test_a_card_without_pending_versions_asks_for_them_and_is_not_ready():
    plan = compile_plan(NEW_DESFIRE, DESFIRE, Ledger())
    assert [s.label for s in plan.needs_versions] == ["picc.0", "app.F0A001.1", "app.F0A001.2",
                                                      "app.F0A001.0"]
    assert not plan.ready
    assert "new-picc.0" in plan.refs


def test_interrupted_desfire_card_resumes_at_the_first_effect_not_done():
    # the earlier job changed the PICC key, created the application and changed key 1, then the card left
    ledger = Ledger(active={"picc.0": Held(11, 1), "app.F0A001.1": Held(21, 1)},
                    pending={"app.F0A001.0": Held(20, 1), "app.F0A001.2": Held(22, 1)},
                    done={"picc.0.change", "app.F0A001.create", "app.F0A001.1.change"})
    plan = compile_plan(NEW_DESFIRE, DESFIRE, ledger)
    assert plan.steps[:4] == [
        {"op": "desfire.select_application", "aid": "F0A001"},
        {"op": "desfire.authenticate", "key_no": 0, "key": "default-aes128", "key_type": "aes128"},
        {"op": "desfire.change_key", "key_no": 2, "new_key": "kv-22", "new_version": 1, "key_type": "aes128",
         "old_key": "default-aes128", "label": "app.F0A001.2.change", "confirms": {"key_version": 22}},
        {"op": "desfire.change_key", "key_no": 0, "new_key": "kv-20", "new_version": 1, "key_type": "aes128",
         "label": "app.F0A001.0.change", "confirms": {"key_version": 20}},
    ]
    assert plan.steps[4:] == GOLDEN_DESFIRE_NEW[10:]
    assert not any(s["op"] == "desfire.create_application" for s in plan.steps)
    assert plan.holds["picc.0"] == "kv-11"


def test_rotated_app_key_uses_the_active_key_as_old_key():
    ledger = Ledger(active={"picc.0": Held(11, 1), "app.F0A001.0": Held(20, 1), "app.F0A001.1": Held(21, 1),
                            "app.F0A001.2": Held(22, 1)},
                    pending={"app.F0A001.2": Held(23, 2)},
                    done={label for s in GOLDEN_DESFIRE_NEW if (label := s.get("label"))})
    plan = compile_plan(NEW_DESFIRE, DESFIRE, ledger)
    assert plan.steps == [
        {"op": "desfire.select_application", "aid": "F0A001"},
        {"op": "desfire.authenticate", "key_no": 0, "key": "kv-20", "key_type": "aes128"},
        {"op": "desfire.change_key", "key_no": 2, "new_key": "kv-23", "new_version": 2, "key_type": "aes128",
         "old_key": "kv-22", "label": "app.F0A001.2.change", "confirms": {"key_version": 23}},
    ]


def test_fully_provisioned_card_has_an_empty_plan():
    done = {label for s in GOLDEN_DESFIRE_NEW if (label := s.get("label"))}
    active = {label: Held(v.version_id, 1) for label, v in PENDING.items()}
    assert compile_plan(NEW_DESFIRE, DESFIRE, Ledger(active=active, done=done)).empty
    isd_done = {"store_data.0", "secure", "lock"}
    assert compile_plan(NEW_JCOP, JCOP, Ledger(active=dict(ISD_PENDING), done=isd_done,
                                               masters={"gp-test-key": 4})).empty


def test_keyed_jcop_card_opens_with_its_own_keys_and_skips_put_key():
    plan = compile_plan(NEW_JCOP, JCOP, Ledger(active=dict(ISD_PENDING), done={"store_data.0", "secure"},
                                               masters={"gp-test-key": 4}))
    assert plan.steps == [
        {"op": "select", "aid": "A000000151000000"},
        {"op": "gp.open_scp03", "keys": {"enc": "kv-31", "mac": "kv-32", "dek": "kv-33"}, "kvn": 0x31,
         "security_level": 0x33},
        {"op": "gp.lock_card", "label": "lock"},
    ]


def test_probe_plans_read_key_versions_without_authenticating():
    ledger = Ledger(active={"picc.0": Held(11, 1)}, pending={"app.F0A001.1": Held(21, 1)},
                    in_flight={"app.F0A001.1"}, probe_required=True)
    plan = compile_plan(NEW_DESFIRE, DESFIRE, ledger)
    assert plan.probe
    assert plan.steps == [{"op": "desfire.select_application", "aid": "F0A001"},
                          {"op": "desfire.get_key_version", "key_no": 1, "label": "probe.app.F0A001.1"}]
    assert not any(step["op"] in ("desfire.authenticate", "gp.open_scp03") for step in plan.steps)
    jcop = compile_plan(NEW_JCOP, JCOP, Ledger(pending=dict(ISD_PENDING), in_flight=set(ISD_PENDING),
                                               probe_required=True, masters={"gp-test-key": 4}))
    assert jcop.steps == [{"op": "select", "aid": "A000000151000000"},
                          {"op": "gp.key_information", "expect_kvn": 0x31, "label": "probe.isd"}]


def test_profile_of_the_other_family_or_missing_transport_master_is_a_plan_error():
    with pytest.raises(PlanError):
        compile_plan(NEW_JCOP, DESFIRE, Ledger())
    with pytest.raises(PlanError, match="gp-test-key"):
        compile_plan(NEW_JCOP, JCOP, Ledger())


def test_profile_that_freezes_keys_still_gets_every_key_changed_first():
    spec = {**DESFIRE_SPEC, "applications": [{**DESFIRE_SPEC["applications"][0], "key_settings": 0xF1}]}
    plan = compile_plan(NEW_DESFIRE, SimpleNamespace(spec=spec, chip_family="desfire"),
                        Ledger(pending=dict(PENDING)))
    ops = [(s["op"], s.get("label")) for s in plan.steps]
    settings = ops.index(("desfire.change_key_settings", "app.F0A001.key_settings"))
    assert all(i < settings for i, (op, _) in enumerate(ops) if op == "desfire.change_key" and i > 4)
    assert plan.steps[4]["key_settings"] == 0x0F  # created changeable by its master key


def test_jcop_install_and_delete_run_in_the_new_keys_session_before_store_data():
    spec = {**JCOP_SPEC, "delete": ["A00000061700CAFE000101"],
            "install": [{"package_aid": "A0000006170001", "module_aid": "A000000617000101",
                         "aid": "A00000061700CAFE000102", "privileges_hex": "00", "params_hex": "C900"}],
            "lock": False}
    plan = compile_plan(NEW_JCOP, SimpleNamespace(spec=spec, chip_family="jcop"),
                        Ledger(pending=dict(ISD_PENDING), masters={"gp-test-key": 4}))
    assert plan.steps[5:] == [
        {"op": "gp.delete", "aid": "A00000061700CAFE000101", "label": "delete.A00000061700CAFE000101"},
        {"op": "gp.install", "package_aid": "A0000006170001", "module_aid": "A000000617000101",
         "aid": "A00000061700CAFE000102", "privileges_hex": "00", "params_hex": "C900",
         "label": "install.A00000061700CAFE000102"},
        {"op": "gp.store_data", "dgi": "0101", "data_hex": "F1E2D3C4", "redact": True,
         "label": "store_data.0"},
    ]
    protocol.check_script(plan.script)
