"""The processing service over real databases: one analysis per content, however many owners'
jobs run, and each owner's video completed or failed with it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tests.helpers import split
from tests.media import make_video
from vidgate.auth import Principal
from vidgate.db.models import AnalysisStatus, Content, Video, VideoAnalysisResultRow, VideoStatus
from vidgate.uploads.models import ChunkReceipt, ChunkRequest
from vidgate.uploads.service import UploadService

ALICE = Principal(user_id="u-alice", username="alice")
BOB = Principal(user_id="u-bob", username="bob")


def upload(service: UploadService, who: Principal, data: bytes, name: str) -> ChunkReceipt:
    plan = service.begin_chunk(who, ChunkRequest(filename=name))

    async def stream() -> Any:
        sink = service.open_sink(plan)
        for piece in split(data, 64_000):
            await sink.write(piece)
        return await sink.finish()

    return service.finish_chunk(plan, asyncio.run(stream()))


def two_owners(services: Any, tmp_path: Path) -> tuple[str, str, str]:
    """alice and bob upload the same bytes (no queue runs): their video ids and the content id."""
    data = make_video(tmp_path / "same.mp4", frames=25).read_bytes()
    alice = upload(services.uploads, ALICE, data, "board-meeting-private.mp4")
    bob = upload(services.uploads, BOB, data, "b.mp4")
    assert alice.video_id and bob.video_id and alice.video_id != bob.video_id
    assert not alice.duplicate and not bob.duplicate  # DEDUP_SCOPE=owner
    with services.db.session() as session:
        content_id = session.get_one(Video, alice.video_id).content_id
        assert session.get_one(Video, bob.video_id).content_id == content_id
    return alice.video_id, bob.video_id, content_id


def test_a_job_waits_for_the_analysis_another_runs_and_completes_with_it(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    with services_for() as services:
        alice, bob, content_id = two_owners(services, tmp_path)
        processing = services.processing
        with services.db.session() as session:  # alice's job has claimed the analysis and runs
            content = session.get_one(Content, content_id)
            content.status, content.analysing_video_id = AnalysisStatus.PROCESSING, alice
            session.get_one(Video, alice).status = VideoStatus.PROCESSING
        assert processing.run(bob).status == "waiting"
        with services.db.session() as session:
            assert session.get_one(Video, bob).status is VideoStatus.PROCESSING
        assert processing.owner_result(bob) is None  # nothing to read before his video completes
        assert processing.run(alice).status == "completed"  # her delivery again: the claim is hers
        for video_id in (alice, bob):
            result = processing.owner_result(video_id)
            assert result is not None and result.video_id == video_id
        with services.db.session() as session:
            assert session.get_one(Video, bob).status is VideoStatus.COMPLETED
            assert session.get_one(Content, content_id).analysing_video_id is None
            assert session.scalar(select(func.count()).where(VideoAnalysisResultRow.content_id == content_id)) == 1
        assert processing.run(bob).status == "skipped"  # a repeated job changes nothing


def test_a_later_job_reuses_the_stored_analysis(services_for: Callable[..., Any], tmp_path: Path) -> None:
    with services_for() as services:
        alice, bob, content_id = two_owners(services, tmp_path)
        assert services.processing.run(alice).status == "completed"
        assert services.processing.run(bob).status == "completed"
        with services.db.session() as session:
            assert session.get_one(Content, content_id).analyses == 1
            video = session.get_one(Video, bob)
            assert (video.status, video.attempts, video.stage, video.progress) == (
                VideoStatus.COMPLETED,
                1,
                "done",
                100.0,
            )


def test_a_failed_analysis_fails_every_waiting_video(services_for: Callable[..., Any], tmp_path: Path) -> None:
    with services_for(processing={"max_retries": 0}) as services:
        alice, bob, content_id = two_owners(services, tmp_path)
        with services.db.session() as session:
            key = session.get_one(Content, content_id).storage_key
            content = session.get_one(Content, content_id)
            content.status, content.analysing_video_id = AnalysisStatus.PROCESSING, alice
            session.get_one(Video, alice).status = VideoStatus.PROCESSING
        services.processing.blobs.path(key).rename(tmp_path / "away")  # the stored file is gone
        assert services.processing.run(bob).status == "waiting"
        assert services.processing.run(alice).status == "failed"
        with services.db.session() as session:
            for video_id in (alice, bob):
                video = session.get_one(Video, video_id)
                assert video.status is VideoStatus.FAILED and "gave up" in (video.error_message or "")
            assert session.get_one(Content, content_id).status is AnalysisStatus.FAILED
        (tmp_path / "away").rename(services.processing.blobs.path(key))
        # bob sends the bytes again: the failed analysis is tried again, for his video
        again = upload(services.uploads, BOB, (services.processing.blobs.path(key)).read_bytes(), "b.mp4")
        assert again.video_id == bob and again.duplicate
        assert services.processing.run(bob).status == "completed"
        with services.db.session() as session:
            assert session.get_one(Video, alice).status is VideoStatus.FAILED  # alice's stays hers
