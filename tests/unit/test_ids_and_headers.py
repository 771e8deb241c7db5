"""Id validation, Retry-After parsing and the header grammar."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.ids import canonical_container_id, canonical_job_id
from proxy.retry_after import parse_retry_after
from proxy.web.headers import cache_status, etag_matches, prefer_wait_s

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
