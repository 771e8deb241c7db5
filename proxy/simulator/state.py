"""Everything the simulator knows: keys, containers, jobs, budget, faults, webhooks, the log."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from proxy.simulator.budget import BudgetDecision, SlidingWindowBudget
from proxy.simulator.events import WebhookConfig, WebhookDelivery, WebhookEvent, events_for
from proxy.simulator.faults import FaultBook, FaultRule
from proxy.simulator.ids import (
    canonical_container_id,
    canonical_job_id,
    key_id_of,
    new_uuid,
    ulid,
)
from proxy.simulator.requestlog import RequestLog, RequestRecord
from proxy.simulator.timeline import (
    ContainerScript,
    container_at,
    is_terminal,
    job_at,
    plan_of,
    progress_at,
)

RetryAfterFormat = Literal["seconds", "http-date"]
DEFAULT_ORG = "org_default"
# Shaped like a real key (lp_<env>_<16-char key_id>_<43-char secret>) so key-id logging works.
DEFAULT_KEY = "lp_test_simulatorkey0001_" + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
DEFAULT_RATE_PER_MIN = 120  # the standard tier's read-light budget
DEFAULT_SCRIPT = ContainerScript(queued_s=3.0)


@dataclass(frozen=True)
class KeySpec:
    """What a key may do: scopes (``*`` is everything), its org, child orgs, a rate override."""

    scopes: tuple[str, ...] = ("*",)
    org: str = DEFAULT_ORG
    child_orgs: tuple[str, ...] = ()
    rate_per_min: int | None = None

    def allows(self, scope: str) -> bool:
        """Tell whether the key holds ``scope``; empty scopes grant nothing."""
        return "*" in self.scopes or scope in self.scopes


@dataclass(frozen=True)
class Identity:
    """Who an authenticated request acts as."""

    key_id: str
    org: str
    spec: KeySpec


@dataclass(frozen=True)
class AuthFailure:
    """Why a request was refused before touching the budget."""

    status: int
    code: str
    message: str


@dataclass
class Run:
    """One generation of a container: the scripted timeline and when it started."""

    container_id: str
    job_id: str | None
    script: ContainerScript
    started_mono: float
    started_wall: float
    generation: int


@dataclass
class Container:
    """A content container; ``run`` is its current generation."""

    id: str
    org: str
    project_id: str
    created_wall: float
    run: Run


class SimulatorState:
    """The simulator's whole world, driven by an injectable clock."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        keys: Mapping[str, KeySpec] | None = None,
        rate_per_min: int = DEFAULT_RATE_PER_MIN,
        retry_after_format: RetryAfterFormat = "seconds",
        etag_kinds: frozenset[str] = frozenset({"job"}),
        seed: int | None = None,
    ) -> None:
        self.clock = clock
        self.wall_clock = wall_clock
        self.keys: dict[str, KeySpec] = dict(keys) if keys is not None else {DEFAULT_KEY: KeySpec()}
        self.rate_per_min = rate_per_min
        self.retry_after_format: RetryAfterFormat = retry_after_format
        # Only jobs are documented as ETag-aware; add "progress"/"container" to try otherwise.
        self.etag_kinds = etag_kinds
        self.rng = random.Random(seed)
        # Ids draw from their own stream so minting one never shifts fault or drop rolls.
        self.id_rng = random.Random(None if seed is None else seed + 1)
        self.containers: dict[str, Container] = {}
        self.jobs: dict[str, Run] = {}
        self.budget = SlidingWindowBudget()
        self.faults = FaultBook()
        self.log = RequestLog()
        self.webhook: WebhookConfig | None = None
        self.webhook_log: list[WebhookDelivery] = []
        # Bumped to release requests held by "hang" faults (reset, clear, shutdown).
        self.hang_epoch = 0
        self._unannounced: list[Run] = []

    # --- keys and auth -------------------------------------------------------------------

    def add_key(self, key: str, spec: KeySpec | None = None) -> str:
        """Register ``key`` and return its log-safe key id."""
        self.keys[key] = spec or KeySpec()
        return key_id_of(key)

    def authenticate(
        self, key: str | None, org_header: str | None, scope: str | None
    ) -> Identity | AuthFailure:
        """Resolve a presented key and optional org header into an identity, or refuse.

        ``scope`` None means the route needs only a valid key (like whoami).
        """
        spec = self.keys.get(key) if key else None
        if key is None or spec is None:
            return AuthFailure(401, "UNAUTHENTICATED", "Missing or invalid API key.")
        org = spec.org
        if org_header is not None and org_header != spec.org:
            if org_header not in spec.child_orgs:
                return AuthFailure(403, "FORBIDDEN_SCOPE", "Key may not act for that organization.")
            org = org_header
        if scope is not None and not spec.allows(scope):
            return AuthFailure(403, "FORBIDDEN_SCOPE", f"Key lacks the {scope} scope.")
        return Identity(key_id_of(key), org, spec)

    # --- budget ----------------------------------------------------------------------------

    def limit_for(self, spec: KeySpec | None) -> int:
        """Return the per-minute read budget of a key (the default for unknown keys)."""
        if spec is not None and spec.rate_per_min is not None:
            return spec.rate_per_min
        return self.rate_per_min

    def spend(self, identity: Identity) -> BudgetDecision:
        """Spend one read for ``identity``'s key, or refuse when the window is full."""
        return self.budget.spend(identity.key_id, self.limit_for(identity.spec), self.clock())

    def peek_budget(self, key: str | None) -> BudgetDecision:
        """Describe the budget of a presented key without spending."""
        spec = self.keys.get(key) if key else None
        key_id = key_id_of(key) if key else "-"
        return self.budget.peek(key_id, self.limit_for(spec), self.clock())

    def set_budget(
        self, rate_per_min: int | None = None, retry_after_format: RetryAfterFormat | None = None
    ) -> None:
        """Change the default rate and how Retry-After is written."""
        if rate_per_min is not None:
            if rate_per_min < 1:
                raise ValueError("rate_per_min must be at least 1")
            self.rate_per_min = rate_per_min
        if retry_after_format is not None:
            if retry_after_format not in ("seconds", "http-date"):
                raise ValueError("retry_after_format must be 'seconds' or 'http-date'")
            self.retry_after_format = retry_after_format

    # --- containers and jobs ---------------------------------------------------------------

    def add_container(
        self,
        script: ContainerScript | None = None,
        *,
        container_id: str | None = None,
        org: str = DEFAULT_ORG,
        project_id: str | None = None,
        with_job: bool = True,
        start_offset_s: float = 0.0,
    ) -> tuple[str, str | None]:
        """Start a container on ``script`` and return ``(containerId, jobId or None)``.

        A negative ``start_offset_s`` starts the run that many seconds in the past.
        """
        raw = container_id if container_id is not None else "cnt_" + new_uuid(self.id_rng)
        cid = canonical_container_id(raw)
        if cid is None:
            raise ValueError(f"not a container id: {raw!r}")
        if cid in self.containers:
            raise ValueError(f"container {cid} exists")
        run = self._start_run(cid, script or DEFAULT_SCRIPT, with_job, 1, start_offset_s)
        project = project_id or "prj_" + new_uuid(self.id_rng)
        created = run.started_wall
        self.containers[cid] = Container(cid, org, project, created, run)
        return cid, run.job_id

    def regenerate(self, container_id: str) -> str | None:
        """Rerun a finished container in place (same id, new job, new assets); return the job id.

        Raises KeyError for an unknown container and ValueError while it is still running.
        """
        container = self._container(container_id)
        run = container.run
        if not is_terminal(run.script, self.elapsed(run)):
            raise ValueError("container is still in progress")
        script = dataclasses.replace(run.script, cancel_requested_s=None)
        container.run = self._start_run(
            container.id, script, run.job_id is not None, run.generation + 1, 0.0
        )
        return container.run.job_id

    def cancel(self, container_id: str) -> bool:
        """Ask the current run to stop at its next stage boundary; False if already over."""
        container = self._container(container_id)
        run = container.run
        elapsed = self.elapsed(run)
        if is_terminal(run.script, elapsed):
            return False
        if run.script.cancel_requested_s is None:
            run.script = dataclasses.replace(run.script, cancel_requested_s=max(elapsed, 0.0))
        return True

    def elapsed(self, run: Run) -> float:
        """Seconds since ``run`` started, on the injected clock."""
        return self.clock() - run.started_mono

    def find_container(self, raw_id: str, org: str | None = None) -> Container | None:
        """Look a container up by any accepted id form, hidden from other orgs."""
        cid = canonical_container_id(raw_id)
        container = self.containers.get(cid) if cid else None
        if container is None or (org is not None and container.org != org):
            return None
        return container

    def progress(self, raw_id: str, org: str | None = None) -> dict[str, Any] | None:
        """Return the /progress body for a container, or None when not found."""
        container = self.find_container(raw_id, org)
        if container is None:
            return None
        run = container.run
        return progress_at(
            run.script,
            self.elapsed(run),
            container_id=container.id,
            started_wall=run.started_wall,
        )

    def container(self, raw_id: str, org: str | None = None) -> dict[str, Any] | None:
        """Return the container record, or None when not found."""
        container = self.find_container(raw_id, org)
        if container is None:
            return None
        run = container.run
        return container_at(
            run.script,
            self.elapsed(run),
            container_id=container.id,
            project_id=container.project_id,
            created_wall=container.created_wall,
            generation=run.generation,
        )

    def job(self, raw_id: str, org: str | None = None) -> dict[str, Any] | None:
        """Return the job envelope, or None when not found (or another org's)."""
        jid = canonical_job_id(raw_id)
        run = self.jobs.get(jid) if jid else None
        if run is None:
            return None
        container = self.containers[run.container_id]
        if org is not None and container.org != org:
            return None
        return job_at(
            run.script,
            self.elapsed(run),
            job_id=run.job_id or "",
            container_id=container.id,
            project_id=container.project_id,
            started_wall=run.started_wall,
            generation=run.generation,
        )

    def _container(self, raw_id: str) -> Container:
        container = self.find_container(raw_id)
        if container is None:
            raise KeyError(raw_id)
        return container

    def _start_run(
        self,
        cid: str,
        script: ContainerScript,
        with_job: bool,
        generation: int,
        start_offset_s: float,
    ) -> Run:
        job_id = "job_" + ulid(self.id_rng, self.wall_clock()) if with_job else None
        run = Run(
            container_id=cid,
            job_id=job_id,
            script=script,
            started_mono=self.clock() + start_offset_s,
            started_wall=self.wall_clock() + start_offset_s,
            generation=generation,
        )
        if job_id is not None:
            self.jobs[job_id] = run
        self._unannounced.append(run)
        return run

    # --- faults ------------------------------------------------------------------------------

    def add_fault(self, rule: FaultRule) -> FaultRule:
        """Activate a fault rule (the first matching rule applies) and return it with its id."""
        return self.faults.add(rule)

    def clear_faults(self) -> int:
        """Drop every fault rule and release hanging requests; return how many rules there were."""
        self.hang_epoch += 1
        return self.faults.clear()

    def take_fault(self, path: str) -> FaultRule | None:
        """Return the fault for a request to ``path``, spending one of its uses."""
        return self.faults.take(path, self.rng)

    # --- request log -------------------------------------------------------------------------

    def new_request_id(self) -> str:
        """Mint a ``req_<ULID>`` id."""
        return "req_" + ulid(self.id_rng, self.wall_clock())

    def open_record(self, request_id: str, method: str, path: str) -> RequestRecord:
        """Log a request that just arrived."""
        return self.log.open(request_id, self.clock(), self.wall_clock(), method, path)

    def requests(
        self, since_index: int = 0, resource_id: str | None = None, kind: str | None = None
    ) -> list[RequestRecord]:
        """Return logged /v1 requests from ``since_index`` on, optionally filtered."""
        return self.log.query(since_index, resource_id, kind)

    def stats(self) -> dict[str, Any]:
        """Count logged requests per resource id, status and kind."""
        return self.log.stats()

    def reset(self) -> None:
        """Clear the request log, faults, budget counters and webhook log (not containers)."""
        self.log.clear()
        self.clear_faults()
        self.budget.clear()
        self.webhook_log.clear()

    # --- webhooks ----------------------------------------------------------------------------

    def configure_webhooks(self, config: WebhookConfig | None) -> None:
        """Send webhooks per ``config`` from now on (None stops them)."""
        self.webhook = config

    def due_webhook_events(self) -> list[WebhookEvent]:
        """Return the events of runs that ended at least ``delay_s`` ago, each exactly once.

        Runs that end while no webhook is configured are announced to nobody.
        """
        now = self.clock()
        delay = self.webhook.delay_s if self.webhook else 0.0
        due: list[WebhookEvent] = []
        waiting: list[Run] = []
        for run in self._unannounced:
            end = run.started_mono + plan_of(run.script).end_s
            if now < end + delay:
                waiting.append(run)
            elif self.webhook is not None:
                container = self.containers[run.container_id]
                due += events_for(
                    run.started_wall + plan_of(run.script).end_s,
                    self.job(run.job_id) if run.job_id is not None else None,
                    self.container(container.id) if run is container.run else None,
                    lambda: "evt_" + ulid(self.id_rng, self.wall_clock()),
                )
        self._unannounced = waiting
        return due
