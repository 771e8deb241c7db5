"""Deterministic generator of hostile HTTP/1.x requests, as raw bytes.

``Fuzzer(seed, ids, tokens).cases(n)`` returns the same ``n`` cases for the same inputs. Every id
it puts in a URL is one of ``ids.known`` (the few resources the test means to poll), one of
``ids.forbidden`` (valid ids the caller may not see: token mode only) or an id that fails
validation, so the simulator's request log can prove bad input never reached upstream.

``CANARY`` is planted in header values and query strings (never in paths, which the access log
may show): finding it in the proxy's output means a raw header or query string was logged.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from proxy.ids import canonical_container_id, canonical_job_id

CANARY = "fzcanary7q"
_JUNK = "IiLlOoUu!*~ .%'\"<>{}|\\^`"  # no hex digit, no Crockford base32 letter
_METHODS = ["GET"] * 12 + ["HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"]
_WEIRD_METHODS = ["get", "G ET", "CONNECT", "PRI", "BREW", "GET\x00", "X" * 300, "", "\xff\xfe"]


@dataclass(frozen=True)
class Ids:
    """The ids the generator may use as-is."""

    containers: Sequence[str]
    jobs: Sequence[str]
    forbidden_containers: Sequence[str] = ()
    forbidden_jobs: Sequence[str] = ()

    @property
    def allowed_upstream(self) -> set[str]:
        """Canonical ids that may show up in the simulator's log."""
        out = {canonical_container_id(c) for c in self.containers}
        out |= {canonical_job_id(j) for j in self.jobs}
        return {i for i in out if i is not None}

    @property
    def usable(self) -> set[str]:
        """Every valid id the generator may emit (canonical)."""
        out = {canonical_container_id(c) for c in self.forbidden_containers}
        out |= {canonical_job_id(j) for j in self.forbidden_jobs}
        return self.allowed_upstream | {i for i in out if i is not None}


@dataclass(frozen=True)
class Case:
    """One connection's worth of bytes."""

    index: int
    label: str
    data: bytes
    requests: int  # complete requests in ``data`` the server could answer
    half_close: bool = False  # shut down writing after sending (truncated input)

    def describe(self, secrets: Sequence[str] = (), limit: int = 700) -> str:
        """The case for a failure message, secrets redacted and cut to ``limit`` bytes."""
        text = self.data.decode("latin-1")
        for secret in sorted(secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "[REDACTED]")
        if len(text) > limit:
            text = text[:limit] + f"... ({len(self.data)} bytes)"
        return f"case {self.index} [{self.label}]: {text!r}"


