"""The log pipeline under a flood (pure): one line per kind, counts per interval, no raw text."""

from __future__ import annotations

import logging
import sys

from structlog.testing import capture_logs

from proxy.logs import LogSummary, _StdlibBridge, scrub_text, summary

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJ0ZW5hbnQiOiJhY21lIn0.c2lnbmF0dXJl"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_of_a_kind_then_one_summary_per_interval() -> None:
    """10,000 bad requests of two kinds: two lines, then one summary with the counts."""
    clock = _Clock()
    limiter = LogSummary(10.0, clock=clock)
    with capture_logs() as logs:
        admitted = [limiter.admit("a" if i % 2 else "b") for i in range(10_000)]
        clock.now = 10.0
        limiter.flush(only_if_due=True)
    assert sum(admitted) == 2
    assert [e["event"] for e in logs] == ["log_summary"]
    assert logs[0]["kinds"] == {"a": 4999, "b": 4999} and logs[0]["suppressed"] == 9998


def test_a_kind_that_went_quiet_is_logged_again() -> None:
    """Hot kinds stay summarised; one quiet for a whole interval is logged in full next time."""
    clock = _Clock()
    limiter = LogSummary(10.0, clock=clock)
    assert limiter.admit("a") and limiter.admit("b")
    assert not limiter.admit("a")
    clock.now = 10.0
    with capture_logs() as logs:
        assert not limiter.admit("a")  # still hot: it recurred in the last interval
        assert limiter.admit("b")  # went cold
    assert logs[0]["kinds"] == {"a": 1}  # the lazy flush on the first admit past the interval


def test_kinds_are_bounded() -> None:
    """An attacker varying the kind cannot grow memory: past 256 kinds they pool as 'other'."""
    limiter = LogSummary(10.0, clock=_Clock())
    admitted = sum(limiter.admit(f"k{i}") for i in range(10_000))
    assert admitted == 257  # 256 kinds and the first "other"
    assert not limiter.admit("one more")


def test_aiohttp_records_become_one_line_without_arguments_or_traceback() -> None:
    """The parser error that quoted the request line (token included) keeps its type only."""
    bridge = _StdlibBridge()
    try:
        raise ValueError(f"Bad status line 'GET /?access_token={TOKEN} HTTP/1.1 x'")
    except ValueError:
        exc_info = sys.exc_info()
    # The process-wide limiter may hold earlier tests' kinds and a window about to end: two
    # flushes end the window and make every kind cold, so both emits below fall in one window.
    summary().flush()
    summary().flush()
    record = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
        (f"10.0.0.1 {TOKEN}",), exc_info,
    )  # fmt: skip
    with capture_logs() as logs:
        bridge.emit(record)
        bridge.emit(record)  # the same kind again: counted, not printed
    assert len(logs) == 1
    line = logs[0]
    assert line["message"] == "Error handling request from %s"
    assert line["error"] == "ValueError" and line["where"].startswith("test_log_limits.py:")
    assert TOKEN not in repr(line) and "exc_info" not in line


def test_scrub_text_redacts_token_shapes_nobody_registered() -> None:
    """A JWT in a path is redacted even though no scrubber knows it."""
    assert TOKEN not in scrub_text(f"/v1/content/{TOKEN}/progress")
    assert scrub_text("/v1/content/cnt_x/progress") == "/v1/content/cnt_x/progress"
