"""Alerts: findings of the beat rules become deduplicated Alert rows; the rules that need only the audit log.

Seed 003 asks to "alert on suspicious patterns: repeated failed auth, mass key unwraps, anomalous
reader IPs". A rule returns `Finding`s (what it sees now); `alerts_apply` turns them into alerts:
a finding whose (tenant, rule, subject) already has a live (open or acknowledged) alert updates it,
another opens one, and a live alert of that rule that no finding names any more is closed (the
condition cleared). Opening, acknowledging and closing are audit events, so the audit chain says
when the CMS raised what, and the webhook outbox (cards.webhooks) sends `alert.opened` from there.

This module knows nothing of cards or keys (import-linter): the station rules live in
cards/alerts.py and pass their findings here. Thresholds are settings (README, "Configuration").
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.models import Alert, AlertState, AuditEvent
from audit.services import record_event
from audit.verify import audit_chain_verify
from cms.scoping import ensure_allowed, restrict

LIVE = (AlertState.OPEN, AlertState.ACKNOWLEDGED)

FAILED_AUTH_CARD = "failed_auth_card"
FAILED_AUTH_STATION = "failed_auth_station"
KEY_UNWRAP_RATE = "key_unwrap_rate"
STATION_UNEXPECTED_IP = "station_unexpected_ip"
STATION_SILENT = "station_silent"
AUDIT_CHAIN = "audit_chain"
RULES = {
    FAILED_AUTH_CARD: "repeated failed card authentications on one card",
    FAILED_AUTH_STATION: "repeated failed card authentications at one station",
    KEY_UNWRAP_RATE: "key unwraps above the rate threshold",
    STATION_UNEXPECTED_IP: "a station seen from an unexpected IP",
    STATION_SILENT: "a station silent past its heartbeat",
    AUDIT_CHAIN: "audit chain verification failed",
}
# A failed authentication at the card, as cards.services.results records each script step.
FAILED_AUTH_ACTION = "card.authenticated"
UNWRAP_ACTION = "keys.unwrapped"


@dataclass(frozen=True)
class TenantRef:
    """What record_event needs of a tenant (pk and slug), without importing cards."""

    pk: int | None
    slug: str


@dataclass
class Finding:
    tenant: TenantRef
    rule: str
    subject: str
    message: str
    details: dict = field(default_factory=dict)
    # Audit sequences of the events behind the finding: an update counts only the ones it has not seen.
    sequences: list[int] = field(default_factory=list)


@dataclass
class Applied:
    opened: list[Alert] = field(default_factory=list)
    updated: list[Alert] = field(default_factory=list)
    closed: list[Alert] = field(default_factory=list)

    def summary(self) -> dict:
        return {"opened": len(self.opened), "updated": len(self.updated), "closed": len(self.closed)}


def _tenant_of(alert: Alert) -> TenantRef | None:
    return TenantRef(alert.tenant_id, alert.tenant_slug) if alert.tenant_id is not None else None


def _alert_event(action: str, alert: Alert, *, actor=None, details: dict | None = None) -> None:
    record_event(action=action, actor=actor, tenant=_tenant_of(alert),
                 card_uid=alert.details.get("card_uid", "") if isinstance(alert.details, dict) else "",
                 details={"alert": alert.pk, "rule": alert.rule, "subject": alert.subject,
                          "message": alert.message, **(details or {})})


@transaction.atomic
def alerts_apply(rule: str, findings: list[Finding], *, now: datetime | None = None,
                 close_cleared: bool = True) -> Applied:
    """Open or update an alert per finding; close the rule's live alerts no finding names any more."""
    if rule not in RULES:
        raise ValueError(f"unknown alert rule {rule!r}")
    now = now or timezone.now()
    applied = Applied()
    live = {(a.tenant_id, a.subject): a
            for a in Alert.objects.select_for_update().filter(rule=rule, state__in=LIVE)}
    seen: set[tuple[int | None, str]] = set()
    for finding in findings:
        if finding.rule != rule:
            raise ValueError(f"a {finding.rule} finding given to rule {rule}")
        key = (finding.tenant.pk, finding.subject[:200])
        seen.add(key)
        last_sequence = max(finding.sequences, default=0)
        alert = live.get(key)
        if alert is None:
            alert = Alert.objects.create(
                tenant_id=finding.tenant.pk, tenant_slug=finding.tenant.slug, rule=rule,
                subject=finding.subject[:200], message=finding.message[:300],
                details={**finding.details, "last_sequence": last_sequence},
                count=max(1, len(finding.sequences)), first_seen_at=now, last_seen_at=now)
            live[key] = alert
            _alert_event("alert.opened", alert, details={"count": alert.count})
            applied.opened.append(alert)
            continue
        previous = int(alert.details.get("last_sequence", 0) or 0)
        alert.count += sum(1 for s in finding.sequences if s > previous)
        alert.message = finding.message[:300]
        alert.details = {**finding.details, "last_sequence": max(previous, last_sequence)}
        alert.last_seen_at = now
        alert.save(update_fields=["count", "message", "details", "last_seen_at"])
        applied.updated.append(alert)
    if close_cleared:
        for key, alert in live.items():
            if key not in seen:
                alert.state, alert.closed_at = AlertState.CLOSED, now
                alert.save(update_fields=["state", "closed_at"])
                _alert_event("alert.closed", alert, details={"why": "the condition cleared",
                                                             "count": alert.count})
                applied.closed.append(alert)
    return applied


