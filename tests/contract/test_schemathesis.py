"""Property-based run of the OpenAPI document against a live open-mode proxy and simulator.

schemathesis generates valid and invalid requests for every operation (the examples, pointed at
the seeded resources in every state, then coverage and fuzzing) and checks each answer against
the document: no 5xx, documented status codes, content types, headers and bodies (SSE events
included, their JSON `data` against its `contentSchema`). Bounded: 50 generated cases per
operation, a request timeout, at most two events read per stream. Deterministic: derandomized
generation and a fixed seed. ``test_schemathesis_tokens.py`` runs the same in token mode.
"""

from __future__ import annotations

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import Case

from proxy.web.openapi import document
from tests.contract.conftest import CONTAINERS, PROJECT, Live
from tests.contract.support import REQUEST_TIMEOUT_S, call_and_validate, config, seeded_document

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

schema = schemathesis.openapi.from_dict(seeded_document(), config=config())


@schema.parametrize()
@hypothesis.settings(
    max_examples=50,
    deadline=None,  # the request timeout bounds each case; a slow CI core must not flake it
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_api_conforms_to_its_document(case: Case, live: Live) -> None:
    """Every generated request gets a documented, schema-conforming answer and never a 5xx."""
    call_and_validate(case, live)


def test_undeclared_methods_get_405_with_allow(live: Live) -> None:
    """A method a path does not declare gets 405 with ``Allow`` naming the ones it does."""
    doc = document()
    missing = []
    for path, item in doc["paths"].items():
        concrete = path.replace("{containerId}", CONTAINERS["completed"])
        concrete = concrete.replace("{jobId}", live.jobs["completed"])
        concrete = concrete.replace("{name}", "layers-progress.js")
        concrete = concrete.replace("{projectId}", PROJECT)
        response = requests.request("TRACE", live.url + concrete, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 405, path
        allow = {m.strip().lower() for m in response.headers.get("Allow", "").split(",")}
        if not set(item) <= allow:
            missing.append(path)
    assert not missing, f"405 without a complete Allow header on {missing}"
