"""A sign-in lockout (django-axes) is a security event: it goes into the audit log."""
from __future__ import annotations

from axes.signals import user_locked_out
from django.dispatch import receiver

from audit.services import record_event


@receiver(user_locked_out, dispatch_uid="web.locked_out")
def record_lockout(sender, request, username, ip_address, **kwargs):
    record_event(action="auth.locked_out", result="failure", actor_type="anonymous",
                 actor_name=str(username or "")[:150],
                 request_id=getattr(request, "request_id", "") or "",
                 details={"attempted_username": str(username or "")[:150], "ip": ip_address or ""})
