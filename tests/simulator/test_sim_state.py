"""The simulator state without HTTP: ids, budget, faults, cancel, regenerate, webhook timing."""

from __future__ import annotations

import random
import time

import pytest

from proxy.simulator import (
    DEFAULT_KEY,
    ContainerScript,
    FaultRule,
    KeySpec,
    ManualClock,
    ScaledClock,
    SimulatorState,
    WebhookConfig,
)
from proxy.simulator.budget import SlidingWindowBudget
from proxy.simulator.faults import FaultBook
from proxy.simulator.ids import canonical_container_id, canonical_job_id, key_id_of, ulid
from proxy.simulator.state import AuthFailure, Identity

UUID = "0b6f3c2e-1d4a-4e8b-9c7d-5a6b7c8d9e0f"


def refused(result: Identity | AuthFailure) -> AuthFailure:
    """Return ``result`` as a refusal, failing the test if it was allowed."""
    assert isinstance(result, AuthFailure)
    return result


def allowed(result: Identity | AuthFailure) -> Identity:
    """Return ``result`` as an identity, failing the test if it was refused."""
    assert isinstance(result, Identity)
    return result


def status_of(state: SimulatorState, container_id: str) -> str:
    """Return a container's /progress status."""
    body = state.progress(container_id)
    assert body is not None
    return str(body["status"])


def test_container_id_forms() -> None:
    """Bare uuids gain cnt_, cnt_<ULID> stays, anything else is refused."""
    assert canonical_container_id(UUID) == f"cnt_{UUID}"
    assert canonical_container_id(f"cnt_{UUID.upper()}") == f"cnt_{UUID}"
    assert (
        canonical_container_id("cnt_01HXZ9ABCDEFGHJKMNPQRSTVWX") == "cnt_01HXZ9ABCDEFGHJKMNPQRSTVWX"
    )
    assert canonical_container_id("cnt_nope") is None
    assert canonical_job_id("job_01hxz9abcdefghjkmnpqrstvwx") == "job_01HXZ9ABCDEFGHJKMNPQRSTVWX"
    assert canonical_job_id("job_short") is None


def test_minted_ulids_are_valid_ids() -> None:
    """Minted ULIDs are 26 Crockford characters that the id parsers accept."""
    value = ulid(random.Random(1), 1_776_504_600.0)
    assert len(value) == 26
    assert canonical_job_id("job_" + value) == "job_" + value


def test_key_id_is_the_key_id_segment_or_a_hash() -> None:
    """Well-formed keys log their 16-char key_id; others log a hash prefix, never the key."""
    assert key_id_of(DEFAULT_KEY) == "simulatorkey0001"
    opaque = key_id_of("some-opaque-secret-token")
    assert opaque.startswith("h_")
    assert len(opaque) == 16
    assert "secret" not in opaque


