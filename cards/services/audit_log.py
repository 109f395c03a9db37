"""Audit events written by the card-side services, in the caller's transaction."""
from __future__ import annotations

from audit.services import record_event


def record(action: str, *, actor, tenant, **fields) -> None:
    """Record `action` by `actor` (user or service account); the request id comes from the log context.

    Call it inside the transaction that makes the change: if the event cannot be written
    (Vault down), the change is rolled back with it.
    """
    record_event(action=action, actor=actor, tenant=tenant, **fields)
