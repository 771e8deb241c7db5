"""Building Redis clients from a URL, including the embedded ``memory://`` mode."""

from __future__ import annotations

from redis.asyncio import Redis


def is_embedded(url: str) -> bool:
    """True for the in-process Redis (single replica only)."""
    return url == "memory://"


def make_clients(url: str, *, timeout_s: float) -> tuple[Redis, Redis]:
    """(commands client, pub/sub client) for ``url``.

    The pub/sub client has no read timeout (it blocks waiting for messages by design); every
    command on the other one times out after ``timeout_s``.
    """
    if is_embedded(url):
        import fakeredis

        server = fakeredis.FakeServer()
        return (
            fakeredis.FakeAsyncRedis(server=server),
            fakeredis.FakeAsyncRedis(server=server),
        )
    commands = Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
        max_connections=256,
    )
    pubsub = Redis.from_url(url, socket_connect_timeout=timeout_s, health_check_interval=30)
    return commands, pubsub
