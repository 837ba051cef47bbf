"""`vidgate upload` as a user runs it: a real process against the real test server."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.client.proxy import CountingProxy
from tests.conftest import RunningServer
from tests.helpers import UPLOAD, sha256
from tests.media import make_video
from vidgate.config import SettingsError, all_env_names, load_settings


def client_env(url: str, key: str | None, state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in all_env_names()}
    env.update(VIDGATE_URL=url, VIDGATE_CLIENT_STATE_DIR=str(state_dir))
    if key is not None:
        env["VIDGATE_API_KEY"] = key
    else:
        env.pop("VIDGATE_API_KEY", None)
    return env


def vidgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidgate", "upload", *args], env=env, capture_output=True, text=True, timeout=60
    )


def summary(stdout: str) -> dict[str, str]:
    """The ``  name  value`` lines printed for a file."""
    fields = {}
    for line in stdout.splitlines():
        if line.startswith("  "):
            name, _, value = line.strip().partition(" ")
            fields[name] = value.strip()
    return fields


def session_view(server: RunningServer, session_id: str) -> dict[str, Any] | None:
    with server.client() as client:
        response = client.get(f"{UPLOAD}/session/{session_id}")
    return response.json()["data"] if response.status_code == 200 else None


def test_killed_upload_resumes_with_only_the_missing_chunks(
    server: RunningServer, proxy: CountingProxy, tmp_path: Path, state_dir: Path
) -> None:
    """SIGKILL mid-upload (no handler runs), then the same command again: it continues the same
    session, sends exactly the chunks the server lacks, and the stored file is the file."""
    video = make_video(tmp_path / "long.mp4", frames=70, seed=uuid.uuid4().int % 2**32)
    data = video.read_bytes()
    chunk = 10 * 1024
    total = -(-len(data) // chunk)
    assert 50 <= total <= server.settings.upload.max_chunks
    env = client_env(proxy.base_url, server.key_for("alice"), state_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "vidgate", "upload", str(video), "--chunk-size", str(chunk)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not list(state_dir.glob("*.json")):  # written before the first chunk goes out
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        session_id = json.loads(next(state_dir.glob("*.json")).read_text())["session_id"]
        while (view := session_view(server, session_id)) is None or view["chunks_received"] < 5:
            assert process.poll() is None, "the upload ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.kill()
    finally:
        process.kill()
        process.wait()
    received = -1
    while (view := session_view(server, session_id)) is not None and view["chunks_received"] != received:
        received = view["chunks_received"]
        time.sleep(0.3)  # settled: a chunk cut off by the kill does not count
    assert view is not None and view["status"] == "active"
    missing = view["missing_chunks"]
    assert 5 <= received < total and len(missing) == total - received
    proxy.reset()

    again = vidgate(str(video), "--chunk-size", str(chunk), "--parallel", "3", env=env)
    assert again.returncode == 0, again.stderr
    printed = summary(again.stdout)
    assert printed["session"] == session_id
    assert printed["sha256"] == sha256(data)
    assert printed["resumed"].startswith(f"{received} of {total} chunks")
    assert Counter(proxy.chunk_indexes) == Counter(missing)
    done = session_view(server, session_id)
    assert done is not None and (done["status"], done["content_hash"]) == ("completed", sha256(data))
    assert list(state_dir.glob("*.json")) == []


def test_wait_into_a_pipe_prints_json_alone_on_stdout(server: RunningServer, tmp_path: Path, state_dir: Path) -> None:
    """``vidgate upload --wait | jq``: stdout (a pipe here) is one JSON document, the upload with
    its analysis result; the human summary goes to stderr."""
    video = make_video(tmp_path / "wait.mp4", frames=30, seed=uuid.uuid4().int % 2**32)
    env = client_env(server.base_url, server.key_for("alice"), state_dir)
    done = vidgate(str(video), "--wait", "--priority", "9", "--chunk-size", "64KiB", env=env)
    assert done.returncode == 0, done.stderr
    upload = json.loads(done.stdout)
    printed = summary(done.stderr)
    assert printed["sha256"] == upload["sha256"] == sha256(video.read_bytes())
    assert (printed["duplicate"], printed["processing"]) == ("no", "completed")
    assert (upload["duplicate"], upload["processing_status"], upload["path"]) == (False, "completed", str(video))
    result = upload["result"]
    assert (result["video_id"], result["content_hash"]) == (printed["video"], printed["sha256"])
    assert result["metadata"]["video"]["width"] == 160
    with server.client() as client:
        video_view = client.get(f"/v1/videos/{printed['video']}").json()["data"]
    assert video_view["priority"] == 9


def test_json_prints_one_object_per_uploaded_file(server: RunningServer, tmp_path: Path, state_dir: Path) -> None:
    """``--json`` without ``--wait``: one line of JSON per file that went up, nothing else on
    stdout; a refused file is said on stderr and makes the exit code 1, as without ``--json``."""
    first = make_video(tmp_path / "one.mp4", frames=25, seed=uuid.uuid4().int % 2**32)
    second = make_video(tmp_path / "two.mp4", frames=25, seed=uuid.uuid4().int % 2**32)
    bad = make_video(tmp_path / "clip.mp4", frames=25).rename(tmp_path / "clip.exe")
    env = client_env(server.base_url, server.key_for("alice"), state_dir)
    done = vidgate(str(first), str(bad), str(second), "--json", env=env)
    assert done.returncode == 1, done.stderr
    uploads = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(upload["path"], upload["sha256"], upload["result"]) for upload in uploads] == [
        (str(first), sha256(first.read_bytes()), None),
        (str(second), sha256(second.read_bytes()), None),
    ]
    assert "clip.exe: refused by the server: 415 extension_blocked" in done.stderr
    assert all(f"  sha256     {upload['sha256']}" in done.stderr for upload in uploads)  # the summaries


def test_wait_on_a_terminal_prints_the_summary_and_result_there(
    server: RunningServer, tmp_path: Path, state_dir: Path
) -> None:
    """On a terminal, ``--wait`` without ``--json`` shows the summary and then the indented result."""
    video = make_video(tmp_path / "tty.mp4", frames=25, seed=uuid.uuid4().int % 2**32)
    env = client_env(server.base_url, server.key_for("alice"), state_dir)
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "vidgate", "upload", str(video), "--wait"],
            env=env,
            stdout=terminal,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(terminal)
        shown = b""
        with contextlib.suppress(OSError):  # EIO once the process closed the terminal
            while chunk := os.read(controller, 65536):
                shown += chunk
        _, errors = process.communicate(timeout=60)
    finally:
        os.close(controller)
    assert process.returncode == 0, errors
    text = shown.decode().replace("\r\n", "\n")
    printed = summary(text)
    assert (printed["sha256"], printed["processing"]) == (sha256(video.read_bytes()), "completed")
    result = json.loads(text[text.index("\n{") :])
    assert result["video_id"] == printed["video"]
    assert "sha256" not in errors


def test_a_refused_file_exits_non_zero_with_the_server_code(
    server: RunningServer, tmp_path: Path, state_dir: Path
) -> None:
    good = make_video(tmp_path / "fine.mp4", frames=25, seed=uuid.uuid4().int % 2**32)
    bad = make_video(tmp_path / "clip.mp4", frames=25).rename(tmp_path / "clip.exe")
    env = client_env(server.base_url, server.key_for("alice"), state_dir)
    done = vidgate(str(bad), str(good), env=env)
    assert done.returncode == 1
    assert "clip.exe: refused by the server: 415 extension_blocked" in done.stderr
    assert summary(done.stdout)["sha256"] == sha256(good.read_bytes())  # the other file still went up
    assert list(state_dir.glob("*.json")) == []


def test_a_missing_or_wrong_key_is_said_plainly(server: RunningServer, tmp_path: Path, state_dir: Path) -> None:
    video = make_video(tmp_path / "k.mp4", frames=25)
    no_key = vidgate(str(video), env=client_env(server.base_url, None, state_dir))
    assert no_key.returncode == 1 and "no API key" in no_key.stderr
    wrong = vidgate(str(video), env=client_env(server.base_url, "vg_wrong", state_dir))
    assert wrong.returncode == 1 and "401 unauthenticated" in wrong.stderr
    unreachable = vidgate(
        str(video), "--server", "http://127.0.0.1:9", env=client_env(server.base_url, "vg_any", state_dir)
    )
    assert unreachable.returncode == 1 and "server unreachable" in unreachable.stderr


def test_the_server_starts_with_the_client_variables_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    """VIDGATE_URL and friends carry the server's prefix but are the client's: not typos."""
    monkeypatch.setenv("VIDGATE_URL", "http://example.org")
    monkeypatch.setenv("VIDGATE_API_KEY", "vg_x")
    monkeypatch.setenv("VIDGATE_CLIENT_STATE_DIR", "/tmp/x")
    load_settings()
    monkeypatch.setenv("VIDGATE_APIKEY", "vg_x")
    with pytest.raises(SettingsError, match="unknown setting VIDGATE_APIKEY"):
        load_settings()
