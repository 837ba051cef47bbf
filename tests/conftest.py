"""Shared fixtures: real databases (SQLite file and PostgreSQL), a real HTTP server, real files.

Every test that takes ``server`` runs twice: once on the embedded default (SQLite) and once
on PostgreSQL at 127.0.0.1:5432, each in a database created for this test run and dropped
after it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from tests.media import make_mp4
from vidgate.app import uvicorn_config
from vidgate.auth import create_key
from vidgate.config import Settings, load_settings
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.wiring import build_services

PG_ADMIN_URL = os.environ.get("VIDGATE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """Create a fresh PostgreSQL database and drop it afterwards."""
    name = f"vidgate_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def database_url_for(backend: str, directory: Path) -> Iterator[str]:
    if backend == "postgresql":
        with postgres_database() as url:
            yield url
    else:
        yield f"sqlite:///{directory / 'vidgate.db'}"


def make_settings(data_dir: Path, database_url: str, **groups: dict[str, Any]) -> Settings:
    overrides: dict[str, dict[str, Any]] = {
        "server": {"data_dir": data_dir},
        "database": {"url": database_url},
        "auth": {"create_dev_key": False},
    }
    for group, values in groups.items():
        overrides.setdefault(group, {}).update(values)
    return load_settings(**overrides)


@dataclass
class RunningServer:
    base_url: str
    settings: Settings
    db: Database
    keys: dict[str, str]
    app: Any = None

    @property
    def services(self) -> Any:
        """The server's own wired services (its event bus, queue, ...)."""
        return self.app.state.services

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/ws"

    def client(self, user: str = "alice") -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"X-API-Key": self.keys[user]}, timeout=30)

    def key_for(self, user: str) -> str:
        if user not in self.keys:
            self.keys[user], _ = create_key(self.db, user)
        return self.keys[user]


class ServerThread(threading.Thread):
    """uvicorn serving the real app on a loopback port, in this process."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.port = free_port()
        config = uvicorn_config(settings, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        self.server.run()

    def __enter__(self) -> ServerThread:
        self.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.join(timeout=20)


@contextlib.contextmanager
def running_server(settings: Settings) -> Iterator[RunningServer]:
    db = Database(settings.database_url)
    migrate.upgrade(db)
    with ServerThread(settings) as thread:
        server = RunningServer(
            base_url=f"http://127.0.0.1:{thread.port}", settings=settings, db=db, keys={}, app=thread.server.config.app
        )
        server.key_for("alice")
        server.key_for("bob")
        try:
            yield server
        finally:
            db.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server shared by the tests of one backend (each test uses its own sessions)."""
    data_dir = tmp_path_factory.mktemp(f"server-{backend}")
    with database_url_for(backend, data_dir) as url, running_server(make_settings(data_dir, url)) as running:
        yield running


@pytest.fixture
def services_for(tmp_path: Path, backend: str) -> Iterator[Any]:
    """Build the services (no HTTP) over a fresh database of the current backend."""

    @contextlib.contextmanager
    def build(**groups: dict[str, Any]) -> Iterator[Any]:
        with database_url_for(backend, tmp_path) as url:
            settings = make_settings(tmp_path, url, **groups)
            services = build_services(settings)
            migrate.upgrade(services.db)
            try:
                yield services
            finally:
                services.db.dispose()

    yield build


@pytest.fixture(scope="session")
def video_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real H.264 MP4 of about 450 KB."""
    return make_mp4(tmp_path_factory.mktemp("media") / "clip.mp4", frames=50)


@pytest.fixture
def unique_video(tmp_path: Path) -> Path:
    """A real MP4 whose bytes no other test uses."""
    return make_mp4(tmp_path / "unique.mp4", frames=30, seed=uuid.uuid4().int % (2**32))


@pytest.fixture
def broker() -> Iterator[str]:
    """A Redis database of the shared server (127.0.0.1:6379) for this test alone."""
    from tests.cluster import redis_database

    with redis_database() as url:
        yield url
