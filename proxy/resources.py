"""Watched resources as data: container progress, jobs and project lists are rows of one table.

Two more rows are owner lookups (a container's record, a job's envelope, each read once) that a
tenant restricted to its projects needs before anything else is fetched.

Everything that differs between the kinds (path, id pattern, terminal test, stage extraction,
whether the upstream speaks ETag, what a valid 200 body holds) lives here, so the poller, cache,
upstream client and handlers have no per-kind code.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy import project_list
from proxy.cadence import is_terminal
from proxy.ids import canonical_container_id, canonical_job_id, canonical_project_id

# -- body validation -----------------------------------------------------------------------------


def is_string(value: Any) -> bool:
    """Any JSON string (stages are an open set of names)."""
    return isinstance(value, str)


def is_status(value: Any) -> bool:
    """A non-empty string; new status words are tolerated (additive API changes)."""
    return isinstance(value, str) and value != ""


def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python but ``true`` is not a number in JSON.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def is_fraction(value: Any) -> bool:
    """A number within [0, 1]."""
    return _is_number(value) and 0 <= value <= 1


def is_seconds_or_null(value: Any) -> bool:
    """null or a non-negative number."""
    return value is None or (_is_number(value) and value >= 0)


def is_object_or_null(value: Any) -> bool:
    """null or a JSON object."""
    return value is None or isinstance(value, dict)


def is_string_or_null(value: Any) -> bool:
    """null or a JSON string."""
    return value is None or isinstance(value, str)


def is_container_list(value: Any) -> bool:
    """A list page's ``items``: objects with a valid container ``id`` and a status."""
    return isinstance(value, list) and all(
        isinstance(item, dict)
        and isinstance(item.get("id"), str)
        and canonical_container_id(item["id"]) is not None
        and is_status(item.get("status"))
        for item in value
    )


@dataclass(frozen=True)
class Field:
    """One documented body field: the test its value must pass and whether it must be present."""

    name: str
    check: Callable[[Any], bool]
    want: str  # how a valid value looks, for the BAD_BODY detail
    required: bool = True


@dataclass(frozen=True)
class BodyShape:
    """What a 200 from one upstream path must be: documented fields, typed, about the id asked for.

    Fields not listed are kept as they are: the API may add response fields within v1.
    """

    path_template: str  # ``{id}`` replaced by the canonical id
    id_field: str
    canonical_id: Callable[[str], str | None]
    fields: tuple[Field, ...]
    # False for a list page: its body names no id (the id is in the path only).
    id_in_body: bool = True

    def __post_init__(self) -> None:
        if not self.id_in_body:
            return
        id_rule = next((f for f in self.fields if f.name == self.id_field), None)
        if id_rule is None or not id_rule.required or id_rule.check is not is_string:
            raise ValueError(f"{self.id_field} must be a required string field")

    def problem(self, body: Any, expected_id: str) -> str:
        """'' when ``body`` is a valid answer about ``expected_id``, else a short reason.

        Reasons name fields, never values: the values are untrusted and may hold anything.
        """
        if not isinstance(body, dict):
            return "body is not a JSON object"
        for rule in self.fields:
            if rule.name not in body:
                if rule.required:
                    return f"missing field {rule.name}"
            elif not rule.check(body[rule.name]):
                return f"field {rule.name} is not {rule.want}"
        if not self.id_in_body:
            return ""
        # Either id form names the same resource (a bare UUID and cnt_<uuid>, any case).
        expected = self.canonical_id(expected_id)
        if expected is None or self.canonical_id(body[self.id_field]) != expected:
            return f"{self.id_field} mismatch"
        return ""

    def id_in_path(self, path: str) -> str | None:
        """The id when ``path`` is this shape's path, else None."""
        head, _, tail = self.path_template.partition("{id}")
        match = re.fullmatch(re.escape(head) + "([^/]+)" + re.escape(tail), path)
        return match[1] if match else None


# Seed page (get-content-progress): the flat 200 body and its field semantics.
PROGRESS_SHAPE = BodyShape(
    path_template="/v1/content/{id}/progress",
    id_field="containerId",
    canonical_id=canonical_container_id,
    fields=(
        Field("containerId", is_string, "a string"),
        Field("status", is_status, "a non-empty string"),
        Field("stage", is_string, "a string"),
        Field("stageProgress", is_fraction, "a number in [0, 1]"),
        # Present in every example, but only its null case is described; absent is tolerated.
        Field("etaSeconds", is_seconds_or_null, "null or a number >= 0", required=False),
        Field("updatedAt", is_string, "a string", required=False),
    ),
)

