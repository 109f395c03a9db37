"""Card profile specs: the declarative JSON a profile holds, and its validation against a tenant.

A spec says everything the profile -> APDU-script compiler needs, and nothing secret: keys are
named by policy and master-key name, never by value. Two chip families:

DESFire (seed 003: CMK per card, AMK per AID, file/role keys, file access rights)::

    {"schema": 1, "chip_family": "desfire",
     "picc": {"transport_key": {"master": null, "key_type": "2k3des"},   # null = factory default key
              "master_key": {"policy": "diversified", "master": "cmk-master", "key_type": "aes128"},
              "key_settings": 15},
     "applications": [{"aid": "F0A001", "key_settings": 11, "key_type": "aes128", "num_keys": 2,
                       "keys": [{"key_no": 0, "role": "amk", "policy": "diversified", "master": "amk"},
                                {"key_no": 1, "role": "read", "policy": "random"}],
                       "files": [{"file_no": 1, "type": "standard", "comm_mode": "full",
                                  "access": {"read": 1, "write": 0, "read_write": 0, "change": 0},
                                  "size": 32, "initial_data_hex": "00"}]}]}

JCOP 4 / GlobalPlatform (seed 002: open SCP03 with transport keys, replace them, STORE DATA, lock)::

    {"schema": 1, "chip_family": "jcop",
     "isd": {"aid": "A000000151000000", "scp": "scp03", "security_level": 51,
             "transport_keys": {"master": "gp-test-key", "kvn": 48},
             "new_keys": {"kvn": 49, "policy": "diversified", "master": "isd-master", "method": "kdf3"}},
     "install": [{"package_aid": "...", "module_aid": "...", "aid": "<in the tenant's prefix>",
                  "privileges_hex": "00", "params_hex": ""}],
     "delete": ["<aid in the tenant's prefix>"],
     "store_data": [{"dgi": "0101", "data_hex": "..."}],
     "lock": true}

`validate_spec(spec, tenant=..., master_names=...)` returns the errors keyed by JSON path
(``applications[0].aid``); `ProfileSpecError` carries them to the API as
``{"spec": {path: [message, ...]}}``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

SCHEMA_VERSION = 1
MAX_SPEC_BYTES = 64 * 1024
MAX_STORE_DATA_BYTES = 4 * 1024
MAX_STORE_DATA_ENTRIES = 64
MAX_DESFIRE_APPLICATIONS = 28  # a DESFire card holds at most 28 applications
MAX_FILES_PER_APPLICATION = 32
MAX_DESFIRE_FILE_BYTES = 32 * 1024  # the largest DESFire EV3 card is 32 KiB
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

# Seed 000: deleting these bricks a JCOP card's management; they are never a target.
SYSTEM_AIDS = ("A0000001515350", "A000000151000000")
# Issuer security domains a profile may open a secure channel to (they are not the tenant's own).
KNOWN_ISD_AIDS = ("A000000151000000", "A000000003000000")

DESFIRE_KEY_TYPES = ("aes128", "3k3des", "2k3des")
DESFIRE_KEY_ROLES = ("amk", "read", "write", "read_write", "change", "app_key")
FILE_TYPES = ("standard", "backup", "value", "linear_record", "cyclic_record")
COMM_MODES = ("plain", "mac", "full")
ACCESS_RIGHTS = ("read", "write", "read_write", "change")
FREE_ACCESS, NO_ACCESS = 14, 15
KEY_POLICIES = ("random", "diversified")
SCP_KEY_TYPES = {"scp03": ("aes128", "aes192", "aes256"), "scp02": ("2k3des",)}
# GP security levels: 01 C-MAC, 03 +C-DECRYPTION, 11 C-MAC+R-MAC, 13 +C-DEC, 33 all four (SCP03 only).
SCP_SECURITY_LEVELS = {"scp03": (0x01, 0x03, 0x11, 0x13, 0x33), "scp02": (0x01, 0x03)}
C_DECRYPTION = 0x02

_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2})*$")


class ProfileSpecError(Exception):
    """The spec is invalid; `errors` maps a JSON path to its messages."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("invalid card profile spec")
        self.errors = errors


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    """Walks a spec, collecting errors by JSON path instead of stopping at the first."""

    def __init__(self, tenant, master_methods: dict[str, str]):
        self.tenant = tenant
        self.master_methods = master_methods
        self.errors: dict[str, list[str]] = {}

    def error(self, path: str, message: str) -> None:
        self.errors.setdefault(path or "spec", []).append(message)

    # --- typed field readers: each returns None (and records why) when the value is unusable ---

    def obj(self, parent: dict, key: str, path: str, *, required: bool = True) -> dict | None:
        value = parent.get(key)
        if value is None:
            if required:
                self.error(path, "this field is required")
            return None
        if not isinstance(value, dict):
            self.error(path, "must be an object")
            return None
        return value

    def array(self, parent: dict, key: str, path: str, *, required: bool = False,
              max_items: int | None = None) -> list:
        value = parent.get(key)
        if value is None:
            if required:
                self.error(path, "this field is required")
            return []
        if not isinstance(value, list):
            self.error(path, "must be a list")
            return []
        if max_items is not None and len(value) > max_items:
            self.error(path, f"at most {max_items} entries")
            return []
        return value

    def integer(self, parent: dict, key: str, path: str, low: int, high: int, *,
                required: bool = True, default: int | None = None) -> int | None:
        value = parent.get(key, default)
        if value is None:
            if required:
                self.error(path, "this field is required")
            return None
        if not _is_int(value):
            self.error(path, "must be an integer")
            return None
        if not low <= value <= high:
            self.error(path, f"must be between {low} and {high}")
            return None
        return value

    def choice(self, parent: dict, key: str, path: str, choices: Iterable[str], *,
               required: bool = True, default: str | None = None) -> str | None:
        choices = tuple(choices)
        value = parent.get(key, default)
        if value is None:
            if required:
                self.error(path, "this field is required")
            return None
        if not isinstance(value, str) or value not in choices:
            self.error(path, f"must be one of: {', '.join(choices)}")
            return None
        return value

    def boolean(self, parent: dict, key: str, path: str, default: bool = False) -> bool:
        value = parent.get(key, default)
        if not isinstance(value, bool):
            self.error(path, "must be true or false")
            return default
        return value

    def hex_bytes(self, parent: dict, key: str, path: str, *, required: bool = False,
                  min_len: int = 0, max_len: int | None = None) -> bytes | None:
        value = parent.get(key)
        if value is None:
            if required:
                self.error(path, "this field is required")
            return None
        if not isinstance(value, str) or not _HEX.match(value):
            self.error(path, "must be an even number of hexadecimal digits")
            return None
        data = bytes.fromhex(value)
        if len(data) < min_len:
            self.error(path, f"must be at least {min_len} bytes")
            return None
        if max_len is not None and len(data) > max_len:
            self.error(path, f"must be at most {max_len} bytes")
            return None
        return data

    def unknown_keys(self, value: dict, allowed: Iterable[str], path: str) -> None:
        for key in sorted(set(value) - set(allowed)):
            self.error(f"{path}.{key}" if path else key, "unknown field")

    def master(self, parent: dict, path: str, *, method: str | None = None) -> None:
        """A reference to one of the tenant's master keys, by name; optionally of a given method."""
        name = parent.get("master")
        if not isinstance(name, str) or not name:
            self.error(f"{path}.master", "name a master key of this tenant")
            return
        known = self.master_methods.get(name)
        if known is None:
            self.error(f"{path}.master", f"no master key named {name!r} in this tenant")
        elif method is not None and known != method:
            self.error(f"{path}.master", f"master key {name!r} uses {known}, not {method}")

    def key_policy(self, key: dict, path: str, *, method: str) -> None:
        """random (nothing to name) or diversified from a master key of the tenant."""
        policy = self.choice(key, "policy", f"{path}.policy", KEY_POLICIES)
        if policy == "diversified":
            wanted = self.choice(key, "method", f"{path}.method", (method,), default=method)
            self.master(key, path, method=wanted)
        elif policy == "random" and key.get("master") is not None:
            self.error(f"{path}.master", "a random key has no master")


