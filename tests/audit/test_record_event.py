"""record_event: what an event holds, how it links to the previous one, and that it fails closed."""
from __future__ import annotations

import hashlib
import hmac
import json

import hvac
import pytest
import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.test import override_settings

from audit.chainkey import forget_chain_key
from audit.errors import AuditUnavailable
from audit.models import GENESIS_HASH, AuditEvent
from audit.services import record_event
from audit.verify import audit_chain_verify
from cms.models import ServiceAccount
from tests.audit.vaultserver import ROOT_TOKEN

pytestmark = pytest.mark.django_db


def _key_from_vault() -> bytes:
    client = hvac.Client(url=settings.VAULT_ADDR, token=ROOT_TOKEN)
    secret = client.secrets.kv.v2.read_secret_version(path=f"{settings.VAULT_PREFIX}/audit/chain-key",
                                                      mount_point=settings.VAULT_KV_MOUNT,
                                                      raise_on_deleted_version=True)
    return bytes.fromhex(secret["data"]["data"]["key"])


def test_first_event_links_to_genesis_and_next_links_to_first():
    first = record_event(action="test.first")
    second = record_event(action="test.second")
    assert (first.sequence, first.prev_hash) == (1, GENESIS_HASH)
    assert (second.sequence, second.prev_hash) == (2, first.hash)


def test_hash_is_hmac_sha256_of_sorted_compact_json_keyed_with_the_vault_secret(tenant):
    # Recomputed here by hand (not through audit.chain) from the key as Vault holds it.
    event = record_event(action="key.changed", tenant=tenant, card_uid="04a1b2c3d4e5f6", aid="F12340",
                         key_no=1, key_version=3, details={"kcv": "A1B2C3", "z": [1, "two"]})
    stored = AuditEvent.objects.get(pk=event.pk)
    payload = {
        "sequence": stored.sequence, "created_at": stored.created_at.isoformat(timespec="microseconds"),
        "actor_type": "system", "actor_id": "", "actor_name": "system", "request_id": "", "job_id": "",
        "tenant_id": tenant.pk, "tenant_slug": "acme", "action": "key.changed", "result": "success",
        "card_uid": "04A1B2C3D4E5F6", "aid": "F12340", "key_no": 1, "key_version": 3,
        "details": {"kcv": "A1B2C3", "z": [1, "two"]}, "prev_hash": stored.prev_hash, "v": 1,
    }
    message = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    assert stored.hash == hmac.new(_key_from_vault(), message, hashlib.sha256).hexdigest()
    assert stored.created_at.utcoffset().total_seconds() == 0


def test_tenant_is_copied_as_plain_values_and_outlives_the_tenant(tenant):
    event = record_event(action="tenant.created", tenant=tenant)
    tenant_pk = tenant.pk
    tenant.delete()
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.tenant_id, stored.tenant_slug) == (tenant_pk, "acme")


def test_user_actor_is_copied_by_name_and_id():
    user = get_user_model().objects.create_user("alice", password="x" * 16)
    event = record_event(action="test.user", actor=user)
    assert (event.actor_type, event.actor_id, event.actor_name) == ("user", str(user.pk), "alice")


def test_service_account_actor_is_recorded_as_service(tenant):
    account = ServiceAccount.objects.create(tenant=tenant, name="mes")
    event = record_event(action="order.created", actor=account, tenant=tenant)
    assert (event.actor_type, event.actor_name) == ("service", "svc:acme/mes")


def test_no_actor_is_the_system_and_anonymous_stays_anonymous():
    assert record_event(action="test.sys").actor_type == "system"
    assert record_event(action="test.anon", actor=AnonymousUser()).actor_type == "anonymous"


def test_station_actor_given_by_type_and_name():
    event = record_event(action="job.result", actor_type="station", actor_name="line1-a", job_id="42")
    assert (event.actor_type, event.actor_name, event.job_id) == ("station", "line1-a", "42")


def test_request_and_job_id_default_to_the_bound_log_context():
    structlog.contextvars.bind_contextvars(request_id="req-abc", job_id="job-7")
    try:
        event = record_event(action="test.context")
        explicit = record_event(action="test.context", request_id="req-given")
    finally:
        structlog.contextvars.clear_contextvars()
    assert (event.request_id, event.job_id) == ("req-abc", "job-7")
    assert explicit.request_id == "req-given"


def test_secrets_and_bytes_in_details_never_reach_the_database():
    event = record_event(action="key.changed", key_no=0, details={
        "new_key": "00112233445566778899AABBCCDDEEFF", "key_version": 2, "session": b"\x01\x02",
        "apdu": {"token": "cms_abc_secret", "token_prefix": "abcd1234"},
    })
    stored = AuditEvent.objects.get(pk=event.pk).details
    text = json.dumps(stored)
    assert "00112233445566778899AABBCCDDEEFF" not in text and "cms_abc_secret" not in text
    assert stored["key_version"] == 2 and stored["apdu"]["token_prefix"] == "abcd1234"
    assert stored["_redacted"] == ["new_key", "session", "apdu.token"]
    assert audit_chain_verify().ok


def test_float_and_datetime_details_survive_the_database_round_trip_for_verify():
    import datetime

    record_event(action="bench.run", details={"rate": 1e20, "ratio": 0.1,
                                               "at": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)})
    assert audit_chain_verify().ok


def test_unreachable_vault_fails_the_write_and_rolls_back_the_callers_change():
    forget_chain_key()
    user_model = get_user_model()
    try:
        with override_settings(VAULT_ADDR="http://127.0.0.1:9"), pytest.raises(AuditUnavailable):
            with transaction.atomic():
                user_model.objects.create_user("bob", password="x" * 16)
                record_event(action="user.created")
    finally:
        forget_chain_key()
    assert not user_model.objects.filter(username="bob").exists()
    assert not AuditEvent.objects.exists()


def test_error_for_unreachable_vault_names_no_secret():
    forget_chain_key()
    try:
        with override_settings(VAULT_ADDR="http://127.0.0.1:9"), pytest.raises(AuditUnavailable) as excinfo:
            record_event(action="test.down")
    finally:
        forget_chain_key()
    assert ROOT_TOKEN not in str(excinfo.value)
    assert "Vault" in str(excinfo.value)


def test_chain_key_is_read_once_per_process(monkeypatch):
    record_event(action="test.warm")

    def vault_contacted_again():
        raise AssertionError("the chain key was fetched from Vault a second time")

    monkeypatch.setattr("cms.vault.client", vault_contacted_again)
    record_event(action="test.cached")
    assert audit_chain_verify().ok
