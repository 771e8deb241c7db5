"""Resource id validation and canonical forms (pure).

Container ids: a UUID, ``cnt_`` + UUID, or ``cnt_`` + a 26-character ULID. Job ids: ``job_`` +
ULID. Project ids: ``prj_`` + UUID or ULID. The canonical form is what the proxy sends upstream
and keys its cache on, so a bare UUID and ``cnt_<uuid>`` coalesce into one poll loop.
"""

from __future__ import annotations

import re

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# Crockford base32 without I, L, O, U; the first character is at most 7 (48-bit timestamp).
_ULID = r"[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}"

_CONTAINER_RE = re.compile(rf"(?:cnt_)?(?P<uuid>{_UUID})|cnt_(?P<ulid>{_ULID})")
_JOB_RE = re.compile(rf"job_(?P<ulid>{_ULID})")
_PROJECT_RE = re.compile(rf"prj_(?:(?P<uuid>{_UUID})|(?P<ulid>{_ULID}))")

MAX_ID_LENGTH = 64


def canonical_container_id(raw: str) -> str | None:
    """Return the canonical container id, or None when ``raw`` is not a valid one."""
    if len(raw) > MAX_ID_LENGTH:
        return None
    match = _CONTAINER_RE.fullmatch(raw)
    if match is None:
        return None
    if match["uuid"] is not None:
        return "cnt_" + match["uuid"].lower()
    return "cnt_" + match["ulid"].upper()


def canonical_job_id(raw: str) -> str | None:
    """Return the canonical job id, or None when ``raw`` is not a valid one."""
    if len(raw) > MAX_ID_LENGTH:
        return None
    match = _JOB_RE.fullmatch(raw)
    if match is None:
        return None
    return "job_" + match["ulid"].upper()


def canonical_project_id(raw: str) -> str | None:
    """Return the canonical project id, or None when ``raw`` is not a valid one."""
    if len(raw) > MAX_ID_LENGTH:
        return None
    match = _PROJECT_RE.fullmatch(raw)
    if match is None:
        return None
    if match["uuid"] is not None:
        return "prj_" + match["uuid"].lower()
    return "prj_" + match["ulid"].upper()
