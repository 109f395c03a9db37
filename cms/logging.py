"""JSON log lines through structlog, with request/job context and a guard against bytes."""
from __future__ import annotations

import logging

import structlog


def _no_bytes(_logger, _name, event_dict: dict) -> dict:
    # A bytes value in a log line is almost always key material or a cryptogram: never print it.
    for field, value in list(event_dict.items()):
        if isinstance(value, bytes | bytearray | memoryview):
            event_dict[field] = f"<{len(value)} bytes withheld>"
    return event_dict


SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    _no_bytes,
]


def json_formatter() -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=SHARED_PROCESSORS,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def configure() -> None:
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