def validate_spec(spec: Any, *, tenant, master_methods: dict[str, str]) -> dict[str, list[str]]:
    """All errors of `spec` for `tenant` (whose master keys are `master_methods`: name -> method)."""
    checker = _Checker(tenant, master_methods)
    if not isinstance(spec, dict):
        checker.error("spec", "must be a JSON object")
        return checker.errors
    if len(json.dumps(spec, separators=(",", ":"))) > MAX_SPEC_BYTES:
        checker.error("spec", f"is larger than {MAX_SPEC_BYTES // 1024} KiB")
        return checker.errors
    if spec.get("schema") != SCHEMA_VERSION or not _is_int(spec.get("schema")):
        checker.error("schema", f"must be {SCHEMA_VERSION}")
    family = checker.choice(spec, "chip_family", "chip_family", ("desfire", "jcop"))
    if family is not None:
        FAMILIES[family](checker, spec)
    return checker.errors


def check_spec(spec: Any, *, tenant, master_methods: dict[str, str]) -> None:
    errors = validate_spec(spec, tenant=tenant, master_methods=master_methods)
    if errors:
        raise ProfileSpecError(errors)


# --- DESFire -----------------------------------------------------------------------------------


def _check_desfire(c: _Checker, spec: dict) -> None:
    c.unknown_keys(spec, ("schema", "chip_family", "picc", "applications"), "")
    picc = c.obj(spec, "picc", "picc")
    if picc is not None:
        c.unknown_keys(picc, ("transport_key", "master_key", "key_settings"), "picc")
        c.integer(picc, "key_settings", "picc.key_settings", 0, 0xFF, default=0x0F)
        transport = c.obj(picc, "transport_key", "picc.transport_key", required=False) or {}
        c.unknown_keys(transport, ("master", "key_type"), "picc.transport_key")
        c.choice(transport, "key_type", "picc.transport_key.key_type", DESFIRE_KEY_TYPES, default="2k3des")
        if transport.get("master") is not None:  # an imported static key; null is the factory default
            c.master(transport, "picc.transport_key")
        master_key = c.obj(picc, "master_key", "picc.master_key")
        if master_key is not None:
            _check_desfire_key(c, master_key, "picc.master_key", ("policy", "master", "method", "key_type"))
    apps = c.array(spec, "applications", "applications", required=True, max_items=MAX_DESFIRE_APPLICATIONS)
    seen_aids: dict[str, str] = {}
    for index, app in enumerate(apps):
        path = f"applications[{index}]"
        if not isinstance(app, dict):
            c.error(path, "must be an object")
            continue
        aid = _check_desfire_app(c, app, path)
        if aid is not None:
            if aid in seen_aids:
                c.error(f"{path}.aid", f"AID {aid} is already used by {seen_aids[aid]}")
            seen_aids.setdefault(aid, path)


