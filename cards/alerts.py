"""Alert rules that need card-side data (stations), and the run of every rule for the beat tasks.

The rules on the audit log alone live in audit/alerts.py (audit imports no other app); this
module adds the station rules and hands all findings to `audit.alerts.alerts_apply`.
"""
from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from audit import alerts
from audit.alerts import Finding, TenantRef
from audit.models import AuditEvent
from cards.models import Station, Tenant
from cards.models.stations import StationStatus


def _tenant(station: Station) -> TenantRef:
    return TenantRef(station.tenant_id, station.tenant.slug)


def rule_station_silent(*, now: datetime | None = None) -> list[Finding]:
    """Approved stations not heard from for ALERT_STATION_HEARTBEAT_MISSES heartbeat intervals."""
    now = now or timezone.now()
    misses = settings.ALERT_STATION_HEARTBEAT_MISSES
    findings = []
    for station in Station.objects.filter(status=StationStatus.APPROVED).select_related("tenant"):
        limit = timedelta(seconds=station.heartbeat_seconds * misses)
        # never heard from since approval counts from the approval
        since = station.last_seen_at or station.approved_at
        if since is None or now - since <= limit:
            continue
        silent = int((now - since).total_seconds())
        findings.append(Finding(
            _tenant(station), alerts.STATION_SILENT, f"station:{station.code}",
            f"station {station.code} silent for {silent} s (heartbeat {station.heartbeat_seconds} s, "
            f"{misses} missed)",
            {"station": station.code, "silent_seconds": silent,
             "last_seen_at": station.last_seen_at.isoformat() if station.last_seen_at else None,
             "heartbeat_seconds": station.heartbeat_seconds}))
    return findings


def _allowed_networks() -> list:
    return [ipaddress.ip_network(n, strict=False) for n in settings.ALERT_STATION_ALLOWED_NETWORKS]


def _first_seen_ip(station: Station) -> str:
    """The IP the station enrolled from, as the audit chain recorded it (the trustworthy baseline)."""
    event = (AuditEvent.objects.filter(action="station.enrolled", actor_type="station",
                                       actor_name=station.code, tenant_id=station.tenant_id)
             .order_by("sequence").first())
    ip = event.details.get("ip", "") if event is not None and isinstance(event.details, dict) else ""
    return ip if isinstance(ip, str) else ""


def rule_station_ip(*, now: datetime | None = None) -> list[Finding]:
    """A station whose last IP is outside ALERT_STATION_ALLOWED_NETWORKS, or (when none are set)
    differs from the IP it enrolled from."""
    networks = _allowed_networks()
    findings = []
    stations = (Station.objects.exclude(status=StationStatus.REVOKED).exclude(last_ip=None)
                .select_related("tenant"))
    for station in stations:
        seen = ipaddress.ip_address(station.last_ip)
        if networks:
            if any(seen in network for network in networks):
                continue
            expected = ", ".join(str(n) for n in networks)
        else:
            first = _first_seen_ip(station)
            if not first or ipaddress.ip_address(first) == seen:
                continue
            expected = first
        findings.append(Finding(
            _tenant(station), alerts.STATION_UNEXPECTED_IP, f"station:{station.code}",
            f"station {station.code} seen from {station.last_ip}, expected {expected}",
            {"station": station.code, "ip": station.last_ip, "expected": expected}))
    return findings


def tenant_refs() -> list[TenantRef]:
    active = Tenant.objects.filter(is_active=True).values_list("pk", "slug")
    return [TenantRef(pk, slug) for pk, slug in active]


def alerts_run_rules(*, now: datetime | None = None) -> dict[str, dict]:
    """Every periodic rule but the chain walk; {rule: {"opened", "updated", "closed"}}."""
    now = now or timezone.now()
    out = alerts.run_audit_rules(now=now)
    out[alerts.STATION_SILENT] = alerts.alerts_apply(alerts.STATION_SILENT, rule_station_silent(now=now),
                                                     now=now).summary()
    out[alerts.STATION_UNEXPECTED_IP] = alerts.alerts_apply(alerts.STATION_UNEXPECTED_IP,
                                                            rule_station_ip(now=now), now=now).summary()
    return out


def alerts_check_audit_chain() -> dict:
    """Walk the audit chain; a break opens (or updates) an alert in every active tenant."""
    findings = alerts.rule_audit_chain(tenants=tenant_refs())
    return alerts.alerts_apply(alerts.AUDIT_CHAIN, findings).summary()
