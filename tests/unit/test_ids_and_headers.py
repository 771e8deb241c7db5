"""Id validation, Retry-After parsing, the header grammar and where request heads end."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.ids import canonical_container_id, canonical_job_id
from proxy.retry_after import parse_retry_after
from proxy.web.headers import (
    cache_status,
    etag_matches,
    expect_is_continue,
    parse_event_id,
    prefer_wait_s,
)
from proxy.web.protocol import HeadTracker

UUID = "3f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f"
ULID = "01HXZ9ABCDEFGHJKMNPQRSTVWX"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (UUID, "cnt_" + UUID),
        (UUID.upper(), "cnt_" + UUID),
        ("cnt_" + UUID, "cnt_" + UUID),
        ("cnt_" + ULID, "cnt_" + ULID),
        ("cnt_" + ULID.lower(), "cnt_" + ULID),
    ],
)
def test_valid_container_ids_are_canonical(raw: str, expected: str) -> None:
    """Every accepted spelling maps to one canonical id (so they share one poll loop)."""
    assert canonical_container_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "cnt_",
        "cnt_123",
        "job_" + ULID,
        "cnt_" + ULID + "X",
        "cnt_01HXZ9ABCDEFGHJKMNPQRSTVWI",  # I is not Crockford base32
        "cnt_81HXZ9ABCDEFGHJKMNPQRSTVWX",  # first ULID char above 7 overflows 48 bits
        UUID + "0",
        "../" + UUID,
        "cnt_" + UUID + "/../x",
        "x" * 5000,
    ],
)
def test_invalid_container_ids_are_refused(raw: str) -> None:
    """Anything else is not an id."""
    assert canonical_container_id(raw) is None


@given(st.text(max_size=80))
def test_container_id_validation_never_raises(raw: str) -> None:
    """Arbitrary text gives a canonical id or None, never an exception."""
    result = canonical_container_id(raw)
    assert result is None or result.startswith("cnt_")


def test_job_ids() -> None:
    """Jobs are job_ + ULID, upper-cased."""
    assert canonical_job_id("job_" + ULID.lower()) == "job_" + ULID
    assert canonical_job_id("job_" + UUID) is None
    assert canonical_job_id("cnt_" + ULID) is None


def test_retry_after_seconds_and_dates() -> None:
    """Retry-After is delay-seconds or an HTTP-date relative to now."""
    now = 1_800_000_000.0
    assert parse_retry_after("7", now_wall_s=now) == 7.0
    date = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after(date, now_wall_s=now) == pytest.approx(42, abs=1)
    past = email.utils.formatdate(now - 100, usegmt=True)
    assert parse_retry_after(past, now_wall_s=now) == 0.0
    for bad in (None, "", "soon", "-3", "1.5", "Mon, 99 Foo 2026"):
        assert parse_retry_after(bad, now_wall_s=now) is None


@given(st.text(max_size=60))
def test_retry_after_never_raises(value: str) -> None:
    """Garbage headers never crash the poller."""
    result = parse_retry_after(value, now_wall_s=1_800_000_000.0)
    assert result is None or result >= 0


def test_if_none_match() -> None:
    """Weak comparison, lists and * all match our strong ETag."""
    tag = '"abc"'
    assert etag_matches('"abc"', tag)
    assert etag_matches('W/"abc"', tag)
    assert etag_matches('"x", "abc"', tag)
    assert etag_matches("*", tag)
    assert not etag_matches('"abd"', tag)
    assert not etag_matches(None, tag)


def test_prefer_wait() -> None:
    """Prefer: wait=N is read and capped."""
    assert prefer_wait_s("wait=10", max_s=30) == 10
    assert prefer_wait_s("respond-async, wait=100", max_s=30) == 30
    assert prefer_wait_s("return=minimal", max_s=30) is None
    assert prefer_wait_s(None, max_s=30) is None


def test_cache_status_values() -> None:
    """Cache-Status says hit, stale, collapsed or a stored fetch (RFC 9211 syntax)."""
    assert cache_status("hit", stale=False, age_s=1) == "layers-proxy; hit"
    assert cache_status("hit", stale=True, age_s=12) == "layers-proxy; hit; ttl=-12; detail=stale"
    assert "collapsed" in cache_status("collapsed", stale=False, age_s=0)
    assert "fwd=miss" in cache_status("miss", stale=False, age_s=0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("wait=\u00b2", None),  # a Unicode digit: \d and str.isdigit take it, int() does not
        ("wait=\u0663", None),
        ("wait=99999999999999999999", None),  # absurd: ignored, not capped
        ("wait=-1", None),
        ("wait=1e9", None),
        ("wait=5x", None),
        ('wait="7"', 7),
        ("wait = 2", 2),
        ("respond-async;wait=3", 3),
        ("wait=" * 2000, None),
    ],
)
def test_prefer_wait_is_strict(value: str, expected: float | None) -> None:
    """Only ASCII digits count; anything else is no preference (never a 500)."""
    assert prefer_wait_s(value, max_s=30) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7", 7),
        (" 12 ", 12),
        ("0", 0),
        ("\u00b2", None),
        ("\u0661\u0662", None),
        ("-1", None),
        ("1.2", None),
        ("9" * 19, None),  # beyond a 64-bit version
        ("", None),
        (None, None),
    ],
)
def test_last_event_id_is_ascii_digits_only(raw: str | None, expected: int | None) -> None:
    """A single stream's Last-Event-ID is a version or ignored."""
    assert parse_event_id(raw) == expected


