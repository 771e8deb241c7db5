"""The request log: one record per /v1 request, holding a key id but never the key."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class RequestRecord:
    """One /v1 request; ``status`` stays None until answered, and for resets and hangs."""

    index: int
    request_id: str
    t_mono: float
    t_wall: float
    method: str
    path: str
    kind: str = "other"
    resource_id: str | None = None
    status: int | None = None
    key_id: str | None = None
    org: str | None = None
    if_none_match: str | None = None
    fault: str | None = None
    bytes: int | None = None  # response body size (None when no response was sent)

    def to_json(self) -> dict[str, Any]:
        """Return the record as control-API JSON."""
        return asdict(self)


class RequestLog:
    """An append-only list of records with indexes that survive clearing."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.next_index = 0
        # Called once per finished request, e.g. by the CLI's --log-requests printer.
        self.on_finish: Callable[[RequestRecord], None] | None = None

    def open(
        self, request_id: str, t_mono: float, t_wall: float, method: str, path: str
    ) -> RequestRecord:
        """Append a record for a request that just arrived."""
        record = RequestRecord(self.next_index, request_id, t_mono, t_wall, method, path)
        self.next_index += 1
        self.records.append(record)
        return record

    def finish(self, record: RequestRecord, status: int | None) -> None:
        """Stamp the answer's status on ``record`` (None: no response was sent)."""
        record.status = status
        if self.on_finish is not None:
            self.on_finish(record)

    def query(
        self, since_index: int = 0, resource_id: str | None = None, kind: str | None = None
    ) -> list[RequestRecord]:
        """Return records from ``since_index`` on, optionally for one resource or kind."""
        return [
            r
            for r in self.records
            if r.index >= since_index
            and (resource_id is None or r.resource_id == resource_id)
            and (kind is None or r.kind == kind)
        ]

    def stats(self) -> dict[str, Any]:
        """Count records per resource id, per status, and per kind."""
        return {
            "total": len(self.records),
            "by_resource": dict(Counter(r.resource_id for r in self.records if r.resource_id)),
            "by_status": dict(Counter(str(r.status) for r in self.records)),
            "by_kind": dict(Counter(r.kind for r in self.records)),
        }

    def clear(self) -> None:
        """Forget every record; indexes keep counting up."""
        self.records.clear()
