"""What both schemathesis runs share: the checks, the seeded document, the configuration, the
job-id swap and webhook signing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import requests
import schemathesis
from schemathesis import Case, Response

from proxy.web.openapi import document
from proxy.webhooks import sign
from tests.contract.conftest import ADMIN_TOKEN, CONTAINERS, PROJECT, WEBHOOK_SECRET, Live

WEBHOOK_PATH = "/v1/webhooks/layers"
REQUEST_TIMEOUT_S = 5.0  # also ends the read of a stream that is still running
SEED = 20260418
# Named, not "all": a schemathesis upgrade must not change what CI checks. Left out:
# positive_data_acceptance, since some valid-looking requests are refused by rules a document
# cannot state (at least one of ?containers= and ?jobs=; a body id equal to X-Layers-Event-Id).
CHECKS = (
    "unsupported_method",
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
)

# How the proxy refuses an invalid request: schemathesis' defaults plus the edge's 414 (the
# URL is longer than `max_url_bytes`, e.g. over 100 ids) and 431 (headers too large).
REJECTION_STATUSES = [
    *("400", "401", "403", "404", "405", "406", "409", "414", "415", "422", "428", "429"),
    *("431", "5xx"),
]

# The simulator picks job ids when the suite starts; examples name these and calls swap them in.
JOB_PLACEHOLDERS = {state: f"job_{n:026d}" for n, state in enumerate(CONTAINERS, 1)}


def seeded_document() -> dict[str, Any]:
    """The document with its id examples pointed at the seeded resources, in every state."""
    doc = document()
    params = doc["components"]["parameters"]
    terminal = [cid for state, cid in CONTAINERS.items() if state != "running"]
    params["containerId"]["examples"] = {s: {"value": cid} for s, cid in CONTAINERS.items()}
    params["jobId"]["examples"] = {s: {"value": jid} for s, jid in JOB_PLACEHOLDERS.items()}
    params["ids"]["examples"] = {"seeded": {"value": [*CONTAINERS.values(), "not-an-id"]}}
    params["containers"]["examples"] = {"terminal": {"value": terminal}}
    params["jobs"]["examples"] = {"completed": {"value": [JOB_PLACEHOLDERS["completed"]]}}
    params["projectId"]["examples"] = {"seeded": {"value": PROJECT}}
    return doc


def config() -> schemathesis.Config:
    """Deterministic, bounded, the named checks; the admin token for the ops routes."""
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "checks": {
                "enabled": False,
                **{name: {"enabled": True} for name in CHECKS},
                "negative_data_rejection": {
                    "enabled": True,
                    "expected-statuses": REJECTION_STATUSES,
                },
            },
            "phases": {"stateful": {"enabled": False}},
            "request-timeout": REQUEST_TIMEOUT_S,
            "max-stream-events": 2,
            "auth": {"openapi": {"adminToken": {"bearer": ADMIN_TOKEN}}},
        }
    )


def swap_job_ids(case: Case, live: Live) -> None:
    """Replace the placeholder job ids of the examples with the seeded ones."""
    real = {JOB_PLACEHOLDERS[state]: live.jobs[state] for state in JOB_PLACEHOLDERS}
    if case.path_parameters and case.path_parameters.get("jobId") in real:
        case.path_parameters["jobId"] = real[case.path_parameters["jobId"]]
    jobs = case.query.get("jobs") if case.query else None
    if isinstance(jobs, list):
        case.query["jobs"] = [real.get(j, j) if isinstance(j, str) else j for j in jobs]


def sign_if_plausible(case: Case, base_url: str) -> requests.Response:
    """Send a webhook case, validly signed when its event id is well formed.

    Without a signature every case would stop at the 401; signing the well-formed ones reaches
    the 202, 400 and 409 paths, and the rest still checks the refusal.
    """
    kwargs = case.as_transport_kwargs(base_url=base_url)
    event_id = str(kwargs["headers"].get("X-Layers-Event-Id", ""))
    if event_id.startswith("evt_") and len(event_id) == 30:
        raw = kwargs.pop("data", None)
        if "json" in kwargs:
            raw = json.dumps(kwargs.pop("json")).encode()
        raw = raw.encode() if isinstance(raw, str) else (raw or b"")
        stamp = int(time.time())
        kwargs["data"] = raw
        kwargs["headers"]["X-Layers-Signature"] = f"t={stamp},v1={sign(WEBHOOK_SECRET, stamp, raw)}"
    return requests.request(**kwargs, timeout=REQUEST_TIMEOUT_S)


def call_and_validate(
    case: Case, live: Live, known_bug: Callable[[Response], bool] | None = None
) -> None:
    """One generated case against ``live``: swap in the seeded job ids, sign webhooks, check.

    ``known_bug`` names answers a reported bug gives (a test marked xfail pins each one down);
    they are not checked here, so the rest of the run still is.
    """
    swap_job_ids(case, live)
    if case.operation.path == WEBHOOK_PATH:
        response: Response | requests.Response = sign_if_plausible(case, live.url)
        transport: dict[str, Any] | None = None
    else:
        response = case.call(base_url=live.url)
        transport = {"base_url": live.url}  # where the checks' own probes go, as in call()
    if known_bug is not None and known_bug(Response.from_any(response)):
        return
    case.validate_response(response, transport_kwargs=transport)
