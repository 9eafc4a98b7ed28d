"""Structured logs: JSON lines when not on a terminal, readable otherwise.

Events have stable snake_case names and their data as keys. A last processor
blanks every known secret out of every value, whatever path it took into a
log line (an exception message, a URL, a header echoed by a server).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from forwarder.secrets import redact

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _redact_values(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
        elif not isinstance(value, int | float | bool | type(None)):
            event[key] = redact(str(value))
    return event


def _json(_: WrappedLogger, __: str, event: EventDict) -> str:
    return orjson.dumps(event, default=str).decode()


def configure_logging(
    level: str = "info", log_format: str = "auto", stream: TextIO | None = None
) -> None:
    stream = stream or sys.stderr
    as_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    renderer: Any = _json if as_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_values,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