def test_sliding_window_budget() -> None:
    """Five per minute: the sixth is refused with Retry-After counting to the oldest slot."""
    budget = SlidingWindowBudget()
    decisions = [budget.spend("k", 5, 100.0 + i) for i in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert decisions[-1].retry_after_s == 55  # the slot spent at t=100 frees at t=160
    assert budget.spend("k", 5, 159.9).allowed is False
    assert budget.spend("k", 5, 160.0).allowed is True
    assert budget.spend("other", 5, 160.0).remaining == 4


def test_fault_count_and_path_filter() -> None:
    """A counted rule applies N times then expires; path_contains limits what it matches."""
    book = FaultBook()
    book.add(FaultRule(kind="status", status=503, count=2, path_contains="/jobs/"))
    rng = random.Random(0)
    assert book.take("/v1/content/x/progress", rng) is None
    assert book.take("/v1/jobs/a", rng) is not None
    assert book.take("/v1/jobs/a", rng) is not None
    assert book.take("/v1/jobs/a", rng) is None
    assert book.rules == []


def test_fault_probability_is_seeded() -> None:
    """A 30 % rule fires on roughly 30 % of 1000 requests, the same count for the same seed."""
    counts = []
    for _ in range(2):
        book = FaultBook()
        book.add(FaultRule(kind="garbage", probability=0.3))
        rng = random.Random(42)
        counts.append(sum(book.take("/v1/x", rng) is not None for _ in range(1000)))
    assert counts[0] == counts[1]
    assert 250 < counts[0] < 350


def test_fault_rule_from_json_validates() -> None:
    """Control-API fault JSON is checked: unknown kinds and fields are refused."""
    rule = FaultRule.from_json({"kind": "status", "status": 502, "count": 3})
    assert (rule.status, rule.error_code, rule.count) == (502, "UNAVAILABLE", 3)
    with pytest.raises(ValueError):
        FaultRule.from_json({"kind": "explode"})
    with pytest.raises(ValueError):
        FaultRule.from_json({"kind": "status", "colour": "red"})


def test_authentication_rules(state: SimulatorState) -> None:
    """Unknown keys are 401, missing scopes and foreign orgs 403, child orgs are allowed."""
    state.add_key("narrow", KeySpec(scopes=("jobs:read",), org="org_a", child_orgs=("org_b",)))
    assert refused(state.authenticate(None, None, "jobs:read")).status == 401
    assert refused(state.authenticate("nope", None, "jobs:read")).status == 401
    scope = refused(state.authenticate("narrow", None, "content:read"))
    assert (scope.status, scope.code) == (403, "FORBIDDEN_SCOPE")
    assert refused(state.authenticate("narrow", "org_c", "jobs:read")).status == 403
    assert allowed(state.authenticate("narrow", "org_b", "jobs:read")).org == "org_b"
    assert allowed(state.authenticate(DEFAULT_KEY, None, "anything:else")).org == "org_default"


def test_other_orgs_cannot_see_a_container(state: SimulatorState) -> None:
    """A container is visible to its own org and invisible (None) to another."""
    cid, job_id = state.add_container(org="org_a")
    assert job_id is not None
    assert state.progress(cid, "org_a") is not None
    assert state.progress(cid, "org_b") is None
    assert state.job(job_id, "org_b") is None


def test_cancel_and_regenerate(state: SimulatorState, clock: ManualClock) -> None:
    """Cancel stops at the next boundary; regenerate reruns in place with a new job."""
    cid, first_job = state.add_container()
    with pytest.raises(ValueError):
        state.regenerate(cid)
    clock.advance(5.0)
    assert state.cancel(cid) is True
    clock.advance(11.99)
    assert status_of(state, cid) == "processing"
    clock.advance(0.01)
    assert status_of(state, cid) == "canceled"
    assert state.cancel(cid) is False
    second_job = state.regenerate(cid)
    assert first_job is not None
    assert second_job is not None
    assert second_job != first_job
    assert status_of(state, cid) == "queued"
    assert (state.job(first_job) or {})["status"] == "canceled"
    clock.advance(20.0)
    assert status_of(state, cid) == "completed"
    assert (state.container(cid) or {})["caption"] == "Generated caption #2"


def test_start_offset_puts_a_run_in_the_past(state: SimulatorState) -> None:
    """A start offset of -10 s makes the run report 10 s of progress at once."""
    cid, _ = state.add_container(start_offset_s=-10.0)
    body = state.progress(cid)
    assert body is not None
    assert (body["stage"], body["stageProgress"]) == ("generating_visuals", 0.5)


def test_duplicate_or_malformed_ids_are_refused(state: SimulatorState) -> None:
    """Adding the same id twice, or a malformed id, raises ValueError."""
    state.add_container(container_id=UUID)
    with pytest.raises(ValueError):
        state.add_container(container_id=f"cnt_{UUID}")
    with pytest.raises(ValueError):
        state.add_container(container_id="bogus")


def test_webhook_events_wait_for_end_plus_delay(state: SimulatorState, clock: ManualClock) -> None:
    """A finished run yields job.completed and content.generated once, delay_s after its end."""
    state.configure_webhooks(WebhookConfig(url="http://127.0.0.1:9/", secret="s", delay_s=5.0))
    state.add_container(ContainerScript(stages=(("only", 10.0),)))
    clock.advance(14.9)
    assert state.due_webhook_events() == []
    clock.advance(0.1)
    assert [e.type for e in state.due_webhook_events()] == ["job.completed", "content.generated"]
    assert state.due_webhook_events() == []


def test_runs_ending_unwatched_are_not_announced_later(
    state: SimulatorState, clock: ManualClock
) -> None:
    """Runs that end while no webhook is configured never produce events afterwards."""
    state.add_container(ContainerScript(stages=(("only", 1.0),)))
    clock.advance(2.0)
    assert state.due_webhook_events() == []
    state.configure_webhooks(WebhookConfig(url="http://127.0.0.1:9/", secret="s"))
    assert state.due_webhook_events() == []


def test_reset_clears_log_faults_and_budget(state: SimulatorState) -> None:
    """reset() empties the log, the fault book and the spent budget but keeps containers."""
    state.add_container()
    record = state.open_record("req_1", "GET", "/v1/x")
    state.log.finish(record, 200)
    state.add_fault(FaultRule(kind="garbage"))
    state.spend(allowed(state.authenticate(DEFAULT_KEY, None, None)))
    state.reset()
    assert state.requests() == []
    assert state.faults.rules == []
    assert state.peek_budget(DEFAULT_KEY).remaining == 120
    assert len(state.containers) == 1
    assert state.log.open("req_2", 0, 0, "GET", "/v1/y").index == 1


def test_manual_clock_moves_only_forward() -> None:
    """ManualClock advances both readings together and refuses to go back."""
    clock = ManualClock()
    clock.advance(2.5)
    assert clock.monotonic() == 1002.5
    assert clock.wall() - clock.monotonic() == clock.wall_at_zero
    with pytest.raises(ValueError):
        clock.advance(-1.0)


def test_scaled_clock_runs_faster() -> None:
    """At speed 1000, 20 ms of real time reads as at least 20 s."""
    clock = ScaledClock(speed=1000.0)
    mono, wall = clock.monotonic(), clock.wall()
    time.sleep(0.02)
    assert clock.monotonic() - mono >= 20.0
    assert clock.wall() - wall >= 20.0
