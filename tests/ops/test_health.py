"""GET /health against real parts: a local OpenBao (sealed and unsealed), the machine's Redis, the DB."""
from __future__ import annotations

import pytest

from cms import vault as cms_vault
from tests.support.vault import _free_port_pair

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


def _checks(response) -> dict:
    body = response.json()
    assert body["status"] == ("ok" if response.status_code == 200 else "degraded")
    return body["checks"]


def test_all_parts_up_is_200(client, vault):
    response = client.get("/health")
    assert response.status_code == 200
    checks = _checks(response)
    assert checks["database"]["ok"] and checks["redis"]["ok"]
    assert checks["vault"] == {"ok": True, "sealed": False, "initialized": True, "detail": "ok"}


def test_sealed_vault_is_503_and_says_sealed(client, vault):
    vault.seal()
    response = client.get("/health")
    assert response.status_code == 503
    checks = _checks(response)
    assert checks["vault"]["ok"] is False
    assert checks["vault"]["sealed"] is True and checks["vault"]["detail"] == "sealed"
    assert checks["database"]["ok"] and checks["redis"]["ok"]
    vault.unseal()
    assert client.get("/health").status_code == 200


def test_unreachable_vault_is_503(client, vault, settings):
    settings.VAULT_ADDR = f"http://127.0.0.1:{_free_port_pair()}"
    cms_vault.reset_client()
    response = client.get("/health")
    assert response.status_code == 503
    assert _checks(response)["vault"]["detail"].startswith("unreachable")


def test_vault_that_refuses_the_cms_token_is_503(client, vault, settings):
    settings.VAULT_TOKEN = "s.not-a-token-of-this-vault"
    cms_vault.reset_client()
    response = client.get("/health")
    assert response.status_code == 503
    vault_check = _checks(response)["vault"]
    assert vault_check["sealed"] is False and "refused" in vault_check["detail"]
    assert settings.VAULT_TOKEN not in response.content.decode()


def test_redis_down_is_503(client, vault, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{_free_port_pair()}/0"
    response = client.get("/health")
    assert response.status_code == 503
    checks = _checks(response)
    assert checks["redis"]["ok"] is False and checks["vault"]["ok"] is True


def test_health_answers_only_get(client, vault):
    assert client.post("/health").status_code == 405
