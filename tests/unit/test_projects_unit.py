"""Projects, pure parts: the derived project state, project ids, tenant and token claims."""

from __future__ import annotations

import uuid

import pytest

from proxy.ids import canonical_project_id
from proxy.project_list import ENDED, KEEP_ENDED_MS, derive, members, members_with_status
from proxy.resources import JOB, PROGRESS, PROJECT
from proxy.tenancy.access import Caller
from proxy.tenancy.config import parse_tenants
from proxy.tenancy.tokens import mint_token, verify_token

pytestmark = pytest.mark.timeout(10)

P = "prj_" + str(uuid.UUID(int=7))
Q = "prj_" + str(uuid.UUID(int=8))
A = "cnt_" + str(uuid.UUID(int=1))
B = "cnt_" + str(uuid.UUID(int=2))
SECRET = "k3Q9vR2mX7pL4tW8zN1cF6hJ0sD5gB3yU7eA2iO9rT4"


def page(*items: tuple[str, str], more: bool = False) -> dict[str, object]:
    return {
        "items": [{"id": cid, "status": status} for cid, status in items],
        "nextCursor": "c" if more else None,
    }


def test_a_container_that_leaves_the_list_is_kept_as_ended_for_an_hour() -> None:
    state = derive(None, page((A, "processing"), (B, "queued")), P, 1_000)
    assert [(c["containerId"], c["endedAt"]) for c in state["containers"]] == [
        (A, None),
        (B, None),
    ]
    state = derive(state, page((A, "processing")), P, 5_000)
    assert state["containers"][1] == {"containerId": B, "status": ENDED, "endedAt": 5_000}
    # The end time is kept from the first poll that missed it, not refreshed.
    state = derive(state, page((A, "processing")), P, 9_000)
    assert state["containers"][1]["endedAt"] == 5_000
    assert members(state, 9_000, 3_000) == [(A, None)]
    assert members(state, 9_000, 4_000) == [(A, None), (B, 5_000)]
    state = derive(state, page((A, "processing")), P, 5_000 + KEEP_ENDED_MS + 1)
    assert [c["containerId"] for c in state["containers"]] == [A]


def test_the_shown_members_carry_their_status_in_the_list() -> None:
    state = derive(None, page((A, "processing"), (B, "queued")), P, 1_000)
    state = derive(state, page((A, "generating")), P, 5_000)
    assert members_with_status(state, 9_000, 3_000) == [(A, "generating")]
    assert members_with_status(state, 9_000, 4_000) == [(A, "generating"), (B, ENDED)]
    assert members_with_status({}, 9_000, 4_000) == []


def test_a_container_back_in_flight_is_listed_as_running_again() -> None:
    state = derive(derive(None, page((A, "processing")), P, 0), page(), P, 10)
    assert state["containers"][0]["status"] == ENDED
    state = derive(state, page((A, "queued")), P, 20)
    assert state["containers"] == [{"containerId": A, "status": "queued", "endedAt": None}]


def test_a_page_with_more_behind_it_says_truncated_and_ids_are_canonical() -> None:
    bare = str(uuid.UUID(int=1)).upper()
    state = derive(None, page((bare, "processing"), more=True), P, 0)
    assert state["truncated"] is True
    assert state["containers"][0]["containerId"] == A


def test_the_list_shape_refuses_items_without_a_container_id() -> None:
    assert PROJECT.problem(page((A, "processing")), P) == ""
    assert "items" in PROJECT.problem({"items": [{"id": "x", "status": "queued"}]}, P)
    assert "items" in PROJECT.problem({"items": [{"id": A}]}, P)
    assert PROJECT.upstream_path(P).startswith(f"/v1/projects/{P}/content?status=queued&")


def test_project_ids() -> None:
    assert canonical_project_id(P.upper().replace("PRJ_", "prj_")) == P
    ulid = "prj_01J0000000000000000000000a"
    assert canonical_project_id(ulid) == ulid.upper().replace("PRJ_", "prj_")
    for bad in ("prj_", "prj_x", str(uuid.UUID(int=7)), "cnt_" + str(uuid.UUID(int=7))):
        assert canonical_project_id(bad) is None


def test_tenant_projects_are_parsed_and_checked() -> None:
    entry = {"id": "acme", "secrets": [SECRET], "projects": [P]}
    [tenant] = parse_tenants([entry], source="t.toml")
    assert tenant.projects == frozenset({P})
    with pytest.raises(ValueError, match=r"projects: 'nope' is not a project id"):
        parse_tenants([{**entry, "projects": ["nope"]}], source="t.toml")
    with pytest.raises(ValueError, match="non-empty list"):
        parse_tenants([{**entry, "projects": []}], source="t.toml")


def _caller(tenant_projects: list[str] | None, **claims: list[str]) -> Caller:
    entry: dict[str, object] = {"id": "acme", "secrets": [SECRET]}
    if tenant_projects is not None:
        entry["projects"] = tenant_projects
    tenants = {t.id: t for t in parse_tenants([entry], source="t.toml")}
    token = mint_token(tenant="acme", secret=SECRET, **claims)
    return Caller(verify_token(token, tenants))


def test_who_may_watch_what() -> None:
    # No projects anywhere: exactly what the token names, no owner check.
    plain = _caller(None, containers=[A])
    assert not plain.checks_owner
    assert plain.may_watch(PROGRESS, A) and not plain.may_watch(PROGRESS, B)
    # A tenant restricted to P: a named container is checked against P.
    restricted = _caller([P], containers=[A])
    assert restricted.checks_owner
    assert restricted.owners_allowed(PROGRESS, A) == {P}
    assert not restricted.may_watch(PROGRESS, B)
    assert not restricted.may_watch(PROJECT, P)  # project views need a project token
    # A project token: anything of P (checked), and P's view; Q is outside the tenant's.
    token_p = _caller([P], projects=[P, Q])
    assert token_p.may_watch(PROGRESS, B) and token_p.owners_allowed(JOB, "job_x") == {P}
    assert token_p.may_watch(PROJECT, P) and not token_p.may_watch(PROJECT, Q)
    # A project token of a tenant without projects: any container of the token's projects.
    free = _caller(None, projects=[Q])
    assert free.owners_allowed(PROGRESS, B) == {Q} and free.may_watch(PROJECT, Q)


def test_a_project_only_token_may_omit_containers_and_jobs() -> None:
    token = mint_token(tenant="acme", secret=SECRET, projects=[P])
    assert token
    with pytest.raises(ValueError, match="at least one container, job or project"):
        mint_token(tenant="acme", secret=SECRET)
    with pytest.raises(ValueError, match="not a project id"):
        mint_token(tenant="acme", secret=SECRET, projects=["prj_nope"])
