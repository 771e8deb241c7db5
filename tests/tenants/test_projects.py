"""Tenants own projects: verified isolation, project tokens and project progress, black-box.

Every check is on what a client got and on the simulator's request log: a container outside the
tenant's projects answers exactly like a missing one, and no progress poll is ever made for it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import pytest

from proxy.tenancy.tokens import mint_token
from proxy.testing.processes import ManagedProcess
from tests.conftest import Sim
from tests.tenants.conftest import ACME_SECRET, GLOBEX_SECRET, Cluster, Reply, http, tenants_toml

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

P1 = "prj_" + str(uuid.UUID(int=1))
P2 = "prj_" + str(uuid.UUID(int=2))
LONG = [["generating_visuals", 600]]


def projects_toml() -> str:
    """acme owns project P1 only; globex has no projects (today's behaviour)."""
    return tenants_toml().replace('id = "acme"\n', f'id = "acme"\nprojects = ["{P1}"]\n', 1)


def acme(*containers: str, jobs: tuple[str, ...] = (), projects: tuple[str, ...] = ()) -> str:
    return mint_token(
        tenant="acme", secret=ACME_SECRET, containers=containers, jobs=jobs, projects=projects
    )


def globex(*containers: str, projects: tuple[str, ...] = ()) -> str:
    return mint_token(
        tenant="globex", secret=GLOBEX_SECRET, kid="g1", containers=containers, projects=projects
    )


def by_kind(sim: Sim, resource_id: str, kind: str) -> list[dict[str, Any]]:
    return [r for r in sim.requests(resource_id) if r["kind"] == kind]


def progress(proxy: ManagedProcess, cid: str, token: str) -> Reply:
    return http(f"{proxy.url}/v1/content/{cid}/progress", token=token)


def same_as_missing(denied: Reply, missing: Reply, denied_id: str, missing_id: str) -> None:
    """Status, body (but for the id) and header names equal those of a missing resource."""
    assert denied.status == missing.status == 404
    a, b = denied.json()["error"], missing.json()["error"]
    assert a["code"] == b["code"] == "NOT_FOUND"
    assert a["message"].replace(denied_id, "ID") == b["message"].replace(missing_id, "ID")
    assert set(a) == set(b)
    vary = {"x-request-id", "date"}
    assert {k.lower() for k in denied.headers} == {k.lower() for k in missing.headers}
    for name, value in missing.headers.items():
        if name.lower() not in vary | {"content-length"}:
            assert denied.headers[name] == value, name


def other_cid() -> str:
    return "cnt_" + str(uuid.uuid4())


@pytest.fixture
def projects(cluster_factory: Callable[..., Cluster]) -> Cluster:
    # A budget well above what these tests spend, so cold fetches never queue behind it.
    return cluster_factory(projects_toml(), LAYERS_RATE_PER_MIN="1200")


def test_a_container_of_another_project_is_a_404_like_a_missing_one(
    projects: Cluster, sim: Sim
) -> None:
    """A token naming another tenant's container gets the missing-container 404, no poll."""
    proxy = projects.start()
    mine, _ = sim.container(LONG, projectId=P1)
    theirs, _ = sim.container(LONG, projectId=P2)
    missing = other_cid()
    token = acme(mine, theirs, missing)

    assert progress(proxy, mine, token).status == 200
    denied = progress(proxy, theirs, token)
    same_as_missing(denied, progress(proxy, missing, token), theirs, missing)
    for _ in range(5):
        assert progress(proxy, theirs, token).status == 404
    assert by_kind(sim, theirs, "progress") == []
    assert len(by_kind(sim, theirs, "container")) == 1  # looked up once, remembered
    assert len(by_kind(sim, mine, "container")) == 1


def test_a_project_token_allows_that_projects_containers_and_jobs_only(
    projects: Cluster, sim: Sim
) -> None:
    """A project-only token reaches P1's containers and jobs; P2's are 404 without a poll."""
    proxy = projects.start()
    mine, my_job = sim.container(LONG, projectId=P1)
    theirs, their_job = sim.container(LONG, projectId=P2)
    token = acme(projects=(P1,))

    assert progress(proxy, mine, token).json()["containerId"] == mine
    assert http(f"{proxy.url}/v1/jobs/{my_job}", token=token).json()["jobId"] == my_job
    assert progress(proxy, theirs, token).status == 404
    assert http(f"{proxy.url}/v1/jobs/{their_job}", token=token).status == 404
    assert by_kind(sim, theirs, "progress") == []
    assert [r["kind"] for r in sim.requests(their_job)] == ["job"]  # the owner lookup only
    # A token naming a project outside the tenant's own gets nothing, not even with the id.
    outside = acme(theirs, projects=(P2,))
    assert progress(proxy, theirs, outside).status == 404
    assert by_kind(sim, theirs, "progress") == []


def test_tenants_without_projects_keep_todays_behaviour(projects: Cluster, sim: Sim) -> None:
    """globex has no projects: what its token names is served with no owner lookup."""
    proxy = projects.start()
    cid, _ = sim.container(LONG, projectId=P2)
    assert progress(proxy, cid, globex(cid)).status == 200
    assert by_kind(sim, cid, "container") == []


async def test_the_owner_lookup_is_one_request_cluster_wide(projects: Cluster, sim: Sim) -> None:
    """120 first requests over 3 replicas make one record lookup and one progress poll."""
    replicas = [projects.start() for _ in range(3)]
    cid, _ = sim.container(LONG, projectId=P1)
    token = acme(cid)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:

        async def one(i: int) -> int:
            url = f"{replicas[i % 3].url}/v1/content/{cid}/progress"
            async with session.get(url) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(one(i) for i in range(120)))
    assert set(statuses) == {200}
    assert len(by_kind(sim, cid, "container")) == 1
    assert len(by_kind(sim, cid, "progress")) == 1