def test_expect_only_100_continue() -> None:
    """The one expectation HTTP defines, case-insensitively; nothing else."""
    assert expect_is_continue("100-continue")
    assert expect_is_continue("100-Continue")
    for bad in ("", "200-ok", "100-continue, x", "\udcff\udcfe", "100-CONT\u0130NUE"):
        assert not expect_is_continue(bad)


def test_if_none_match_work_is_bounded() -> None:
    """A 5,000-tag list is cut at 64 tags, so a tag past them does not match."""
    tag = '"abc"'
    assert etag_matches(",".join(['"x"'] * 10) + "," + tag, tag)
    assert not etag_matches(",".join(['"x"'] * 5000) + "," + tag, tag)


@given(st.text(max_size=200))
def test_header_parsers_never_raise(value: str) -> None:
    """Whatever a client sends, the parsers answer (these turned into 500s before)."""
    wait = prefer_wait_s(value, max_s=30)
    assert wait is None or 0 <= wait <= 30
    event_id = parse_event_id(value)
    assert event_id is None or event_id >= 0
    assert isinstance(expect_is_continue(value), bool)
    assert isinstance(etag_matches(value, '"a"'), bool)


def _heads(chunks: list[bytes]) -> HeadTracker:
    tracker = HeadTracker(now=0.0)
    for i, chunk in enumerate(chunks, start=1):
        tracker.feed(chunk, clock=lambda t=float(i): t)
    return tracker


def test_head_tracker_sees_a_head_end_split_across_reads() -> None:
    """The terminator can arrive one byte at a time; the head is complete once it has."""
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    tracker = _heads([raw[i : i + 1] for i in range(len(raw) - 1)])
    assert tracker.started == 0.0 and tracker.heads == 0  # since connecting: still unfinished
    tracker.feed(raw[-1:], clock=lambda: 99.0)
    assert tracker.started is None and tracker.heads == 1 and tracker.tracking


def test_head_tracker_times_pipelined_heads_from_their_first_byte() -> None:
    """After a complete head, the next one's clock starts at its first byte, not before."""
    one = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    tracker = _heads([one + one + b"GET /b HT"])
    assert tracker.heads == 2 and tracker.started == 1.0
    tracker.feed(b"TP/1.1\r\n\r\n", clock=lambda: 5.0)
    assert tracker.heads == 3 and tracker.started is None
    tracker.feed(b"G", clock=lambda: 7.0)
    assert tracker.started == 7.0


@pytest.mark.parametrize(
    "field", [b"Content-Length: 12", b"transfer-encoding: chunked", b"CONTENT-LENGTH:  007"]
)
def test_head_tracker_stops_at_a_body(field: bytes) -> None:
    """A body is not a next head: tracking ends (keep-alive and the parser bound the rest)."""
    tracker = _heads([b"POST /x HTTP/1.1\r\n" + field + b"\r\n\r\nbody bytes"])
    assert not tracker.tracking and tracker.started is None


def test_head_tracker_ignores_an_empty_body() -> None:
    """Content-Length: 0 announces no body, so the next bytes are the next head."""
    tracker = _heads([b"PUT /x HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET"])
    assert tracker.tracking and tracker.heads == 1 and tracker.started == 1.0


def test_head_tracker_trusts_the_parser() -> None:
    """When the parser dispatched a request this did not see end, it stops tracking."""
    tracker = _heads([b"GET /x HTTP/1.1\r\rweird"])
    tracker.on_dispatch()
    assert not tracker.tracking and tracker.started is None


def test_head_tracker_bounds_its_buffer() -> None:
    """A head longer than the parser allows is not buffered whole."""
    tracker = _heads([b"GET /x HTTP/1.1\r\nX-Big: " + b"a" * 300_000])
    assert tracker.tracking and tracker.started == 0.0
    tracker.feed(b"\r\n\r\n", clock=lambda: 2.0)
    assert not tracker.tracking  # an overflowed head is assumed to carry a body
