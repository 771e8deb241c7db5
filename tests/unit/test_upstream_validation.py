"""What the upstream client lets through: validated 200s, bounded bodies, no key anywhere."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
import pytest

from proxy.redaction import REDACTED, Secret
from proxy.resources import JOB, PROGRESS, ResourceRef
from proxy.upstream.client import Outcome, RawResponse, UpstreamClient, UpstreamResult

KEY = "lp_live_abcdefghijklmnop_" + "S" * 43
UUID = "3f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f"
CID = f"cnt_{UUID}"
JOB_ID = "job_01HXZ9ABCDEFGHJKMNPQRSTVWX"
PROGRESS_REF = ResourceRef(PROGRESS, CID)
JOB_REF = ResourceRef(JOB, JOB_ID)

Answer = Callable[[str, Mapping[str, str]], RawResponse]
DROP = object()  # a field value meaning "leave the field out"


class ScriptedTransport:
    """Answers every GET with ``answer(url, headers)``: a reflecting upstream when asked to."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.calls = 0

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> RawResponse:
        self.calls += 1
        return self.answer(url, headers)

    async def close(self) -> None:
        return None


def client(answer: Answer, **options: Any) -> UpstreamClient:
    return UpstreamClient(
        base_url="http://layers.test",
        api_key=Secret(KEY),
        transport=ScriptedTransport(answer),
        timeout_s=5,
        wall_clock=lambda: 1_700_000_000.0,
        **options,
    )


def answering(body: Any, status: int = 200, **headers: str) -> Answer:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return lambda url, sent: RawResponse(status, headers, raw)


def progress(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "containerId": CID,
        "status": "processing",
        "stage": "generating_visuals",
        "stageProgress": 0.42,
        "etaSeconds": 38,
        "updatedAt": "2026-04-18T09:30:04Z",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not DROP}


def job(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobId": JOB_ID,
        "kind": "content_generate",
        "status": "running",
        "stage": "generating_visuals",
        "progress": 0.42,
        "startedAt": "2026-04-18T09:30:00Z",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not DROP}


async def fetch(body: Any, ref: ResourceRef = PROGRESS_REF) -> UpstreamResult:
    return await client(answering(body)).fetch(ref)


async def fetch_status(status: int, body: Any) -> UpstreamResult:
    return await client(answering(body, status=status)).fetch(PROGRESS_REF)


# -- progress -------------------------------------------------------------------------------------


async def test_a_valid_body_is_forwarded_byte_for_byte() -> None:
    """Nothing to redact: the upstream's exact bytes (spacing, extra fields) are kept."""
    raw = b'{ "containerId": "%s", "status": "queued", "stage": "queued", ' % CID.encode()
    raw += b'"stageProgress": 0, "etaSeconds": null, "newField": [1, 2] }'
    result = await fetch(raw)
    assert (result.outcome, result.body) == (Outcome.OK, raw)
    assert result.parsed["newField"] == [1, 2]


@pytest.mark.parametrize(
    "body_id", [UUID, UUID.upper(), CID, f"cnt_{UUID.upper()}"], ids=["bare", "BARE", "cnt", "CNT"]
)
async def test_either_id_form_names_the_container(body_id: str) -> None:
    """A bare UUID and cnt_<uuid>, in any case, are the same container."""
    assert (await fetch(progress(containerId=body_id))).outcome is Outcome.OK


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"containerId": DROP}, "missing field containerId"),
        ({"status": DROP}, "missing field status"),
        ({"stage": DROP}, "missing field stage"),
        ({"stageProgress": DROP}, "missing field stageProgress"),
        ({"containerId": 7}, "field containerId is not a string"),
        ({"status": ""}, "field status is not a non-empty string"),
        ({"status": None}, "field status is not a non-empty string"),
        ({"stage": None}, "field stage is not a string"),
        ({"stageProgress": 1.01}, "field stageProgress is not a number in [0, 1]"),
        ({"stageProgress": -0.01}, "field stageProgress is not a number in [0, 1]"),
        ({"stageProgress": "0.4"}, "field stageProgress is not a number in [0, 1]"),
        ({"stageProgress": True}, "field stageProgress is not a number in [0, 1]"),
        ({"etaSeconds": -1}, "field etaSeconds is not null or a number >= 0"),
        ({"etaSeconds": "soon"}, "field etaSeconds is not null or a number >= 0"),
        ({"updatedAt": 1776504600}, "field updatedAt is not a string"),
        ({"containerId": "cnt_0b6f3c2e-1d4a-4e8b-9c7d-5a6b7c8d9e0f"}, "containerId mismatch"),
        ({"containerId": "not-an-id"}, "containerId mismatch"),
    ],
)
async def test_an_invalid_progress_body_is_bad(changes: dict[str, Any], detail: str) -> None:
    """Missing, mistyped, out-of-range or foreign: BAD_BODY with a detail naming the field."""
    result = await fetch(progress(**changes))
    assert (result.outcome, result.detail, result.body) == (Outcome.BAD_BODY, detail, b"")
    assert result.sample.startswith("{")


