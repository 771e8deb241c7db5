"""The rules a built ``Settings`` must satisfy: declared bounds and choices, URLs, cross-checks.

``validate`` raises a ``SettingsError`` for the first problem, naming the setting, its value
(masked where it is a secret or a URL with a password) and where the value came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from urllib.parse import SplitResult, urlsplit

from proxy.secret_strength import weakness
from proxy.settings.definitions import Settings
from proxy.settings.fields import FIELDS, label, meta
from proxy.settings.meta import MASK, SettingsError

_SENTINEL = "redis+sentinel://"

Problem = tuple[str, str]  # (setting name, what is wrong with it)


def mask_url(url: str) -> str:
    """``url`` with any password replaced, for messages and check-config."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


def _url_port_problem(parts: SplitResult, example: str) -> str | None:
    try:
        parts.port  # noqa: B018 (the property parses and range-checks the port)
    except ValueError:
        port = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        return f"has an invalid port {port!r}; expected something like {example}"
    return None


def _sentinel_url_problem(url: str) -> str | None:
    # The form proxy/store/connect.py parses: redis+sentinel://[:pw@]h1:p1,h2:p2/master[/db].
    example = "redis+sentinel://h1:26379,h2:26379/mymaster/0"
    netloc, _, path = url[len(_SENTINEL) :].partition("/")
    for part in netloc.rpartition("@")[2].split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep:
            host, port = port, "26379"
        if not host or not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            return f"has a sentinel address {part.strip()!r} that is not host:port; like {example}"
    pieces = [p for p in path.split("/") if p]
    if not 1 <= len(pieces) <= 2:
        return f"must name the master after the sentinels, like {example}"
    if len(pieces) == 2 and not (pieces[1].isascii() and pieces[1].isdigit()):
        return f"has an invalid database {pieces[1]!r}: it must be a number, like /0"
    return None


def _redis_url_problem(url: str) -> str | None:
    if url == "memory://":
        return None
    if url.startswith(_SENTINEL):
        return _sentinel_url_problem(url)
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        from proxy.store.connect import cluster_url_problem

        return cluster_url_problem(url)
    example = "redis://host:6379/0"
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return (
            "must start with redis://, rediss://, unix://, redis+sentinel:// or "
            "redis+cluster://, or be memory://"
        )
    if parts.scheme == "unix":
        return None if parts.path else "needs a socket path, like unix:///run/redis.sock"
    if not parts.hostname:
        return f"has no host; expected something like {example}"
    problem = _url_port_problem(parts, example)
    if problem:
        return problem
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return f"has an invalid database {db!r}: the path must be a number, like /0"
    return None


def _api_url_problem(url: str) -> str | None:
    example = "https://api.layers.com"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http(s) URL like {example}"
    return _url_port_problem(parts, example)


def _numeric_problem(name: str, value: float, s: Settings) -> str | None:
    m = meta(name)
    if m.gt is not None and not value > m.gt:
        return f"must be greater than {m.gt:g}"
    if m.ge is not None and value < m.ge:
        return f"must be at least {m.ge:g}"
    if m.le is not None and value > m.le:
        return f"must be at most {m.le:g}"
    if m.ge_field is not None and value < getattr(s, m.ge_field):
        return f"must not be below {m.ge_field} ({getattr(s, m.ge_field):g})"
    if m.le_field is not None and value > getattr(s, m.le_field):
        return f"must not be above {m.le_field} ({getattr(s, m.le_field):g})"
    return None


def _declared_problems(s: Settings) -> Iterator[Problem]:
    """The rules each field declares (required, choices, bounds), in declaration order."""
    for name in FIELDS:
        m = meta(name)
        value = getattr(s, name)
        if m.required and not value:
            yield name, f"is required: {m.doc[0].lower()}{m.doc[1:]}"
        if m.choices and value not in m.choices:
            yield name, f"must be one of {', '.join(m.choices)}"
        if isinstance(value, int | float) and not isinstance(value, bool):
            problem = _numeric_problem(name, value, s)
            if problem:
                yield name, problem


_URL_CHECKS: tuple[tuple[str, Callable[[str], str | None]], ...] = (
    ("layers_api_url", _api_url_problem),
    ("redis_url", _redis_url_problem),
)


def _url_problems(s: Settings) -> Iterator[Problem]:
    for name, check in _URL_CHECKS:
        problem = check(getattr(s, name))
        if problem:
            yield name, problem


def _webhook_secret_problems(s: Settings) -> Iterator[Problem]:
    for i, part in enumerate(p.strip() for p in s.webhook_secret.reveal().split(",")):
        why = weakness(part) if part else "is empty"
        if s.webhook_secret and why is not None:
            yield "webhook_secret", f"refused: secret {i + 1} of the list {why}"


def _coded_problems(s: Settings) -> Iterator[Problem]:
    """The rules the reference shows as ``Meta.rule`` text, checked in code."""
    if s.upstream_failing_connections >= s.upstream_max_connections:
        yield (
            "upstream_failing_connections",
            "must be below upstream_max_connections (healthy resources need connections too)",
        )
    if s.workers != "auto" and not (
        s.workers.isascii() and s.workers.isdigit() and 1 <= int(s.workers) <= 64
    ):
        yield "workers", "must be a whole number from 1 to 64, or auto"
    if s.lease_ttl_s < 3 * s.interest_flush_s:
        yield "lease_ttl_s", "must be at least 3 times interest_flush_s so renewals keep up"
    if s.auth_mode == "tokens" and not s.tenants:
        yield (
            "auth_mode",
            "is 'tokens' but no [[tenants]] are configured; add tenants to the config file, "
            "or set PROXY_AUTH_MODE=none (alias PROXY_AUTH=none) for the open single-tenant mode",
        )


# In this order; each is a lazy generator, so a check never sees a value an earlier one refused.
_CHECKS = (_declared_problems, _url_problems, _webhook_secret_problems, _coded_problems)


def _error(s: Settings, sources: Mapping[str, str], name: str, why: str) -> SettingsError:
    value = getattr(s, name)
    source = sources.get(name, "default")
    if meta(name).secret or isinstance(value, tuple):
        where = f" (from {source})" if source != "default" else ""
    else:
        shown = mask_url(value) if isinstance(value, str) else value
        origin = "by default" if source == "default" else f"from {source}"
        where = f" (got {shown!r} {origin})"
    return SettingsError(f"{label(name)}: {why}{where}")


def validate(s: Settings, sources: Mapping[str, str]) -> None:
    """Raise a ``SettingsError`` for the first rule ``s`` breaks (``sources``: where values came
    from, for the message)."""
    for check in _CHECKS:
        for name, why in check(s):
            raise _error(s, sources, name, why)
