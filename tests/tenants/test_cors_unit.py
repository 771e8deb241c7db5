"""CORS in process: allow-list, cross-tenant origins, preflight, errors and streams."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.errors import NotFound
from proxy.redaction import Secret
from proxy.settings import Settings
from proxy.tenancy.config import parse_tenants
from proxy.web.cors import ALLOW_HEADERS, EXPOSE_HEADERS, setup_cors
from tests.edge_client import edge_client
from tests.tenants.conftest import ACME_ORIGIN, GLOBEX_ORIGIN, acme_token, globex_token

pytestmark = pytest.mark.timeout(10)

CID = "cnt_3f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f"
TENANTS = parse_tenants(
    [
        {
            "id": "acme",
            "secrets": ["acme-cors-" + "Zx81Wv52Qa7LmP0s" * 2],
            "allowed_origins": [ACME_ORIGIN],
        },
        {
            "id": "globex",
            "secrets": ["globex-cors-" + "Wv52Qa7LmP0sZx81" * 2],
            "allowed_origins": [GLOBEX_ORIGIN],
        },
    ],
    source="test",
)


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def missing(request: web.Request) -> web.Response:
    raise NotFound("containerId x was not found.")


async def stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b"data: {}\n\n")
    return response


async def client_for(auth_mode: str) -> TestClient[web.Request, web.Application]:
    settings = Settings(layers_api_key=Secret("k"), tenants=TENANTS, auth_mode=auth_mode)
    app = web.Application()
    setup_cors(app, settings)
    app.router.add_get("/ok", ok)
    app.router.add_get("/missing", missing)
    app.router.add_get("/stream", stream)
    return await edge_client(app, settings)


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A token-mode app with CORS installed."""
    async with await client_for("tokens") as c:
        yield c


Client = TestClient[web.Request, web.Application]


async def test_allowed_origin_gets_exact_headers(client: Client) -> None:
    """A listed origin is echoed exactly, with exposed headers, Vary and no credentials."""
    resp = await client.get(
        "/ok", headers={"Origin": ACME_ORIGIN, "Authorization": f"Bearer {acme_token(CID)}"}
    )
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ACME_ORIGIN
    assert resp.headers["Access-Control-Expose-Headers"] == EXPOSE_HEADERS
    assert resp.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_disallowed_origin_gets_no_cors_headers(client: Client) -> None:
    """An unlisted origin (or 'null') gets only Vary: the browser keeps the answer from it."""
    for origin in ("https://evil.example", "null", ACME_ORIGIN + ".evil.example"):
        resp = await client.get("/ok", headers={"Origin": origin})
        assert resp.status == 200
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
        assert resp.headers["Vary"] == "Origin"


async def test_no_origin_still_varies(client: Client) -> None:
    """Server-to-server requests get Vary: Origin so shared caches never mix answers."""
    resp = await client.get("/ok")
    assert resp.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_cross_tenant_origin_gets_no_cors_headers(client: Client) -> None:
    """acme's origin holding globex's token (header or query) is not allowed to read."""
    token = globex_token(CID)
    by_header = await client.get(
        "/ok", headers={"Origin": ACME_ORIGIN, "Authorization": f"Bearer {token}"}
    )
    by_query = await client.get(f"/ok?access_token={token}", headers={"Origin": ACME_ORIGIN})
    own = await client.get(f"/ok?access_token={token}", headers={"Origin": GLOBEX_ORIGIN})
    assert "Access-Control-Allow-Origin" not in by_header.headers
    assert "Access-Control-Allow-Origin" not in by_query.headers
    assert own.headers["Access-Control-Allow-Origin"] == GLOBEX_ORIGIN


async def test_preflight_needs_no_token(client: Client) -> None:
    """A preflight from a listed origin is answered 204 with methods, headers and max-age."""
    resp = await client.options(
        "/ok",
        headers={
            "Origin": ACME_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ACME_ORIGIN
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, OPTIONS"
    assert resp.headers["Access-Control-Allow-Headers"] == ALLOW_HEADERS
    assert resp.headers["Access-Control-Max-Age"] == "600"
    assert resp.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_preflight_from_unlisted_origin_is_not_granted(client: Client) -> None:
    """A preflight from an unlisted origin gets no CORS headers, so the browser stops there."""
    resp = await client.options(
        "/ok", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert resp.status == 204
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Methods" not in resp.headers


async def test_errors_and_streams_carry_cors_headers(client: Client) -> None:
    """A 404 envelope and an event stream (headers sent inside the handler) are readable too."""
    headers = {"Origin": ACME_ORIGIN}
    missing_resp = await client.get("/missing", headers=headers)
    stream_resp = await client.get("/stream", headers=headers)
    assert missing_resp.status == 404
    assert (await missing_resp.json())["error"]["code"] == "NOT_FOUND"
    for resp in (missing_resp, stream_resp):
        assert resp.headers["Access-Control-Allow-Origin"] == ACME_ORIGIN
        assert resp.headers["Vary"] == "Origin"
    assert await stream_resp.read() == b"data: {}\n\n"


async def test_open_mode_has_no_cors() -> None:
    """PROXY_AUTH=none installs nothing: no CORS headers, no preflight answer."""
    async with await client_for("none") as c:
        resp = await c.get("/ok", headers={"Origin": ACME_ORIGIN})
        pre = await c.options(
            "/ok", headers={"Origin": ACME_ORIGIN, "Access-Control-Request-Method": "GET"}
        )
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Vary" not in resp.headers
    assert pre.status == 405
