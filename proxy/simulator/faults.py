"""Fault rules: which requests misbehave, how, and for how long.

Kinds (``POST /_sim/faults {"kind": ..., "path_contains": ..., "count": ..., ...}``):

Answered before auth and budget, like a sick load balancer:

- ``status``: the error envelope with ``status`` (and ``code``).
- ``rate_limit``: 429 RATE_LIMITED with ``Retry-After: retry_after_s``.
- ``garbage``: 200 labelled JSON whose body is HTML.
- ``reset``: the connection is reset (RST), no response.
- ``hang``: no answer until faults are cleared (then 503) or 300 s pass.
- ``stall``: the request is read and never answered; when faults are cleared (or 300 s pass)
  the connection is closed, still without an answer.
- ``latency``: waits ``latency_ms``, then answers normally.

Distorting the real answer (auth and budget as usual; a conditional request still gets a 200,
so the fault always shows; non-200 answers pass unchanged):

- ``truncated``: the first half of the body.
- ``drip``: the real body and headers (Content-Length set), one byte every ``latency_ms``.
- ``wrong_id``: another resource's body, terminal (status "completed"), with its own id.
- ``missing_fields``: the body without its id field (progress also without ``stage`` and
  ``stageProgress``).
- ``oversize``: the body padded with a ``padding`` field to ``size_bytes`` bytes.
- ``reflect``: the body plus ``echo`` (the request's headers, Authorization included); the
  container record also gets a ``lastError`` whose message quotes the Authorization header.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast, get_args

FaultKind = Literal[
    "status",
    "latency",
    "hang",
    "garbage",
    "truncated",
    "reset",
    "rate_limit",
    "stall",
    "drip",
    "wrong_id",
    "missing_fields",
    "oversize",
    "reflect",
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
# Kinds that distort the real answer instead of replacing it.
DISTORTING: frozenset[str] = frozenset(
    {"truncated", "drip", "wrong_id", "missing_fields", "oversize", "reflect"}
)
MAX_SIZE_BYTES = 64 * 1024 * 1024  # an oversize body is built in memory
# Layers publishes no 5xx codes, so these follow the catalog's naming style.
DEFAULT_CODES = {500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "UNAVAILABLE"}


@dataclass
class FaultRule:
    """One injected misbehaviour; ``count`` None lasts until cleared."""

    kind: FaultKind
    status: int = 500
    code: str | None = None
    latency_ms: float = 0.0
    retry_after_s: int = 1
    size_bytes: int = 200_000  # oversize: the padded body's length
    path_contains: str | None = None
    count: int | None = None
    probability: float = 1.0
    id: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}")
        if not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or null for no limit)")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.latency_ms < 0 or self.retry_after_s < 0:
            raise ValueError("latency_ms and retry_after_s must not be negative")
        if not 0 <= self.size_bytes <= MAX_SIZE_BYTES:
            raise ValueError(f"size_bytes must be within [0, {MAX_SIZE_BYTES}]")

    @property
    def error_code(self) -> str:
        """The envelope code a ``status`` fault answers with."""
        return self.code or DEFAULT_CODES.get(self.status, "INTERNAL")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        """Build a rule from control-API JSON, raising ValueError on bad input."""
        allowed = {"kind", "status", "code", "latency_ms", "retry_after_s", "path_contains"}
        allowed |= {"count", "probability", "size_bytes"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if data.get("kind") not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}")
        try:
            return cls(
                kind=cast(FaultKind, data["kind"]),
                status=int(data.get("status", 500)),
                code=_optional_str(data.get("code")),
                latency_ms=float(data.get("latency_ms", 0.0)),
                retry_after_s=int(data.get("retry_after_s", 1)),
                size_bytes=int(data.get("size_bytes", 200_000)),
                path_contains=_optional_str(data.get("path_contains")),
                count=None if data.get("count") is None else int(data["count"]),
                probability=float(data.get("probability", 1.0)),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from exc

    def to_json(self) -> dict[str, Any]:
        """Return the rule as control-API JSON."""
        return asdict(self)


def _optional_str(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


class FaultBook:
    """The active rules, consulted in insertion order; the first match applies."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []
        self._next_id = 1

    def add(self, rule: FaultRule) -> FaultRule:
        """Activate ``rule`` and give it an id."""
        rule.id = self._next_id
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def clear(self) -> int:
        """Drop every rule; return how many there were."""
        dropped = len(self.rules)
        self.rules.clear()
        return dropped

    def take(self, path: str, rng: random.Random) -> FaultRule | None:
        """Return the rule that applies to a request for ``path``, spending one of its uses."""
        for rule in self.rules:
            if rule.path_contains is not None and rule.path_contains not in path:
                continue
            if rule.probability < 1.0 and rng.random() >= rule.probability:
                continue
            if rule.count is not None:
                rule.count -= 1
                if rule.count == 0:
                    self.rules.remove(rule)
            return rule
        return None
