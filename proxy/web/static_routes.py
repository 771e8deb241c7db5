"""The browser client under ``/static/``: the ``<layers-progress>`` element and its ES modules.

A flat directory served with explicit content types (Python 3.11's ``mimetypes`` still says
``application/javascript``), ``nosniff``, and revalidation so a deploy reaches browsers at once.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
ROUTE_NAME = "layers-static"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


async def serve_static(request: web.Request) -> web.StreamResponse:
    """GET /static/{name}: one file of ``proxy/static``; 404 for anything else."""
    name = request.match_info["name"]
    path = STATIC_DIR / name
    content_type = CONTENT_TYPES.get(path.suffix)
    if content_type is None or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(
        path,
        headers={
            "Content-Type": content_type,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


def add_static_routes(app: web.Application) -> None:
    """Serve ``proxy/static`` under ``/static/`` (safe to call twice)."""
    if ROUTE_NAME in app.router.named_resources():
        return
    # The pattern admits plain file names only: no slashes, no leading dot, so no traversal.
    app.router.add_get(r"/static/{name:[A-Za-z0-9][A-Za-z0-9_.-]*}", serve_static, name=ROUTE_NAME)