def _check_desfire_key(c: _Checker, key: dict, path: str, allowed: tuple[str, ...]) -> str | None:
    c.unknown_keys(key, allowed, path)
    key_type = key.get("key_type", "aes128")
    if "key_type" in allowed:
        key_type = c.choice(key, "key_type", f"{path}.key_type", DESFIRE_KEY_TYPES, default="aes128")
    c.key_policy(key, path, method="an10922")
    if key.get("policy") == "diversified" and key_type not in (None, "aes128"):
        c.error(f"{path}.policy", "diversification (AN10922) is defined here for AES-128 keys only")
    return key_type


def _check_desfire_app(c: _Checker, app: dict, path: str) -> str | None:
    c.unknown_keys(app, ("aid", "name", "key_settings", "key_type", "num_keys", "keys", "files"), path)
    if app.get("name") is not None and (not isinstance(app["name"], str) or len(app["name"]) > 100):
        c.error(f"{path}.name", "must be a text of at most 100 characters")
    aid = _desfire_aid(c, app.get("aid"), f"{path}.aid")
    c.integer(app, "key_settings", f"{path}.key_settings", 0, 0xFF, default=0x0B)
    key_type = c.choice(app, "key_type", f"{path}.key_type", DESFIRE_KEY_TYPES, default="aes128")
    keys = c.array(app, "keys", f"{path}.keys", required=True, max_items=14)
    num_keys = c.integer(app, "num_keys", f"{path}.num_keys", 1, 14, default=max(len(keys), 1))
    declared: set[int] = set()
    for k_index, key in enumerate(keys):
        k_path = f"{path}.keys[{k_index}]"
        if not isinstance(key, dict):
            c.error(k_path, "must be an object")
            continue
        key_no = c.integer(key, "key_no", f"{k_path}.key_no", 0, 13)
        if key_no is not None:
            if num_keys is not None and key_no >= num_keys:
                c.error(f"{k_path}.key_no", f"must be below num_keys ({num_keys})")
            if key_no in declared:
                c.error(f"{k_path}.key_no", f"key {key_no} is declared twice")
            declared.add(key_no)
        role = c.choice(key, "role", f"{k_path}.role", DESFIRE_KEY_ROLES)
        if role is not None and key_no is not None and (role == "amk") != (key_no == 0):
            c.error(f"{k_path}.role", "key 0 and only key 0 is the application master key (amk)")
        c.integer(key, "version", f"{k_path}.version", 0, 0xFF, required=False)
        key = {**key, "key_type": key_type}
        _check_desfire_key(c, key, k_path, ("key_no", "role", "policy", "master", "method", "version",
                                            "key_type"))
    if num_keys is not None and keys:
        # A key left out would stay at the card's all-zero default: every key is declared.
        missing = sorted(set(range(num_keys)) - declared)
        if missing:
            c.error(f"{path}.keys", f"declare every key 0..{num_keys - 1}; missing {missing}")
    files = c.array(app, "files", f"{path}.files", max_items=MAX_FILES_PER_APPLICATION)
    seen_files: set[int] = set()
    for f_index, file in enumerate(files):
        f_path = f"{path}.files[{f_index}]"
        if not isinstance(file, dict):
            c.error(f_path, "must be an object")
            continue
        file_no = _check_desfire_file(c, file, f_path, num_keys)
        if file_no is not None:
            if file_no in seen_files:
                c.error(f"{f_path}.file_no", f"file {file_no} is declared twice")
            seen_files.add(file_no)
    return aid


