"""Id formats the simulator mints and accepts: ULID-ish ids, container/job ids, key ids."""

from __future__ import annotations

import hashlib
import random
import re
import uuid

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# Crockford base32 without I, L, O, U; the first character is at most 7 (48-bit timestamp).
_ULID = r"[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}"
_CONTAINER_RE = re.compile(rf"(?:cnt_)?(?P<uuid>{_UUID})|cnt_(?P<ulid>{_ULID})")
_JOB_RE = re.compile(rf"job_(?P<ulid>{_ULID})")
_KEY_RE = re.compile(r"lp_(?:live|test)_(?P<key_id>[A-Za-z0-9]{16})_[A-Za-z0-9_-]+")
MAX_ID_LENGTH = 64


def ulid(rng: random.Random, wall_s: float) -> str:
    """Return a 26-character ULID-shaped string: 48-bit milliseconds then 80 random bits."""
    value = (int(wall_s * 1000) & ((1 << 48) - 1)) << 80 | rng.getrandbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_uuid(rng: random.Random) -> str:
    """Return a version-4 UUID string drawn from ``rng`` (seedable, unlike uuid4)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def canonical_container_id(raw: str) -> str | None:
    """Return ``cnt_<uuid>`` / ``cnt_<ULID>`` for an accepted container id, else None."""
    if len(raw) > MAX_ID_LENGTH:
        return None
    match = _CONTAINER_RE.fullmatch(raw)
    if match is None:
        return None
    if match["uuid"] is not None:
        return "cnt_" + match["uuid"].lower()
    return "cnt_" + match["ulid"].upper()


def canonical_job_id(raw: str) -> str | None:
    """Return ``job_<ULID>`` for an accepted job id, else None."""
    if len(raw) > MAX_ID_LENGTH:
        return None
    match = _JOB_RE.fullmatch(raw)
    return None if match is None else "job_" + match["ulid"].upper()


def key_id_of(key: str) -> str:
    """Return a log-safe id for an API key: its 16-char key_id segment, else a hash prefix."""
    match = _KEY_RE.fullmatch(key)
    if match is not None:
        return match["key_id"]
    return "h_" + hashlib.sha256(key.encode()).hexdigest()[:14]
