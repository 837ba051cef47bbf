"""The browser upload page served at ``/`` (static files; the tus client is bundled at build
time by ``scripts/build-web``, nothing is fetched from a CDN at run time)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Serve the page last, so every API route keeps precedence over the static files."""
    if (STATIC_DIR / "index.html").is_file():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="web")
