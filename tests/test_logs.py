"""Logs: API keys never appear (browsers send them in the WebSocket URL), JSON lines carry ids."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import RunningServer, free_port
from tests.helpers import post_chunk, serve
from tests.media import make_video


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def server_logs() -> Iterator[Collect]:
    collect = Collect()
    loggers = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.error")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(collect)
        logger.setLevel(logging.INFO)
    yield collect
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(collect)
        logger.setLevel(level)


def test_api_keys_in_urls_never_reach_the_log(server: RunningServer, server_logs: Collect) -> None:
    key = server.key_for("alice")
    with connect(f"{server.ws_url}?api_key={key}&subscribe=all"):
        pass
    httpx.get(f"{server.base_url}/health?api_key={key}")
    logged = "\n".join(server_logs.lines)
    assert "api_key=***" in logged
    assert key not in logged


def test_json_logs_carry_the_session_and_video_ids(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDGATE_", "DATABASE_", "UPLOAD_"))}
    env.update(VIDGATE_DATA_DIR=str(tmp_path), LOG_FORMAT="json", VIDGATE_LOG_LEVEL="info")
    with serve(env, port, cwd=tmp_path) as process:
        deadline = time.monotonic() + 30
        while not (tmp_path / "dev-api-key").exists():
            assert time.monotonic() < deadline, "no dev key was written"
            time.sleep(0.1)
        key = (tmp_path / "dev-api-key").read_text().strip()
        data = make_video(tmp_path / "j.mp4", seed=uuid.uuid4().int % 100_000).read_bytes()
        session_id = f"json-{uuid.uuid4().hex}"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}) as client:
            response = post_chunk(client, data, session_id=session_id)
            assert response.status_code == 200, response.text
    assert process.stdout is not None
    output = process.stdout.read()
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert records, output[-2000:]
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    events = {record.get("event"): record for record in records if record.get("session_id") == session_id}
    assert "session_created" in events and "upload_completed" in events, events.keys()
    assert events["upload_completed"]["video_id"] == response.json()["data"]["video_id"]
    assert not any(key in json.dumps(record) for record in records)  # printed once at first start, never logged
