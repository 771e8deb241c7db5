"""The OpenAPI document itself: valid 3.1, served as built, in step with the code it describes."""

from __future__ import annotations

import json
import re

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate
from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator

from proxy import errors
from proxy.ids import canonical_container_id, canonical_job_id
from proxy.web.openapi import (
    CACHE_CONTROL,
    CONTAINER_ID_PATTERN,
    ERROR_CODES,
    JOB_ID_PATTERN,
    METRICS_CONTENT_TYPE,
    document,
)
from proxy.web.routes import setup_routes
from tests.contract.conftest import ADMIN_TOKEN, Live


def _ecma_fullmatch(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262, where `$` is the end of input; Python's `$` would also
    # accept a trailing newline, so anchor with fullmatch instead.
    assert pattern.startswith("^") and pattern.endswith("$")
    return re.compile(pattern[1:-1])


CONTAINER_RE = _ecma_fullmatch(CONTAINER_ID_PATTERN)
JOB_RE = _ecma_fullmatch(JOB_ID_PATTERN)


def test_document_is_valid_openapi_3_1() -> None:
    """openapi-spec-validator accepts the document as OpenAPI 3.1."""
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    validate(doc, cls=OpenAPIV31SpecValidator)


def test_every_route_is_documented_and_nothing_else() -> None:
    """The document's operations are exactly the routes ``setup_routes`` registers."""
    app = web.Application()
    setup_routes(app)
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method, path) for path, item in document()["paths"].items() for method in item}
    assert documented == registered


def test_every_error_code_is_documented_at_its_status() -> None:
    """Each ``ProxyError`` kind's code is listed under its HTTP status."""
    kinds = [errors.ProxyError, *errors.ProxyError.__subclasses__()]
    assert len(kinds) > 10
    for kind in kinds:
        if kind is errors.ProxyError:
            continue
        assert kind.code in ERROR_CODES[kind.status], kind.__name__


@given(st.from_regex(CONTAINER_RE, fullmatch=True) | st.text(max_size=70))
def test_container_pattern_is_the_proxy_grammar(raw: str) -> None:
    """The document's containerId pattern accepts exactly what ``proxy.ids`` accepts."""
    assert (CONTAINER_RE.fullmatch(raw) is not None and len(raw) <= 64) == (
        canonical_container_id(raw) is not None
    )


@given(st.from_regex(JOB_RE, fullmatch=True) | st.text(max_size=40))
def test_job_pattern_is_the_proxy_grammar(raw: str) -> None:
    """The document's jobId pattern accepts exactly what ``proxy.ids`` accepts."""
    assert (JOB_RE.fullmatch(raw) is not None) == (canonical_job_id(raw) is not None)


def test_examples_are_valid_ids() -> None:
    """The id examples in the document are ids the proxy accepts."""
    params = document()["components"]["parameters"]
    for example in params["containerId"]["examples"].values():
        assert canonical_container_id(example["value"]) is not None
    for example in params["jobId"]["examples"].values():
        assert canonical_job_id(example["value"]) is not None


def test_document_is_not_shared_state() -> None:
    """Changing one copy of the document leaves the next one (and the served bytes) alone."""
    first = document()
    first["components"]["parameters"]["containerId"]["schema"]["pattern"] = "changed"
    assert document()["components"]["parameters"]["containerId"]["schema"]["pattern"] == (
        CONTAINER_ID_PATTERN
    )


@pytest.mark.integration
def test_served_document_is_the_built_one_and_cacheable(live: Live) -> None:
    """GET /openapi.json: the document as JSON, no auth needed, with ETag and a 304 on match."""
    status, headers, body = live.get("/openapi.json")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == CACHE_CONTROL
    assert json.loads(body) == document()
    etag = headers["ETag"]
    status, headers, body = live.get("/openapi.json", {"If-None-Match": etag})
    assert (status, body, headers["ETag"]) == (304, b"", etag)


@pytest.mark.integration
def test_metrics_content_type_is_the_documented_one(live: Live) -> None:
    """/metrics answers with exactly the media type the document names."""
    status, headers, _ = live.get("/metrics", {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status == 200
    assert headers["Content-Type"] == METRICS_CONTENT_TYPE
    content = document()["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == [METRICS_CONTENT_TYPE]
