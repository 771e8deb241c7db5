"""The history checker itself, on small synthetic histories (no processes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.chaos.clients import ClientInfo, Observation
from tests.chaos.history import (
    Fault,
    Timeline,
    UpstreamRequest,
    Window,
    check_history,
    percentile,
)

pytestmark = [pytest.mark.chaos]

CID = "cnt_00000000-0000-4000-8000-0000000000a1"
OTHER = "cnt_00000000-0000-4000-8000-0000000000b2"
WALL0 = 1_800_000_000.0  # wall time at t=0 of these histories
TIMELINES = {
    CID: Timeline((("analyzing", 10.0), ("generating_visuals", 60.0)), created_at=0.0),
    OTHER: Timeline((("analyzing", 5.0),), created_at=0.0),
}


def body(
    stage: str, progress: float, *, at: float, status: str = "processing", cid: str = CID
) -> Any:
    updated = datetime.fromtimestamp(int(WALL0 + at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "containerId": cid,
        "status": status,
        "stage": stage,
        "stageProgress": progress,
        "etaSeconds": 10,
        "updatedAt": updated,
    }


def seen(
    t: float, b: Any, *, client: str = "p0", status: int = 200, mode: str = "poll"
) -> Observation:
    return Observation(t=t, client=client, resource=CID, mode=mode, status=status, body=b)


def steady_upstream(start: float, end: float, every: float = 2.0) -> list[UpstreamRequest]:
    out, t = [], start
    while t <= end:
        out.append(UpstreamRequest(t, CID))
        t += every
    return out


def test_a_clean_history_passes() -> None:
    history = [
        seen(1.0, body("analyzing", 0.1, at=1.0)),
        seen(1.5, None, status=304),
        seen(3.0, body("analyzing", 0.3, at=3.0)),
        seen(11.0, body("generating_visuals", 0.0, at=11.0)),
        seen(12.0, body("generating_visuals", 0.02, at=12.0), mode="sse"),
    ]
    report = check_history(
        history,
        steady_upstream(1.0, 13.0),
        timelines=TIMELINES,
        cadence_windows=[Window(1.0, 13.0, frozenset({CID}))],
    )
    assert report.ok, report.summary()
    assert report.counts["observations"] == 5
    assert "no violations" in report.summary()


def test_it_catches_a_regression() -> None:
    history = [
        seen(1.0, body("generating_visuals", 0.5, at=1.0)),
        seen(2.0, body("analyzing", 0.9, at=2.0)),  # an earlier stage: backwards
        seen(3.0, body("generating_visuals", 0.4, at=3.0)),  # lower progress, same stage
    ]
    report = check_history(history, [], timelines=TIMELINES)
    assert report.failed() == ["regression"]
    assert len(report.violations["regression"]) == 2
    assert "analyzing@0.9 after processing/generating_visuals@0.5" in report.summary()


def test_terminal_then_running_is_a_regression_and_terminal_last_is_not() -> None:
    done = body("generating_visuals", 1.0, at=5.0, status="completed")
    report = check_history(
        [seen(1.0, body("generating_visuals", 0.2, at=1.0)), seen(5.0, done)],
        [],
        timelines=TIMELINES,
    )
    assert report.ok, report.summary()
    report = check_history(
        [seen(5.0, done), seen(6.0, body("generating_visuals", 0.9, at=6.0))],
        [],
        timelines=TIMELINES,
    )
    assert report.failed() == ["regression"]


def test_histories_are_per_client() -> None:
    # Two clients on different replicas may lag each other; only each one's own order counts.
    history = [
        seen(1.0, body("analyzing", 0.5, at=1.0), client="a"),
        seen(1.1, body("analyzing", 0.3, at=0.9), client="b"),
    ]
    assert check_history(history, [], timelines=TIMELINES).ok


def test_it_catches_a_floor_violation() -> None:
    upstream = [UpstreamRequest(1.0, CID), UpstreamRequest(1.4, CID), UpstreamRequest(3.0, CID)]
    upstream += [UpstreamRequest(1.2, OTHER)]  # another resource: no conflict
    upstream += [UpstreamRequest(1.1, CID, kind="container")]  # lastError fetch: another path
    report = check_history([], upstream, timelines=TIMELINES)
    assert report.failed() == ["floor"]
    [v] = report.violations["floor"]
    assert v.where == CID and "0.400s apart" in v.detail


def test_it_catches_a_5xx_after_data_but_allows_a_cold_503() -> None:
    cold = seen(0.5, {"error": {"code": "UNAVAILABLE"}}, status=503)
    assert check_history(
        [cold, seen(1.0, body("analyzing", 0.1, at=1.0))], [], timelines=TIMELINES
    ).ok
    history = [
        seen(1.0, body("analyzing", 0.1, at=1.0)),
        seen(2.0, {"error": {"code": "UNAVAILABLE"}}, status=503),
        Observation(t=3.0, client="p0", resource=CID, mode="poll", status=0, error="TimeoutError"),
        Observation(
            t=4.0,
            client="p0",
            resource=CID,
            mode="sse",
            status=200,
            event="error",
            body={"containerId": CID, "error": {"code": "UPSTREAM_TIMEOUT"}},
        ),
    ]
    report = check_history(history, [], timelines=TIMELINES)
    assert report.failed() == ["error_after_data"]
    assert len(report.violations["error_after_data"]) == 3


def test_it_catches_a_freeze_after_a_fault() -> None:
    fault = Fault(10.0, 12.0, start_wall=WALL0 + 10.0, label="redis restart")
    watcher = ClientInfo("p0", "poll", (CID,), "http://x", started=0.0, stopped=30.0)
    before = [seen(t, body("analyzing", t / 10, at=t)) for t in (2.0, 4.0, 6.0, 8.0)]
    # After the fault the client only gets 304s and the old snapshot: frozen.
    frozen = [*before, *(seen(t, None, status=304) for t in (14.0, 18.0, 25.0))]
    report = check_history(frozen, [], timelines=TIMELINES, faults=[fault], clients=[watcher])
    assert report.failed() == ["freshness"]
    assert "no snapshot fetched after the fault began" in report.summary()
    # Fresh data, but too late.
    late = [*before, seen(20.0, body("generating_visuals", 0.2, at=20.0))]
    report = check_history(late, [], timelines=TIMELINES, faults=[fault], clients=[watcher])
    assert report.failed() == ["freshness"]
    assert "8.00s after the fault ended" in report.summary()
    # In time.
    ok = [*before, seen(14.0, body("generating_visuals", 0.05, at=13.5))]
    report = check_history(ok, [], timelines=TIMELINES, faults=[fault], clients=[watcher])
    assert report.ok, report.summary()
    # A stream that simply stopped delivering is a freeze too (nothing to look at after it).
    stream = ClientInfo("s0", "sse", (CID,), "http://x", started=0.0, stopped=30.0)
    silent = [seen(2.0, body("analyzing", 0.2, at=2.0), client="s0", mode="sse")]
    report = check_history(silent, [], timelines=TIMELINES, faults=[fault], clients=[stream])
    assert report.failed() == ["freshness"]


def test_freshness_ignores_clients_that_left_and_resources_already_done() -> None:
    fault = Fault(10.0, 12.0, start_wall=WALL0 + 10.0)
    left = ClientInfo("p0", "poll", (CID,), "http://x", started=0.0, stopped=13.0)
    done = ClientInfo("p1", "poll", (CID,), "http://x", started=0.0, stopped=30.0)
    history = [seen(5.0, body("generating_visuals", 1.0, at=5.0, status="completed"), client="p1")]
    report = check_history(history, [], timelines=TIMELINES, faults=[fault], clients=[left, done])
    assert report.ok, report.summary()


def test_it_catches_a_cadence_gap_and_a_stopped_poller() -> None:
    upstream = [UpstreamRequest(t, CID) for t in (1.0, 3.0, 5.0, 11.0, 13.0)]
    report = check_history(
        [], upstream, timelines=TIMELINES, cadence_windows=[Window(1.0, 20.0, frozenset({CID}))]
    )
    assert report.failed() == ["cadence"]
    gaps = sorted(v.detail for v in report.violations["cadence"])
    assert len(gaps) == 2 and "6.00s" in gaps[0] and "7.00s" in gaps[1]  # 5→11 and 13→end


def test_cadence_allows_the_slow_interval_after_30_s_in_one_stage() -> None:
    # generating_visuals starts at 10 s; from 40 s on, 5 s gaps are the cadence.
    upstream = [UpstreamRequest(t, CID) for t in (41.0, 46.0, 51.0)]
    report = check_history(
        [], upstream, timelines=TIMELINES, cadence_windows=[Window(41.0, 51.0, frozenset({CID}))]
    )
    assert report.ok, report.summary()


def test_it_catches_an_upstream_call_during_an_outage() -> None:
    upstream = [UpstreamRequest(t, CID) for t in (1.0, 3.0, 4.5, 8.0)]
    report = check_history(
        [], upstream, timelines=TIMELINES, outages=[Window(2.0, 7.0, label="cooldown")]
    )
    assert report.failed() == ["outage"]
    assert len(report.violations["outage"]) == 2


def test_it_catches_bodies_that_are_not_the_resource() -> None:
    history = [
        seen(1.0, body("analyzing", 0.1, at=1.0, cid=OTHER, status="completed")),  # wrong id
        seen(2.0, {"containerId": CID, "status": "processing"}),  # fields missing
        seen(3.0, body("mystery_stage", 0.5, at=3.0)),  # not in the timeline
        Observation(t=4.0, client="p0", resource=CID, mode="poll", status=200, parse_error="no"),
    ]
    report = check_history(history, [], timelines=TIMELINES)
    assert report.failed() == ["invalid_body"]
    assert len(report.violations["invalid_body"]) == 4


def test_it_catches_a_secret_in_a_body_or_a_header() -> None:
    key = "lp_test_simulatorkey0001_" + "s" * 43
    leaky = seen(1.0, body("analyzing", 0.1, at=1.0))
    leaky.raw = b'{"debug": "Bearer ' + key.encode() + b'"}'
    header = seen(2.0, None, status=304)
    header.headers = {"X-Debug": key}
    report = check_history([leaky, header], [], timelines=TIMELINES, secrets=[key])
    assert report.failed() == ["secret"]
    assert len(report.violations["secret"]) == 2
    assert key not in report.summary()


def test_summary_lists_counts_and_the_first_violations() -> None:
    upstream = [UpstreamRequest(1.0 + i * 0.5, CID) for i in range(10)]
    report = check_history([], upstream, timelines=TIMELINES, origin=0.0)
    text = report.summary(limit=3)
    assert "upstream_requests=10" in text
    assert "floor: 9 violation(s)" in text
    assert text.count("apart") == 3
    assert "t=+1.50s" in text


def test_percentile() -> None:
    assert percentile([], 99) == 0.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([1.0, 5.0], 50) == 1.0
