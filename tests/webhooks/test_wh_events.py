"""Reducing a webhook body to the resources it refreshes (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.resources import JOB, PROGRESS, ResourceRef
from proxy.webhooks.events import InvalidEvent, is_event_id, parse_event

EVT = "evt_01JABCDEFGHJKMNPQRSTVWXYZ0"
JOB_ID = "job_01JABCDEFGHJKMNPQRSTVWXYZ1"
CNT = "cnt_6f1c2f2e-3b7a-4a57-9a59-0c2d9d1b1e11"


def body(event_type: str, data: Any, **extra: Any) -> dict[str, Any]:
    """A webhook envelope with the shared event id."""
    return {
        "id": EVT,
        "type": event_type,
        "createdAt": "2026-04-18T09:30:05Z",
        "data": data,
        **extra,
    }


@pytest.mark.parametrize("kind", ["completed", "failed", "canceled"])
def test_job_events_refresh_the_job(kind: str) -> None:
    """job.<kind> with a lower-case job id refreshes the canonical job under no org."""
    event = parse_event(EVT, body(f"job.{kind}", {"jobId": JOB_ID.lower(), "kind": "x"}))
    assert event.refs == (ResourceRef(JOB, JOB_ID, None),)
    assert event.created_ms == 1_776_504_605_000


def test_job_completed_also_refreshes_its_container() -> None:
    """data.result.containerId adds the container's progress as a second ref."""
    event = parse_event(
        EVT, body("job.completed", {"jobId": JOB_ID, "result": {"containerId": CNT}})
    )
    assert event.refs == (ResourceRef(JOB, JOB_ID), ResourceRef(PROGRESS, CNT))


def test_container_id_at_top_level_of_data() -> None:
    """data.containerId (a bare UUID) is canonicalised to cnt_<uuid>."""
    event = parse_event(EVT, body("job.failed", {"jobId": JOB_ID, "containerId": CNT[4:]}))
    assert [r.id for r in event.refs] == [JOB_ID, CNT]


def test_malformed_container_id_is_dropped_not_fatal() -> None:
    """A job event whose containerId is garbage still refreshes the job (1 ref)."""
    event = parse_event(EVT, body("job.completed", {"jobId": JOB_ID, "result": {"containerId": 7}}))
    assert event.refs == (ResourceRef(JOB, JOB_ID),)


def test_content_generated_refreshes_the_container() -> None:
    """content.generated refreshes data.id's progress."""
    event = parse_event(EVT, body("content.generated", {"id": CNT, "assets": []}))
    assert event.refs == (ResourceRef(PROGRESS, CNT),)


def test_child_org_firehose_sets_the_org() -> None:
    """data.organizationId becomes the ref's org for every ref."""
    data = {"jobId": JOB_ID, "result": {"containerId": CNT}, "organizationId": "org_child1"}
    event = parse_event(EVT, body("job.completed", data))
    assert {r.org for r in event.refs} == {"org_child1"}
    assert event.refs[0].key == f"job:org_child1:{JOB_ID}"


@pytest.mark.parametrize("event_type", ["test.ping", "content.approved", "post.published", "x"])
def test_other_types_are_valid_and_refresh_nothing(event_type: str) -> None:
    """Unknown or uninteresting types parse to zero refs, whatever their data."""
    assert parse_event(EVT, body(event_type, "anything")).refs == ()


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ([1, 2], "JSON object"),
        ({"id": EVT, "data": {}}, "type"),
        (body("job.completed", None), "data"),
        (body("job.completed", {}), "jobId"),
        (body("job.completed", {"jobId": "job_short"}), "jobId"),
        (body("content.generated", {"id": "nope"}), "data.id"),
        (body("job.completed", {"jobId": JOB_ID, "organizationId": "acme"}), "organizationId"),
        (body("job.completed", {"jobId": JOB_ID}, id="evt_01JABCDEFGHJKMNPQRSTVWXYZ9"), "match"),
    ],
)
def test_unusable_bodies_are_refused(payload: Any, fragment: str) -> None:
    """Bodies that break the contract raise InvalidEvent naming the field."""
    with pytest.raises(InvalidEvent, match=fragment):
        parse_event(EVT, payload)


def test_body_without_id_uses_the_header() -> None:
    """An envelope with no id is accepted under the header's event id."""
    payload = body("job.completed", {"jobId": JOB_ID})
    del payload["id"]
    assert parse_event(EVT, payload).id == EVT


def test_created_at_without_zone_is_ignored() -> None:
    """A naive or unparseable createdAt gives created_ms None."""
    assert parse_event(EVT, body("x", {}, createdAt="2026-04-18T09:30:05")).created_ms is None
    assert parse_event(EVT, body("x", {}, createdAt="yesterday")).created_ms is None


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        (EVT, True),
        ("evt_" + "a" * 26, True),
        ("evt_" + "a" * 25, False),
        ("evt_" + "a" * 27, False),
        ("EVT_" + "a" * 26, False),
        ("evt_" + "-" * 26, False),
        (None, False),
    ],
)
def test_event_id_shape(raw: str | None, ok: bool) -> None:
    """Event ids are evt_ plus exactly 26 letters or digits."""
    assert is_event_id(raw) is ok
