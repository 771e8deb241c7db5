"""The schemathesis run in token mode: a tenant configured, a valid capability token on every
generated request to a token-protected operation.

In token mode the document's open alternative (the empty security requirement, which applies
only with ``PROXY_AUTH=none``) does not hold, so this run drops it: the token operations then
require ``capabilityToken`` (Bearer) or ``capabilityTokenQuery`` (``?access_token=``). A custom
auth provider sends the token (minted once the simulator has picked the job ids), so
schemathesis' ``ignored_auth`` check also sends each such operation without a token and with an
invalid one in either place and expects a refusal. ``test_missing_or_bad_tokens_get_401_...``
checks those refusals in full: a 401 ``UNAUTHENTICATED`` in the documented envelope.
"""

from __future__ import annotations

import time
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from proxy.tenancy.tokens import mint_token
from proxy.web.openapi import document
from tests.contract.conftest import ADMIN_TOKEN, CONTAINERS, PROJECT, TENANT, TENANT_SECRET, Live
from tests.contract.support import REQUEST_TIMEOUT_S, call_and_validate, config, seeded_document

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TOKEN_SCHEMES = ("capabilityToken", "capabilityTokenQuery")


def _operations(doc: dict[str, Any], schemes: tuple[str, ...]) -> set[tuple[str, str]]:
    """(path, method) of every operation one of ``schemes`` may authorize."""
    return {
        (path, method)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if any(set(req) & set(schemes) for req in op.get("security", []))
    }


def token_mode_document() -> dict[str, Any]:
    """The seeded document as it holds in token mode: no open alternative on token operations."""
    doc = seeded_document()
    for path, method in _operations(doc, TOKEN_SCHEMES):
        op = doc["paths"][path][method]
        op["security"] = [req for req in op["security"] if req]
    return doc


TOKEN_OPERATIONS = _operations(document(), TOKEN_SCHEMES)
ADMIN_OPERATIONS = _operations(document(), ("adminToken",))
schema = schemathesis.openapi.from_dict(token_mode_document(), config=config())


class _Minted:
    """The live token, set by the test before the first case is sent.

    schemathesis applies auth while it generates cases (at collection), before the simulator has
    picked the job ids the token must name; cases get ``PLACEHOLDER`` then, and the test swaps
    in the real token.
    """

    PLACEHOLDER = "placeholder-until-the-live-token-is-minted"
    token = ""


def _key(ctx: Any) -> tuple[str, str]:
    return ctx.operation.path, ctx.operation.method.lower()


def _secured(ctx: Any) -> bool:
    return _key(ctx) in TOKEN_OPERATIONS | ADMIN_OPERATIONS


# A custom provider replaces the configuration's `auth` (the admin token) everywhere, so it
# sends that too.
@schema.auth(refresh_interval=None).apply_to(_secured)
class Credentials:
    """``Authorization: Bearer`` the tenant's token naming every seeded resource, or the admin
    token on the admin operations."""

    def get(self, case: Case, ctx: Any) -> str:
        if _key(case) in ADMIN_OPERATIONS:
            return ADMIN_TOKEN
        return _Minted.token or _Minted.PLACEHOLDER

    def set(self, case: Case, data: str, ctx: Any) -> None:
        headers = case.headers if isinstance(case.headers, dict) else {}
        headers["Authorization"] = f"Bearer {data}"
        case.headers = headers