def test_a_failing_lookup_is_a_503_never_a_grant(projects: Cluster, sim: Sim) -> None:
    """While the record cannot be read the answer is 503 UNAVAILABLE; then the real verdict."""
    proxy = projects.start()
    theirs, _ = sim.container(LONG, projectId=P2)
    sim.fault(kind="status", status=500, path_contains=f"/v1/content/{theirs}")
    token = acme(theirs)
    failed = progress(proxy, theirs, token)
    assert failed.status == 503, failed.body
    assert failed.json()["error"]["code"] == "UNAVAILABLE"
    assert "Retry-After" in failed.headers
    sim.clear_faults()
    deadline = time.monotonic() + 30
    while (reply := progress(proxy, theirs, token)).status == 503:
        assert time.monotonic() < deadline, reply.body
        time.sleep(0.2)
    assert reply.status == 404
    assert by_kind(sim, theirs, "progress") == []


def test_project_progress_lists_in_flight_and_just_finished_containers(
    projects: Cluster, sim: Sim
) -> None:
    """The project view shows what runs and what ended recently; the list is polled slowly."""
    proxy = projects.start(PROXY_PROJECT_POLL_S="4")
    running, _ = sim.container(LONG, projectId=P1)
    short, _ = sim.container([["generating_visuals", 3]], projectId=P1)
    elsewhere, _ = sim.container(LONG, projectId=P2)
    token = acme(projects=(P1,))
    url = f"{proxy.url}/v1/projects/{P1}/progress"

    first = http(url, token=token)
    assert first.status == 200, first.body
    assert first.json()["projectId"] == P1
    assert {i["containerId"] for i in first.json()["items"]} == {running, short}
    # The short one ends; it stays in the view (ended within the window) with its final body.
    deadline = time.monotonic() + 30
    while True:
        items = {i["containerId"]: i for i in http(url, token=token).json()["items"]}
        if items.get(short, {}).get("status") == "completed":
            break
        assert time.monotonic() < deadline, items
        time.sleep(0.3)
    assert set(items) == {running, short}
    assert elsewhere not in items
    # The list keeps its own slow cadence (4 s here) while somebody watches.
    while len(lists := [r for r in sim.requests(P1) if r["kind"] == "project_content"]) < 3:
        assert time.monotonic() < deadline + 15, lists
        assert http(url, token=token).status == 200
        time.sleep(0.3)
    gaps = [b["t_wall"] - a["t_wall"] for a, b in itertools.pairwise(lists)]
    assert all(3.9 <= g <= 6.0 for g in gaps), gaps
    # Another project is a 404 for this token, and costs no upstream request.
    other = http(f"{proxy.url}/v1/projects/{P2}/progress", token=token)
    assert other.status == 404
    assert [r for r in sim.requests(P2) if r["kind"] == "project_content"] == []


