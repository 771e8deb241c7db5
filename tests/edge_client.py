"""A test client for an app served behind the proxy's edge, as ``serve`` runs it."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.settings import Settings
from proxy.web.middlewares import install_edge


async def edge_client(
    app: web.Application, settings: Settings
) -> TestClient[web.Request, web.Application]:
    """A started client; the edge is installed before its first connection opens."""
    server = TestServer(app)
    client = TestClient(server)
    await client.start_server()
    assert server.runner is not None  # set by start_server
    install_edge(server.runner, settings)
    return client