# layers-api.md section 3: every documented job shape has jobId, kind and status.
JOB_SHAPE = BodyShape(
    path_template="/v1/jobs/{id}",
    id_field="jobId",
    canonical_id=canonical_job_id,
    fields=(
        Field("jobId", is_string, "a string"),
        Field("kind", is_string, "a string"),
        Field("status", is_status, "a non-empty string"),
        Field("stage", is_string, "a string", required=False),
        Field("progress", is_fraction, "a number in [0, 1]", required=False),
        Field("result", is_object_or_null, "an object or null", required=False),
        Field("error", is_object_or_null, "an object or null", required=False),
    ),
)

# The container record, read once for a failed container's lastError: checked lightly.
CONTAINER_SHAPE = BodyShape(
    path_template="/v1/content/{id}",
    id_field="id",
    canonical_id=canonical_container_id,
    fields=(
        Field("id", is_string, "a string"),
        Field("lastError", is_object_or_null, "an object or null", required=False),
    ),
)

# The container record read to learn who owns a container: it must name its project.
OWNER_RECORD_SHAPE = BodyShape(
    path_template="/v1/content/{id}",
    id_field="id",
    canonical_id=canonical_container_id,
    fields=(Field("id", is_string, "a string"), Field("projectId", is_string, "a string")),
)

# A job read to learn who owns it: the envelope may name its project and container.
OWNER_JOB_SHAPE = BodyShape(
    path_template="/v1/jobs/{id}",
    id_field="jobId",
    canonical_id=canonical_job_id,
    fields=(
        Field("jobId", is_string, "a string"),
        Field("projectId", is_string_or_null, "a string or null", required=False),
        Field("containerId", is_string_or_null, "a string or null", required=False),
        Field("result", is_object_or_null, "an object or null", required=False),
    ),
)

# Statuses of a container that is still running (both documentation revisions).
IN_FLIGHT_STATUSES = ("queued", "processing", "generating")
PROJECT_PAGE_LIMIT = 200  # the list endpoint's documented maximum page size

# layers-api.md section 2: the project's content list, filtered to what is in flight.
PROJECT_LIST_SHAPE = BodyShape(
    path_template="/v1/projects/{id}/content?"
    + "&".join(f"status={s}" for s in IN_FLIGHT_STATUSES)
    + f"&limit={PROJECT_PAGE_LIMIT}",
    id_field="projectId",
    canonical_id=canonical_project_id,
    fields=(
        Field("items", is_container_list, "a list of {id, status} objects"),
        Field("nextCursor", is_string_or_null, "a string or null", required=False),
    ),
    id_in_body=False,
)

SHAPES: tuple[BodyShape, ...] = (PROGRESS_SHAPE, JOB_SHAPE, CONTAINER_SHAPE)


def shape_for_path(path: str) -> tuple[BodyShape, str] | None:
    """The shape an upstream ``path`` answers with and the id in it, or None for other paths."""
    for shape in SHAPES:
        resource_id = shape.id_in_path(path)
        if resource_id is not None:
            return shape, resource_id
    return None


