"""structlog set-up: JSON lines on stdout, every value scrubbed of secrets, floods summarised.

Every line the process prints goes through one pipeline: the proxy's own structlog events and,
through a bridge on the root ``logging`` logger, aiohttp's, asyncio's and every library's records.
Library records are reduced to their logger, message template, exception type and the innermost
frame: never the formatted arguments, the exception text or a traceback, which for aiohttp's
parser errors contain the raw request line (query strings and tokens included).

Bad input arrives in floods, so lines that a client can cause at will go through ``LogSummary``:
the first of a kind is logged, the rest are counted and printed as one summary line per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import structlog

from proxy.redaction import REDACTED, Scrubber

_SCRUBBER = Scrubber()
# A JWT (a capability token) even when nobody registered it: base64url JSON header "eyJ...".
_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-.]*")
# Loggers whose formatted messages and exception texts can quote raw request bytes.
_TEMPLATE_ONLY = ("aiohttp", "asyncio")
_MAX_MESSAGE_CHARS = 200
_MAX_KINDS = 256

log = structlog.get_logger("proxy.logs")


def scrubber() -> Scrubber:
    """The process-wide scrubber the log pipeline uses; register secrets with it."""
    return _SCRUBBER


def scrub_text(text: str) -> str:
    """``text`` with registered secrets, key-shaped and token-shaped substrings redacted."""
    return _JWT_SHAPE.sub(REDACTED, _SCRUBBER.scrub(text))


def _scrub_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {scrub_text(str(k)): _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub_value(v) for v in value]
    return scrub_text(repr(value))


def _scrub_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Last line of defence: whatever a caller put in a log field, secrets come out.
    for name, value in list(event.items()):
        event[name] = _scrub_value(value)
    return event


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


class LogSummary:
    """Rate limits lines by kind: the first is logged, repeats become a count per interval.

    A kind stays "hot" while it keeps recurring; a whole interval without it makes it cold
    again, so the next occurrence is logged in full. Thread-safe (logging may come from threads).
    """

    def __init__(
        self, interval_s: float = 10.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}  # hot kinds → repeats suppressed this interval
        self._window_start = clock()

    def admit(self, kind: str) -> bool:
        """True when a line of ``kind`` should be logged now; False when it was counted."""
        due = None
        with self._lock:
            if self._clock() - self._window_start >= self.interval_s:
                due = self._take()
            if kind not in self._counts and len(self._counts) >= _MAX_KINDS:
                kind = "other"  # bounded memory whatever an attacker varies
            count = self._counts.get(kind)
            if count is None:
                self._counts[kind] = 0
                admitted = True
            else:
                self._counts[kind] = count + 1
                admitted = False
        if due:
            self._emit(due)
        return admitted

    def flush(self, *, only_if_due: bool = False) -> dict[str, int]:
        """Print the summary of the interval now ending (if anything was suppressed)."""
        with self._lock:
            if only_if_due and self.seconds_left() > 0:
                return {}
            counts = self._take()
        if counts:
            self._emit(counts)
        return counts

    def seconds_left(self) -> float:
        """Time until the current interval ends."""
        return self._window_start + self.interval_s - self._clock()

    def _take(self) -> dict[str, int]:
        suppressed = {kind: n for kind, n in self._counts.items() if n}
        self._counts = dict.fromkeys(suppressed, 0)  # quiet kinds go cold
        self._window_start = self._clock()
        return suppressed

    def _emit(self, counts: dict[str, int]) -> None:
        log.warning(
            "log_summary",
            interval_s=self.interval_s,
            suppressed=sum(counts.values()),
            kinds=dict(sorted(counts.items(), key=lambda kv: -kv[1])[:20]),
        )


_SUMMARY = LogSummary()


def summary() -> LogSummary:
    """The process-wide rate limiter for lines that clients can cause at will."""
    return _SUMMARY


async def summarize_forever(interval_s: float) -> None:
    """Print a summary every ``interval_s`` while suppressed lines exist (cancel to stop)."""
    _SUMMARY.interval_s = interval_s
    while True:
        # Wake when the interval ends; a line admitted after it may have flushed already.
        await asyncio.sleep(max(0.05, _SUMMARY.seconds_left()))
        _SUMMARY.flush(only_if_due=True)


def innermost_frame(tb: TracebackType | None) -> str | None:
    """``file.py:123 function`` of the deepest frame: where, without any values."""
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{Path(code.co_filename).name}:{tb.tb_lineno} {code.co_name}"


class _StdlibBridge(logging.Handler):
    """Routes ``logging`` records into the structlog pipeline as one summarised JSON line."""

    def emit(self, record: logging.LogRecord) -> None:
        # A record that cannot be rendered is dropped quietly: never a traceback on stderr.
        with contextlib.suppress(Exception):
            self._emit(record)

    def _emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_TEMPLATE_ONLY) or not isinstance(record.msg, str):
            # The template ("Error handling request from %s"), never the arguments.
            message = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        else:
            message = record.getMessage()
        message = message.split("\n", 1)[0][:_MAX_MESSAGE_CHARS]
        fields: dict[str, Any] = {"logger": record.name, "message": message}
        kind = f"{record.name}: {message}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            fields["error"] = type(exc).__name__
            kind += f" [{fields['error']}]"
            code = getattr(exc, "code", None)  # aiohttp's HttpProcessingError carries a status
            if isinstance(code, int) and not isinstance(code, bool):
                fields["status"] = code
            where = innermost_frame(record.exc_info[2])
            if where is not None:
                fields["where"] = where
        if _SUMMARY.admit(kind):
            log.log(record.levelno, "library_log", **fields)


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
    # aiohttp's access log would print query strings; the edge middleware logs requests instead.
    logging.getLogger("aiohttp.access").disabled = True
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibBridge):
            root.removeHandler(handler)
    root.addHandler(_StdlibBridge())
    # Libraries speak from warning up (aiohttp logs every bad request at error level).
    root.setLevel(max(logging.WARNING, numeric))
    logging.captureWarnings(True)
