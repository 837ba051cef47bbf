"""VidgateClient against the real test server (SQLite and PostgreSQL), over real sockets."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.client.proxy import CountingProxy
from tests.conftest import RunningServer
from tests.helpers import blob_path, sha256
from tests.media import make_video
from vidgate.client import ProgressUpdate, RequestRefused, VidgateClient

KIB = 1024


class Stop(Exception):
    """Raised by a progress callback: the caller gave up mid-upload."""


def fresh_video(directory: Path, name: str = "clip.mp4", frames: int = 30) -> Path:
    return make_video(directory / name, frames=frames, seed=uuid.uuid4().int % 2**32)


def state_files(state_dir: Path) -> list[Path]:
    return sorted(state_dir.glob("*.json")) if state_dir.exists() else []


def test_upload_stores_the_file_and_both_hashes_agree(
    server: RunningServer, client: VidgateClient, tmp_path: Path, state_dir: Path
) -> None:
    video = fresh_video(tmp_path)
    data = video.read_bytes()
    updates: list[ProgressUpdate] = []
    upload = client.upload(video, chunk_size=64 * KIB, progress=updates.append)
    assert upload.sha256 == sha256(data)
    assert (upload.file_size, upload.total_chunks, upload.chunks_sent) == (
        len(data),
        -(-len(data) // (64 * KIB)),
        upload.total_chunks,
    )
    assert not upload.resumed and not upload.duplicate
    session = client.session(upload.session_id)
    assert (session.status, session.content_hash, session.video_id) == ("completed", upload.sha256, upload.video_id)
    assert blob_path(server.settings.storage_dir, upload.sha256).read_bytes() == data
    assert updates[-1].bytes_done == len(data) and updates[-1].chunks_done == upload.total_chunks
    assert [u.phase for u in updates].count("verifying") >= 1  # every byte out, the server checking
    assert state_files(state_dir) == []  # nothing left to resume


def test_parallel_upload_sends_each_chunk_once_over_several_connections(
    proxy: CountingProxy, proxied_client: VidgateClient, tmp_path: Path
) -> None:
    video = fresh_video(tmp_path, frames=40)
    upload = proxied_client.upload(video, chunk_size=16 * KIB, parallel=4)
    assert upload.sha256 == sha256(video.read_bytes())
    assert proxied_client.session(upload.session_id).content_hash == upload.sha256
    assert Counter(proxy.chunk_indexes) == Counter(range(upload.total_chunks))
    assert proxy.chunk_indexes[-1] == upload.total_chunks - 1  # the last chunk goes alone, with the hash
    assert proxy.connections >= 2


def test_an_interrupted_upload_sends_only_the_missing_chunks(
    proxy: CountingProxy, proxied_client: VidgateClient, tmp_path: Path, state_dir: Path
) -> None:
    video = fresh_video(tmp_path)

    def give_up(update: ProgressUpdate) -> None:
        if update.chunks_done == 3:
            raise Stop

    with pytest.raises(Stop):
        proxied_client.upload(video, chunk_size=16 * KIB, progress=give_up)
    [state] = state_files(state_dir)
    session_id = state.read_text().split('"session_id":"')[1].split('"')[0]
    before = proxied_client.session(session_id)
    assert (before.status, before.chunks_received) == ("active", 3)
    proxy.reset()

    upload = proxied_client.upload(video, chunk_size=16 * KIB, parallel=3)
    assert upload.resumed and upload.session_id == session_id
    assert upload.chunks_sent == len(before.missing_chunks) == upload.total_chunks - 3
    assert sorted(proxy.chunk_indexes) == before.missing_chunks  # each missing chunk once, nothing else
    assert upload.sha256 == sha256(video.read_bytes()) == proxied_client.session(session_id).content_hash
    assert state_files(state_dir) == []


def test_a_file_changed_since_the_interruption_starts_afresh(
    client: VidgateClient, tmp_path: Path, state_dir: Path
) -> None:
    video = fresh_video(tmp_path)

    def give_up(update: ProgressUpdate) -> None:
        if update.chunks_done == 2:
            raise Stop

    with pytest.raises(Stop):
        client.upload(video, chunk_size=16 * KIB, progress=give_up)
    old_session = state_files(state_dir)[0].read_text().split('"session_id":"')[1].split('"')[0]
    fresh_video(tmp_path, frames=35)  # same path, other bytes
    upload = client.upload(video, chunk_size=16 * KIB)
    assert not upload.resumed and upload.session_id != old_session
    assert upload.sha256 == sha256(video.read_bytes())
    assert client.session(old_session).status == "cancelled"  # its space freed at once
    assert state_files(state_dir) == []


def test_wait_returns_the_analysis_result(client: VidgateClient, tmp_path: Path) -> None:
    video = fresh_video(tmp_path)
    upload = client.upload(video, chunk_size=64 * KIB, wait=True)
    assert upload.processing_status == "completed"
    assert upload.result is not None
    assert (upload.result.video_id, upload.result.content_hash) == (upload.video_id, upload.sha256)
    assert upload.result == client.result(upload.video_id)

    again = client.upload(video, chunk_size=64 * KIB)  # known content: answered from the stored result
    assert again.duplicate and again.video_id == upload.video_id
    assert again.processing_status == "completed"
    assert again.result is not None and again.result.fingerprint == upload.result.fingerprint


def test_a_refused_name_raises_the_server_code_and_forgets_the_upload(
    client: VidgateClient, tmp_path: Path, state_dir: Path
) -> None:
    video = fresh_video(tmp_path)
    renamed = video.rename(tmp_path / "clip.txt")
    with pytest.raises(RequestRefused) as refused:
        client.upload(renamed)
    assert (refused.value.status, refused.value.code) == (415, "extension_not_allowed")
    assert state_files(state_dir) == []


def test_content_refused_after_the_last_chunk_raises_its_code(
    client: VidgateClient, tmp_path: Path, state_dir: Path
) -> None:
    video = fresh_video(tmp_path)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) * 2 // 3])  # no moov box: the file is cut off
    with pytest.raises(RequestRefused) as refused:
        client.upload(video, chunk_size=32 * KIB, parallel=2)
    assert (refused.value.status, refused.value.code) == (422, "truncated_file")
    assert refused.value.session_id is not None
    assert client.session(refused.value.session_id).status == "failed"
    assert state_files(state_dir) == []


def test_odd_file_names_arrive_intact(client: VidgateClient, tmp_path: Path) -> None:
    name = 'my "best" clip; été 100%.mp4'
    video = fresh_video(tmp_path, name=name)
    upload = client.upload(video, chunk_size=64 * KIB)
    assert client.session(upload.session_id).filename == name


def test_a_bad_key_is_refused_clearly(server: RunningServer, tmp_path: Path) -> None:
    video = fresh_video(tmp_path)
    with (
        VidgateClient(server.base_url, "vg_not_a_key", state_dir=tmp_path / "s") as stranger,
        pytest.raises(RequestRefused) as refused,
    ):
        stranger.upload(video)
    assert (refused.value.status, refused.value.code) == (401, "unauthenticated")


def test_a_resumed_upload_reports_the_resumed_part_as_done_from_its_first_update(
    client: VidgateClient, tmp_path: Path
) -> None:
    """Before any byte goes out, the first update carries the totals and the part on the server;
    ``bytes_sent`` counts only what this call sends."""
    video = fresh_video(tmp_path)
    size = video.stat().st_size

    def give_up(update: ProgressUpdate) -> None:
        if update.chunks_done == 3:
            raise Stop

    with pytest.raises(Stop):
        client.upload(video, chunk_size=16 * KIB, progress=give_up)
    updates: list[ProgressUpdate] = []
    upload = client.upload(video, chunk_size=16 * KIB, progress=updates.append)
    assert upload.resumed and upload.chunks_sent == upload.total_chunks - 3
    resumed = 3 * 16 * KIB
    first = updates[0]
    assert (first.bytes_done, first.bytes_total, first.bytes_resumed, first.bytes_sent) == (resumed, size, resumed, 0)
    assert (first.chunks_done, first.chunks_total, first.phase) == (3, upload.total_chunks, "uploading")
    assert {update.bytes_resumed for update in updates} == {resumed}
    assert updates[-1].bytes_done == size and updates[-1].bytes_sent == size - resumed
    assert all(update.bytes_total == size for update in updates)