@pytest.mark.parametrize(
    ("changes", "outcome"),
    [
        ({"etaSeconds": None}, Outcome.OK),
        ({"etaSeconds": DROP, "updatedAt": DROP}, Outcome.OK),
        ({"stageProgress": 1}, Outcome.OK),
        ({"stageProgress": 0.0}, Outcome.OK),
        ({"status": "paused_for_review"}, Outcome.OK),  # new status words are tolerated
    ],
)
async def test_documented_edge_values_are_fine(changes: dict[str, Any], outcome: Outcome) -> None:
    """null eta, integer fractions and unknown statuses pass."""
    assert (await fetch(progress(**changes))).outcome is outcome


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"<html>502</html>", "unparseable body"),
        (b'{"containerId": "', "unparseable body"),
        (b"[1, 2]", "body is not a JSON object"),
        (b'"text"', "body is not a JSON object"),
    ],
)
async def test_non_objects_are_bad(raw: bytes, detail: str) -> None:
    """Garbage, cut JSON and non-objects are BAD_BODY."""
    result = await fetch(raw)
    assert (result.outcome, result.detail) == (Outcome.BAD_BODY, detail)


# -- jobs and the container record ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (job(), ""),
        (job(jobId=JOB_ID.lower()), ""),
        (job(status="completed", stage=DROP, progress=DROP, result={"containerId": CID}), ""),
        (job(jobId=DROP), "missing field jobId"),
        (job(kind=DROP), "missing field kind"),
        (job(status=DROP), "missing field status"),
        (job(jobId="job_01HXZ9ABCDEFGHJKMNPQRSTVWY"), "jobId mismatch"),
        (job(progress=1.5), "field progress is not a number in [0, 1]"),
        (job(error="boom"), "field error is not an object or null"),
    ],
)
async def test_job_envelopes(body: dict[str, Any], detail: str) -> None:
    """Jobs need jobId (the one asked for), kind and status; typed optional fields."""
    result = await fetch(body, JOB_REF)
    assert result.detail == detail
    assert result.outcome is (Outcome.BAD_BODY if detail else Outcome.OK)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"id": UUID, "status": "failed", "lastError": {"code": "X"}}, ""),
        ({"id": CID, "lastError": None}, ""),
        ({"id": "cnt_0b6f3c2e-1d4a-4e8b-9c7d-5a6b7c8d9e0f", "lastError": None}, "id mismatch"),
        ({"containerId": CID}, "missing field id"),
        ({"id": CID, "lastError": "boom"}, "field lastError is not an object or null"),
    ],
)
async def test_the_container_record_is_checked_by_its_path(
    body: dict[str, Any], detail: str
) -> None:
    """fetch_path on /v1/content/{id} (the lastError read) checks the record's id."""
    result = await client(answering(body)).fetch_path(f"/v1/content/{CID}", org=None)
    assert result.detail == detail
    assert result.outcome is (Outcome.BAD_BODY if detail else Outcome.OK)


async def test_other_paths_need_only_an_object() -> None:
    """A path with no known shape passes any JSON object, not an array."""
    ok = await client(answering({"anything": 1})).fetch_path("/v1/whoami", org=None)
    bad = await client(answering([1])).fetch_path("/v1/whoami", org=None)
    assert (ok.outcome, bad.outcome) == (Outcome.OK, Outcome.BAD_BODY)


# -- size ---------------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_bad() -> None:
    """One byte over max_body_bytes is BAD_BODY; exactly at the limit is fine."""
    base = len(orjson.dumps(progress(pad="")))
    at_limit = orjson.dumps(progress(pad="x" * (2048 - base)))
    assert len(at_limit) == 2048
    over = orjson.dumps(progress(pad="x" * (2049 - base)))
    results = [
        await client(answering(raw), max_body_bytes=2048).fetch(PROGRESS_REF)
        for raw in (at_limit, over)
    ]
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.BAD_BODY]
    assert results[1].detail == "body over 2048 bytes"