@schema.parametrize()
@hypothesis.settings(
    max_examples=50,
    deadline=None,  # the request timeout bounds each case; a slow CI core must not flake it
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_api_conforms_to_its_document_in_token_mode(case: Case, live_tokens: Live) -> None:
    """Every generated request, with a valid token, gets a documented, schema-conforming answer
    and never a 5xx; without one, or with an invalid one, a refusal (``ignored_auth``)."""
    _Minted.token = live_tokens.token
    placeholder = f"Bearer {_Minted.PLACEHOLDER}"
    if isinstance(case.headers, dict) and case.headers.get("Authorization") == placeholder:
        case.headers["Authorization"] = f"Bearer {_token_for(case.path, live_tokens)}"
    call_and_validate(case, live_tokens)


def _token_for(path: str, live: Live) -> str:
    """The project token on the project routes, the one naming every seeded resource elsewhere."""
    return live.project_token if path.startswith("/v1/projects/") else live.token


def test_unknown_paths_are_404_in_token_mode(live_tokens: Live) -> None:
    """A path no route serves is 404 NOT_FOUND in token mode too, as in open mode."""
    for path in ("/nope", "/v1/nope", "/static/%C2%84", "/static/.hidden"):
        response = requests.get(live_tokens.url + path, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 404, (path, response.status_code, response.text)
        assert response.json()["error"]["code"] == "NOT_FOUND", path


def _concrete(path: str, live: Live) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A URL for ``path`` naming seeded resources the token covers; its path params, query."""
    params = {
        "containerId": CONTAINERS["running"],
        "jobId": live.jobs["running"],
        "projectId": PROJECT,
    }
    query: dict[str, Any] = {}
    if path == "/v1/content/progress":
        query = {"ids": CONTAINERS["running"]}
    elif path == "/v1/stream":
        query = {"containers": CONTAINERS["running"]}
    url = path
    for name, value in params.items():
        url = url.replace("{" + name + "}", value)
    used = {k: v for k, v in params.items() if "{" + k + "}" in path}
    return url, used, query


def _bad_credentials(live: Live) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """name -> (headers, extra query) that must each get a 401."""
    named = {"containers": list(live.containers.values()), "jobs": list(live.jobs.values())}
    expired = mint_token(
        tenant=TENANT, secret=TENANT_SECRET, ttl_s=60, now=time.time() - 3600, **named
    )
    forged = mint_token(tenant=TENANT, secret="not-the-tenant-secret-" + "x" * 40, **named)
    unknown = mint_token(tenant="nobody", secret=TENANT_SECRET, **named)
    return {
        "no token": ({}, {}),
        "not a JWT": ({"Authorization": "Bearer not-a-token"}, {}),
        "not Bearer": ({"Authorization": f"Basic {live.token}"}, {}),
        "expired": ({"Authorization": f"Bearer {expired}"}, {}),
        "wrong secret": ({"Authorization": f"Bearer {forged}"}, {}),
        "unknown tenant": ({"Authorization": f"Bearer {unknown}"}, {}),
        "bad query token": ({}, {"access_token": "not-a-token"}),
        "expired query token": ({}, {"access_token": expired}),
    }


NO_BEARER_TOKEN = ("no token", "not Bearer")  # the others send a token that is no good

RESPONSE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_missing_or_bad_tokens_get_401_in_the_envelope(live_tokens: Live) -> None:
    """Every token operation refuses a missing, malformed, expired, forged or unknown-tenant
    token (in the header or the query) with 401 UNAUTHENTICATED, in the documented envelope,
    one message for every bad token, and ``X-Request-Id`` equal to ``error.requestId``."""
    assert TOKEN_OPERATIONS, "the document names no token-protected operation"
    wrong: list[str] = []
    messages: dict[bool, set[str]] = {True: set(), False: set()}  # by "a token was sent"
    checked = 0
    for path, method in sorted(TOKEN_OPERATIONS):
        url, path_params, query = _concrete(path, live_tokens)
        operation = schema[path][method.upper()]
        for why, (headers, extra) in _bad_credentials(live_tokens).items():
            response = requests.request(
                method.upper(),
                live_tokens.url + url,
                params={**query, **extra},
                headers=headers,
                timeout=REQUEST_TIMEOUT_S,
            )
            case = operation.Case(path_parameters=path_params, query={**query, **extra})
            try:
                case.validate_response(response, checks=RESPONSE_CHECKS)
            except AssertionError as exc:
                wrong.append(f"{method} {path} ({why}): {str(exc)[:300]}")
                continue
            body = response.json() if response.status_code == 401 else {}
            error = body.get("error", {})
            if response.status_code != 401 or error.get("code") != "UNAUTHENTICATED":
                wrong.append(f"{method} {path} ({why}): {response.status_code} {response.text!r}")
                continue
            if response.headers.get("X-Request-Id") != error.get("requestId"):
                wrong.append(f"{method} {path} ({why}): X-Request-Id differs from requestId")
            messages[why not in NO_BEARER_TOKEN].add(str(error.get("message")))
            checked += 1
    assert not wrong, "\n".join(wrong)
    assert checked == len(TOKEN_OPERATIONS) * len(_bad_credentials(live_tokens)), checked
    # Missing says how to send one; every bad token gets the same message (nothing to probe).
    assert [len(messages[False]), len(messages[True])] == [1, 1], messages


def test_the_token_opens_what_it_names(live_tokens: Live) -> None:
    """The valid token reads each token operation for a seeded resource (the run above is not
    one long series of refusals)."""
    statuses = {}
    for path, method in sorted(TOKEN_OPERATIONS):
        url, _, query = _concrete(path, live_tokens)
        response = requests.request(
            method.upper(),
            live_tokens.url + url,
            params=query,
            headers={"Authorization": f"Bearer {_token_for(path, live_tokens)}"},
            timeout=REQUEST_TIMEOUT_S,
            stream=True,  # the streams run on: the status line is enough
        )
        statuses[(method, path)] = response.status_code
        response.close()
    assert set(statuses.values()) == {200}, statuses
