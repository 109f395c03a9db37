"""No database column holds key bytes: every table is dumped and searched for every form of every key."""
from __future__ import annotations

import base64

import pytest
from django.db import connection

from keys import keystore, services

pytestmark = [pytest.mark.vault, pytest.mark.django_db]
h = bytes.fromhex


def _forms(key: bytes) -> set[str]:
    forms = {key.hex(), key.hex().upper(), base64.b64encode(key).decode(),
             base64.urlsafe_b64encode(key).decode(), base64.b32encode(key).decode()}
    # also any 8-byte window in hex, so a truncated or split copy is found too
    forms |= {key[i:i + 8].hex() for i in range(len(key) - 7)}
    forms |= {key[i:i + 8].hex().upper() for i in range(len(key) - 7)}
    return forms


def _dump_every_table() -> str:
    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - names from introspection
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        value = bytes(value)
                        parts.append(value.hex())
                        parts.append(value.decode("latin-1"))
                    else:
                        parts.append(str(value))
    return "\n".join(parts)


def test_no_table_holds_any_form_of_any_key_we_generated_imported_or_derived(
        vault, tenant, desfire_slots, isd_slots):
    random_versions = services.key_versions_create_random(slots=desfire_slots)
    imported = services.key_version_import(slot=isd_slots[0], key=h("101112131415161718191a1b1c1d1e1f"),
                                           number=1)
    master = services.master_key_create(tenant=tenant, name="isd", method="kdf3")
    master_version = services.master_key_version_create(master=master, source="vault")
    derived = [services.key_version_create_diversified(slot=slot, master_version=master_version)
               for slot in isd_slots[1:]]
    services.tenant_kek_rotate(tenant=tenant)

    keys: list[bytes] = []
    with services.card_keys_unwrap(versions=random_versions) as plain:
        keys += [bytes(k) for k in plain.values()]
    with services.card_keys_unwrap(versions=[imported, *derived]) as plain:
        keys += [bytes(k) for k in plain.values()]
    master_ref = keystore.BlobRef.parse(master_version.vault_ref)
    with keystore.unwrap(tenant.pk, [master_ref]) as plain:
        keys.append(bytes(plain[master_ref]))
    assert len(keys) == 8 and len(set(keys)) == 8

    dump = _dump_every_table()
    assert "keys_keyversion" in connection.introspection.table_names()
    assert "vault:v" not in dump  # no wrapped blob either
    raw = dump.encode("latin-1", errors="replace")
    for key in keys:
        for form in _forms(key):
            assert form not in dump
        assert key not in raw
