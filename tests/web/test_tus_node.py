"""tus-js-client under Node (web/node_modules, the client the page bundles) against the real
/v1/tus/ endpoint: parallel uploads through the concatenation extension, per-request
checksums, and the server's refusals as the client sees them."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import RunningServer
from tests.helpers import wait_for_video
from tests.media import make_video, zip_archive
from tests.web.conftest import ROOT

SCRIPT = Path(__file__).with_name("tus_node_upload.mjs")


def tus_upload(node: str, server: RunningServer, path: Path, *options: str, user: str = "alice") -> dict[str, Any]:
    run = subprocess.run(
        [
            node,
            str(SCRIPT),
            "--endpoint",
            f"{server.base_url}/v1/tus/",
            "--key",
            server.key_for(user),
            "--file",
            str(path),
            *options,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    outcome: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return outcome


def session_of(server: RunningServer, url: str) -> dict[str, Any]:
    upload_id = url.rstrip("/").rsplit("/", 1)[-1]
    with server.client() as client:
        response = client.get(f"/v1/upload/video/session/{upload_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_parallel_upload_with_checksums_stores_the_exact_file(
    node: str, web_modules: Path, server: RunningServer, tmp_path: Path
) -> None:
    video = make_video(tmp_path / "parallel.mp4", frames=60, seed=uuid.uuid4().int % 100_000)
    outcome = tus_upload(node, server, video, "--parallel", "2", "--checksum", "--priority", "7")
    assert outcome["ok"], outcome
    assert outcome["algorithm"] == "sha256"
    requests = outcome["requests"]
    partials = [r for r in requests if r["method"] == "PATCH"]
    assert len(partials) == 2, requests  # one per part, each with its checksum, in parallel
    assert all(r["checksum"] and r["checksum"].startswith("sha256 ") for r in partials)
    assert sum(r["bytes"] for r in partials) == video.stat().st_size
    final = requests[-1]
    assert (final["method"], final["status"]) == ("POST", 201)  # the concatenation
    session = session_of(server, outcome["url"])
    digest = hashlib.sha256(video.read_bytes()).hexdigest()
    assert session["content_hash"] == digest
    assert session["status"] == "completed"
    assert session["filename"] == "parallel.mp4"
    assert session["priority"] == 7
    completion = outcome["completion"]
    assert completion == {"session_id": session["session_id"], "video_id": session["video_id"], "duplicate": "false"}
    with server.client() as client:
        assert wait_for_video(client, session["video_id"])["status"] == "completed"


def test_chunked_upload_sends_a_checksum_with_every_patch(
    node: str, web_modules: Path, server: RunningServer, tmp_path: Path
) -> None:
    video = make_video(tmp_path / "chunked.mp4", frames=40, seed=uuid.uuid4().int % 100_000)
    outcome = tus_upload(node, server, video, "--chunk-size", str(64 * 1024), "--checksum")
    assert outcome["ok"], outcome
    patches = [r for r in outcome["requests"] if r["method"] == "PATCH"]
    assert len(patches) == -(-video.stat().st_size // (64 * 1024))
    assert all(r["status"] == 204 and r["checksum"] for r in patches)
    assert session_of(server, outcome["url"])["content_hash"] == hashlib.sha256(video.read_bytes()).hexdigest()

    again = tus_upload(node, server, video, "--chunk-size", str(256 * 1024))
    assert again["ok"], again
    assert again["completion"]["duplicate"] == "true"
    assert again["completion"]["video_id"] == outcome["completion"]["video_id"]


def test_a_wrong_checksum_is_refused_with_460(
    node: str, web_modules: Path, server: RunningServer, tmp_path: Path
) -> None:
    video = make_video(tmp_path / "spoilt.mp4", frames=10, seed=uuid.uuid4().int % 100_000)
    outcome = tus_upload(node, server, video, "--corrupt-checksum")
    assert not outcome["ok"]
    assert outcome["error"]["status"] == 460, outcome
    assert outcome["error"]["code"]
    assert session_of(server, outcome["url"])["bytes_received"] == 0


def test_refusals_reach_the_client_as_the_api_error_envelope(
    node: str, web_modules: Path, server: RunningServer, tmp_path: Path
) -> None:
    fake = tmp_path / "renamed.mp4"
    fake.write_bytes(zip_archive())
    outcome = tus_upload(node, server, fake)
    assert not outcome["ok"]
    body = json.loads(outcome["body"])
    assert body["success"] is False
    assert outcome["error"] == {
        "status": outcome["error"]["status"],
        "code": body["error"]["code"],
        "message": body["error"]["message"],
    }
    assert outcome["error"]["status"] in (415, 422)
    assert body["error"]["code"] in {"unrecognized_format", "dangerous_content"}

    exe = tmp_path / "tool.exe"
    exe.write_bytes(b"MZ" + b"\x00" * 256)
    refused = tus_upload(node, server, exe, "--type", "application/octet-stream")
    assert not refused["ok"]
    assert refused["error"]["status"] == 415
    assert refused["error"]["code"] == "extension_blocked"
    assert refused["requests"][0]["method"] == "POST"  # refused at creation, before any byte
