"""Cheap, unique request ids: a random per-process prefix plus a counter."""

from __future__ import annotations

import itertools
import os

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# 12 random Crockford characters per process, then 14 hex digits of a counter (hex digits are
# Crockford characters too), so ids look like the upstream's and never repeat within a run.
_PREFIX = "req_" + "".join(_ALPHABET[b % 32] for b in os.urandom(12))
_COUNTER = itertools.count(1)


def next_request_id() -> str:
    """``req_`` + 26 characters, like the upstream's ids; unique per process and run."""
    return f"{_PREFIX}{next(_COUNTER):014X}"
