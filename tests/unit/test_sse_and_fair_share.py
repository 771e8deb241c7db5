"""SSE framing, stream ids and the fair-share allocation (the stream room: test_stream_session)."""

from __future__ import annotations

import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.fair_share import Demand, allocate, water_fill
from proxy.web.sse import event_frame, parse_vector_id, retry_frame, vector_id, with_last_error


def test_event_frame_shape() -> None:
    """An event is event/id/data lines and a blank line."""
    frame = event_frame("progress", "7", b'{"a":1}')
    assert frame == b'event: progress\nid: 7\ndata: {"a":1}\n\n'


def test_multiline_data_is_split() -> None:
    """Newlines in data never break the framing."""
    frame = event_frame("progress", "1", b"a\nb")
    assert frame.endswith(b"data: a\ndata: b\n\n")


def test_retry_is_jittered_between_base_and_twice() -> None:
    """retry: hints spread between base and 2 × base."""
    values = {int(retry_frame(3000, random.Random(i))[7:-2]) for i in range(50)}
    assert min(values) >= 3000 and max(values) <= 6000 and len(values) > 10


def test_vector_ids_round_trip() -> None:
    """A multiplexed stream's id encodes every version and parses back."""
    assert parse_vector_id(vector_id([3, 0, 12]), 3) == [3, 0, 12]
    assert parse_vector_id("3.0", 3) is None
    assert parse_vector_id("a.b.c", 3) is None
    assert parse_vector_id(None, 1) is None


def test_last_error_is_merged_into_the_body() -> None:
    """A failed container's final event carries lastError; the JSON stays valid."""
    body = b'{"status":"failed","stage":"x"}'
    merged = orjson.loads(with_last_error(body, b'{"code":"GENERATION_FAILED"}'))
    assert merged["lastError"] == {"code": "GENERATION_FAILED"}
    assert merged["status"] == "failed"


def test_small_tenant_keeps_its_share() -> None:
    """A tenant watching 100 containers cannot push one with a single container below its share."""
    demands = [Demand("big", f"k{i}", 2.0) for i in range(100)] + [Demand("small", "x", 2.0)]
    alloc = allocate(demands, {"big": 1, "small": 1}, budget_per_s=1.8)
    assert alloc.intervals_s["x"] == 2.0  # its whole demand (0.5/s) fits in its half (0.9/s)
    assert abs(sum(1 / v for v in alloc.intervals_s.values()) - 1.8) < 1e-9


def test_weights_split_contention() -> None:
    """Under contention tenants get the budget in proportion to weight."""
    demands = [Demand("a", f"a{i}", 2.0) for i in range(50)]
    demands += [Demand("b", f"b{i}", 2.0) for i in range(50)]
    alloc = allocate(demands, {"a": 1, "b": 3}, budget_per_s=2.0)
    assert abs(alloc.tenant_rate["a"] - 0.5) < 1e-9
    assert abs(alloc.tenant_rate["b"] - 1.5) < 1e-9


def test_shared_resource_is_paid_once() -> None:
    """A resource watched by two tenants costs each half and is polled at full cadence."""
    alloc = allocate([Demand("a", "k", 2.0), Demand("b", "k", 2.0)], {}, budget_per_s=10)
    assert alloc.intervals_s["k"] == 2.0
    assert alloc.tenant_demand == {"a": 0.25, "b": 0.25}


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(0, 30), st.sampled_from([2.0, 5.0])),
        min_size=1,
        max_size=80,
    ),
    st.floats(min_value=0.05, max_value=20),
    st.dictionaries(st.sampled_from("abcd"), st.floats(min_value=0.1, max_value=5)),
)
def test_allocation_invariants(
    rows: list[tuple[str, int, float]], budget: float, weights: dict[str, float]
) -> None:
    """Never over budget, never faster than cadence, and full use when demand exceeds it."""
    demands = [Demand(t, f"k{k}", i) for t, k, i in rows]
    alloc = allocate(demands, weights, budget)
    total = sum(1 / v for v in alloc.intervals_s.values())
    cadence_rate = {d.key: 1 / d.interval_s for d in demands}
    for key, interval in alloc.intervals_s.items():
        assert interval >= min(d.interval_s for d in demands if d.key == key) - 1e-9
    demand_total = sum(1 / min(d.interval_s for d in demands if d.key == k) for k in cadence_rate)
    assert total <= budget + 1e-6
    if demand_total > budget:
        assert total >= budget * 0.999  # work-conserving
    else:
        assert abs(total - demand_total) < 1e-6


@given(st.dictionaries(st.text(max_size=3), st.floats(0, 10), max_size=8), st.floats(0, 20))
def test_water_fill_never_exceeds_demand_or_capacity(
    demands: dict[str, float], capacity: float
) -> None:
    """Nobody gets more than it asked for, and the total fits the capacity."""
    alloc = water_fill(demands, {}, capacity)
    assert all(alloc[k] <= demands[k] + 1e-9 for k in demands)
    assert sum(alloc.values()) <= capacity + 1e-6


def test_vector_ids_are_ascii_digits_only() -> None:
    """Unicode digits, signs and absurd lengths are not a vector id (they were 500s)."""
    assert parse_vector_id("\u00b2", 1) is None
    assert parse_vector_id("1.\u0662", 2) is None
    assert parse_vector_id("-1", 1) is None
    assert parse_vector_id("9" * 19, 1) is None
    assert parse_vector_id("1." * 5000 + "1", 2) is None  # rejected on length, before any split
    assert parse_vector_id(" 4.5 ", 2) == [4, 5]
    assert parse_vector_id("1", 0) is None


@given(st.text(max_size=120), st.integers(0, 5))
def test_parse_vector_id_never_raises(raw: str, size: int) -> None:
    """Any Last-Event-ID gives versions or None."""
    parsed = parse_vector_id(raw, size)
    assert parsed is None or (len(parsed) == size and all(v >= 0 for v in parsed))
