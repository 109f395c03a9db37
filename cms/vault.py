"""The hvac client for Vault (OpenBao locally): token or AppRole auth from settings, fail closed."""
from __future__ import annotations

import os
import threading

import hvac
import requests
from django.conf import settings

from cms.errors import KeystoreUnavailable

_local = threading.local()


def _session() -> requests.Session:
    """The HTTP session for Vault, with what requests would read from the environment on EVERY request
    (HTTPS_PROXY/NO_PROXY for the Vault address, REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE) read once, here.

    Vault's address is fixed for the process, so the answer cannot change; reading it per request
    walked os.environ several times and looked for a .netrc on each Vault call (two a card).
    """
    session = requests.Session()
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(settings.VAULT_ADDR)
    session.verify = (settings.VAULT_CACERT or os.environ.get("REQUESTS_CA_BUNDLE")
                      or os.environ.get("CURL_CA_BUNDLE") or True)
    return session


def _new_client() -> hvac.Client:
    # hvac takes verify and proxies from the session it is given
    kwargs = {"url": settings.VAULT_ADDR, "timeout": settings.VAULT_TIMEOUT, "session": _session()}
    if settings.VAULT_NAMESPACE:
        kwargs["namespace"] = settings.VAULT_NAMESPACE
    client = hvac.Client(**kwargs)
    try:
        if settings.VAULT_TOKEN:
            client.token = settings.VAULT_TOKEN
        elif settings.VAULT_ROLE_ID and settings.VAULT_SECRET_ID:
            client.auth.approle.login(role_id=settings.VAULT_ROLE_ID, secret_id=settings.VAULT_SECRET_ID,
                                      mount_point=settings.VAULT_APPROLE_MOUNT)
        else:
            raise KeystoreUnavailable("Vault auth is not configured (VAULT_TOKEN or VAULT_ROLE_ID/SECRET_ID)")
    except (requests.exceptions.RequestException, hvac.exceptions.VaultError) as exc:
        raise KeystoreUnavailable(f"Vault login failed: {type(exc).__name__}") from None
    return client


def client() -> hvac.Client:
    """A per-thread authenticated client (hvac clients are not thread-safe)."""
    cached = getattr(_local, "client", None)
    key = (settings.VAULT_ADDR, settings.VAULT_TOKEN, settings.VAULT_ROLE_ID)
    if cached is None or getattr(_local, "key", None) != key:
        _local.client = _new_client()
        _local.key = key
    return _local.client


def reset_client() -> None:
    _local.client = None
    _local.key = None


def call(method: str, path: str, body: dict | None = None, *, what: str) -> tuple[int, dict]:
    """One Vault API request; returns (HTTP status, JSON body) for answers the caller judges (2xx, 4xx).

    Fails closed with `KeystoreUnavailable` when Vault is unreachable, sealed or standby (503),
    broken (5xx) or refuses our token (401/403). Error texts name `what` and the status only:
    Vault bodies are never copied into exceptions, because a batch answer with one failed item
    still carries the plaintexts of the others.
    """
    vault_client = client()
    try:
        response = vault_client.adapter.request(method, f"/v1/{path}", json=body, raise_exception=False)
    except requests.exceptions.RequestException as exc:
        raise KeystoreUnavailable(f"Vault is unreachable ({what}): {type(exc).__name__}") from None
    if isinstance(response, dict):  # hvac's JSON adapter decodes 200 answers itself
        return 200, response
    status = response.status_code
    if status == 503:
        raise KeystoreUnavailable(f"Vault is sealed or not active ({what})")
    if status in (401, 403):
        raise KeystoreUnavailable(f"Vault refused {what} (HTTP {status}: token or policy)")
    if status >= 500:
        raise KeystoreUnavailable(f"Vault failed {what} (HTTP {status})")
    try:
        payload = response.json() if response.content else {}
    except ValueError:
        payload = {}
    return status, payload


def health() -> dict:
    """{"ok": bool, "sealed": bool|None, "detail": str} without raising."""
    try:
        status = hvac.Client(url=settings.VAULT_ADDR, timeout=2,
                             verify=settings.VAULT_CACERT or True).sys.read_health_status(method="GET")
    except requests.exceptions.RequestException as exc:
        return {"ok": False, "sealed": None, "detail": f"unreachable: {type(exc).__name__}"}
    body = status.json() if hasattr(status, "json") else status
    sealed = bool(body.get("sealed"))
    initialized = bool(body.get("initialized"))
    ok = initialized and not sealed
    return {"ok": ok, "sealed": sealed, "initialized": initialized, "detail": "ok" if ok else "sealed"}
