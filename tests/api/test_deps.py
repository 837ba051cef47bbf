"""Roles are enforced in one dependency: what each role may and may not do over real HTTP."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.conftest import RunningServer
from tests.helpers import error_code, post_chunk, role_client
from tests.media import make_mp4

TUS = {"Tus-Resumable": "1.0.0"}


def test_a_viewer_key_reads_but_cannot_upload_or_cancel(server: RunningServer, tmp_path: Path) -> None:
    user = f"team-{uuid.uuid4().hex[:6]}"
    data = make_mp4(tmp_path / "v.mp4", frames=10, seed=uuid.uuid4().int % 9999).read_bytes()
    with role_client(server, user, "uploader") as uploader:
        receipt = post_chunk(uploader, data, session_id=f"s-{uuid.uuid4().hex}", chunk_index=0, total_chunks=1)
        assert receipt.status_code == 200, receipt.text
        video_id = receipt.json()["data"]["video_id"]
    with role_client(server, user, "viewer") as viewer:
        refused = post_chunk(viewer, data, session_id=f"s-{uuid.uuid4().hex}", chunk_index=0, total_chunks=1)
        assert (refused.status_code, error_code(refused)) == (403, "insufficient_role")
        message = refused.json()["error"]["message"]
        assert "viewer" in message and "uploader or admin" in message
        tus = viewer.post("/v1/tus/", headers={**TUS, "Upload-Length": "10"})
        assert (tus.status_code, error_code(tus)) == (403, "insufficient_role")
        cancel = viewer.delete(f"/v1/upload/video/session/{uuid.uuid4().hex}")
        assert (cancel.status_code, error_code(cancel)) == (403, "insufficient_role")
        # Reading the team's library is what a viewer is for.
        assert viewer.get(f"/v1/videos/{video_id}").status_code == 200


def test_a_reviewer_key_cannot_upload(server: RunningServer, tmp_path: Path) -> None:
    data = make_mp4(tmp_path / "r.mp4", frames=10, seed=uuid.uuid4().int % 9999).read_bytes()
    with role_client(server, f"team-{uuid.uuid4().hex[:6]}", "reviewer") as reviewer:
        refused = post_chunk(reviewer, data, session_id=f"s-{uuid.uuid4().hex}", chunk_index=0, total_chunks=1)
    assert (refused.status_code, error_code(refused)) == (403, "insufficient_role")


def test_an_admin_key_uploads(server: RunningServer, tmp_path: Path) -> None:
    data = make_mp4(tmp_path / "a.mp4", frames=10, seed=uuid.uuid4().int % 9999).read_bytes()
    with role_client(server, f"team-{uuid.uuid4().hex[:6]}", "admin") as admin:
        response = post_chunk(admin, data, session_id=f"s-{uuid.uuid4().hex}", chunk_index=0, total_chunks=1)
    assert response.status_code == 200, response.text


def test_a_malformed_or_second_credential_is_refused(server: RunningServer) -> None:
    key = server.keys["alice"]
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for headers in (
            {"Authorization": "Basic abc", "X-API-Key": key},
            {"Authorization": f"Bearer {key}", "X-API-Key": "vg_other"},
        ):
            response = client.get("/v1/videos", headers=headers)
            assert (response.status_code, error_code(response)) == (401, "unauthenticated"), headers
        assert client.get("/v1/videos", headers={"Authorization": f"Bearer {key}", "X-API-Key": key}).status_code == 200
