"""The /static/ routes and the demo's helpers, without a browser."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.demo import choose_redis, demo_speed
from proxy.settings import SettingsError
from proxy.testing.processes import free_port
from proxy.web.static_routes import add_static_routes


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A bare app with the static routes registered twice (the second call is a no-op)."""
    app = web.Application()
    add_static_routes(app)
    add_static_routes(app)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("layers-progress.js", "text/javascript"),
        ("layers-progress-client.js", "text/javascript"),
        ("demo.css", "text/css"),
        ("demo.html", "text/html"),
    ],
)
async def test_static_files_have_explicit_types(
    client: TestClient[web.Request, web.Application], name: str, content_type: str
) -> None:
    """Every client file is served with its exact type, nosniff and revalidation."""
    response = await client.get(f"/static/{name}")
    assert response.status == 200
    assert response.content_type == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "path",
    [
        "/static/..%2Fdemo.py",
        "/static/../demo.py",
        "/static/.hidden",
        "/static/nope.js",
        "/static/",
    ],
)
async def test_only_plain_files_of_the_directory_are_served(
    client: TestClient[web.Request, web.Application], path: str
) -> None:
    """Traversal, dot files, unknown names and the directory itself are 404."""
    response = await client.get(path)
    assert response.status == 404


@pytest.mark.timeout(10)
def test_demo_speed_parses_the_environment() -> None:
    """LAYERS_DEMO_SPEED is a positive float, 1 when unset or empty."""
    assert demo_speed({}) == 1.0
    assert demo_speed({"LAYERS_DEMO_SPEED": ""}) == 1.0
    assert demo_speed({"LAYERS_DEMO_SPEED": "6"}) == 6.0
    for bad in ("0", "-2", "fast", "nan", "inf"):
        with pytest.raises(ValueError):
            demo_speed({"LAYERS_DEMO_SPEED": bad})


@pytest.mark.timeout(10)
async def test_choose_redis_honours_an_explicit_choice() -> None:
    """memory:// is taken as asked; an explicit Redis that does not answer is an error."""
    assert await choose_redis("memory://", "from --redis-url") == ("memory://", "from --redis-url")
    with pytest.raises(SettingsError, match="no Redis answered PING"):
        await choose_redis(f"redis://127.0.0.1:{free_port()}/0")
