"""Walks the audit chain and names the first event that does not match (`manage.py audit_verify`)."""
from __future__ import annotations

import hmac
from dataclasses import dataclass

from audit.chain import event_hash, fields_of
from audit.chainkey import chain_key
from audit.models import GENESIS_HASH, AuditEvent, ChainHead


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    last_sequence: int
    last_hash: str
    bad_sequence: int | None = None
    bad_id: int | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"ok: {self.checked} events verified, head #{self.last_sequence} {self.last_hash}"
        where = f"event #{self.bad_sequence} (id {self.bad_id})" if self.bad_sequence is not None else "head"
        return f"FAILED at {where}: {self.reason} ({self.checked} events before it verified)"


def _first_fault(event, key, expected_sequence: int, previous: str, head) -> str:
    if event.sequence != expected_sequence:
        return f"sequence gap: expected #{expected_sequence}"
    if not hmac.compare_digest(event.prev_hash, previous):
        return "prev_hash does not match the previous event's hash"
    if not hmac.compare_digest(event.hash, event_hash(key, fields_of(event))):
        return "hash does not match the event's contents"
    if head is not None and event.sequence == head.sequence and event.hash != head.hash:
        return "hash differs from the one the chain head recorded"
    return ""


def audit_chain_verify(*, chunk_size: int = 2000) -> VerifyResult:
    """Recompute every event's HMAC in sequence order; stop at the first break."""
    key = chain_key()
    # The head first: anything committed after it is a later append, checked as well.
    head = ChainHead.objects.filter(pk=ChainHead.HEAD_ID).first()
    expected_sequence, previous = 1, GENESIS_HASH
    for event in AuditEvent.objects.order_by("sequence").iterator(chunk_size=chunk_size):
        fault = _first_fault(event, key, expected_sequence, previous, head)
        if fault:
            return VerifyResult(False, expected_sequence - 1, expected_sequence - 1, previous,
                                event.sequence, event.pk, fault)
        previous, expected_sequence = event.hash, expected_sequence + 1
    last_sequence = expected_sequence - 1
    # Rows cut from the end leave an intact but shorter chain; the head still remembers.
    if head is not None and head.sequence > last_sequence:
        return VerifyResult(False, last_sequence, last_sequence, previous, None, None,
                            f"chain head is #{head.sequence} but the last event is #{last_sequence}")
    return VerifyResult(True, last_sequence, last_sequence, previous)
