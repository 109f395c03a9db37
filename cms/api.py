"""API-wide behaviour: error bodies that name the field and the reason, never a traceback."""
from __future__ import annotations

import structlog
from django import db
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, pagination, parsers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = structlog.get_logger(__name__)


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "a backing service is unavailable"
    default_code = "service_unavailable"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "the request body is too large"
    default_code = "payload_too_large"


MAX_JSON_DEPTH = 32  # a profile spec nests about 6 deep


class JsonParser(parsers.JSONParser):
    """DRF's JSON parser, but JSON nested deeper than MAX_JSON_DEPTH is a 400 naming the limit (deep enough
    to exhaust the decoder's recursion was a RecursionError, a 500; a bit less could still reach the
    validators)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            data = None
        else:
            if _depth_within(data, MAX_JSON_DEPTH):
                return data
        raise exceptions.ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels")


def _depth_within(value, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return True


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "conflict"
    default_code = "conflict"


def exception_handler(exc, context):
    from audit.errors import AuditUnavailable  # the audit log fails closed too: its key is in Vault
    from cms.errors import KeystoreUnavailable  # the keystore fails closed: 503, never a fallback

    if isinstance(exc, KeystoreUnavailable | AuditUnavailable):
        exc = ServiceUnavailable(str(exc))
    elif isinstance(exc, db.OperationalError | db.InterfaceError):
        # the database is unreachable or restarting (connection refused, terminated by the administrator):
        # a backing service is down, as for Vault; the driver's text (host, port) is not the client's
        log.warning("api.database_unavailable", view=type(context.get("view")).__name__,
                    error=type(exc).__name__)
        exc = ServiceUnavailable("the database is unavailable; try again shortly")
    elif isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, RequestDataTooBig):
        # Django refuses to read a body past DATA_UPLOAD_MAX_MEMORY_SIZE; unmapped it was a 500.
        exc = PayloadTooLarge(f"the request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")
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


def not_found(request, exception=None):
    """The site's 404: under /api/ a JSON body like every other API answer (a path no route matches, e.g.
    an id with a dot), elsewhere Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    return defaults.page_not_found(request, exception)


class StrictLimitOffsetPagination(pagination.LimitOffsetPagination):
    """`limit` (1..max_limit, larger is capped) and `offset` (0.., capped) are decimal integers or absent;
    anything else is a 400 naming the parameter (DRF's own silently falls back to the default)."""

    max_limit = 500
    max_offset = 2**31  # a larger offset makes the database raise; no caller has that many rows anyway

    def _integer(self, request, name: str, minimum: int, cap: int) -> int | None:
        if name not in request.query_params:
            return None
        text = request.query_params[name]
        if not (text.isascii() and text.isdigit()):
            raise exceptions.ValidationError({name: ["must be a whole number (decimal digits)"]})
        value = int(text) if len(text) <= 18 else cap
        if value < minimum:
            raise exceptions.ValidationError({name: [f"must be at least {minimum}"]})
        return min(value, cap)

    def get_limit(self, request):
        value = self._integer(request, self.limit_query_param, 1, self.max_limit)
        return self.default_limit if value is None else value

    def get_offset(self, request):
        return self._integer(request, self.offset_query_param, 0, self.max_offset) or 0

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1 if parameter["name"] == self.limit_query_param else 0
        return parameters
