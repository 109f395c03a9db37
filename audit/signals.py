"""Login, logout and failed-login events from django.contrib.auth's signals (never the password)."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from audit.services import record_event

LOGIN = "auth.login"
LOGIN_FAILED = "auth.login_failed"
LOGOUT = "auth.logout"


def _request_fields(request) -> dict:
    if request is None:
        return {}
    return {"request_id": getattr(request, "request_id", "") or "",
            "details": {"ip": request.META.get("REMOTE_ADDR", ""), "path": request.path[:200]}}


@receiver(user_logged_in, dispatch_uid="audit.login")
def record_login(sender, request, user, **kwargs):
    record_event(action=LOGIN, actor=user, **_request_fields(request))


@receiver(user_logged_out, dispatch_uid="audit.logout")
def record_logout(sender, request, user, **kwargs):
    if user is not None:
        record_event(action=LOGOUT, actor=user, **_request_fields(request))


@receiver(user_login_failed, dispatch_uid="audit.login_failed")
def record_login_failed(sender, credentials, request=None, **kwargs):
    # Django already masks the password in `credentials`; we keep only the attempted username.
    attempted = str(credentials.get(get_user_model().USERNAME_FIELD, credentials.get("username", "")))[:150]
    fields = _request_fields(request)
    fields.setdefault("details", {})["attempted_username"] = attempted
    record_event(action=LOGIN_FAILED, result="failure", actor_type="anonymous", actor_name=attempted,
                 **fields)
