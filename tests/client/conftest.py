"""Fixtures of the client tests: a client of the shared test server, a counting proxy in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.proxy import CountingProxy, counting_proxy
from tests.conftest import RunningServer
from vidgate.client import VidgateClient


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def proxy(server: RunningServer) -> Iterator[CountingProxy]:
    with counting_proxy(server.base_url) as running:
        yield running


@pytest.fixture
def client(server: RunningServer, state_dir: Path) -> Iterator[VidgateClient]:
    with VidgateClient(server.base_url, server.key_for("alice"), state_dir=state_dir) as running:
        yield running


@pytest.fixture
def proxied_client(server: RunningServer, proxy: CountingProxy, state_dir: Path) -> Iterator[VidgateClient]:
    """A client whose every request goes through ``proxy``."""
    with VidgateClient(proxy.base_url, server.key_for("alice"), state_dir=state_dir) as running:
        yield running
