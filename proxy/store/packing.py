"""hiredis both ways: replies are parsed with it, and now commands are packed with it too.

redis-py parses replies with hiredis when it is installed, but its asyncio connections pack
every command in Python (``redis[hiredis]`` only speeds up the sync client's packing).
``use_hiredis_packing`` gives a client's connections hiredis's packer too: the same bytes
(redis-py's own hiredis serializer), about a sixth of the CPU per command.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

_SERIALIZER = HiredisRespSerializer()  # type: ignore[no-untyped-call, unused-ignore]
_PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {}


class _HiredisPacking:
    """Mixed in before a redis-py asyncio connection class."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """Pack one command with hiredis (``DataError`` for a value it cannot encode)."""
        packed: list[bytes] = _SERIALIZER.pack(*args)
        return packed


def _packed(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    made = _PACKED.get(cls)
    if made is None:
        made = _PACKED[cls] = type("Hiredis" + cls.__name__, (_HiredisPacking, cls), {})
    return made


def use_hiredis_packing(client: Any) -> bool:
    """Make the connections ``client`` opens from now on pack with hiredis; True if it will.

    Only plain redis-py clients with a connection pool (one server, Sentinel): a Redis Cluster
    client keeps its own connections per node, and fakeredis has its own connection class.
    """
    if not HIREDIS_AVAILABLE or not isinstance(client, Redis):
        return False
    pool = client.connection_pool
    cls = pool.connection_class
    if cls in _PACKED.values():
        return True
    if (
        not isinstance(cls, type)
        or not issubclass(cls, AbstractConnection)
        or cls.pack_command is not AbstractConnection.pack_command
        or cls.__module__.startswith("fakeredis")
    ):
        return False
    pool.connection_class = _packed(cls)
    return True