@dataclass
class Fuzzer:
    """Builds cases from a seeded RNG; ``tokens`` are valid tokens to mutate and misuse."""

    seed: int
    ids: Ids
    tokens: Sequence[str] = ()
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # Pools of invalid ids, so a 1,000-id batch costs a sample, not 1,000 mutations.
        containers = list(self.ids.containers) or ["cnt_3f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f"]
        jobs = list(self.ids.jobs) or ["job_01HXZ9ABCDEFGHJKMNPQRSTVWX"]
        self._bad_containers = [self._invalid(self.rng.choice(containers)) for _ in range(300)]
        self._bad_jobs = [self._invalid(self.rng.choice(jobs)) for _ in range(300)]

    def cases(self, n: int) -> list[Case]:
        """``n`` cases, the same ones for the same seed."""
        kinds: list[tuple[int, Callable[[int], Case]]] = [
            (40, self._api_request),
            (8, self._batch),
            (6, self._multi_stream),
            (6, self._bad_request_line),
            (6, self._bad_headers),
            (5, self._huge),
            (6, self._framing),
            (6, self._pipelined),
            (3, self._truncated),
            (4, self._binary),
            (5, self._random_path),
        ]
        weights = [w for w, _ in kinds]
        makers = [m for _, m in kinds]
        return [self.rng.choices(makers, weights)[0](i) for i in range(n)]

    # ---- ids and URL pieces -------------------------------------------------------------

    def _invalid(self, valid: str) -> str:
        """A mutation of ``valid`` that no validator accepts."""
        r = self.rng
        for _ in range(20):
            choice = r.randrange(8)
            pos = r.randrange(len(valid) + 1)
            if choice == 0:
                cand = valid[:pos] + r.choice(string.printable.strip()) + valid[pos:]
            elif choice == 1 and len(valid) > 1:
                pos = min(pos, len(valid) - 1)
                cand = valid[:pos] + valid[pos + 1 :]
            elif choice == 2:
                pos = min(pos, len(valid) - 1)
                cand = valid[:pos] + r.choice(_JUNK) + valid[pos + 1 :]
            elif choice == 3:
                cand = valid[: r.randrange(len(valid))]
            elif choice == 4:
                cand = valid + valid
            elif choice == 5:
                cand = "".join(
                    r.choice(string.ascii_letters + "_-") for _ in range(r.randint(1, 70))
                )
            elif choice == 6:
                cand = r.choice(["", "null", "undefined", "0", "-1", "..", "%00", "cnt_", "job_"])
            else:
                cand = valid + "\u00b2" + r.choice(["", "é", "\u0663", "\u200b"])
            if not self._accepted(cand):
                return cand
        return "not-an-id"

    @staticmethod
    def _accepted(raw: str) -> bool:
        stripped = raw.strip()
        return canonical_container_id(stripped) is not None or (
            canonical_job_id(stripped) is not None
        )

    def _container(self) -> str:
        r = self.rng
        roll = r.random()
        if roll < 0.25 and self.ids.containers:
            cid = r.choice(self.ids.containers)
            return cid.upper() if r.random() < 0.2 else cid
        if roll < 0.35 and self.ids.forbidden_containers:
            return r.choice(self.ids.forbidden_containers)
        return r.choice(self._bad_containers)

    def _job(self) -> str:
        r = self.rng
        roll = r.random()
        if roll < 0.25 and self.ids.jobs:
            return r.choice(self.ids.jobs)
        if roll < 0.35 and self.ids.forbidden_jobs:
            return r.choice(self.ids.forbidden_jobs)
        return r.choice(self._bad_jobs)

    def _pct(self, text: str) -> str:
        """Percent-encode some characters (never changing what it decodes to), or break it."""
        r = self.rng
        roll = r.random()
        if roll >= 0.8 or not text:
            return text  # raw: spaces, Unicode and all (the request line may break, as intended)
        share = 0.1 if roll < 0.6 else 0.5
        picked = sorted(r.sample(range(len(text)), max(1, min(64, int(len(text) * share)))))
        # Below 0.6 everything but unreserved ASCII is encoded too (``quote`` does that fast).
        plain = (lambda seg: quote(seg, safe="")) if roll < 0.6 else (lambda seg: seg)
        out, last = [], 0
        for i in picked:
            out += [plain(text[last:i]), _quote(text[i])]
            last = i + 1
        out.append(plain(text[last:]))
        return "".join(out)

    def _query_extra(self) -> str:
        r = self.rng
        parts = []
        for _ in range(r.choice([0, 0, 0, 1, 2, 3])):
            name = r.choice(["access_token", "token", "lastEventId", "x", "ids", "", "a[b]"])
            value = r.choice(
                [
                    self._token_garbage(),
                    CANARY,
                    f"{CANARY}%zz%",
                    "%" + CANARY,
                    "\u00b2",
                    "9" * 40,
                    "1.2.3",
                ]
                + ([r.choice(self.tokens)] if self.tokens else [])
            )
            parts.append(f"{name}={self._pct(value)}" if r.random() < 0.9 else name)
        return "&".join(parts)

    # ---- header values --------------------------------------------------------------------

    def _token_garbage(self) -> str:
        r = self.rng
        roll = r.randrange(9)
        if roll == 0 and self.tokens:
            tok = r.choice(self.tokens)
            pos = r.randrange(len(tok))
            return tok[:pos] + r.choice("AQgw_-.") + tok[pos + 1 :]  # tampered
        if roll == 1:
            header = _b64({"alg": "none", "typ": "JWT"})
            body = _b64({"tenant": "acme", "containers": [], "exp": 9999999999, "c": CANARY})
            return f"{header}.{body}."
        if roll == 2:
            return ".".join(_b64_bytes(r.randbytes(r.randint(0, 40))) for _ in range(3))
        if roll == 3:
            return "eyJ" + _b64_bytes(r.randbytes(r.randint(0, 6750)))
        if roll == 4 and self.tokens:
            tok = r.choice(self.tokens)
            return tok + "." + CANARY
        if roll == 5:
            header = _b64({"alg": "HS256", "kid": "../" * 50})
            return f"{header}.{_b64({'tenant': 'x' * 500})}.{CANARY}"
        if roll == 6:
            return r.choice(["", " ", "Bearer", "null", "\u00e9", CANARY + "\x7f"])
        if roll == 7 and self.tokens:
            return r.choice(self.tokens)
        return CANARY + "".join(r.choice(string.printable) for _ in range(r.randint(0, 60)))

    def _authorization(self) -> str:
        r = self.rng
        token = self._token_garbage()
        return r.choice(
            [f"Bearer {token}", f"bearer   {token}", f"Basic {token}", token, f"Bearer {token} x"]
        )

    def _if_none_match(self) -> str:
        r = self.rng
        roll = r.randrange(8)
        if roll == 0:
            return ",".join(f'"{i}"' for i in range(r.randint(1, 3000)))
        if roll == 1:
            return "," * r.randint(1, 5000)
        if roll == 2:
            return '"' * r.randint(1, 999)
        return r.choice(["*", f'"{CANARY}"', 'W/"x", "y"', "W/" * 500, f"\u00b2{CANARY}"])

    def _prefer(self) -> str:
        r = self.rng
        return r.choice(
            [
                "wait=\u00b2",
                "wait=\u0663",
                "wait=99999999999999999999",
                "wait=-1",
                "wait=1e9",
                "wait=1",
                "wait=0",
                "wait = 2",
                'wait="1"',
                "respond-async, wait=" + "9" * 5000,
                "wait=" * 2000,
                f"{CANARY};wait=1;wait=2",
                "return=minimal",
            ]
        )

    def _last_event_id(self) -> str:
        r = self.rng
        roll = r.randrange(11)
        if roll == 0:
            return "9" * r.randint(1, 400)
        if roll == 1:
            return "1." * r.randint(1, 3000)
        if roll == 2:
            return ".".join(str(r.randint(0, 10**20)) for _ in range(r.randint(1, 120)))
        return r.choice(["\u00b2", "\u0661\u0662", "1.\u00b2", "-1", "0", "1", "2", f" 3 {CANARY}"])

    def _expect(self) -> str:
        r = self.rng
        return r.choice(
            ["100-continue", "100-CONTINUE", "200-ok", "\xff\xfe", CANARY, "", "1" * 999]
        )

    def _headers(self, *, stream: bool = False) -> list[tuple[str, str]]:
        r = self.rng
        headers: list[tuple[str, str]] = []
        if r.random() < 0.9:
            headers.append(("Host", r.choice(["127.0.0.1", "x", "", "a" * 300, "[::1]:80"])))
        optional: list[tuple[float, str, Callable[[], str]]] = [
            (0.35 if self.tokens else 0.2, "Authorization", self._authorization),
            (0.25, "If-None-Match", self._if_none_match),
            (0.2, "Prefer", self._prefer),
            (0.5 if stream else 0.1, "Last-Event-ID", self._last_event_id),
            (0.08, "Expect", self._expect),
            (0.1, "Accept", lambda: r.choice(["text/event-stream", "text/html", "*/*"])),
            (0.1, "Origin", lambda: r.choice(["https://app.acme.example", "null", CANARY])),
            (0.1, "Connection", lambda: r.choice(["close", "keep-alive", "upgrade", CANARY])),
            (0.05, "Upgrade", lambda: r.choice(["websocket", "h2c", CANARY])),
            (0.05, "Accept-Encoding", lambda: r.choice(["gzip", "br, deflate", "x" * 100])),
        ]
        for prob, name, make in optional:
            if r.random() < prob:
                headers.append((name, make()))
        if self.tokens and r.random() < 0.15:
            headers.append(("Authorization", f"Bearer {r.choice(self.tokens)}"))
        r.shuffle(headers)
        return headers

    # ---- assembling requests --------------------------------------------------------------

    def _request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        *,
        version: str = "HTTP/1.1",
        body: bytes = b"",
        eol: str = "\r\n",
    ) -> bytes:
        head = f"{method} {target} {version}{eol}" if version else f"{method} {target}{eol}"
        for name, value in headers:
            head += f"{name}: {value}{eol}"
        return _encode(head + eol) + body

    def _api_target(self) -> tuple[str, bool]:
        r = self.rng
        roll = r.randrange(8)
        stream = roll in (1, 3)
        if roll == 0:
            path = f"/v1/content/{self._pct(self._container())}/progress"
        elif roll == 1:
            path = f"/v1/content/{self._pct(self._container())}/progress/stream"
        elif roll == 2:
            path = f"/v1/jobs/{self._pct(self._job())}"
        elif roll == 3:
            path = f"/v1/jobs/{self._pct(self._job())}/stream"
        elif roll == 4:
            path = r.choice(["/healthz", "/readyz", "/admin/stats", "/static/layers-progress.js"])
        elif roll == 5:
            path = f"/v1/content/{self._pct(self._container())}/progress/"
        elif roll == 6:
            path = f"/v1/content/{self._pct(self._container())}"
        else:
            path = f"/v1/jobs/{self._pct(self._job())}/stream/x"
        extra = self._query_extra()
        return (f"{path}?{extra}" if extra else path), stream

    def _api_request(self, index: int) -> Case:
        r = self.rng
        target, stream = self._api_target()
        method = r.choice(_METHODS)
        headers = self._headers(stream=stream)
        body = b""
        if method in ("POST", "PUT", "PATCH") and r.random() < 0.7:
            body = r.randbytes(r.randint(0, 2000))
            headers.append(("Content-Length", str(len(body))))
        data = self._request(
            method, target, headers, version=r.choice(["HTTP/1.1"] * 8 + ["HTTP/1.0"]), body=body
        )
        return Case(index, "api", data, 1)

    def _id_list(self, make: Callable[[], str], count: int) -> str:
        r = self.rng
        sep = r.choice([",", ",", ", ", ",,", "%2C"])
        if count > 10:  # a sample from a pool of ``make``'s answers: one call, not ``count``
            return sep.join(r.choices([make() for _ in range(50)], k=count))
        return sep.join(self._pct(make()) if r.random() < 0.2 else make() for _ in range(count))

    def _batch(self, index: int) -> Case:
        r = self.rng
        count = r.choice([1, 2, 5, 50, 100, 101, 500, 1000])
        if count >= 500 and r.random() < 0.5:
            ids = ",".join(
                r.choice(["x", "1", "", "-"]) for _ in range(count)
            )  # short: fits the URL
        else:
            ids = self._id_list(self._container, count)
        name = r.choice(["ids", "ids", "ids", "id", "ids[]"])
        extra = self._query_extra()
        target = f"/v1/content/progress?{name}={ids}" + (f"&{extra}" if extra else "")
        return Case(index, "batch", self._request("GET", target, self._headers()), 1)

    def _multi_stream(self, index: int) -> Case:
        r = self.rng
        parts = []
        if r.random() < 0.8:
            parts.append(
                "containers=" + self._id_list(self._container, r.choice([1, 2, 3, 100, 101, 1000]))
            )
        if r.random() < 0.5:
            parts.append("jobs=" + self._id_list(self._job, r.choice([1, 2, 50])))
        extra = self._query_extra()
        if extra:
            parts.append(extra)
        target = "/v1/stream?" + "&".join(parts)
        return Case(index, "stream", self._request("GET", target, self._headers(stream=True)), 1)

    def _bad_request_line(self, index: int) -> Case:
        r = self.rng
        target, _ = self._api_target()
        roll = r.randrange(10)
        headers = self._headers()
        if roll == 0:
            data = self._request(r.choice(_WEIRD_METHODS), target, headers)
        elif roll == 1:
            data = self._request(
                "GET",
                target,
                headers,
                version=r.choice(
                    [
                        "HTTP/2.0",
                        "HTTP/1.2",
                        "HTTP/0.9",
                        "HTTP/1.1 junk",
                        "http/1.1",
                        "HTTP/11",
                        "HTTP/1.1" + CANARY,
                    ]
                ),
            )
        elif roll == 2:
            data = self._request("GET", target, headers, version="")
        elif roll == 3:
            data = self._request("GET", f"http://{CANARY}.example{target}", headers)
        elif roll == 4:
            data = self._request("GET", "*", headers)
        elif roll == 5:
            data = self._request("GET", target.replace("/", " /", 1) + " extra", headers)
        elif roll == 6:
            data = self._request("GET", target + "\t" + CANARY, headers)
        elif roll == 7:
            data = self._request(
                "GET", "/v1/content/" + "%" * r.randint(1, 50) + "/progress", headers
            )
        elif roll == 8:
            data = self._request("GET", target + "#" + CANARY, headers)
        else:
            data = self._request("GET", target.replace("?", "??", 1) + "&%ff%fe=%c0%af", headers)
        return Case(index, "request-line", data, 1)

    def _bad_headers(self, index: int) -> Case:
        r = self.rng
        target, stream = self._api_target()
        headers = self._headers(stream=stream)
        roll = r.randrange(10)
        if roll == 0:
            headers.append(("X Bad Name", CANARY))
        elif roll == 1:
            headers.append((f"X-{CANARY}\x00", "v"))
        elif roll == 2:
            headers.append(("", CANARY))
        elif roll == 3:
            headers.append(("X-Fold", f"a\r\n {CANARY}"))
        elif roll == 4:
            headers.append(("X-Marker", "no-colon-follows"))
        elif roll == 5:
            headers.append(("X-Bytes", "".join(chr(r.randrange(0x80, 0x100)) for _ in range(40))))
        elif roll == 6:
            headers.append(("X-Ctl", f"\x01\x7f{CANARY}"))
        elif roll == 7:
            headers.append(("Host", "second-host"))
            headers.append(("Host", "third"))
        elif roll == 8:
            headers.append(("Expect", self._expect()))
        else:
            headers.append(("Content-Type", f"application/json; charset={CANARY}"))
        data = self._request("GET", target, headers)
        if roll == 4:  # a header line without a colon
            data = data.replace(b"X-Marker: no-colon-follows", f"NoColon{CANARY}".encode())
        return Case(index, "headers", data, 1)

    def _huge(self, index: int) -> Case:
        r = self.rng
        target, _ = self._api_target()
        headers = self._headers()
        roll = r.randrange(5)
        if roll == 0:
            headers.append(("X-Big", CANARY + "a" * r.choice([9000, 17000, 70000])))
        elif roll == 1:
            headers += [(f"X-H{i}", CANARY) for i in range(r.choice([60, 129, 300]))]
        elif roll == 2:
            target = (
                target
                + ("&" if "?" in target else "?")
                + "q="
                + "b" * r.choice([8000, 9000, 70000])
            )
        elif roll == 3:
            headers.append(
                ("Authorization", "Bearer " + "eyJ" + "A" * r.choice([8000, 9000, 60000]))
            )
        else:
            headers.append(("If-None-Match", ",".join(['"a"'] * r.choice([3000, 5000]))))
        return Case(index, "huge", self._request("GET", target, headers), 1)

    def _framing(self, index: int) -> Case:
        r = self.rng
        target, _ = self._api_target()
        headers = self._headers()
        roll = r.randrange(9)
        method = r.choice(["GET", "POST", "PUT"])
        body = b""
        if roll == 0:  # Content-Length larger than the body
            body = b'{"a":1}'
            headers.append(("Content-Length", str(r.choice([100, 10**6, 10**12]))))
        elif roll == 1:  # shorter: the rest is read as the next request
            body = b"x" * 40 + CANARY.encode()
            headers.append(("Content-Length", "5"))
        elif roll == 2:
            headers.append(
                ("Content-Length", r.choice(["-1", "abc", "1e3", "+5", " 5 5", "0x10", "\u00b2"]))
            )
        elif roll == 3:  # both framings
            headers.append(("Content-Length", "4"))
            headers.append(("Transfer-Encoding", "chunked"))
            body = b"4\r\nabcd\r\n0\r\n\r\n"
        elif roll == 4:  # bad chunk sizes
            headers.append(("Transfer-Encoding", "chunked"))
            body = r.choice(
                [
                    b"zz\r\nab\r\n0\r\n\r\n",
                    b"-1\r\n\r\n",
                    b"ffffffffffffffffff\r\nx\r\n",
                    b"5\r\nab\r\n0\r\n\r\n",
                    b"5;" + b"e" * 9000 + b"\r\n",
                ]
            )
        elif roll == 5:
            headers.append(
                (
                    "Transfer-Encoding",
                    r.choice(
                        ["gzip", "chunked, gzip", "identity", " chunked", "chunked\x00", CANARY]
                    ),
                )
            )
            body = b"0\r\n\r\n"
        elif roll == 6:  # two Content-Lengths that disagree
            headers.append(("Content-Length", "3"))
            headers.append(("Content-Length", "4"))
            body = b"abcd"
        elif roll == 7:  # gzip body that is not gzip
            headers.append(("Content-Encoding", "gzip"))
            body = r.randbytes(64)
            headers.append(("Content-Length", str(len(body))))
        else:  # bare LF or bare CR line ends
            eol = r.choice(["\n", "\r", "\r\r\n", "\n\r"])
            return Case(index, "framing", self._request("GET", target, headers, eol=eol), 1)
        data = self._request(method, target, headers, body=body)
        return Case(index, "framing", data, 1)

    def _pipelined(self, index: int) -> Case:
        r = self.rng
        parts = []
        count = r.randint(2, 6)
        for _ in range(count):
            if r.random() < 0.75:
                target, _ = self._api_target()
                target = target.replace("/stream", "")  # a stream would never let the next one in
                parts.append(self._request("GET", target, self._headers()))
            else:
                parts.append(
                    r.choice(
                        [
                            b"\r\n",
                            b"GARBAGE\r\n\r\n",
                            r.randbytes(20),
                            b"GET / HTTP/1.1\r\nHost: x\r\n",
                        ]
                    )
                )
        return Case(index, "pipelined", b"".join(parts), count)

    def _truncated(self, index: int) -> Case:
        r = self.rng
        target, _ = self._api_target()
        full = self._request("GET", target, self._headers())
        return Case(index, "truncated", full[: r.randrange(1, max(2, len(full) - 1))], 0, True)

    def _binary(self, index: int) -> Case:
        r = self.rng
        roll = r.randrange(4)
        if roll == 0:
            data = r.randbytes(r.randint(1, 3000))
        elif roll == 1:
            data = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + r.randbytes(200)  # TLS hello
        elif roll == 2:
            data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + r.randbytes(30)
        else:
            data = b"GET /" + r.randbytes(200) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        return Case(index, "binary", data, 1, half_close=True)

    def _random_path(self, index: int) -> Case:
        r = self.rng
        path = r.choice(
            [
                "/",
                "//v1//content//progress",
                "/v1/content/../../etc/passwd",
                "/v1/content/%2e%2e/%2e%2e/progress",
                "/v1/content/%2F/progress",
                "/v1/jobs/",
                "/v1/stream",
                "/v1/stream?",
                "/v1/content/progress",
                "/v1/content/progress?ids",
                "/v1/content/progress?ids=",
                "/" + "a/" * 3000,
                "/\u00e9\u00b2",
                "/static/../../proxy/settings.py",
                "/static/%2e%2e/%2e%2e/README.md",
                "/v1/webhooks/layers",
                "/_sim/requests",
            ]
        )
        extra = self._query_extra()
        target = f"{path}{'&' if '?' in path else '?'}{extra}" if extra else path
        method = r.choice([m for m in _METHODS if m != "POST"])  # webhook POSTs: see the test
        return Case(index, "path", self._request(method, target, self._headers()), 1)


def _quote(char: str) -> str:
    return "".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogateescape"))


def _encode(text: str) -> bytes:
    # Latin-1 keeps "\xff" as the single byte 0xff; anything beyond goes out as UTF-8.
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _b64_bytes(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64(obj: object) -> str:
    return _b64_bytes(json.dumps(obj).encode())
