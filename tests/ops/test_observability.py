"""Operations: JSON logs carrying the request id, Prometheus metrics, the health endpoint."""
from __future__ import annotations

import json
import logging

import pytest
import structlog

from cms.logging import json_formatter


def _render(record_args: dict) -> dict:
    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter())
    logger = structlog.get_logger("test")
    records = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(handler.format(record))

    capture = Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        logger.info("something.happened", **record_args)
    finally:
        root.removeHandler(capture)
    return json.loads(records[-1])


def test_log_lines_are_json_and_carry_bound_request_id():
    structlog.contextvars.bind_contextvars(request_id="req-123")
    try:
        line = _render({"card_uid": "04A1B2C3D4E5F6"})
    finally:
        structlog.contextvars.clear_contextvars()
    assert line["event"] == "something.happened"
    assert line["request_id"] == "req-123"
    assert line["card_uid"] == "04A1B2C3D4E5F6"


def test_bytes_values_never_reach_a_log_line():
    key = bytes(range(16))
    line = _render({"key": key, "other": bytearray(key)})
    text = json.dumps(line)
    assert key.hex() not in text.lower()
    assert line["key"] == "<16 bytes withheld>"


@pytest.mark.django_db
def test_request_id_header_is_echoed(client):
    response = client.get("/metrics", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-ID"] == "abc-123"


@pytest.mark.django_db
def test_metrics_endpoint_speaks_prometheus(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"django_http_requests_total" in response.content or b"python_info" in response.content
