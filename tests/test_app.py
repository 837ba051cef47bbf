"""Start-up: a real `vidgate serve` starts cleanly, and /ready tells the warm-up's real outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.routing import Mount

import vidgate.app
from tests.conftest import free_port, make_settings, running_server
from tests.helpers import serve
from tests.test_cli import vidgate_env
from vidgate.app import WarmUpFailed, _match_every_route, create_app


def wait_for_warm_up(base_url: str) -> dict[str, object]:
    """Poll /ready until the warm-up has ended; return the last answer."""
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, object] = httpx.get(f"{base_url}/ready", timeout=5).json()
        checks = body["checks"]
        assert isinstance(checks, dict)
        if not str(checks["warm_up"].get("detail") or "").startswith("starting"):
            return body
        assert time.monotonic() < deadline, "the start-up warm-up never ended"
        time.sleep(0.05)


def test_a_start_logs_no_error_and_warms_up(tmp_path: Path) -> None:
    """What the README's first command does: no ERROR, no traceback, and every warm-up step ran."""
    port = free_port()
    env = vidgate_env(tmp_path, VIDGATE_LOG_LEVEL="debug")
    with serve(env, port, cwd=tmp_path) as process:
        ready = wait_for_warm_up(f"http://127.0.0.1:{port}")
    assert process.stdout is not None
    log = process.stdout.read()
    assert ready["status"] == "ready", ready
    assert ready["checks"] == {
        "warm_up": {"ok": True, "detail": None},
        "database": {"ok": True, "detail": None},
        "storage": {"ok": True, "detail": None},
    }
    assert "Application startup complete" in log, log
    assert " ERROR " not in log and "Traceback" not in log, log
    assert "warming up" not in log, log  # not even a warning that a warm-up step failed


def test_a_failed_warm_up_step_is_reported_by_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A warm-up step that fails is named by /ready as not ok (the server still serves: what was
    not warmed is set up by the first request), and logged as one warning line."""

    def probe_server_cannot_start() -> None:
        raise OSError("no forkserver here")

    monkeypatch.setattr(vidgate.app, "warm_up_probes", probe_server_cannot_start)
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    with caplog.at_level(logging.INFO, logger="vidgate.app"), running_server(settings) as server:
        ready = wait_for_warm_up(server.base_url)
    assert ready["status"] == "ready", ready
    checks = ready["checks"]
    assert isinstance(checks, dict)
    assert checks["warm_up"] == {
        "ok": False,
        "detail": "warming up the validation probe server failed: OSError: no forkserver here",
    }
    assert checks["database"]["ok"] and checks["storage"]["ok"]
    warnings = [record for record in caplog.records if record.name == "vidgate.app"]
    assert [(record.levelname, record.exc_info) for record in warnings] == [("WARNING", None)], warnings
    assert "no forkserver here" in warnings[0].getMessage()


def test_route_warm_up_reaches_the_404_of_no_route(tmp_path: Path) -> None:
    """vidgate's own app: the warm-up request passes every route (the page at / does not claim it)."""
    app = create_app(make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}"))
    asyncio.run(_match_every_route(app))


def test_route_warm_up_fails_when_a_route_claims_its_request(tmp_path: Path) -> None:
    """A catch-all mount (static files at / that answer only GET, as the page's mount once did)
    takes the warm-up request before the other routes: that is a failed warm-up, not a silent one."""
    (tmp_path / "index.html").write_text("<p>page</p>")
    app = FastAPI()
    app.router.routes.append(Mount("/", app=StaticFiles(directory=tmp_path, html=True)))
    with pytest.raises(WarmUpFailed, match=r"answered with \[405\], not the 404 of no route"):
        asyncio.run(_match_every_route(app))