async def test_an_oversize_flag_from_the_transport_is_bad_for_cached_answers_only() -> None:
    """Oversize 200 and 404 are BAD_BODY (they would be cached); a 429 keeps its Retry-After."""

    def oversize(status: int) -> Answer:
        return lambda url, sent: RawResponse(status, {"Retry-After": "7"}, b"", oversize=True)

    results = [await client(oversize(s)).fetch(PROGRESS_REF) for s in (200, 404, 429)]
    assert [r.outcome for r in results] == [
        Outcome.BAD_BODY,
        Outcome.BAD_BODY,
        Outcome.RATE_LIMITED,
    ]
    assert results[1].detail == "body over 65536 bytes"
    assert results[2].retry_after_s == 7


# -- redaction ----------------------------------------------------------------------------------


def reflecting(status: int = 200) -> Answer:
    """An upstream that echoes the Authorization header it was sent, everywhere it can."""

    def answer(url: str, sent: Mapping[str, str]) -> RawResponse:
        auth = sent["Authorization"]
        if status == 404:
            body = {"error": {"code": "NOT_FOUND", "message": f"no such container ({auth})"}}
        else:
            body = progress(echo={"Authorization": auth, auth: "as a key"}, note=[auth])
        headers = {"X-Request-Id": f"req_{KEY}", "ETag": f'"{KEY}"'}
        return RawResponse(status, headers, orjson.dumps(body))

    return answer


def assert_no_key(result: UpstreamResult) -> None:
    for text in (repr(result), result.body.decode(), result.sample, result.detail):
        assert KEY not in text


async def test_a_reflected_key_is_redacted_from_a_200() -> None:
    """The echoed key is replaced in values, keys and lists; the body is re-serialised JSON."""
    result = await client(reflecting()).fetch(PROGRESS_REF)
    assert result.outcome is Outcome.OK
    assert_no_key(result)
    body = orjson.loads(result.body)
    assert body == result.parsed
    assert body["echo"] == {"Authorization": f"Bearer {REDACTED}", f"Bearer {REDACTED}": "as a key"}
    assert body["note"] == [f"Bearer {REDACTED}"]
    assert (result.request_id, result.etag) == (f"req_{REDACTED}", f'"{REDACTED}"')


async def test_a_cached_404_is_redacted() -> None:
    """A 404 envelope quoting the key is re-serialised without it."""
    result = await client(reflecting(404)).fetch(PROGRESS_REF)
    assert (result.outcome, result.error_code) == (Outcome.NOT_FOUND, "NOT_FOUND")
    assert_no_key(result)
    assert orjson.loads(result.body)["error"]["message"] == f"no such container (Bearer {REDACTED})"


async def test_an_escaped_key_is_found_after_decoding() -> None:
    r"""A key spelled with \u escapes in JSON would decode to the key in a browser."""
    escaped = "".join(f"\\u{ord(c):04x}" for c in KEY).encode()
    raw = orjson.dumps(progress(echo="X"))
    raw = raw.replace(b'"X"', b'"' + escaped + b'"')
    assert KEY.encode() not in raw
    result = await fetch(raw)
    assert result.outcome is Outcome.OK
    assert result.parsed["echo"] == REDACTED
    assert KEY not in result.body.decode()


async def test_a_key_in_a_bad_body_or_an_error_code_never_surfaces() -> None:
    """BAD_BODY samples and 5xx error codes are redacted too."""
    garbage = await fetch(f"<html>{KEY}</html>".encode())
    assert (garbage.outcome, garbage.sample) == (Outcome.BAD_BODY, f"<html>{REDACTED}</html>")
    mismatch = await fetch(progress(containerId=UUID[::-1], echo=KEY))
    assert mismatch.detail == "containerId mismatch"
    failure = await fetch_status(503, {"error": {"code": KEY, "requestId": KEY}})
    assert failure.outcome is Outcome.SERVER_ERROR
    for result in (garbage, mismatch, failure):
        assert_no_key(result)
    assert failure.error_code == REDACTED


async def test_a_short_key_is_not_searched_for() -> None:
    """Tests use one-letter keys; those must not shred ordinary bodies."""
    result = await UpstreamClient(
        base_url="http://layers.test",
        api_key=Secret("k"),
        transport=ScriptedTransport(answering(progress(stage="kkk"))),
        timeout_s=5,
        wall_clock=lambda: 0.0,
    ).fetch(PROGRESS_REF)
    assert (result.outcome, result.parsed["stage"]) == (Outcome.OK, "kkk")


async def test_sample_is_short() -> None:
    """A bad body is quoted by at most 200 characters."""
    result = await fetch(b"x" * 5000)
    assert (result.outcome, len(result.sample)) == (Outcome.BAD_BODY, 200)