@transaction.atomic
def alert_acknowledge(*, actor, alert: Alert, note: str = "") -> Alert:
    """A person has seen it: the alert stays live (the rule keeps counting) until its condition clears."""
    ensure_allowed(alert, actor, "manage")
    alert = Alert.objects.select_for_update().get(pk=alert.pk)
    if alert.state != AlertState.OPEN:
        raise ValidationError({"state": [f"the alert is {alert.state}; only an open alert is acknowledged"]})
    alert.state = AlertState.ACKNOWLEDGED
    alert.acknowledged_at = timezone.now()
    alert.acknowledged_by = actor.get_username() if hasattr(actor, "get_username") else str(actor)[:150]
    alert.save(update_fields=["state", "acknowledged_at", "acknowledged_by"])
    _alert_event("alert.acknowledged", alert, actor=actor, details={"note": note[:200]})
    return alert


def alert_list(*, actor, state: str | None = None, rule: str | None = None,
               tenant_id: int | None = None) -> QuerySet[Alert]:
    """Alerts the actor may see (admins and auditors of their tenants, like the audit trail)."""
    queryset = restrict(Alert.objects.all(), actor, "view_audit")
    if state:
        queryset = queryset.filter(state=state)
    if rule:
        queryset = queryset.filter(rule=rule)
    if tenant_id is not None:
        queryset = queryset.filter(tenant_id=tenant_id)
    return queryset.order_by("-last_seen_at", "-pk")


# --- rules on the audit log -----------------------------------------------------------------------

def rule_failed_auth(*, now: datetime | None = None) -> dict[str, list[Finding]]:
    """Failed card authentications in the window, per card (UID) and per station (the reporting agent)."""
    now = now or timezone.now()
    window = settings.ALERT_FAILED_AUTH_WINDOW_SECONDS
    threshold = settings.ALERT_FAILED_AUTH_THRESHOLD
    events = (AuditEvent.objects.filter(action=FAILED_AUTH_ACTION, result="failure",
                                        created_at__gte=now - timedelta(seconds=window))
              .values_list("sequence", "tenant_id", "tenant_slug", "card_uid", "actor_type", "actor_name"))
    by_card: dict[tuple, list[int]] = defaultdict(list)
    by_station: dict[tuple, list[int]] = defaultdict(list)
    for sequence, tenant_id, slug, uid, actor_type, actor in events:
        if uid:
            by_card[(tenant_id, slug, uid)].append(sequence)
        if actor_type == "station" and actor:
            by_station[(tenant_id, slug, actor)].append(sequence)
    cards = [Finding(TenantRef(t, s), FAILED_AUTH_CARD, f"card:{uid}",
                     f"{len(seq)} failed authentications on card {uid} in {window} s (threshold {threshold})",
                     {"card_uid": uid, "failures": len(seq), "window_seconds": window}, seq)
             for (t, s, uid), seq in by_card.items() if len(seq) >= threshold]
    stations = [Finding(TenantRef(t, s), FAILED_AUTH_STATION, f"station:{code}",
                        f"{len(seq)} failed card authentications at station {code} in {window} s "
                        f"(threshold {threshold})",
                        {"station": code, "failures": len(seq), "window_seconds": window}, seq)
                for (t, s, code), seq in by_station.items() if len(seq) >= threshold]
    return {FAILED_AUTH_CARD: cards, FAILED_AUTH_STATION: stations}


def _unwrapped_count(details) -> int:
    count = details.get("count") if isinstance(details, dict) else None
    return count if isinstance(count, int) and count > 0 else 1


def rule_key_unwraps(*, now: datetime | None = None) -> list[Finding]:
    """Keys unwrapped per tenant in the window (each keys.unwrapped event counts its `count` keys)."""
    now = now or timezone.now()
    window = settings.ALERT_UNWRAP_WINDOW_SECONDS
    threshold = settings.ALERT_UNWRAP_THRESHOLD
    totals: dict[tuple, int] = defaultdict(int)
    sequences: dict[tuple, list[int]] = defaultdict(list)
    events = (AuditEvent.objects.filter(action=UNWRAP_ACTION, created_at__gte=now - timedelta(seconds=window))
              .values_list("sequence", "tenant_id", "tenant_slug", "details"))
    for sequence, tenant_id, slug, details in events.iterator(chunk_size=2000):
        totals[(tenant_id, slug)] += _unwrapped_count(details)
        sequences[(tenant_id, slug)].append(sequence)
    return [Finding(TenantRef(t, s), KEY_UNWRAP_RATE, f"tenant:{s or '-'}",
                    f"{n} keys unwrapped in {window} s (threshold {threshold})",
                    {"keys": n, "events": len(sequences[(t, s)]), "window_seconds": window},
                    sequences[(t, s)])
            for (t, s), n in totals.items() if n >= threshold]


def rule_audit_chain(*, tenants: list[TenantRef]) -> list[Finding]:
    """Walk the whole chain; when it breaks, every tenant hears of it (there is one chain for all)."""
    result = audit_chain_verify()
    if result.ok:
        return []
    details = {"bad_sequence": result.bad_sequence, "reason": result.reason, "checked": result.checked}
    message = f"audit chain verification failed: {result.describe()}"
    return [Finding(tenant, AUDIT_CHAIN, "audit-chain", message, details)
            for tenant in (tenants or [TenantRef(None, "")])]


def run_audit_rules(*, now: datetime | None = None) -> dict[str, dict]:
    """The rules that read only the audit log, applied; returns {rule: summary} (beat, via cards)."""
    now = now or timezone.now()
    out = {}
    for rule, findings in rule_failed_auth(now=now).items():
        out[rule] = alerts_apply(rule, findings, now=now).summary()
    out[KEY_UNWRAP_RATE] = alerts_apply(KEY_UNWRAP_RATE, rule_key_unwraps(now=now), now=now).summary()
    return out
