"""The key pool sweep after real provisioning (pipeline with a station double, real OpenBao): the keys a job
took from the pool stay and still unwrap to their KCVs; the rest of the pool secret is gone from Vault."""
from __future__ import annotations

import time

import pytest
from django.conf import settings as django_settings

from audit.models import AuditEvent
from cards.models import Card
from keys import keystore, pool, services
from keys.kcv import kcv, scheme_for_role
from keys.models import KeyVersion

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


def test_a_provisioned_cards_pool_keys_survive_the_sweep_and_the_rest_is_removed(
        vault, cms, station, desfire_profile, order_for, settings):
    keystore.forget_pools()
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    assert cms.result(station.result(cms.last_envelope()))["state"] == "succeeded"
    card = Card.objects.get(uid=DESFIRE_UID)
    versions = [v for v in KeyVersion.objects.filter(slot__card=card).select_related("slot")
                if "/pool/" in v.vault_ref]
    assert versions and all(v.kcv for v in versions)  # the job filled the KCVs in from its unwrap
    paths = {keystore.BlobRef.parse(v.vault_ref).path for v in versions}
    time.sleep(2.2)
    settings.KEY_POOL_MAX_AGE_SECONDS = 1  # the secrets are now older than 2 x max-age

    out = pool.sweep()

    assert (out["trimmed_count"], out["kept_count"]) == (len(paths), len(versions))
    kv = vault.root_client().secrets.kv.v2
    left = {}
    for path in paths:
        answer = kv.read_secret_version(path=path, mount_point=django_settings.VAULT_KV_MOUNT,
                                        raise_on_deleted_version=True)
        left.update({f"{path}#{field}": ct for field, ct in answer["data"]["data"].items()})
    assert set(left) == {v.vault_ref for v in versions}
    keystore.forget_cached_blobs()
    with services.card_keys_unwrap(versions=versions) as keys:
        assert [kcv(keys[v.pk], scheme_for_role(v.slot.role)) for v in versions] == [v.kcv for v in versions]
    assert AuditEvent.objects.filter(action="keys.pool_swept", tenant_id=card.tenant_id).count() == 1
    # the card owes nothing and presents as before
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["status"] == "nothing_to_do"
