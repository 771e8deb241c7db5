"""The /v1 surface over real HTTP: auth, 404s, budget, ETags, the request log, regenerate."""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from proxy.simulator import DEFAULT_KEY, KeySpec, ManualClock, RunningSimulator, SimulatorState

UUID = "0b6f3c2e-1d4a-4e8b-9c7d-5a6b7c8d9e0f"
BEARER = {"Authorization": f"Bearer {DEFAULT_KEY}"}


async def get(
    session: aiohttp.ClientSession, sim: RunningSimulator, path: str, **headers: str
) -> tuple[int, Mapping[str, str], Any]:
    """GET ``path`` and return status, headers and the decoded JSON (None when empty)."""
    merged = {**BEARER, **{k.replace("_", "-"): v for k, v in headers.items()}}
    async with session.get(sim.url + path, headers=merged) as response:
        raw = await response.read()
        body = await response.json() if raw else None
        return response.status, response.headers.copy(), body


async def test_progress_body_has_exactly_the_documented_fields(
    sim: RunningSimulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """/progress answers the six-field flat body, plus request-id and rate-limit headers."""
    cid, _ = sim.state.add_container()
    clock.advance(8.88)
    status, headers, body = await get(session, sim, f"/v1/content/{cid}/progress")
    assert status == 200
    assert body == {
        "containerId": cid,
        "status": "processing",
        "stage": "generating_visuals",
        "stageProgress": 0.42,
        "etaSeconds": 12,
        "updatedAt": "2026-04-18T09:30:08Z",
    }
    assert headers["X-Request-Id"].startswith("req_")
    assert len(headers["X-Request-Id"]) == 30
    assert headers["X-RateLimit-Endpoint-Class"] == "read-light"
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("120", "119")
    assert headers["X-RateLimit-Reset"] == "60"


async def test_accepted_container_id_forms(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    """A bare uuid, cnt_<uuid> and cnt_<ULID> all resolve; the body names the cnt_ form."""
    sim.state.add_container(container_id=UUID)
    sim.state.add_container(container_id="cnt_01HXZ9ABCDEFGHJKMNPQRSTVWX")
    for raw, canonical in [
        (UUID, f"cnt_{UUID}"),
        (f"cnt_{UUID}", f"cnt_{UUID}"),
        ("cnt_01HXZ9ABCDEFGHJKMNPQRSTVWX", "cnt_01HXZ9ABCDEFGHJKMNPQRSTVWX"),
    ]:
        status, _, body = await get(session, sim, f"/v1/content/{raw}/progress")
        assert (status, body["containerId"]) == (200, canonical)


async def test_unknown_and_foreign_containers_are_404_envelopes(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    """Unknown ids, malformed ids and other orgs' containers all get the NOT_FOUND envelope."""
    foreign, _ = sim.state.add_container(org="org_other")
    for path in [
        f"/v1/content/cnt_{UUID}/progress",
        "/v1/content/not-an-id/progress",
        f"/v1/content/{foreign}/progress",
        f"/v1/content/{foreign}",
        "/v1/jobs/job_01HXZ9ABCDEFGHJKMNPQRSTVWX",
    ]:
        status, headers, body = await get(session, sim, path)
        assert status == 404
        assert headers["Content-Type"].startswith("application/json")
        assert body == {
            "error": {
                "code": "NOT_FOUND",
                "message": body["error"]["message"],
                "requestId": headers["X-Request-Id"],
                "details": {},
            }
        }


async def test_missing_and_unknown_keys_are_401(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    """No key or an unknown key gives 401 UNAUTHENTICATED and spends no budget."""
    cid, _ = sim.state.add_container()
    async with session.get(f"{sim.url}/v1/content/{cid}/progress") as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "UNAUTHENTICATED"
    status, _, body = await get(session, sim, f"/v1/content/{cid}/progress", X_Api_Key="x")
    assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")
    assert sim.state.peek_budget(DEFAULT_KEY).remaining == 120


async def test_x_api_key_wins_over_bearer(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    """When both headers are sent, X-Api-Key decides."""
    cid, _ = sim.state.add_container()
    path = f"/v1/content/{cid}/progress"
    bad_bearer = {"Authorization": "Bearer wrong", "X-Api-Key": DEFAULT_KEY}
    async with session.get(sim.url + path, headers=bad_bearer) as response:
        assert response.status == 200
    bad_api_key = {"Authorization": f"Bearer {DEFAULT_KEY}", "X-Api-Key": "wrong"}
    async with session.get(sim.url + path, headers=bad_api_key) as response:
        assert response.status == 401


async def test_scopes_and_child_orgs(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    """A jobs-only key is 403 on /progress; the org header works only for listed child orgs."""
    key = "lp_live_childkey00000001_" + "s" * 43
    sim.state.add_key(
        key, KeySpec(scopes=("jobs:read",), org="org_parent", child_orgs=("org_kid",))
    )
    cid, job_id = sim.state.add_container(org="org_kid")
    auth = {"Authorization": f"Bearer {key}"}
    async with session.get(f"{sim.url}/v1/content/{cid}/progress", headers=auth) as response:
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "FORBIDDEN_SCOPE"
    job_path = f"{sim.url}/v1/jobs/{job_id}"
    async with session.get(job_path, headers=auth) as response:
        assert response.status == 404  # the parent org cannot see the child's job
    as_kid = {**auth, "X-Layers-Organization": "org_kid"}
    async with session.get(job_path, headers=as_kid) as response:
        assert response.status == 200
    as_stranger = {**auth, "X-Layers-Organization": "org_stranger"}
    async with session.get(job_path, headers=as_stranger) as response:
        assert response.status == 403


async def test_budget_of_five_refuses_the_sixth(
    sim: RunningSimulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """At 5/min the 6th GET is 429 RATE_LIMITED with Retry-After; a minute later it works."""
    sim.state.set_budget(rate_per_min=5)
    cid, _ = sim.state.add_container()
    statuses = []
    for _ in range(5):
        statuses.append((await get(session, sim, f"/v1/content/{cid}/progress"))[0])
        clock.advance(1.0)
    status, headers, body = await get(session, sim, f"/v1/content/{cid}/progress")
    assert statuses == [200] * 5
    assert status == 429
    assert body["error"]["code"] == "RATE_LIMITED"
    assert headers["Retry-After"] == "55"
    assert body["error"]["details"] == {"retryAfterSeconds": 55}
    assert headers["X-RateLimit-Remaining"] == "0"
    clock.advance(55.0)
    assert (await get(session, sim, f"/v1/content/{cid}/progress"))[0] == 200


async def test_404s_spend_budget(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    """A 404 still spends one read."""
    sim.state.set_budget(rate_per_min=2)
    for _ in range(2):
        assert (await get(session, sim, f"/v1/content/cnt_{UUID}/progress"))[0] == 404
    assert (await get(session, sim, f"/v1/content/cnt_{UUID}/progress"))[0] == 429


async def test_retry_after_as_http_date(
    sim: RunningSimulator, session: aiohttp.ClientSession, state: SimulatorState
) -> None:
    """With the http-date format, Retry-After is an IMF date 60 s after the first spend."""
    state.set_budget(rate_per_min=1, retry_after_format="http-date")
    await get(session, sim, "/v1/whoami")
    status, headers, _ = await get(session, sim, "/v1/whoami")
    assert status == 429
    when = parsedate_to_datetime(headers["Retry-After"]).timestamp()
    assert when == state.wall_clock() + 60


async def test_job_etag_and_304(
    sim: RunningSimulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Jobs carry a strong ETag; a matching If-None-Match is 304, counted and logged."""
    _, job_id = sim.state.add_container()
    path = f"/v1/jobs/{job_id}"
    status, headers, body = await get(session, sim, path)
    etag = headers["ETag"]
    assert (status, body["status"]) == (200, "running")
    assert etag.startswith('"') and not etag.startswith("W/")
    status, headers, body = await get(session, sim, path, If_None_Match=etag)
    assert (status, body, headers["ETag"]) == (304, None, etag)
    assert headers["X-RateLimit-Remaining"] == "118"
    clock.advance(10.0)  # the job advanced: the old tag no longer matches
    status, headers, _ = await get(session, sim, path, If_None_Match=etag)
    assert status == 200
    assert headers["ETag"] != etag
    log = sim.state.requests(kind="job")
    assert [(r.status, r.if_none_match) for r in log] == [(200, None), (304, etag), (200, etag)]


async def test_progress_has_no_etag_unless_enabled(
    sim: RunningSimulator, session: aiohttp.ClientSession, state: SimulatorState
) -> None:
    """/progress sends no ETag by default; adding "progress" to etag_kinds turns it on."""
    cid, _ = state.add_container()
    _, headers, _ = await get(session, sim, f"/v1/content/{cid}/progress")
    assert "ETag" not in headers
    state.etag_kinds = frozenset({"job", "progress"})
    _, headers, _ = await get(session, sim, f"/v1/content/{cid}/progress")
    status, _, _ = await get(
        session, sim, f"/v1/content/{cid}/progress", If_None_Match=headers["ETag"]
    )
    assert status == 304


async def test_request_log_records_every_v1_request_without_the_key(
    sim: RunningSimulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Each /v1 request is logged with kind, resource, status, key id and org; never the key."""
    cid, job_id = sim.state.add_container()
    await get(session, sim, f"/v1/content/{cid}/progress")
    clock.advance(2.5)
    await get(session, sim, f"/v1/content/{cid}")
    await get(session, sim, f"/v1/jobs/{job_id}")
    async with session.get(f"{sim.url}/v1/jobs/{job_id}") as response:
        assert response.status == 401
    records = [r.to_json() for r in sim.state.requests()]
    assert [(r["kind"], r["resource_id"], r["status"]) for r in records] == [
        ("progress", cid, 200),
        ("container", cid, 200),
        ("job", job_id, 200),
        ("job", job_id, 401),
    ]
    assert records[0]["t_mono"] == 1000.0
    assert records[1]["t_mono"] == 1002.5
    assert [r["key_id"] for r in records] == ["simulatorkey0001"] * 3 + [None]
    assert [r["org"] for r in records] == ["org_default"] * 3 + [None]
    assert DEFAULT_KEY not in str(records)
    async with session.get(f"{sim.url}/_sim/requests?since_index=1&resource_id={cid}") as response:
        page = await response.json()
    assert [r["index"] for r in page["requests"]] == [1]
    assert page["next_index"] == 4
    async with session.get(f"{sim.url}/_sim/stats") as response:
        stats = await response.json()
    assert stats["by_resource"] == {cid: 2, job_id: 2}
    assert stats["by_status"] == {"200": 3, "401": 1}


async def test_container_record_reports_last_error(
    sim: RunningSimulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """A failed container's record has lastError; its /progress body has no error detail."""
    async with session.post(
        f"{sim.url}/_sim/containers",
        json={"stages": [["generating_visuals", 10]], "ending": "failed", "error_code": "X_FAIL"},
    ) as response:
        assert response.status == 201
        cid = (await response.json())["containerId"]
    clock.advance(3.0)
    _, _, progress = await get(session, sim, f"/v1/content/{cid}/progress")
    _, _, record = await get(session, sim, f"/v1/content/{cid}")
    assert (progress["status"], progress["stageProgress"]) == ("failed", 0.3)
    assert set(progress) == {
        "containerId",
        "status",
        "stage",
        "stageProgress",
        "etaSeconds",
        "updatedAt",
    }
    assert record["lastError"] == {"code": "X_FAIL", "message": "The job failed."}


async def test_regenerate_reruns_in_place(
    sim: RunningSimulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Regenerate brings a completed container back to in-progress under the same id."""
    async with session.post(f"{sim.url}/_sim/containers", json={}) as response:
        created = await response.json()
    cid, first_job = created["containerId"], created["jobId"]
    async with session.post(f"{sim.url}/_sim/containers/{cid}/regenerate") as response:
        assert response.status == 409  # still running
    clock.advance(20.0)
    _, _, before = await get(session, sim, f"/v1/content/{cid}")
    async with session.post(f"{sim.url}/_sim/containers/{cid}/regenerate") as response:
        regenerated = await response.json()
    assert regenerated["containerId"] == cid
    assert regenerated["jobId"] != first_job
    _, _, progress = await get(session, sim, f"/v1/content/{cid}/progress")
    assert (progress["status"], progress["stage"]) == ("queued", "queued")
    _, _, old_job = await get(session, sim, f"/v1/jobs/{first_job}")
    assert old_job["status"] == "completed"  # terminal job states never change
    clock.advance(20.0)
    _, _, after = await get(session, sim, f"/v1/content/{cid}")
    assert after["status"] == "completed"
    assert after["assets"][0]["url"] != before["assets"][0]["url"]


async def test_cancel_through_the_control_api(
    sim: RunningSimulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """A cancel is accepted mid-run and lands at the stage boundary; later ones are refused."""
    async with session.post(f"{sim.url}/_sim/containers", json={}) as response:
        cid = (await response.json())["containerId"]
    clock.advance(4.0)
    async with session.post(f"{sim.url}/_sim/containers/{cid}/cancel") as response:
        assert (await response.json())["accepted"] is True
    clock.advance(13.0)
    _, _, body = await get(session, sim, f"/v1/content/{cid}/progress")
    assert (body["status"], body["stage"], body["stageProgress"]) == (
        "canceled",
        "generating_visuals",
        1.0,
    )
    async with session.post(f"{sim.url}/_sim/containers/{cid}/cancel") as response:
        assert (await response.json())["accepted"] is False


async def test_control_api_validation_uses_the_envelope(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    """Bad control input is a 422 VALIDATION envelope; unknown containers are 404."""
    async with session.post(f"{sim.url}/_sim/containers", json={"ending": "exploded"}) as response:
        assert response.status == 422
        assert (await response.json())["error"]["code"] == "VALIDATION"
    async with session.post(f"{sim.url}/_sim/containers/cnt_{UUID}/cancel") as response:
        assert response.status == 404
    async with session.post(f"{sim.url}/_sim/faults", data=b"{not json") as response:
        assert response.status == 422


async def test_control_keys_budget_and_clock(
    sim: RunningSimulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Keys and budgets set over /_sim take effect; /_sim/clock reports the injected clock."""
    key = "lp_test_addedkey00000001_" + "k" * 43
    async with session.post(
        f"{sim.url}/_sim/keys", json={"key": key, "scopes": ["content:read"], "rate_per_min": 1}
    ) as response:
        assert (await response.json())["keyId"] == "addedkey00000001"
    auth = {"Authorization": f"Bearer {key}"}
    statuses = []
    for _ in range(2):
        async with session.get(f"{sim.url}/v1/whoami", headers=auth) as response:
            statuses.append(response.status)
    assert statuses == [200, 429]
    async with session.post(f"{sim.url}/_sim/budget", json={"rate_per_min": 7}) as response:
        assert (await response.json())["rate_per_min"] == 7
    clock.advance(1.5)
    async with session.get(f"{sim.url}/_sim/clock") as response:
        assert await response.json() == {"mono": 1001.5, "wall": clock.wall()}


async def test_reset_clears_the_log_and_budget(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    """POST /_sim/reset empties the log and refills the budget."""
    sim.state.set_budget(rate_per_min=1)
    await get(session, sim, "/v1/whoami")
    assert (await get(session, sim, "/v1/whoami"))[0] == 429
    async with session.post(f"{sim.url}/_sim/reset") as response:
        assert response.status == 200
    assert sim.state.requests() == []
    assert (await get(session, sim, "/v1/whoami"))[0] == 200


async def test_request_log_filter_accepts_any_id_spelling(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    """/_sim/requests?resource_id= matches a bare uuid against the logged cnt_<uuid>."""
    sim.state.add_container(container_id=UUID)
    await get(session, sim, f"/v1/content/{UUID}/progress")
    await get(session, sim, "/v1/whoami")
    async with session.get(f"{sim.url}/_sim/requests?resource_id={UUID}") as response:
        page = await response.json()
    assert [(r["resource_id"], r["path"]) for r in page["requests"]] == [
        (f"cnt_{UUID}", f"/v1/content/{UUID}/progress")
    ]


async def test_whoami_reports_the_acting_org(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    """whoami names the key id and, when acting for a child org, the parent org."""
    key = "lp_test_parentkey0000001_" + "p" * 43
    sim.state.add_key(key, KeySpec(org="org_parent", child_orgs=("org_kid",)))
    headers = {"Authorization": f"Bearer {key}", "X-Layers-Organization": "org_kid"}
    async with session.get(f"{sim.url}/v1/whoami", headers=headers) as response:
        body = await response.json()
    assert (body["organizationId"], body["parentOrganizationId"]) == ("org_kid", "org_parent")
    assert body["apiKeyId"] == "parentkey0000001"
