"""Hand-written scripts of the two seed flows, in the step vocabulary of readeragent.protocol.

Seed 003 (DESFire): authenticate the PICC with the 2K3DES transport key, change it to the card's
AES master key, create a tenant application, change its keys from the default, create files with
access rights, write, credit, commit. Seed 002 (JCOP 4): select the ISD, open SCP03 with the
transport keys, PUT KEY the card's own keys (KCV checked), re-open with them, STORE DATA, lock.
"""
from __future__ import annotations

import os

DESFIRE_UID = "04A1B2C3D4E5F6"
APP_AID = "F0A001"
FILE_DATA = bytes(range(32)).hex()


def desfire_keys() -> dict[str, bytes]:
    return {"default-2k3des": bytes(16), "default-aes128": bytes(16), "kv-1": os.urandom(16),
            "kv-2": os.urandom(16), "kv-3": os.urandom(16)}


def desfire_steps() -> list[dict]:
    return [
        {"op": "desfire.select_application", "aid": "000000"},
        {"op": "desfire.authenticate", "key_no": 0, "key": "default-2k3des", "key_type": "2k3des"},
        {"op": "desfire.change_key", "key_no": 0, "new_key": "kv-1", "new_version": 1, "key_type": "aes128",
         "confirms": {"key_version": 1}},
        {"op": "desfire.authenticate", "key_no": 0, "key": "kv-1", "key_type": "aes128"},
        {"op": "desfire.get_key_version", "key_no": 0, "expect": 1},
        {"op": "desfire.change_key_settings", "key_settings": 0x0F},
        {"op": "desfire.create_application", "aid": APP_AID, "key_settings": 0x0B, "num_keys": 2,
         "key_type": "aes128"},
        {"op": "desfire.select_application", "aid": APP_AID},
        {"op": "desfire.authenticate", "key_no": 0, "key": "default-aes128", "key_type": "aes128"},
        {"op": "desfire.change_key", "key_no": 1, "new_key": "kv-3", "old_key": "default-aes128",
         "new_version": 1, "key_type": "aes128", "confirms": {"key_version": 3}},
        {"op": "desfire.change_key", "key_no": 0, "new_key": "kv-2", "new_version": 1, "key_type": "aes128",
         "confirms": {"key_version": 2}},
        {"op": "desfire.authenticate", "key_no": 0, "key": "kv-2", "key_type": "aes128"},
        {"op": "desfire.create_file", "file_no": 1, "type": "standard", "comm_mode": "full",
         "access": {"read": 1, "write": 0, "read_write": 0, "change": 0}, "size": 32},
        {"op": "desfire.create_file", "file_no": 2, "type": "value", "comm_mode": "full",
         "access": {"read": 1, "write": 0, "read_write": 0, "change": 0}, "lower_limit": 0,
         "upper_limit": 1000, "value": 0},
        {"op": "desfire.write_data", "file_no": 1, "data_hex": FILE_DATA, "comm_mode": "full"},
        {"op": "desfire.credit", "file_no": 2, "value": 100, "comm_mode": "full"},
        {"op": "desfire.commit"},
    ]


def make_desfire_card(**kw):
    from cardsim.desfire import DESFireCard

    return DESFireCard(kw.pop("flavour", "ev2"), uid=bytes.fromhex(DESFIRE_UID), picc_key_type="des", **kw)


# --- seed 002: JCOP 4 end-of-line -------------------------------------------------------------------

ISD_AID = "A000000151000000"
GP_TEST_KEY = bytes(range(0x40, 0x50))  # GP default test key 40..4F (seed 002, GlobalPlatformPro)
STORE_DATA = "5F2003414243"  # a small tenant payload


def jcop_keys(scp: str = "scp03") -> dict[str, bytes]:
    return {"mkv-7-static": GP_TEST_KEY, "kv-11": os.urandom(16), "kv-12": os.urandom(16),
            "kv-13": os.urandom(16)}


def jcop_steps(scp: str = "scp03") -> list[dict]:
    open_op, kvn, level, new_kvn = ("gp.open_scp03", 0x30, 0x33, 0x31) if scp == "scp03" else \
        ("gp.open_scp02", 0x20, 0x03, 0x21)
    transport = {"enc": "mkv-7-static", "mac": "mkv-7-static", "dek": "mkv-7-static"}
    new = {"enc": "kv-11", "mac": "kv-12", "dek": "kv-13"}
    return [
        {"op": "select", "aid": ISD_AID},
        {"op": open_op, "keys": transport, "kvn": kvn, "security_level": level},
        {"op": "gp.put_key", "keys": new, "kvn": new_kvn, "replace_kvn": kvn, "label": "isd.put_key",
         "confirms": {"key_versions": [11, 12, 13]}},
        {"op": "select", "aid": ISD_AID},
        {"op": open_op, "keys": new, "kvn": new_kvn, "security_level": level},
        {"op": "gp.store_data", "dgi": "0101", "data_hex": STORE_DATA, "redact": True,
         "label": "store_data.0"},
        # GP 2.3 5.1.1: CARD_LOCKED is reached from SECURED only (the card answers 6985 from OP_READY)
        {"op": "gp.set_status", "scope": "isd", "state": 0x0F, "label": "secure"},
        {"op": "gp.lock_card", "label": "lock"},
    ]


def make_jcop_card(**kw):
    from cardsim.jcop import JCOP4Card

    return JCOP4Card(seed=kw.pop("seed", 4), **kw)


def jcop_uid(card) -> str:
    return card.identity.uid.hex().upper()
