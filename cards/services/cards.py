"""What is on a card: cards and their applications, files and key slots in the tenant's namespace."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from cards.models import Application, Card, CardFile, CardProfile, Tenant
from cards.models.cards import AppKind, ChipType, FileType
from cards.profiles import KNOWN_ISD_AIDS, SYSTEM_AIDS
from cards.services.audit_log import record
from cards.validators import normalise_hex, validate_desfire_aid, validate_gp_aid, validate_uid
from cms.scoping import ensure_allowed, ensure_tenant
from keys.models import KeyPolicy, KeyRole, KeySlot, MasterKey

FREE_ACCESS = 14


@transaction.atomic
def card_register(*, actor, tenant: Tenant, uid: str, chip_type: str, atr: str = "",
                  profile: CardProfile | None = None) -> Card:
    ensure_tenant(tenant.pk, actor, "manage")
    uid = normalise_hex(uid)
    validate_uid(uid)
    if profile is not None:
        if profile.tenant_id != tenant.pk:
            raise ValidationError({"profile": ["belongs to another tenant"]})
        if not profile.accepts_chip(chip_type):
            raise ValidationError({"profile": [f"is a {profile.chip_family} profile, not for {chip_type}"]})
    if Card.objects.filter(uid=uid).exists():
        raise ValidationError({"uid": ["a card with this UID is already registered"]})
    card = Card(tenant=tenant, uid=uid, chip_type=chip_type, atr=normalise_hex(atr), profile=profile)
    card.full_clean()
    card.save()
    record("card.registered", actor=actor, tenant=tenant, card_uid=uid, details={"chip_type": chip_type})
    return card


def application_namespace_error(tenant: Tenant, kind: str, aid: str) -> str | None:
    """Why `tenant` may not put `aid` on a card, or None."""
    if kind == AppKind.DESFIRE:
        if not tenant.owns_desfire_aid(aid):
            return (f"outside the tenant's DESFire AID range {tenant.desfire_aid_first:06X}-"
                    f"{tenant.desfire_aid_last:06X}")
        return None
    if any(aid.startswith(s) or s.startswith(aid) for s in SYSTEM_AIDS) or aid in KNOWN_ISD_AIDS:
        return "is a JCOP system package or security domain"
    if not tenant.owns_gp_aid(aid):
        return f"outside the tenant's GlobalPlatform AID prefix {tenant.gp_aid_prefix}"
    return None


@transaction.atomic
def application_create(*, actor, card: Card, kind: str, aid: str, key_settings: int = 0x0B,
                       key_type: str = "aes128", num_keys: int = 1) -> Application:
    ensure_allowed(card, actor, "manage")
    aid = normalise_hex(aid)
    if kind == AppKind.DESFIRE:
        if ChipType.family(card.chip_type) != "desfire":
            raise ValidationError({"kind": ["a DESFire application needs a DESFire card"]})
    elif ChipType.family(card.chip_type) != "jcop":
        raise ValidationError({"kind": ["a GlobalPlatform application needs a JCOP card"]})
    try:
        (validate_desfire_aid if kind == AppKind.DESFIRE else validate_gp_aid)(aid)
    except ValidationError as exc:  # named after the field (was non_field_errors: "AID 4 bytes" said nowhere)
        raise ValidationError({"aid": exc.messages}) from None
    problem = application_namespace_error(card.tenant, kind, aid)
    if problem:
        raise ValidationError({"aid": [problem]})
    if Application.objects.filter(card=card, aid=aid).exists():
        raise ValidationError({"aid": ["this card already has an application with this AID"]})
    application = Application(card=card, tenant_id=card.tenant_id, kind=kind, aid=aid,
                              key_settings=key_settings, key_type=key_type, num_keys=num_keys)
    application.full_clean()
    application.save()
    record("application.created", actor=actor, tenant=card.tenant, card_uid=card.uid, aid=aid,
           details={"kind": kind, "key_type": key_type, "num_keys": num_keys})
    return application


@transaction.atomic
def card_file_create(*, actor, application: Application, file_no: int, file_type: str, comm_mode: str,
                     read_key: int, write_key: int, read_write_key: int, change_key: int, size: int = 0,
                     options: dict | None = None) -> CardFile:
    ensure_allowed(application, actor, "manage")
    if application.kind != AppKind.DESFIRE:
        raise ValidationError({"application": ["files belong to DESFire applications"]})
    errors: dict[str, list[str]] = {}
    for field, key_no in (("read_key", read_key), ("write_key", write_key),
                          ("read_write_key", read_write_key), ("change_key", change_key)):
        if key_no < FREE_ACCESS and key_no >= application.num_keys:
            errors[field] = [f"key {key_no} does not exist (the application has {application.num_keys} keys)"]
    if file_type in (FileType.STANDARD, FileType.BACKUP, FileType.LINEAR_RECORD, FileType.CYCLIC_RECORD) \
            and size < 1:
        errors["size"] = ["must be at least 1 byte"]
    if CardFile.objects.filter(application=application, file_no=file_no).exists():
        errors["file_no"] = ["this application already has a file with this number"]
    if errors:
        raise ValidationError(errors)
    card_file = CardFile(application=application, file_no=file_no, file_type=file_type, comm_mode=comm_mode,
                         read_key=read_key, write_key=write_key, read_write_key=read_write_key,
                         change_key=change_key, size=size, options=options or {})
    card_file.full_clean()
    card_file.save()
    record("card_file.created", actor=actor, tenant=application.tenant, card_uid=application.card.uid,
           aid=application.aid, details={"file_no": file_no, "file_type": file_type})
    return card_file


@transaction.atomic
def key_slot_create(*, actor, card: Card, role: str, key_no: int, policy: str = KeyPolicy.RANDOM,
                    application: Application | None = None, master: MasterKey | None = None,
                    label: str = "") -> KeySlot:
    """A key position on a card. It serves exactly one tenant: the card's, its application's, its master's."""
    ensure_allowed(card, actor, "manage")
    errors: dict[str, list[str]] = {}
    if application is not None:
        if application.card_id != card.pk:
            errors["application"] = ["is on another card"]
        elif application.tenant_id != card.tenant_id:
            errors["application"] = ["belongs to another tenant than the card"]
        elif key_no >= application.num_keys and application.kind == AppKind.DESFIRE:
            errors["key_no"] = [f"must be below the application's {application.num_keys} keys"]
    elif role not in (KeyRole.CARD_MASTER, KeyRole.ISD_ENC, KeyRole.ISD_MAC, KeyRole.ISD_DEK):
        errors["application"] = ["an application key needs its application"]
    if policy == KeyPolicy.DIVERSIFIED:
        if master is None:
            errors["master"] = ["a diversified key needs a master key"]
        elif master.tenant_id != card.tenant_id:
            errors["master"] = ["belongs to another tenant than the card"]
    elif master is not None:
        errors["master"] = ["a random key has no master"]
    if errors:
        raise ValidationError(errors)
    slot = KeySlot(tenant_id=card.tenant_id, card=card, application=application, role=role, key_no=key_no,
                   policy=policy, master=master, label=label)
    slot.full_clean()
    slot.save()
    record("key_slot.created", actor=actor, tenant=card.tenant, card_uid=card.uid,
           aid=application.aid if application else "", key_no=key_no,
           details={"role": role, "policy": policy, "master": master.name if master else ""})
    return slot
