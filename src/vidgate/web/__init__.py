"""The browser upload page served at ``/`` (static files; the tus client is bundled at build
time by ``scripts/build-web``, nothing is fetched from a CDN at run time)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
#: paths that belong to the API: a wrong method there must get the API's 405, not the page's 404
API_PATHS = ("/v1/", "/ws", "/health", "/ready", "/metrics", "/docs", "/redoc", "/openapi.json")


class PageFiles(StaticFiles):
    """Static files that the browser revalidates (ETag) on every load, so a rebuilt page is
    picked up at once, and whose content type is never sniffed."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.setdefault("Cache-Control", "no-cache")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response


class PageMount(Mount):
    """A mount at ``/`` that never claims an API path."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get("path", "").startswith(API_PATHS):
            return Match.NONE, {}
        return super().matches(scope)


def install(app: FastAPI) -> None:
    """Serve the page last, so every API route keeps precedence over the static files."""
    if (STATIC_DIR / "index.html").is_file():
        app.router.routes.append(PageMount("/", app=PageFiles(directory=STATIC_DIR, html=True), name="web"))
