"""Fixtures of the browser page's tests: Node with web/node_modules, a server of our own on the
embedded default, and headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningServer, make_settings, running_server

ROOT = Path(__file__).resolve().parents[2]
WEB_DIR = ROOT / "web"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("Node.js is needed for the web tests (Node 18+)")
    return path


@pytest.fixture(scope="session")
def web_modules(node: str) -> Path:
    """web/node_modules, as `scripts/build-web` (npm ci) leaves it."""
    modules = WEB_DIR / "node_modules"
    if not (modules / "tus-js-client" / "package.json").is_file():
        pytest.fail("web/node_modules is missing: run scripts/build-web (npm ci) first")
    return modules


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server on the embedded default (SQLite) for the page: the browser sees one origin."""
    data_dir = tmp_path_factory.mktemp("web-server")
    settings = make_settings(data_dir, f"sqlite:///{data_dir / 'vidgate.db'}")
    with running_server(settings) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: run scripts/debian-deps (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
