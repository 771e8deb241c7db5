"""Cached polls answered from the request's bytes, before aiohttp builds a request.

Most requests are a client's repeat poll of a snapshot in memory: ``GET
/v1/content/{id}/progress`` (or ``/v1/jobs/{id}``) with a few ordinary headers. For those,
aiohttp's request and response objects, its router and its task per request cost more than the
proxy's own work. ``FastPolls.answer`` takes one whole request head and returns the complete
response, the same status, headers and body the handlers give; whatever it does not fully
understand (another method or version, a query string, ``Prefer``, ``Expect``, a body, odd
bytes, a cold or failed snapshot, a tenant over its rate, an owner check to make) returns None
and goes the usual way through aiohttp, the edge and the router. So every refusal, error and
rare header keeps a single implementation, and the answer here is only ever a 200 or 304 the
slow path would have given for the same request.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from proxy.errors import ProxyError
from proxy.metrics import cache_outcome
from proxy.request_ids import next_request_id
from proxy.resources import JOB, PROGRESS, ResourceRef
from proxy.services.watching import HIT
from proxy.snapshot import Snapshot
from proxy.tenancy.access import Caller
from proxy.tenancy.cors import CorsPolicy
from proxy.web import keys
from proxy.web.handlers import servable
from proxy.web.headers import etag_matches
from proxy.web.responses import JSON, snapshot_headers

# One simple GET head, HTTP/1.1, every header a token name and a value of visible ASCII (or
# spaces and tabs): anything else (obs-fold, control or 8-bit bytes) takes the parser's path.
_HEAD = re.compile(
    rb"GET (/[!-~]*) HTTP/1\.1\r\n((?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*\r\n)*)\r\n"
)
_PATH = re.compile(rb"/v1/content/([0-9A-Za-z_-]{1,100})/progress|/v1/jobs/([0-9A-Za-z_-]{1,100})")
_PROGRESS_ROUTE = "/v1/content/{containerId}/progress"
_JOB_ROUTE = "/v1/jobs/{jobId}"
# Headers whose presence means the request is not a plain poll (or has a body).
_NOT_PLAIN = frozenset(
    (b"expect", b"transfer-encoding", b"content-length", b"prefer", b"upgrade", b"te")
)
# The headers a poll's answer depends on, and the field of ``_Poll`` each goes to.
_FIELDS = {b"if-none-match": "if_none_match", b"authorization": "auth", b"origin": "origin"}
_SERVER = SERVER_SOFTWARE.encode()
_STATUS_LINES = {200: b"HTTP/1.1 200 OK\r\n", 304: b"HTTP/1.1 304 Not Modified\r\n"}


class _Date:
    """The ``Date`` header value, formatted once a second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def now(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.second = second
            self.value = formatdate(now, usegmt=True).encode()
        return self.value


class FastPolls:
    """Answers cached polls of one application from raw request heads (None: take the slow
    path)."""

    def __init__(self, app: web.Application) -> None:
        settings = app[keys.SETTINGS]
        self._settings = settings
        self._access = app[keys.ACCESS]
        self._limits = app[keys.LIMITS]
        self._watching = app[keys.WATCHING]
        self._stats = app[keys.STATS]
        self._metrics = app.get(keys.METRICS)
        self._open = settings.auth_mode == "none"
        self._open_caller = Caller() if self._open else None
        self._cors = CorsPolicy(settings)
        # A head longer than either limit goes to the edge, which measures exactly.
        self._max_head = min(settings.max_header_bytes, settings.max_url_bytes)
        self._date = _Date()

    def answer(self, data: bytes) -> bytes | None:
        """The whole response to ``data`` (exactly one request head), or None."""
        poll = _parse(data) if len(data) <= self._max_head else None
        if poll is None:
            return None
        found = self._caller(poll.auth)
        if found is None:
            return None
        caller, token = found
        try:
            ref = self._access.resource(caller, poll.kind, poll.raw_id)
        except ProxyError:
            return None
        snap = self._watching.peek(ref)
        if snap is None or not _plain_200(snap, ref) or not self._admit(caller, ref):
            return None
        tenant = caller.tenant_id
        stats = self._stats
        stats.client_requests += 1
        stats.fast_answers += 1
        stats.tenant_requests[tenant] += 1
        self._watching.interest.note(ref, tenant)
        now_ms = self._watching.now_ms()
        headers = snapshot_headers(snap, HIT, now_ms, self._settings, next_request_id())
        if self._cors.enabled:
            headers.update(self._cors.response_headers(poll.origin, token))
        if poll.if_none_match is not None and etag_matches(poll.if_none_match, snap.etag):
            status, body = 304, b""
            stats.not_modified += 1
        else:
            status, body = 200, snap.body
            headers["Content-Type"] = JSON
            headers["Content-Length"] = str(len(body))
        if self._metrics is not None:
            outcome = cache_outcome(headers["Cache-Status"])
            self._metrics.client_request(poll.route, status, outcome, float(headers["Age"]))
        return self._render(status, headers, body)

    def _caller(self, auth: str | None) -> tuple[Caller, str] | None:
        """The caller and its token; None for anything but a good token the cache can serve."""
        if self._open_caller is not None:
            return self._open_caller, ""
        if auth is None or auth[:7].lower() != "bearer ":
            return None
        token = auth[7:].strip(" \t")
        try:
            caller = self._access.caller_for(token)
        except ProxyError:
            return None
        if caller.checks_owner:
            return None  # an owner lookup may be due: the handlers' path does it
        return caller, token

    def _admit(self, caller: Caller, ref: ResourceRef) -> bool:
        """The tenant's rate with a permit in hand, and its watched limit; False: slow path."""
        limits = self._limits
        if not limits.try_admit(caller):
            return False
        try:
            limits.watch(caller, ref)
        except ProxyError:
            return False
        return True

    def _render(self, status: int, headers: dict[str, str], body: bytes) -> bytes:
        # The bytes aiohttp would write: its status line, these headers, then Date and Server.
        return b"".join(
            (
                _STATUS_LINES[status],
                "".join([f"{k}: {v}\r\n" for k, v in headers.items()]).encode("latin-1"),
                b"Date: ",
                self._date.now(),
                b"\r\nServer: ",
                _SERVER,
                b"\r\n\r\n",
                body,
            )
        )


class _Poll:
    """What a plain poll's head says."""

    __slots__ = ("auth", "if_none_match", "kind", "origin", "raw_id", "route")

    def __init__(self, path: re.Match[bytes]) -> None:
        job = path[2]
        if job:
            self.kind, self.raw_id, self.route = JOB, job.decode("ascii"), _JOB_ROUTE
        else:
            self.kind, self.raw_id, self.route = PROGRESS, path[1].decode("ascii"), _PROGRESS_ROUTE
        self.if_none_match: str | None = None
        self.auth: str | None = None
        self.origin: str | None = None


def _parse(data: bytes) -> _Poll | None:
    """The poll ``data`` asks for, when it is one plain GET of a poll route (else None)."""
    head = _HEAD.fullmatch(data)
    if head is None:
        return None
    path = _PATH.fullmatch(head[1])
    if path is None:
        return None
    poll = _Poll(path)
    hosts = 0
    for line in head[2].split(b"\r\n")[:-1]:
        name, _, raw = line.partition(b":")
        name = name.lower()
        field = _FIELDS.get(name)
        if field is not None:
            if getattr(poll, field) is not None:
                return None  # repeated: the parser's path decides what that means
            setattr(poll, field, raw.strip(b" \t").decode("ascii"))
        elif name == b"host":
            hosts += 1
        elif name == b"connection":
            if raw.strip(b" \t").lower() != b"keep-alive":
                return None
        elif name in _NOT_PLAIN:
            return None
    return poll if hosts == 1 else None


def _plain_200(snap: Snapshot, ref: ResourceRef) -> bool:
    """True when the handlers would answer ``snap`` as a 200 (or 304)."""
    try:
        servable(snap, ref)
    except ProxyError:
        return False
    return snap.status_code in (0, 200)
