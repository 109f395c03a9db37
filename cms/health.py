"""GET /health: database, Redis and Vault (sealed or not, and whether it accepts our token); 200 or 503."""
from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from cms import vault
from cms.errors import KeystoreUnavailable


def _database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True, "vendor": connection.vendor}
    except Exception as exc:  # noqa: BLE001 - any failure is "down"
        return {"ok": False, "detail": type(exc).__name__}


def _redis() -> dict:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
        return {"ok": True}
    except redis.RedisError as exc:
        return {"ok": False, "detail": type(exc).__name__}
    finally:
        client.close()


def _vault() -> dict:
    status = vault.health()
    if not status["ok"]:
        return status
    # An unsealed Vault that refuses the CMS's token (expired, revoked, wrong policy) is just as
    # unusable for key operations: say so here rather than at the first provisioning.
    try:
        vault.call("GET", "auth/token/lookup-self", what="token lookup")
    except KeystoreUnavailable as exc:
        return {**status, "ok": False, "detail": str(exc)}
    return status


@require_GET
def health(request):
    checks = {"database": _database(), "redis": _redis(), "vault": _vault()}
    ok = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ok" if ok else "degraded", "checks": checks}, status=200 if ok else 503)
