"""Id formats the simulator mints and accepts: ULID-ish ids, container/job ids, key ids."""

from __future__ import annotations

import hashlib
import random
import re
import uuid

# The id grammar is the API's contract: the simulator accepts exactly what the proxy validates.
from proxy.ids import canonical_container_id, canonical_job_id, canonical_project_id

__all__ = [
    "canonical_container_id",
    "canonical_job_id",
    "canonical_project_id",
    "key_id_of",
    "new_uuid",
    "ulid",
]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_KEY_RE = re.compile(r"lp_(?:live|test)_(?P<key_id>[A-Za-z0-9]{16})_[A-Za-z0-9_-]+")


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


def key_id_of(key: str) -> str:
    """Return a log-safe id for an API key: its 16-char key_id segment, else a hash prefix."""
    match = _KEY_RE.fullmatch(key)
    if match is not None:
        return match["key_id"]
    return "h_" + hashlib.sha256(key.encode()).hexdigest()[:14]