def test_streams_check_ownership_before_anything_is_fetched(projects: Cluster, sim: Sim) -> None:
    """A single or multiplexed stream naming another project's container is the same 404."""
    proxy = projects.start()
    mine, _ = sim.container(LONG, projectId=P1)
    theirs, _ = sim.container(LONG, projectId=P2)
    token = acme(mine, theirs)
    single = http(f"{proxy.url}/v1/content/{theirs}/progress/stream", token=token)
    assert single.status == 404, single.body
    many = http(f"{proxy.url}/v1/stream?containers={mine},{theirs}", token=token)
    assert many.status == 404, many.body
    assert by_kind(sim, theirs, "progress") == []


def test_the_token_command_mints_project_tokens(projects: Cluster) -> None:
    """``layers-proxy token --project`` puts the canonical project ids in the claim."""
    mixed_case = P1.upper().replace("PRJ_", "prj_")
    command = ["token", "--config", str(projects.config), "--tenant", "acme"]
    out = subprocess.run(
        [sys.executable, "-m", "proxy", *command, "--project", mixed_case],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    claims = jwt.decode(out.stdout.strip(), options={"verify_signature": False})
    assert claims["projects"] == [P1]
    assert claims["containers"] == [] and claims["jobs"] == []


async def next_event(lines: aiohttp.StreamReader, deadline: float) -> tuple[str, Any]:
    """The next ``event:``/``data:`` pair of an SSE stream (comments and ids skipped)."""
    event = ""
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "no event in time"
        raw = await asyncio.wait_for(lines.readline(), left)
        assert raw, "the stream ended"
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event:
            return event, json.loads(line[6:])


async def test_a_project_stream_follows_containers_appearing_and_ending(
    projects: Cluster, sim: Sim
) -> None:
    """Members first, then a container created later appears, and one that ends says so."""
    proxy = projects.start(PROXY_PROJECT_POLL_S="1")
    running, _ = sim.container(LONG, projectId=P1)
    short, _ = sim.container([["generating_visuals", 3]], projectId=P1)
    sim.container(LONG, projectId=P2)
    token = acme(projects=(P1,))
    url = f"{proxy.url}/v1/projects/{P1}/stream?access_token={token}"
    announced: list[dict[str, str]] = []
    progress_of: dict[str, list[str]] = {}
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        deadline = time.monotonic() + 40
        late: str | None = None
        while True:
            try:
                event, data = await next_event(resp.content, deadline)
            except (TimeoutError, AssertionError) as exc:
                raise AssertionError((announced, progress_of, late)) from exc
            if event == "container":
                announced.append(data)
            elif event == "progress":
                progress_of.setdefault(data["containerId"], []).append(data["status"])
            if late is None and len(announced) >= 2:
                late, _ = sim.container(LONG, projectId=P1)  # created after the stream opened
            ended = {"containerId": short, "status": "completed"}
            finished = ended in announced and progress_of.get(short, [""])[-1] == "completed"
            if late and finished and any(a["containerId"] == late for a in announced):
                break
    ids = {a["containerId"] for a in announced}
    assert ids == {running, short, late}  # nothing of P2
    assert announced[:2] == [
        {"containerId": running, "status": "processing"},
        {"containerId": short, "status": "processing"},
    ] or {a["containerId"] for a in announced[:2]} == {running, short}
    assert progress_of[short][-1] == "completed"
    assert announced.count({"containerId": short, "status": "completed"}) == 1
