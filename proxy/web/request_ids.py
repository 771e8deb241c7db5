"""Cheap, unique request ids: a random per-process prefix plus a counter."""

from __future__ import annotations

import itertools
import os

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PREFIX = "".join(_ALPHABET[b % 32] for b in os.urandom(12))
_COUNTER = itertools.count(1)


def next_request_id() -> str:
    """``req_`` + 26 characters, like the upstream's ids; unique per process and run."""
    n = next(_COUNTER)
    tail = []
    for _ in range(14):
        n, rem = divmod(n, 32)
        tail.append(_ALPHABET[rem])
    return "req_" + _PREFIX + "".join(reversed(tail))
