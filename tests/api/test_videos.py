"""Uploads become results: the inline queue, exact dedup and near-duplicates over real HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import RunningServer, database_url_for, make_settings, running_server
from tests.helpers import error_code, post_chunk, sha256, wait_for_video
from tests.media import make_scene_video, make_video
from tests.processing.onnx_models import channel_mean_model
from vidgate.db.models import Content


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {
        "original": make_scene_video(root / "original.mp4", seconds=12, seed=21),
        "reencoded": make_scene_video(
            root / "reencoded.mkv", seconds=12, seed=21, fmt="matroska", codec="mpeg4", options={"b": "300000"}
        ),
        "resized": make_scene_video(root / "resized.mp4", seconds=12, seed=21, width=160, height=90),
        "trimmed": make_scene_video(root / "trimmed.mp4", seconds=8, seed=21, start=4.0),
        "unrelated": make_scene_video(root / "unrelated.mp4", seconds=12, seed=99),
    }


def upload(server: RunningServer, user: str, path: Path, **fields: object) -> dict[str, object]:
    with server.client(user) as client:
        response = post_chunk(client, path.read_bytes(), filename=path.name, content_type="", **fields)
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()["data"]
    return data


def test_an_upload_becomes_a_result(server: RunningServer, tmp_path: Path) -> None:
    path = make_video(tmp_path / "fresh.mp4", seed=uuid.uuid4().int % 10_000)
    receipt = upload(server, "alice", path, priority=8, options='{"model_type": "resnet50"}')
    assert receipt["duplicate"] is False
    with server.client() as client:
        video = wait_for_video(client, str(receipt["video_id"]))
        assert video["status"] == "completed", video
        assert video["content_hash"] == sha256(path.read_bytes())
        assert video["priority"] == 8 and video["progress"] == 100.0 and video["fingerprint"]
        result = client.get(f"/v1/videos/{receipt['video_id']}/result").json()["data"]
    assert result["metadata"]["video"]["codec"] == "h264"
    assert len(result["samples"]) == 2
    # No model file in this server's model dir: the shipped network stands in, and says so.
    assert result["embeddings"]["status"] == "ok"
    assert result["embeddings"]["model_type"].startswith("open_nsfw")
    assert "resnet50.onnx not found" in result["embeddings"]["reason"]
    assert result["moderation"]["flagged"] is False and result["moderation"]["nsfw"]["status"] == "ok"


def test_identical_content_is_processed_once(server: RunningServer, tmp_path: Path) -> None:
    path = make_video(tmp_path / "twice.mp4", seed=uuid.uuid4().int % 10_000)
    first = upload(server, "alice", path)
    with server.client() as client:
        wait_for_video(client, str(first["video_id"]))
    again = upload(server, "alice", path)
    assert again["duplicate"] is True and again["video_id"] == first["video_id"]
    assert again["result"]["content_hash"] == sha256(path.read_bytes())  # type: ignore[index]
    # Another user who sends the same bytes gets a video of their own, answered as a first
    # upload would be (DEDUP_SCOPE=owner); the stored analysis is reused, not run again.
    other = upload(server, "bob", path)
    assert other["duplicate"] is False and other["result"] is None
    assert other["video_id"] != first["video_id"]
    with server.client("bob") as client:
        video = wait_for_video(client, str(other["video_id"]))
        assert video["status"] == "completed" and video["attempts"] == 1 and video["filename"] == "twice.mp4"
        assert client.get(f"/v1/videos/{first['video_id']}").status_code == 404
    with server.client("alice") as client:
        assert client.get(f"/v1/videos/{first['video_id']}").json()["data"]["attempts"] == 1
    with server.db.session() as session:
        content = session.scalars(select(Content).where(Content.content_hash == sha256(path.read_bytes()))).one()
        assert content.analyses == 1


def test_a_video_id_alone_reveals_nothing(server: RunningServer, tmp_path: Path) -> None:
    path = make_video(tmp_path / "private.mp4", seed=uuid.uuid4().int % 10_000)
    receipt = upload(server, "alice", path)
    with server.client("bob") as bob:
        for url in (f"/v1/videos/{receipt['video_id']}", f"/v1/videos/{receipt['video_id']}/result"):
            response = bob.get(url)
            assert (response.status_code, error_code(response)) == (404, "video_not_found")


def test_result_not_ready_is_a_clear_conflict(server: RunningServer, tmp_path: Path) -> None:
    path = make_scene_video(tmp_path / "slow.mp4", seconds=30, width=640, height=360, seed=uuid.uuid4().int % 999)
    receipt = upload(server, "alice", path)
    with server.client() as client:
        response = client.get(f"/v1/videos/{receipt['video_id']}/result")
        if response.status_code != 200:  # still queued or processing
            assert (response.status_code, error_code(response)) == (409, "result_not_ready")
        wait_for_video(client, str(receipt["video_id"]))
        assert client.get(f"/v1/videos/{receipt['video_id']}/result").status_code == 200


def test_near_duplicates_are_found_among_the_callers_own_videos(server: RunningServer, clips: dict[str, Path]) -> None:
    owner = f"nd-{uuid.uuid4().hex[:6]}"
    stranger = f"nd-{uuid.uuid4().hex[:6]}"
    server.key_for(owner)
    server.key_for(stranger)
    ids = {name: str(upload(server, owner, path)["video_id"]) for name, path in clips.items()}
    stranger_copy = str(upload(server, stranger, clips["reencoded"])["video_id"])
    assert stranger_copy != ids["reencoded"]  # same bytes, a video of the stranger's own
    with server.client(owner) as client:
        for video_id in ids.values():
            assert wait_for_video(client, video_id)["status"] == "completed"
        for copy in ("reencoded", "resized", "trimmed"):
            similar = client.get(f"/v1/videos/{ids[copy]}/result").json()["data"]["similar_videos"]
            found = {s["video_id"]: s["similarity"] for s in similar}
            assert found.get(ids["original"], 0) >= 0.7, (copy, similar)
            assert ids["unrelated"] not in found
    # The stranger owns only the re-encoded copy: the owner's other videos are not theirs to see.
    with server.client(stranger) as client:
        assert wait_for_video(client, stranger_copy)["status"] == "completed"
        similar = client.get(f"/v1/videos/{stranger_copy}/result").json()["data"]["similar_videos"]
        assert client.get(f"/v1/videos/{ids['reencoded']}/result").status_code == 404
    assert similar == []


@pytest.fixture(scope="module")
def shared_library_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp(f"shared-{backend}")
    channel_mean_model(data_dir / "models-tiny.onnx")
    with database_url_for(backend, data_dir) as url:
        settings = make_settings(
            data_dir,
            url,
            processing={
                "similarity_scope": "shared",
                "model_dir": data_dir,
                "model_files": {"resnet50": "models-tiny.onnx"},
            },
            upload={"enable_deduplication": False},
        )
        with running_server(settings) as running:
            yield running


def test_shared_library_and_disabled_dedup(shared_library_server: RunningServer, clips: dict[str, Path]) -> None:
    server = shared_library_server
    original = str(upload(server, "alice", clips["original"])["video_id"])
    copy = str(upload(server, "bob", clips["resized"])["video_id"])
    with server.client("bob") as bob:
        wait_for_video(bob, copy)
        with server.client("alice") as alice:
            wait_for_video(alice, original)
        result = bob.get(f"/v1/videos/{copy}/result").json()["data"]
    # One library for everyone, but alice's video is not bob's: it is there, nameless.
    assert [s["video_id"] for s in result["similar_videos"]] == [None], result["similar_videos"]
    assert original not in json.dumps(result)
    assert result["embeddings"]["status"] == "ok" and result["embeddings"]["dimension"] == 3
    again = upload(server, "bob", clips["resized"])
    assert again["duplicate"] is True and again["result"] is None  # dedup off: processed again
    with server.client("bob") as bob:
        assert wait_for_video(bob, copy)["attempts"] == 2
