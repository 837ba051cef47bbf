"""The worker's metrics endpoint pieces: the token guard, and the removal of prometheus
folders that killed workers left behind (the live endpoint: tests/processing/test_celery.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vidgate.processing.worker_metrics import FOLDER_PREFIX, guarded, remove_stale_folders


def _metrics(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"vidgate_up 1\n"]


def _call(app: Any, authorization: str | None) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def test_the_token_guard_refuses_with_the_apis_json_error() -> None:
    app = guarded(_metrics, "scrape-secret")
    for authorization in (None, "Bearer nope", "Basic scrape-secret", "scrape-secret"):
        status, headers, body = _call(app, authorization)
        assert status.startswith("401") and headers["WWW-Authenticate"] == "Bearer"
        assert json.loads(body)["error"]["code"] == "unauthenticated"
    status, _, body = _call(app, "Bearer scrape-secret")
    assert status.startswith("200") and body == b"vidgate_up 1\n"
    assert _call(guarded(_metrics, None), None)[0].startswith("200")  # no token set: open


def test_folders_of_workers_that_are_gone_are_removed(tmp_path: Path) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead = tmp_path / f"{FOLDER_PREFIX}{finished.pid}-abc"
    alive = tmp_path / f"{FOLDER_PREFIX}{os.getpid()}-def"
    other = tmp_path / f"{FOLDER_PREFIX}notapid"
    for folder in (dead, alive, other):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"x")
    assert remove_stale_folders(tmp_path) == [dead]
    assert not dead.exists() and alive.exists() and other.exists()