def _desfire_aid(c: _Checker, value: Any, path: str) -> str | None:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Fa-f]{6}", value):
        c.error(path, "must be a 3-byte DESFire AID (6 hexadecimal digits)")
        return None
    aid = value.upper()
    if aid == "000000":
        c.error(path, "000000 is the PICC level, not an application")
        return None
    if c.tenant is not None and not c.tenant.owns_desfire_aid(aid):
        c.error(path, f"outside the tenant's DESFire AID range {c.tenant.desfire_aid_first:06X}-"
                      f"{c.tenant.desfire_aid_last:06X}")
    return aid


def _check_desfire_file(c: _Checker, file: dict, path: str, num_keys: int | None) -> int | None:
    file_no = c.integer(file, "file_no", f"{path}.file_no", 0, 31)
    file_type = c.choice(file, "type", f"{path}.type", FILE_TYPES)
    c.choice(file, "comm_mode", f"{path}.comm_mode", COMM_MODES, default="full")
    common = ("file_no", "type", "comm_mode", "access")
    access = c.obj(file, "access", f"{path}.access")
    if access is not None:
        c.unknown_keys(access, ACCESS_RIGHTS, f"{path}.access")
        for right in ACCESS_RIGHTS:
            r_path = f"{path}.access.{right}"
            key_no = c.integer(access, right, r_path, 0, 15)
            if key_no is not None and key_no < FREE_ACCESS and num_keys is not None and key_no >= num_keys:
                c.error(r_path, f"key {key_no} does not exist (num_keys is {num_keys}); "
                                f"14 is free access, 15 is never")
    if file_type in ("standard", "backup"):
        c.unknown_keys(file, (*common, "size", "initial_data_hex"), path)
        size = c.integer(file, "size", f"{path}.size", 1, MAX_DESFIRE_FILE_BYTES)
        c.hex_bytes(file, "initial_data_hex", f"{path}.initial_data_hex",
                    max_len=size or MAX_DESFIRE_FILE_BYTES)
    elif file_type == "value":
        c.unknown_keys(file, (*common, "lower_limit", "upper_limit", "initial_value", "limited_credit",
                              "free_get_value"), path)
        low = c.integer(file, "lower_limit", f"{path}.lower_limit", INT32_MIN, INT32_MAX)
        high = c.integer(file, "upper_limit", f"{path}.upper_limit", INT32_MIN, INT32_MAX)
        value = c.integer(file, "initial_value", f"{path}.initial_value", INT32_MIN, INT32_MAX, default=0)
        if low is not None and high is not None:
            if low > high:
                c.error(f"{path}.upper_limit", "must not be below lower_limit")
            elif value is not None and not low <= value <= high:
                c.error(f"{path}.initial_value", "must lie between lower_limit and upper_limit")
        c.boolean(file, "limited_credit", f"{path}.limited_credit")
        c.boolean(file, "free_get_value", f"{path}.free_get_value")
    elif file_type in ("linear_record", "cyclic_record"):
        c.unknown_keys(file, (*common, "record_size", "max_records", "initial_records_hex"), path)
        record_size = c.integer(file, "record_size", f"{path}.record_size", 1, MAX_DESFIRE_FILE_BYTES)
        # A cyclic file keeps one record free for the next write, so it needs at least two.
        low = 2 if file_type == "cyclic_record" else 1
        max_records = c.integer(file, "max_records", f"{path}.max_records", low, 0xFFFF)
        if record_size and max_records and record_size * max_records > MAX_DESFIRE_FILE_BYTES:
            c.error(f"{path}.max_records",
                    f"record_size x max_records exceeds {MAX_DESFIRE_FILE_BYTES} bytes")
        records = c.array(file, "initial_records_hex", f"{path}.initial_records_hex",
                          max_items=max(0, (max_records or 1) - (file_type == "cyclic_record")))
        for r_index, record in enumerate(records):
            c.hex_bytes({"record": record}, "record", f"{path}.initial_records_hex[{r_index}]",
                        required=True, min_len=1, max_len=record_size or MAX_DESFIRE_FILE_BYTES)
    return file_no


