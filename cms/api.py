"""API-wide behaviour: error bodies that name the field and the reason, never a traceback."""
from __future__ import annotations

import structlog
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = structlog.get_logger(__name__)


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "a backing service is unavailable"
    default_code = "service_unavailable"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "conflict"
    default_code = "conflict"


def exception_handler(exc, context):
    from audit.errors import AuditUnavailable  # the audit log fails closed too: its key is in Vault
    from cms.errors import KeystoreUnavailable  # the keystore fails closed: 503, never a fallback

    if isinstance(exc, KeystoreUnavailable | AuditUnavailable):
        exc = ServiceUnavailable(str(exc))
    elif isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        # Unexpected: log it with the request id, answer without internals.
        request = context.get("request")
        log.exception("api.unhandled_error", view=type(context.get("view")).__name__)
        return Response({"detail": "internal error", "request_id": getattr(request, "request_id", "")},
                        status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return response
