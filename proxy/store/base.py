"""The store's core: its settings, the guarded round trip (``call``) and batched script calls.

Every Redis round trip of the proxy goes through ``StoreBase.call``: bounded by the Redis
timeout, recorded in ``health``, and refused at once (``StoreUnavailable``) while Redis is known
to be down. The operations themselves live in one module per concern (``leases``, ``gate``,
``snapshots``), each a part of ``RedisStore`` built on this class.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from proxy.logs import summary
from proxy.store.budget import UNLIMITED, BudgetPolicy
from proxy.store.health import RedisHealth, StoreUnavailable

T = TypeVar("T")
_FAILURES = (RedisError, OSError, TimeoutError)
log = structlog.get_logger("proxy.store")

# A client the store can run on: one server (or fakeredis), or a Redis Cluster.
AnyRedis = Redis | RedisCluster


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One script invocation of a batch (``RedisStore.run_scripts``)."""

    script: AsyncScript
    keys: Sequence[str]
    args: Sequence[Any]


def text(value: Any) -> str:
    """A reply value as ``str`` (replies are bytes; fakeredis sometimes answers ``str``)."""
    return value.decode() if isinstance(value, bytes) else str(value)


class StoreBase:
    """What every part of the store shares: the client, the owner, the TTLs, ``call``."""

    def __init__(
        self,
        redis: AnyRedis,
        *,
        owner: str,
        lease_ttl_ms: int,
        linger_ms: int,
        snapshot_ttl_ms: int,
        budget: BudgetPolicy = UNLIMITED,
        timeout_s: float = 2.0,
        health: RedisHealth | None = None,
        sharded: bool | None = None,
    ) -> None:
        self.redis = redis
        # A Redis Cluster client: pipelined scripts need EVALSHA per node (see run_scripts).
        self.cluster = isinstance(redis, RedisCluster)
        # Cluster mode semantics (split claim, shard channels); True by default on a cluster,
        # settable on one server so tests can run the cluster paths against fakeredis too.
        self.sharded = self.cluster if sharded is None else sharded
        self.timeout_s = timeout_s
        self.health = health or RedisHealth("redis")
        self.owner = owner
        self.lease_ttl_ms = lease_ttl_ms
        self.linger_ms = linger_ms
        self.snapshot_ttl_ms = snapshot_ttl_ms
        self.budget = budget
        self._setup()

    def _setup(self) -> None:
        """Each part registers its scripts and sets up its own state (``super()`` first)."""

    async def call(self, op: Callable[[], Awaitable[T]], *, probe: bool = False) -> T:
        """Run one round trip, bounded and health-recorded; fail fast while Redis is down.

        Every Redis round trip of the proxy goes through here (``op`` builds and awaits it).
        """
        if not self.health.up and not probe:
            raise StoreUnavailable(f"redis unreachable ({self.health.last_error})")
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await op()
        except _FAILURES as exc:
            self.health.failed(exc)
            raise StoreUnavailable(f"redis unreachable ({type(exc).__name__})") from None
        except Exception as exc:
            # The client library's own failure in the middle of a failover (its cluster code
            # has raised plain Python errors there): still the store that failed, so a 503 for
            # what memory cannot answer rather than a 500. Logged once per kind.
            if summary().admit(f"redis_client_error {type(exc).__name__}"):
                log.warning("redis_client_error", error=type(exc).__name__)
            self.health.failed(exc)
            raise StoreUnavailable(f"redis client failed ({type(exc).__name__})") from None
        self.health.succeeded()
        return result

    async def run_scripts(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run several scripts in one round trip (one pipeline; one per node on a cluster)."""
        if not calls:
            return []
        return await self.call(lambda: self._run_scripts(calls))

    async def _run_scripts(self, calls: Sequence[ScriptCall]) -> list[Any]:
        # Plain EVALSHA commands, on one Redis and on a cluster alike: redis-py's own script
        # pipelining asks SCRIPT EXISTS first (a second round trip per batch), and refuses
        # ``pipe.evalsha`` on a cluster pipeline (it cannot check the slots; each call here is
        # single-slot by construction, so the pipeline routes it by its keys). A server that
        # lacks a script (new, restarted, flushed) answers NOSCRIPT without running it, so
        # exactly those calls are run again once the scripts are loaded.
        rows = await self._evalsha_batch(calls)
        missing = [i for i, row in enumerate(rows) if isinstance(row, NoScriptError)]
        if missing:
            for script in {id(calls[i].script): calls[i].script for i in missing}.values():
                await self.redis.script_load(script.script)  # every primary on a cluster
            again = await self._evalsha_batch([calls[i] for i in missing])
            for i, row in zip(missing, again, strict=True):
                rows[i] = row
        for row in rows:
            if isinstance(row, Exception):
                raise row
        return rows

    async def _evalsha_batch(self, calls: Sequence[ScriptCall]) -> list[Any]:
        pipe = self.redis.pipeline() if self.cluster else self.redis.pipeline(transaction=False)
        for c in calls:
            pipe.execute_command("EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args)
        return list(await pipe.execute(raise_on_error=False))

    async def ping(self) -> bool:
        """True when Redis answers (a probe: tried even while Redis is marked down)."""
        return bool(await self.call(self.redis.ping, probe=True))

    async def probe_forever(self, period_s: float = 0.5) -> None:
        """While Redis is down (or never checked), ping it so recovery is noticed without load."""
        while True:
            if not self.health.up or not self.health.checked:
                with contextlib.suppress(StoreUnavailable):
                    await self.ping()
            await asyncio.sleep(period_s)