# --- JCOP / GlobalPlatform -----------------------------------------------------------------------


def _gp_aid(c: _Checker, value: Any, path: str, *, in_namespace: bool = True) -> str | None:
    if not isinstance(value, str) or not _HEX.match(value) or not 5 <= len(value) // 2 <= 16:
        c.error(path, "must be a GlobalPlatform AID of 5 to 16 bytes in hexadecimal")
        return None
    aid = value.upper()
    if in_namespace and c.tenant is not None and not c.tenant.owns_gp_aid(aid):
        c.error(path, f"outside the tenant's GlobalPlatform AID prefix {c.tenant.gp_aid_prefix}")
    return aid


def _check_jcop(c: _Checker, spec: dict) -> None:
    c.unknown_keys(spec, ("schema", "chip_family", "isd", "install", "delete", "store_data", "lock"), "")
    isd = c.obj(spec, "isd", "isd")
    scp, level = None, None
    if isd is not None:
        c.unknown_keys(isd, ("aid", "scp", "security_level", "transport_keys", "new_keys"), "isd")
        aid = _gp_aid(c, isd.get("aid", KNOWN_ISD_AIDS[0]), "isd.aid", in_namespace=False)
        if aid is not None and aid not in KNOWN_ISD_AIDS and c.tenant is not None \
                and not c.tenant.owns_gp_aid(aid):
            c.error("isd.aid", f"must be a known issuer security domain ({', '.join(KNOWN_ISD_AIDS)}) "
                               f"or a security domain in the tenant's prefix {c.tenant.gp_aid_prefix}")
        scp = c.choice(isd, "scp", "isd.scp", tuple(SCP_KEY_TYPES))
        if scp is not None:
            level = isd.get("security_level", 0x33 if scp == "scp03" else 0x03)
            if not _is_int(level) or level not in SCP_SECURITY_LEVELS[scp]:
                c.error("isd.security_level", "must be one of " + ", ".join(
                    f"{v} (0x{v:02X})" for v in SCP_SECURITY_LEVELS[scp]) + f" for {scp}")
                level = None
        transport = c.obj(isd, "transport_keys", "isd.transport_keys")
        if transport is not None:
            c.unknown_keys(transport, ("master", "kvn", "diversified", "method"), "isd.transport_keys")
            # kvn 0 asks the card for its first key set (INITIALIZE UPDATE P1 = 00).
            c.integer(transport, "kvn", "isd.transport_keys.kvn", 0, 0xFF)
            if c.boolean(transport, "diversified", "isd.transport_keys.diversified"):
                method = c.choice(transport, "method", "isd.transport_keys.method", ("kdf3",), default="kdf3")
                c.master(transport, "isd.transport_keys", method=method)
            else:
                c.master(transport, "isd.transport_keys")
        new_keys = c.obj(isd, "new_keys", "isd.new_keys")
        if new_keys is not None:
            c.unknown_keys(new_keys, ("kvn", "policy", "master", "method", "key_type", "replace"),
                           "isd.new_keys")
            c.integer(new_keys, "kvn", "isd.new_keys.kvn", 1, 0x7F)
            c.boolean(new_keys, "replace", "isd.new_keys.replace", default=True)
            if scp is not None:
                c.choice(new_keys, "key_type", "isd.new_keys.key_type", SCP_KEY_TYPES[scp],
                         default=SCP_KEY_TYPES[scp][0])
            c.key_policy(new_keys, "isd.new_keys", method="kdf3")
    for index, entry in enumerate(c.array(spec, "install", "install", max_items=32)):
        path = f"install[{index}]"
        if not isinstance(entry, dict):
            c.error(path, "must be an object")
            continue
        c.unknown_keys(entry, ("package_aid", "module_aid", "aid", "privileges_hex", "params_hex"), path)
        # Packages may live in ROM (not the tenant's); the instance it creates must be the tenant's.
        c.hex_bytes(entry, "package_aid", f"{path}.package_aid", required=True, min_len=5, max_len=16)
        c.hex_bytes(entry, "module_aid", f"{path}.module_aid", required=True, min_len=5, max_len=16)
        aid = _gp_aid(c, entry.get("aid"), f"{path}.aid")
        if aid is not None and _touches_system_aid(aid):
            c.error(f"{path}.aid", "overlaps a JCOP system AID")
        c.hex_bytes(entry, "privileges_hex", f"{path}.privileges_hex", min_len=1, max_len=3)
        c.hex_bytes(entry, "params_hex", f"{path}.params_hex", max_len=240)
    for index, value in enumerate(c.array(spec, "delete", "delete", max_items=32)):
        path = f"delete[{index}]"
        aid = _gp_aid(c, value, path, in_namespace=False)
        if aid is None:
            continue
        if _touches_system_aid(aid) or aid in KNOWN_ISD_AIDS:
            c.error(path, f"{aid} is a JCOP system package or security domain and is never deleted")
        elif c.tenant is not None and not c.tenant.owns_gp_aid(aid):
            c.error(path, f"outside the tenant's GlobalPlatform AID prefix {c.tenant.gp_aid_prefix}")
    entries = c.array(spec, "store_data", "store_data", max_items=MAX_STORE_DATA_ENTRIES)
    for index, entry in enumerate(entries):
        path = f"store_data[{index}]"
        if not isinstance(entry, dict):
            c.error(path, "must be an object")
            continue
        c.unknown_keys(entry, ("dgi", "data_hex", "encrypted"), path)
        dgi = entry.get("dgi")
        if not isinstance(dgi, str) or not re.fullmatch(r"[0-9A-Fa-f]{4}", dgi):
            c.error(f"{path}.dgi", "must be a 2-byte DGI (4 hexadecimal digits)")
        c.hex_bytes(entry, "data_hex", f"{path}.data_hex", required=True, min_len=1,
                    max_len=MAX_STORE_DATA_BYTES)
        c.boolean(entry, "encrypted", f"{path}.encrypted")
    if entries and level is not None and not level & C_DECRYPTION:
        c.error("isd.security_level", "STORE DATA payloads need command encryption (C-DECRYPTION, 0x03 "
                                      "or above)")
    c.boolean(spec, "lock", "lock")


def _touches_system_aid(aid: str) -> bool:
    return any(aid.startswith(system) or system.startswith(aid) for system in SYSTEM_AIDS)


FAMILIES: dict[str, Callable[[_Checker, dict], None]] = {"desfire": _check_desfire, "jcop": _check_jcop}


# --- what a valid spec declares (for the services that record cards and key slots) --------------


def desfire_aids(spec: dict) -> list[str]:
    return [app["aid"].upper() for app in spec.get("applications", [])]


def gp_instance_aids(spec: dict) -> list[str]:
    return [entry["aid"].upper() for entry in spec.get("install", [])]


def referenced_masters(spec: dict) -> set[str]:
    """Every master-key name a valid spec uses (to show where a master key is in use)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("master"), str):
                found.add(value["master"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(spec)
    return found