# -- kinds ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceKind:
    """What the proxy needs to know to watch one kind of upstream resource."""

    name: str
    event: str  # SSE event name
    shape: BodyShape  # upstream path, id field and what a valid body holds
    id_hint: str  # how a valid id looks, for error messages
    send_if_none_match: bool  # upstream documented as ETag-aware
    terminal_is_permanent: bool  # never revalidate a terminal snapshot
    # What of a valid body is kept (an owner lookup needs two fields of a large record).
    reduce: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Final on the first good answer: an owner lookup is read once for the resource's life.
    settles_at_once: bool = False
    # Polled at the settings' list cadence instead of the progress cadence (a project list).
    list_cadence: bool = False
    # The cached body made from the previous one and the upstream's (what ended is kept).
    derive: Callable[[dict[str, Any] | None, dict[str, Any], str, int], dict[str, Any]] | None = (
        None
    )

    @property
    def path_template(self) -> str:
        """The upstream path, ``{id}`` replaced by the canonical id."""
        return self.shape.path_template

    @property
    def id_field(self) -> str:
        """The body field naming the resource."""
        return self.shape.id_field

    @property
    def canonical_id(self) -> Callable[[str], str | None]:
        """The canonical form of a raw id, or None when it is not a valid one."""
        return self.shape.canonical_id

    def upstream_path(self, resource_id: str) -> str:
        """The upstream path for ``resource_id`` (already canonical)."""
        return self.path_template.format(id=resource_id)

    def status_of(self, body: dict[str, Any]) -> str:
        """The body's status string ('' when missing)."""
        status = body.get("status")
        return status if isinstance(status, str) else ""

    def stage_of(self, body: dict[str, Any]) -> str:
        """The stage string, an open set of names ('' when missing)."""
        stage = body.get("stage")
        return stage if isinstance(stage, str) else ""

    def is_terminal(self, body: dict[str, Any]) -> bool:
        """True when no further change is expected."""
        return self.settles_at_once or is_terminal(self.status_of(body))

    def kept(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The body as cached when the kind reduces it, or None when it is kept whole."""
        return self.reduce(body) if self.reduce is not None else None

    def problem(self, body: Any, resource_id: str) -> str:
        """'' when ``body`` is a valid 200 about ``resource_id``, else a short reason."""
        return self.shape.problem(body, resource_id)


PROGRESS = ResourceKind(
    name="progress",
    event="progress",
    shape=PROGRESS_SHAPE,
    id_hint="a UUID, cnt_<uuid> or cnt_<26-character ULID>",
    send_if_none_match=False,
    # Layers can regenerate a container in place, so a terminal container can change again.
    terminal_is_permanent=False,
)

JOB = ResourceKind(
    name="job",
    event="job",
    shape=JOB_SHAPE,
    id_hint="job_<26-character ULID>",
    send_if_none_match=True,
    terminal_is_permanent=True,  # documented: terminal job states never change
)


def _record_owner(body: dict[str, Any]) -> dict[str, Any]:
    return {"id": body["id"], "projectId": body["projectId"]}


def _job_owner(body: dict[str, Any]) -> dict[str, Any]:
    """The job's project and container: top-level fields, else the completed job's result."""
    result = body.get("result")
    container = body.get("containerId")
    if not isinstance(container, str) and isinstance(result, dict):
        container = result.get("containerId")
    return {
        "jobId": body["jobId"],
        "projectId": body.get("projectId") if isinstance(body.get("projectId"), str) else None,
        "containerId": container if isinstance(container, str) else None,
    }


# A project's in-flight containers, polled slowly while somebody watches the project.
PROJECT = ResourceKind(
    name="project",
    event="project",
    shape=PROJECT_LIST_SHAPE,
    id_hint="prj_<uuid> or prj_<26-character ULID>",
    send_if_none_match=False,
    terminal_is_permanent=False,
    list_cadence=True,
    derive=project_list.derive,
)

# Who owns a container: its record's projectId, read once (a container never changes project).
CONTAINER_OWNER = ResourceKind(
    name="container_owner",
    event="owner",
    shape=OWNER_RECORD_SHAPE,
    id_hint=PROGRESS.id_hint,
    send_if_none_match=False,
    terminal_is_permanent=True,
    reduce=_record_owner,
    settles_at_once=True,
)

# Who owns a job: its envelope's projectId or containerId, read once.
JOB_OWNER = ResourceKind(
    name="job_owner",
    event="owner",
    shape=OWNER_JOB_SHAPE,
    id_hint=JOB.id_hint,
    send_if_none_match=False,
    terminal_is_permanent=True,
    reduce=_job_owner,
    settles_at_once=True,
)

KINDS: dict[str, ResourceKind] = {
    k.name: k for k in (PROGRESS, JOB, PROJECT, CONTAINER_OWNER, JOB_OWNER)
}


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """One watched resource: its kind, canonical id and the upstream organization it is read as."""

    kind: ResourceKind
    id: str
    org: str | None = None

    @property
    def key(self) -> str:
        """The cluster-wide name of this resource (cache key, lease name, channel payload).

        Interned: every stream and listener of one resource then holds the same string.
        """
        return sys.intern(f"{self.kind.name}:{self.org or '-'}:{self.id}")

    @staticmethod
    def kind_of_key(key: str) -> ResourceKind:
        """The kind a ``key`` names."""
        return KINDS[key.split(":", 1)[0]]
