"""The profile -> APDU-script compiler: a pure function from a card, its profile and its key ledger to a Plan.

Nothing here touches Vault or the database: the caller builds the `Ledger` from KeyVersion rows
(`cards.services.ledger.ledger_for`) and gets back typed steps (readeragent.protocol.STEP_FIELDS)
that name keys by reference only. The plan is built from *units*: the effects a profile asks for
(change a key, create an application or file, write its data, set key settings, PUT KEY, STORE
DATA, lock). A unit is skipped when the ledger shows it done (an active key version, or a step
with its label done by an earlier job on this card), so a plan for an interrupted card starts at
the first unit not done; the selects and authentications a unit needs are emitted before it,
with the key the card holds *now*.

Slot labels name key positions: ``picc.0`` (card master key), ``app.<AID>.<key_no>``, and
``isd.enc`` / ``isd.mac`` / ``isd.dek``. Effect steps carry ``label`` = ``<unit>`` so results can
be matched back; a step that changes a key carries ``confirms`` with the KeyVersion ids it sets.

A slot that has neither an active nor a pending version appears in `Plan.needs_versions` and its
steps name ``new-<slot label>``: the caller creates the pending versions (keys.sealing) and
compiles again, so every ref is concrete before anything is sealed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from readeragent import protocol

PICC_AID = "000000"
# Applications are created with the master key allowed to change every key and the settings
# still changeable; the profile's own key settings are applied last, once every key is set
# (a profile that freezes keys, 0xF?, could otherwise never replace the default keys).
INITIAL_APP_KEY_SETTINGS = 0x0F
FACTORY_PICC_KEY_SETTINGS = 0x0F
FREE_ACCESS = 14
DEFAULT_ISD_AID = "A000000151000000"
SECURED = 0x0F  # GP card life cycle states (GP 2.3 table 11-5)
CARD_LOCKED = 0x7F
LIFE_CYCLE_OPS = frozenset({"gp.store_data", "gp.set_status", "gp.lock_card"})
# JCOP registry changes: sent without an answer, the card may or may not have made them; sent again,
# INSTALL of an instance already there is refused (6A80) and DELETE of one already gone too (6A88)
REGISTRY_OPS = frozenset({"gp.install", "gp.delete"})
ISD_SLOTS = (("isd.enc", "isd_enc", 1, "enc"), ("isd.mac", "isd_mac", 2, "mac"),
             ("isd.dek", "isd_dek", 3, "dek"))
AUTH_OPS = frozenset({"desfire.authenticate", "gp.open_scp03", "gp.open_scp02"})
CREATE_OPS = frozenset({"desfire.create_application", "desfire.create_file"})
FREE_LISTING = 0x02  # key settings bit 1: GetApplicationIDs / GetFileIDs without authentication


class PlanError(Exception):
    """The profile cannot be compiled for this card (wrong chip family, missing master version, ...)."""


@dataclass(frozen=True)
class SlotSpec:
    """A key position the profile declares, with how its key is made."""

    label: str
    role: str  # keys.models.KeyRole value
    key_no: int
    aid: str  # "" at card level
    policy: str  # random | diversified
    master: str | None
    key_type: str


@dataclass(frozen=True)
class Held:
    """A key version from the ledger."""

    version_id: int
    number: int

    @property
    def ref(self) -> str:
        return f"kv-{self.version_id}"


@dataclass
class Ledger:
    """What the CMS knows about one card, from its rows (built by the caller)."""

    active: dict[str, Held] = field(default_factory=dict)  # slot label -> active version
    pending: dict[str, Held] = field(default_factory=dict)  # slot label -> newest pending version
    masters: dict[str, int] = field(default_factory=dict)  # master key name -> active MasterKeyVersion id
    done: set[str] = field(default_factory=set)  # unit labels done by earlier jobs on this card
    in_flight: set[str] = field(default_factory=set)  # slot labels whose key change was never confirmed
    # create units (app.<AID>.create, app.<AID>.file.<n>.create) sent without an answer: done or not?
    unknown_creates: set[str] = field(default_factory=set)
    # JCOP store_data.* / secure / lock units sent without an answer, until a life cycle probe settles them
    unknown_life_cycle: set[str] = field(default_factory=set)
    life_cycle: int | None = None  # the card life cycle the latest life cycle probe read
    # JCOP install.<AID> / delete.<AID> units sent without an answer, until a registry probe settles them
    unknown_registry: set[str] = field(default_factory=set)
    probe_required: bool = False


@dataclass
class Plan:
    chip_family: str
    uid: str
    chip_type: str
    steps: list[dict] = field(default_factory=list)
    needs_versions: list[SlotSpec] = field(default_factory=list)
    holds: dict[str, str] = field(default_factory=dict)  # slot label -> what the card holds now
    gets: dict[str, str] = field(default_factory=dict)  # slot label -> what it will hold
    probe: bool = False

    @property
    def empty(self) -> bool:
        return not self.steps

    @property
    def script(self) -> dict:
        return {"version": protocol.SCRIPT_VERSION, "steps": self.steps}

    @property
    def refs(self) -> list[str]:
        refs: list[str] = []
        for step in self.steps:
            refs.extend(protocol.step_key_refs(step))
        return sorted(set(refs))

    @property
    def ready(self) -> bool:
        """Every ref concrete: the plan can be sealed and sent."""
        return not self.needs_versions

    def as_dict(self) -> dict[str, Any]:
        return {"chip_family": self.chip_family, "uid": self.uid, "chip_type": self.chip_type,
                "probe": self.probe, "holds": self.holds, "gets": self.gets,
                "needs_versions": [s.label for s in self.needs_versions], "refs": self.refs,
                "script": self.script,
                "script_digest": protocol.script_digest(self.script) if self.steps else ""}


# --- what a profile declares -------------------------------------------------------------------------

def family_of(chip_type: str) -> str:
    return "jcop" if chip_type == "jcop4" else "desfire"


def slot_specs(spec: dict) -> list[SlotSpec]:
    """Every key position a (valid) profile spec declares, in plan order."""
    if spec.get("chip_family") == "jcop":
        new = spec["isd"]["new_keys"]
        key_type = new.get("key_type", "aes128" if spec["isd"]["scp"] == "scp03" else "2k3des")
        return [SlotSpec(label, role, key_no, "", new["policy"], new.get("master"), key_type)
                for label, role, key_no, _ in ISD_SLOTS]
    picc = spec["picc"]["master_key"]
    slots = [SlotSpec("picc.0", "cmk", 0, "", picc["policy"], picc.get("master"),
                      picc.get("key_type", "aes128"))]
    for app in spec.get("applications", []):
        aid = app["aid"].upper()
        key_type = app.get("key_type", "aes128")
        for key in sorted(app["keys"], key=lambda k: k["key_no"]):
            slots.append(SlotSpec(f"app.{aid}.{key['key_no']}", "amk" if key["key_no"] == 0 else "app_key",
                                  key["key_no"], aid, key["policy"], key.get("master"), key_type))
    return slots


# --- the compiler ------------------------------------------------------------------------------------

class _Builder:
    def __init__(self, plan: Plan, ledger: Ledger, specs: list[SlotSpec]):
        self.plan, self.ledger = plan, ledger
        self.specs = {s.label: s for s in specs}
        self.selected: str | None = None
        self.auth: tuple[str, int] | None = None  # (aid, key_no) of the current authentication

    def add(self, op: str, *, label: str | None = None, confirms: dict | None = None, **fields) -> None:
        step: dict[str, Any] = {"op": op, **fields}
        if label:
            step["label"] = label
        if confirms:
            step["confirms"] = confirms
        self.plan.steps.append(step)

    def done(self, unit: str) -> bool:
        return unit in self.ledger.done or _life_cycle_proves(self.ledger.life_cycle, unit)

    def wants_change(self, label: str) -> bool:
        """No active version yet, or a newer pending one (a rotation) the card must get."""
        active, pending = self.ledger.active.get(label), self.ledger.pending.get(label)
        return active is None or (pending is not None and pending.number > active.number)

    def new_key(self, label: str) -> tuple[str, int, dict | None]:
        """(ref, version number, confirms) of the version this slot is to get."""
        pending = self.ledger.pending.get(label)
        if pending is not None:
            self.plan.gets[label] = pending.ref
            return pending.ref, pending.number, {"key_version": pending.version_id}
        spec = self.specs[label]
        if spec not in self.plan.needs_versions:
            self.plan.needs_versions.append(spec)
        self.plan.gets[label] = "new pending version"
        return f"new-{label}", 0, None


def compile_plan(card, profile, ledger: Ledger) -> Plan:
    """The plan for `card` (uid, chip_type) and `profile` (spec, chip_family), given its `ledger`."""
    spec = profile.spec
    family = family_of(card.chip_type)
    if spec.get("chip_family") != family:
        raise PlanError(f"profile {profile} is for {spec.get('chip_family')} cards, not {card.chip_type}")
    plan = Plan(chip_family=family, uid=card.uid, chip_type=card.chip_type)
    specs = slot_specs(spec)
    builder = _Builder(plan, ledger, specs)
    # A listing can leave creates unknown after a probe succeeded (an application listed present whose files
    # the same job could not list yet): list again before any create, never take a 91DE for success.
    if ledger.probe_required or (family == "desfire" and ledger.unknown_creates):
        plan.probe = True
        (_probe_jcop if family == "jcop" else _probe_desfire)(builder, spec, specs)
        return plan
    if family == "jcop" and (ledger.unknown_life_cycle or ledger.unknown_registry) \
            and all(label in ledger.active for label, *_ in ISD_SLOTS):
        # STORE DATA / SET STATUS sent without an answer: re-sending them to a SECURED or locked card
        # gets 6985 forever, so read the life cycle first (with the active, confirmed keys only); INSTALL /
        # DELETE likewise: read the registry (applications and load files) before sending them again
        plan.probe = True
        _probe_jcop_state(builder, spec, life_cycle=bool(ledger.unknown_life_cycle),
                          registry=bool(ledger.unknown_registry))
        return plan
    (_compile_jcop if family == "jcop" else _compile_desfire)(builder, spec, specs)
    return plan


# --- DESFire (seed 003) --------------------------------------------------------------------------------

def _transport_ref(b: _Builder, picc: dict) -> tuple[str, str]:
    transport = picc.get("transport_key") or {}
    key_type = transport.get("key_type", "2k3des")
    master = transport.get("master")
    if master is None:
        return f"default-{key_type}", key_type
    if master not in b.ledger.masters:
        raise PlanError(f"transport master key {master!r} has no active version")
    return f"mkv-{b.ledger.masters[master]}-static", key_type


def _compile_desfire(b: _Builder, spec: dict, specs: list[SlotSpec]) -> None:
    picc = spec["picc"]
    cmk = b.specs["picc.0"]
    if "picc.0" in b.ledger.active:
        picc_key = (b.ledger.active["picc.0"].ref, cmk.key_type)
        b.plan.holds["picc.0"] = picc_key[0]
    else:
        picc_key = _transport_ref(b, picc)
        b.plan.holds["picc.0"] = f"transport key {picc_key[0]}"

    def at_picc() -> None:
        nonlocal picc_key
        if b.selected != PICC_AID:
            b.add("desfire.select_application", aid=PICC_AID)
            b.selected, b.auth = PICC_AID, None
        if b.auth != (PICC_AID, 0):
            b.add("desfire.authenticate", key_no=0, key=picc_key[0], key_type=picc_key[1])
            b.auth = (PICC_AID, 0)

    if b.wants_change("picc.0"):
        at_picc()
        ref, number, confirms = b.new_key("picc.0")
        b.add("desfire.change_key", label="picc.0.change", confirms=confirms, key_no=0, new_key=ref,
              new_version=number, key_type=cmk.key_type)
        # Changing the authenticated key ends the session; authenticating with the new key both
        # proves the card took it and opens the session for what follows.
        picc_key = (ref, cmk.key_type)
        b.auth = None
        at_picc()
    else:
        b.plan.gets["picc.0"] = b.ledger.active["picc.0"].ref

    for app in spec.get("applications", []):
        _compile_desfire_app(b, app, at_picc)

    wanted = picc.get("key_settings", FACTORY_PICC_KEY_SETTINGS)
    if wanted != FACTORY_PICC_KEY_SETTINGS and not b.done("picc.key_settings"):
        at_picc()
        b.add("desfire.change_key_settings", label="picc.key_settings", key_settings=wanted)


def _compile_desfire_app(b: _Builder, app: dict, at_picc) -> None:
    aid = app["aid"].upper()
    key_type = app.get("key_type", "aes128")
    num_keys = app.get("num_keys", max(len(app["keys"]), 1))
    labels = [f"app.{aid}.{n}" for n in range(num_keys)]
    default = f"default-{key_type}"
    exists = b.done(f"app.{aid}.create") or any(label in b.ledger.active for label in labels)

    current = {}
    for n, label in enumerate(labels):
        held = b.ledger.active.get(label)
        current[n] = held.ref if held else default
        b.plan.holds[label] = held.ref if held else "factory default key (application not yet keyed)"

    if not exists:
        at_picc()
        b.add("desfire.create_application", label=f"app.{aid}.create", aid=aid,
              key_settings=INITIAL_APP_KEY_SETTINGS, num_keys=num_keys, key_type=key_type)

    def in_app(key_no: int = 0) -> None:
        if b.selected != aid:
            b.add("desfire.select_application", aid=aid)
            b.selected, b.auth = aid, None
        if b.auth != (aid, key_no):
            b.add("desfire.authenticate", key_no=key_no, key=current[key_no], key_type=key_type)
            b.auth = (aid, key_no)

    # Keys 1..n first, with the master key (key 0) session; key 0 last, since changing it ends that session.
    for n in list(range(1, num_keys)) + [0]:
        label = labels[n]
        if not b.wants_change(label):
            b.plan.gets[label] = b.ledger.active[label].ref
            continue
        in_app(0)
        ref, number, confirms = b.new_key(label)
        fields: dict[str, Any] = {"key_no": n, "new_key": ref, "new_version": number, "key_type": key_type}
        if n != 0:
            fields["old_key"] = current[n]
        b.add("desfire.change_key", label=f"{label}.change", confirms=confirms, **fields)
        current[n] = ref
        if n == 0:
            b.auth = None
            in_app(0)  # proof: the card accepts the new master key

    for file in app.get("files", []):
        _compile_desfire_file(b, aid, file, in_app)

    wanted = app.get("key_settings", 0x0B)
    if wanted != INITIAL_APP_KEY_SETTINGS and not b.done(f"app.{aid}.key_settings"):
        in_app(0)
        b.add("desfire.change_key_settings", label=f"app.{aid}.key_settings", key_settings=wanted)


def _write_key(access: dict) -> int | None:
    """The key to authenticate with before writing (None: free access, no authentication needed)."""
    candidates = [access.get("write", 15), access.get("read_write", 15)]
    if FREE_ACCESS in candidates:
        return None
    if 0 in candidates:
        return 0
    usable = [k for k in candidates if k < FREE_ACCESS]
    if not usable:
        raise PlanError("a file with initial data must be writable by some key (write or read_write)")
    return usable[0]


def _compile_desfire_file(b: _Builder, aid: str, file: dict, in_app) -> None:
    file_no = file["file_no"]
    file_type = file["type"]
    comm_mode = file.get("comm_mode", "full")
    access = file["access"]
    create = f"app.{aid}.file.{file_no}.create"
    if not b.done(create):
        in_app(0)
        fields: dict[str, Any] = {"file_no": file_no, "type": file_type, "comm_mode": comm_mode,
                                  "access": {r: access[r] for r in ("read", "write", "read_write", "change")}}
        if file_type in ("standard", "backup"):
            fields["size"] = file["size"]
        elif file_type == "value":
            fields.update(lower_limit=file["lower_limit"], upper_limit=file["upper_limit"],
                          value=file.get("initial_value", 0),
                          limited_credit=file.get("limited_credit", False))
            if file.get("free_get_value"):
                # option byte bit 1: GetValue / Debit / LimitedCredit without authentication
                fields["free_get_value"] = True
        else:
            fields.update(record_size=file["record_size"], max_records=file["max_records"])
        b.add("desfire.create_file", label=create, **fields)

    data = f"app.{aid}.file.{file_no}.data"
    if b.done(data):
        return
    if file_type in ("standard", "backup") and file.get("initial_data_hex"):
        key_no = _write_key(access)
        if key_no is not None:
            in_app(key_no)
        b.add("desfire.write_data", label=data, file_no=file_no, data_hex=file["initial_data_hex"].upper(),
              offset=0, comm_mode=comm_mode)
        if file_type == "backup":
            b.add("desfire.commit", label=f"{data}.commit")
    elif file_type in ("linear_record", "cyclic_record") and file.get("initial_records_hex"):
        key_no = _write_key(access)
        if key_no is not None:
            in_app(key_no)
        records = file["initial_records_hex"]
        for index, record in enumerate(records):
            last = index == len(records) - 1
            # the data unit is done only with the last record's commit; earlier ones carry their own labels
            b.add("desfire.write_record", label=f"{data}.{index}", file_no=file_no, data_hex=record.upper(),
                  offset=0, comm_mode=comm_mode)
            b.add("desfire.commit", label=data if last else f"{data}.{index}.commit")


def _listing_is_free(b: _Builder, unit: str, wanted: int, initial: int) -> bool:
    """Whether the card lists without authentication: the settings it holds now (the profile's once
    their unit is done, else those the plan created it with)."""
    return bool((wanted if b.done(unit) else initial) & FREE_LISTING)


def _probe_creates(b: _Builder, spec: dict) -> None:
    """List what exists where a create's answer was lost (GetApplicationIDs, GetFileIDs): a create is
    sent again only if the card does not list it; its 91DE is never taken for success."""
    unknown = b.ledger.unknown_creates
    apps = {app["aid"].upper(): app for app in spec.get("applications", [])}
    app_creates = sorted(a for a in apps if f"app.{a}.create" in unknown)
    file_apps = sorted({label.split(".")[1] for label in unknown if ".file." in label}
                       - set(app_creates))
    if app_creates:
        picc = spec["picc"].get("key_settings", FACTORY_PICC_KEY_SETTINGS)
        if not _listing_is_free(b, "picc.key_settings", picc, FACTORY_PICC_KEY_SETTINGS):
            raise PlanError(f"the card may or may not hold application(s) {', '.join(app_creates)} (a "
                            f"create's answer was lost) and its PICC key settings 0x{picc:02X} do not "
                            "allow listing applications without authentication: a person must check it")
        b.add("desfire.select_application", aid=PICC_AID)
        b.selected = PICC_AID
        b.add("desfire.get_application_ids", label="probe.aids")
        for aid in app_creates:
            b.plan.holds[f"app.{aid}"] = "unknown: created or not"
    for aid in file_apps:
        settings = apps[aid].get("key_settings", 0x0B) if aid in apps else INITIAL_APP_KEY_SETTINGS
        if not _listing_is_free(b, f"app.{aid}.key_settings", settings, INITIAL_APP_KEY_SETTINGS):
            raise PlanError(f"the card may or may not hold a file of application {aid} (a create's answer "
                            f"was lost) and its key settings 0x{settings:02X} do not allow listing files "
                            "without authentication: a person must check it")
        b.add("desfire.select_application", aid=aid)
        b.selected = aid
        b.add("desfire.get_file_ids", label=f"probe.files.{aid}")
        b.plan.holds[f"app.{aid}.files"] = "unknown: a file created or not"


def _probe_desfire(b: _Builder, spec: dict, specs: list[SlotSpec]) -> None:
    """GetKeyVersion of every slot whose change was never confirmed, and a listing where a create's
    answer was lost: no authentication at all."""
    _probe_creates(b, spec)
    targets = [s for s in specs if s.label in b.ledger.in_flight and s.label in b.ledger.pending]
    for slot in targets:
        aid = slot.aid or PICC_AID
        if b.selected != aid:
            b.add("desfire.select_application", aid=aid)
            b.selected = aid
        b.add("desfire.get_key_version", label=f"probe.{slot.label}", key_no=slot.key_no)
        b.plan.holds[slot.label] = f"unknown: {b.ledger.pending[slot.label].ref} or its predecessor"


# --- JCOP 4 / GlobalPlatform (seed 002) ----------------------------------------------------------------

def _isd_fields(isd: dict) -> tuple[str, str, int]:
    scp = isd["scp"]
    level = isd.get("security_level", 0x33 if scp == "scp03" else 0x03)
    return isd.get("aid", DEFAULT_ISD_AID).upper(), f"gp.open_{scp}", level


def isd_kvn(base: int, number: int) -> int:
    """KVN of the ISD key set whose versions are `number`: the profile's new_keys.kvn for the first
    set (number 1), one more per rotation, cycling through 01..7F (the KVNs PUT KEY may give a set,
    GP 2.3 section 11.8.2). Every set the CMS puts thus has a KVN other than the one it replaces, so a
    key-information probe tells the old set from the new."""
    return (base - 1 + number - 1) % 0x7F + 1


def _compile_jcop(b: _Builder, spec: dict, specs: list[SlotSpec]) -> None:
    isd = spec["isd"]
    isd_aid, open_op, level = _isd_fields(isd)
    transport = isd["transport_keys"]
    new = isd["new_keys"]
    labels = [label for label, *_ in ISD_SLOTS]
    keyed = all(label in b.ledger.active for label in labels)
    rotate = keyed and any(b.wants_change(label) for label in labels)
    if keyed:
        keys = {name: b.ledger.active[label].ref for label, _, _, name in ISD_SLOTS}
        kvn = isd_kvn(new["kvn"], max(b.ledger.active[label].number for label in labels))
        for label in labels:
            b.plan.holds[label] = b.plan.gets[label] = b.ledger.active[label].ref
    else:
        master = transport["master"]
        if master not in b.ledger.masters:
            raise PlanError(f"transport master key {master!r} has no active version")
        mkv = b.ledger.masters[master]
        keys = {name: f"mkv-{mkv}-{role if transport.get('diversified') else 'static'}"
                for _, role, _, name in ISD_SLOTS}
        kvn = transport["kvn"]
        for label, _, _, name in ISD_SLOTS:
            b.plan.holds[label] = f"transport key {keys[name]} (kvn {kvn})"

    units = [f"delete.{aid.upper()}" for aid in spec.get("delete", [])]
    units += [f"install.{entry['aid'].upper()}" for entry in spec.get("install", [])]
    units += [f"store_data.{i}" for i in range(len(spec.get("store_data", [])))]
    units += ["secure", "lock"] if spec.get("lock") else []
    if keyed and not rotate and all(b.done(unit) for unit in units):
        return
    replace = new.get("replace", True)
    if not keyed and replace and not transport["kvn"]:
        # INITIALIZE UPDATE P1 00 opens "the first key set", but PUT KEY P1 00 ADDS a set (GP 2.3
        # section 11.8.2.2): the transport keys would stay on the card beside the new ones.
        raise PlanError("isd.transport_keys.kvn 0 cannot be replaced: PUT KEY with P1 00 adds a key set "
                        "and leaves the transport keys on the card (GP 2.3 11.8.2.2); name the transport "
                        "set's KVN (the one INITIALIZE UPDATE reports), or set isd.new_keys.replace to "
                        "false to keep it deliberately")

    b.add("select", aid=isd_aid)
    b.add(open_op, keys=keys, kvn=kvn, security_level=level)
    if not keyed or rotate:
        new_keys, ids, numbers = {}, [], []
        for label, _, _, name in ISD_SLOTS:
            if rotate and not b.wants_change(label):
                # a rotation puts the whole set: a key that does not change goes in again as it is
                new_keys[name] = b.ledger.active[label].ref
                numbers.append(b.ledger.active[label].number)
                continue
            ref, number, confirms = b.new_key(label)
            new_keys[name] = ref
            numbers.append(number)
            if confirms:
                ids.append(confirms["key_version"])
        new_kvn = isd_kvn(new["kvn"], max(numbers) or 1)
        fields: dict[str, Any] = {"keys": new_keys, "kvn": new_kvn}
        if rotate:
            if new_kvn == kvn:
                raise PlanError(f"the ISD key versions are out of step: the new set would keep KVN {kvn:02X}")
            fields["replace_kvn"] = kvn  # replacing names the set the card holds now
            for label, _, _, name in ISD_SLOTS:
                b.plan.gets[label] = new_keys[name]
        elif replace:
            fields["replace_kvn"] = transport["kvn"]
        b.add("gp.put_key", label="isd.rotate" if rotate else "isd.put_key",
              confirms={"key_versions": ids} if ids else None, **fields)
        # Re-open with the new keys: the card proves it holds them before anything else is written.
        b.add("select", aid=isd_aid)
        b.add(open_op, keys=new_keys, kvn=new_kvn, security_level=level)
    for aid in spec.get("delete", []):
        if not b.done(f"delete.{aid.upper()}"):
            b.add("gp.delete", label=f"delete.{aid.upper()}", aid=aid.upper())
    for entry in spec.get("install", []):
        unit = f"install.{entry['aid'].upper()}"
        if not b.done(unit):
            fields = {"package_aid": entry["package_aid"].upper(), "module_aid": entry["module_aid"].upper(),
                      "aid": entry["aid"].upper()}
            if entry.get("privileges_hex"):
                fields["privileges_hex"] = entry["privileges_hex"].upper()
            if entry.get("params_hex"):
                fields["params_hex"] = entry["params_hex"].upper()
            b.add("gp.install", label=unit, **fields)
    for index, entry in enumerate(spec.get("store_data", [])):
        if not b.done(f"store_data.{index}"):
            # the tenant's payload is not shown in the trace
            b.add("gp.store_data", label=f"store_data.{index}", dgi=entry["dgi"].upper(),
                  data_hex=entry["data_hex"].upper(), redact=True)
    if spec.get("lock") and not b.done("lock"):
        # GP 2.3 section 5.1: CARD_LOCKED is reached from SECURED only, so the card is secured first
        # (seed 002's "80 F0 0F 00" is not a valid SET STATUS; see cardproto.gp.commands.set_status).
        if not b.done("secure"):
            b.add("gp.set_status", label="secure", scope="isd", state=SECURED)
        b.add("gp.lock_card", label="lock")


def _probe_jcop(b: _Builder, spec: dict, specs: list[SlotSpec]) -> None:
    """GET DATA key information: which key version numbers the ISD holds, no secure channel opened."""
    isd = spec["isd"]
    isd_aid, _, _ = _isd_fields(isd)
    if not any(label in b.ledger.in_flight for label, *_ in ISD_SLOTS):
        return
    pending = [b.ledger.pending[label].number for label, *_ in ISD_SLOTS if label in b.ledger.pending]
    b.add("select", aid=isd_aid)
    b.add("gp.key_information", label="probe.isd",
          expect_kvn=isd_kvn(isd["new_keys"]["kvn"], max(pending) if pending else 1))
    for label, *_ in ISD_SLOTS:
        b.plan.holds[label] = "unknown: transport keys or the pending keys"


def _life_cycle_proves(life_cycle: int | None, unit: str) -> bool:
    """What a card life cycle read proves done. Our plan puts every STORE DATA before SET STATUS
    SECURED (see _compile_jcop), and SECURED -> CARD_LOCKED is the only way to CARD_LOCKED (GP 2.3
    5.1), so a SECURED card got its STORE DATA and a locked one was secured first."""
    if life_cycle is None:
        return False
    if unit == "secure" or unit.startswith("store_data."):
        return life_cycle in (SECURED, CARD_LOCKED)
    return unit == "lock" and life_cycle == CARD_LOCKED


def _probe_jcop_state(b: _Builder, spec: dict, *, life_cycle: bool, registry: bool) -> None:
    """GET STATUS (GP 2.3 11.4) in a channel opened with the ACTIVE keys (never a guessed key): P1=80 for
    the card life cycle, P1=40 and P1=20 for the applications and load files a lost INSTALL / DELETE
    may have made or removed."""
    isd_aid, open_op, level = _isd_fields(spec["isd"])
    keys = {name: b.ledger.active[label].ref for label, _, _, name in ISD_SLOTS}
    number = max(b.ledger.active[label].number for label, *_ in ISD_SLOTS)
    kvn = isd_kvn(spec["isd"]["new_keys"]["kvn"], number)
    b.add("select", aid=isd_aid)
    b.add(open_op, keys=keys, kvn=kvn, security_level=level)
    if life_cycle:
        b.add("gp.get_status", label="probe.life_cycle", scope="isd")
    if registry:
        b.add("gp.get_status", label="probe.registry.applications", scope="applications")
        b.add("gp.get_status", label="probe.registry.load_files", scope="load_files")
