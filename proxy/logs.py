"""structlog set-up: JSON lines on stdout, every value scrubbed of secrets."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

from proxy.redaction import Scrubber

_SCRUBBER = Scrubber()


def scrubber() -> Scrubber:
    """The process-wide scrubber the log pipeline uses; register secrets with it."""
    return _SCRUBBER


def _scrub_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Last line of defence: whatever a caller put in a log field, secrets come out.
    for name, value in list(event.items()):
        if isinstance(value, str):
            event[name] = _SCRUBBER.scrub(value)
        elif not isinstance(value, int | float | bool | type(None)):
            event[name] = _SCRUBBER.scrub(repr(value))
    return event


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def configure_logging(level: str = "info", stream: Any = None) -> None:
    """JSON logs, one event per line; tracebacks as plain text (no local variables)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # format_exc_info renders the traceback without locals (they could hold the key).
            structlog.processors.format_exc_info,
            _scrub_event,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=True,
    )
    # aiohttp's own loggers would print query strings and tracebacks with locals: keep them quiet.
    logging.getLogger("aiohttp.access").disabled = True
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
