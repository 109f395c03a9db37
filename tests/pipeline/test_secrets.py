"""No key bytes in the database, the logs, the Celery message or the task results; Vault down fails closed."""
from __future__ import annotations

import base64
import logging

import pytest
from django.apps import apps

from cards.models import Card, Job
from keys.errors import KeystoreUnavailable
from keys.models import KeyVersion
from readeragent import protocol

from .conftest import DESFIRE_UID, GP_TEST_KEY, JCOP_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


def _database_text() -> str:
    """Every row of every table, as text: what a database dump would show."""
    rows = []
    for model in apps.get_models():
        rows.extend(str(row) for row in model._default_manager.values())
    return "\n".join(rows)


def _forms(key: bytes) -> list[str]:
    return [key.hex(), key.hex().upper(), base64.b64encode(key).decode()]


def test_no_key_bytes_in_database_logs_or_messages(cms, station, desfire_profile, jcop_profile, order_for,
                                                    caplog, capsys):
    caplog.set_level(logging.DEBUG)
    order_for(desfire_profile, uids=[DESFIRE_UID])
    order_for(jcop_profile, uids=[JCOP_UID])
    seen: list[bytes] = []
    outcomes = []
    for uid in (DESFIRE_UID, JCOP_UID):
        outcomes.append(cms.report(station.report("card_presented", uid=uid)))
        envelope = cms.last_envelope()
        keys = station.open(envelope)
        seen.extend(bytes(k) for k in keys.values() if any(k))  # all-zero defaults are public
        protocol.wipe_keys(keys)
        message = protocol.canonical(envelope).decode()
        for key in seen:
            assert not any(form in message for form in _forms(key))
        outcomes.append(cms.result(station.result(envelope)))
    assert GP_TEST_KEY in seen and len(seen) >= 8
    assert KeyVersion.objects.filter(state="active").count() == 7
    text = _database_text() + caplog.text + capsys.readouterr().err + repr(outcomes)
    for key in seen:
        for form in _forms(key):
            assert form not in text, "a key reached the database, a log or a task result"
    assert "mkv-" in text  # the refs themselves are there (job scripts), so the search is live


def test_sealed_vault_stops_the_job_before_anything_is_recorded_or_sent(cms, station, desfire_profile,
                                                                        order_for, sent, vault):
    order_for(desfire_profile)
    from keys import signing

    signing.ensure_signing_key()
    vault.seal()
    try:
        with pytest.raises(KeystoreUnavailable):
            cms.report(station.report("card_presented", uid=DESFIRE_UID))
    finally:
        vault.unseal()
        from cms import vault as cms_vault

        cms_vault.reset_client()
    assert not sent
    assert not Card.objects.exists() and not Job.objects.exists() and not KeyVersion.objects.exists()
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["status"] == "dispatched"


def test_one_vault_unwrap_batch_per_job(cms, station, desfire_profile, order_for, vault_calls):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    decrypts = [path for method, path in vault_calls if "/decrypt/" in path]
    signs = [path for method, path in vault_calls if "/sign/" in path]
    assert len(decrypts) == 1 and len(signs) == 1


def test_tasks_retry_only_on_named_transient_errors():
    from django.db import OperationalError

    from audit.errors import AuditUnavailable
    from cards import tasks

    for task in (tasks.station_report, tasks.job_result):
        assert set(task.autoretry_for) == {KeystoreUnavailable, AuditUnavailable, OperationalError}
        assert task.acks_late and task.max_retries
