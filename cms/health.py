"""GET /health: database, Redis and Vault (sealed or not); 200 when all are fine, else 503."""
from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from cms import vault


def _database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True, "vendor": connection.vendor}
    except Exception as exc:  # noqa: BLE001 - any failure is "down"
        return {"ok": False, "detail": type(exc).__name__}


def _redis() -> dict:
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
        return {"ok": True}
    except redis.RedisError as exc:
        return {"ok": False, "detail": type(exc).__name__}


@require_GET
def health(request):
    checks = {"database": _database(), "redis": _redis(), "vault": vault.health()}
    ok = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ok" if ok else "degraded", "checks": checks}, status=200 if ok else 503)
