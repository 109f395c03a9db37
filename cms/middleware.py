"""Binds a request id (and, once known, user and tenant) to every log line of a request."""
from __future__ import annotations

import re
import uuid

import structlog

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request.request_id)
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        structlog.contextvars.clear_contextvars()
        return response
