"""The processing service over real databases: one analysis per content, however many owners'
jobs run, and each owner's video completed or failed with it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from tests.helpers import finishes_at_once, split, sqlite_write_lock_held
from tests.media import make_video
from vidgate.auth import Principal
from vidgate.db.models import (
    AnalysisStatus,
    Content,
    ContentEmbedding,
    FrameHash,
    Video,
    VideoAnalysisResultRow,
    VideoStatus,
    utcnow,
)
from vidgate.library.deletion import VideoDeleter
from vidgate.processing import lease
from vidgate.processing.pictures import NAMES as PICTURES
from vidgate.uploads.chunked import ChunkedUploads
from vidgate.uploads.models import ChunkReceipt, ChunkRequest

ALICE = Principal(user_id="u-alice", username="alice")
BOB = Principal(user_id="u-bob", username="bob")


def upload(service: ChunkedUploads, who: Principal, data: bytes, name: str) -> ChunkReceipt:
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


def claims_the_analysis(services: Any, video_id: str, content_id: str, holder: str = "worker-a@host") -> lease.Lease:
    """``video_id``'s job has started under ``holder``'s lease and claimed the analysis (and runs
    elsewhere, as far as the test's own calls are concerned)."""
    with services.db.session() as session:
        content = session.get_one(Content, content_id, with_for_update=True)
        claimed = lease.claim(session, video_id, holder, 60.0, 3600.0).lease
        assert claimed is not None
        content.status, content.analysing_video_id = AnalysisStatus.PROCESSING, video_id
    return claimed


def expire(services: Any, video_id: str) -> None:
    """The video's worker died: nobody renews its lease, which ends in the past."""
    with services.db.session() as session:
        session.execute(
            update(Video).where(Video.id == video_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def initiated(services: Any, video_id: str) -> int:
    """How many processing_initiated events the video's owner was sent (from the event store)."""
    with services.db.session() as session:
        owner = session.get_one(Video, video_id).user_id
    events = services.events.store.read(owner, 0, video_id=video_id)
    return sum(1 for event in events if event.event_type == "processing_initiated")


def test_a_job_waits_for_the_analysis_another_runs_and_completes_with_it(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    with services_for() as services:
        alice, bob, content_id = two_owners(services, tmp_path)
        processing = services.processing
        claims_the_analysis(services, alice, content_id)
        assert processing.run(bob, worker="worker-b@host").status == "waiting"
        with services.db.session() as session:
            video = session.get_one(Video, bob)
            assert video.status is VideoStatus.PROCESSING and video.lease_expires_at is None  # no job of its own
        assert processing.owner_result(bob) is None  # nothing to read before his video completes
        assert processing.run(alice).status == "skipped"  # a duplicate delivery: worker-a runs it
        assert processing.run(bob).status == "skipped"  # so is bob's: he waits, and is not re-run
        assert lease.reclaim_lapsed(services.db, 3600.0) == []  # neither is handed on
        expire(services, alice)  # worker-a died mid-analysis
        assert [r.video_id for r in lease.reclaim_lapsed(services.db, 3600.0)] == [alice]  # only hers
        assert processing.run(alice, worker="worker-c@host").status == "completed"  # the claim is still hers
        for video_id in (alice, bob):
            result = processing.owner_result(video_id)
            assert result is not None and result.video_id == video_id
        with services.db.session() as session:
            assert session.get_one(Video, bob).status is VideoStatus.COMPLETED
            assert session.get_one(Video, bob).attempts == 1
            assert session.get_one(Video, alice).attempts == 2
            content = session.get_one(Content, content_id)
            assert content.analysing_video_id is None and content.analyses == 1
            assert session.scalar(select(func.count()).where(VideoAnalysisResultRow.content_id == content_id)) == 1
        assert initiated(services, bob) == 1  # bob's processing was announced once
        assert processing.run(bob).status == "skipped"  # a repeated job changes nothing


def test_a_waiting_video_is_never_handed_on_however_long_it_waits(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    """A waiting video holds no lease; the sweep's fallback for rows from before leases (no
    lease, started longer ago than the job timeout) must not take it for a dead job."""
    with services_for() as services:
        alice, bob, content_id = two_owners(services, tmp_path)
        claims_the_analysis(services, alice, content_id)
        assert services.processing.run(bob, worker="worker-b@host").status == "waiting"
        with services.db.session() as session:
            session.execute(update(Video).where(Video.id == bob).values(started_at=utcnow() - timedelta(hours=5)))
        assert lease.reclaim_lapsed(services.db, 3600.0) == []
        with services.db.session() as session:
            session.execute(
                update(Video)
                .where(Video.id == alice)
                .values(lease_holder=None, lease_expires_at=None, started_at=utcnow() - timedelta(hours=5))
            )  # alice's row is one from before leases, long dead: it is handed on
        assert [r.video_id for r in lease.reclaim_lapsed(services.db, 3600.0)] == [alice]


def test_a_superseded_analysing_job_stores_nothing_and_completes_no_waiter(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    with services_for() as services:
        alice, bob, content_id = two_owners(services, tmp_path)
        processing = services.processing
        original = claims_the_analysis(services, alice, content_id)
        assert processing.run(bob, worker="worker-b@host").status == "waiting"
        expire(services, alice)
        lease.reclaim_lapsed(services.db, 3600.0)
        assert processing.run(alice, worker="worker-c@host").status == "completed"
        with services.db.session() as session:
            stored = session.execute(select(VideoAnalysisResultRow.id, VideoAnalysisResultRow.result)).one()
        # the original wakes up: its progress, result and failure are all refused
        report = processing._progress_writer(content_id, original)
        with pytest.raises(lease.LeaseLost):
            report("metadata", 0.5)
        result = processing.owner_result(alice)
        assert result is not None
        with pytest.raises(lease.LeaseLost):
            processing._store(result, content_id, "resnet50", original)
        with pytest.raises(lease.LeaseLost):
            processing.mark_failed(content_id, "the late original failed", original)
        with services.db.session() as session:
            assert session.execute(select(VideoAnalysisResultRow.id, VideoAnalysisResultRow.result)).all() == [stored]
            for video_id in (alice, bob):
                assert session.get_one(Video, video_id).status is VideoStatus.COMPLETED
            assert session.get_one(Content, content_id).status is AnalysisStatus.COMPLETED


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


def told(services: Any, video_id: str) -> list[tuple[str, float | None]]:
    """The processing events the video's owner was sent, in their order: (type, progress)."""
    with services.db.session() as session:
        owner = session.get_one(Video, video_id).user_id
    events = services.events.store.read(owner, 0, video_id=video_id)
    assert [event.sequence for event in events] == sorted(event.sequence for event in events)
    return [
        (event.event_type, getattr(event.data, "progress_percentage", None))
        for event in events
        if event.event_type.startswith("processing_")
    ]


@contextlib.contextmanager
def commits(db: Any) -> Iterator[list[int]]:
    """Counts the transactions committed on ``db`` inside the block."""
    counted: list[int] = []

    def count(_: Any) -> None:
        counted.append(1)

    event.listen(db.engine, "commit", count)
    try:
        yield counted
    finally:
        event.remove(db.engine, "commit", count)


def test_a_jobs_last_progress_is_told_with_its_completion(services_for: Callable[..., Any], tmp_path: Path) -> None:
    """The analysis's last report (100 %) waits for the result's transaction, which tells it
    right before the completion: the owner hears what they heard before, one transaction fewer.
    A reused analysis tells its short run's two reports and its completion in one transaction."""
    with services_for() as services:
        alice, bob, content_id = two_owners(services, tmp_path)
        processing = services.processing
        assert processing.run(alice).status == "completed"
        heard = told(services, alice)
        assert heard[0] == ("processing_initiated", None)
        assert heard[-2:] == [("processing_progress", 100.0), ("processing_completed", None)]
        assert [kind for kind, _ in heard[1:-2]] == ["processing_progress"] * (len(heard) - 3)
        with commits(services.db) as counted:
            assert processing.run(bob).status == "completed"  # the stored analysis, reused
        assert told(services, bob) == [
            ("processing_initiated", None),
            ("processing_progress", 5.0),
            ("processing_progress", 100.0),
            ("processing_completed", None),
        ]
        assert len(counted) == 2  # the claim, then the reports and the completion together

        # the last report itself writes nothing: not the video's progress, not an event
        assert processing.requeue(alice)
        attempt = claims_the_analysis(services, alice, content_id)
        before = told(services, alice)
        report = processing._progress_writer(content_id, attempt)
        with commits(services.db) as counted:
            report("embeddings", 1.0)
        assert counted == [] and report.final == ("embeddings", 100.0)
        assert told(services, alice) == before


def test_a_jobs_bank_check_takes_no_write_lock(services_for: Callable[..., Any], tmp_path: Path) -> None:
    """Each analysis asks whether any hash bank holds a frame: on SQLite a read beside the
    writers, not a write transaction queued behind every upload's (up to the busy timeout)."""
    with services_for() as services:
        if services.db.engine.dialect.name != "sqlite":
            pytest.skip("SQLite's single writer")
        alice, _, _ = two_owners(services, tmp_path)
        assert services.processing.run(alice).status == "completed"
        result = services.processing.owner_result(alice)
        assert result is not None and result.hashes is not None
        with sqlite_write_lock_held(services.db):
            finishes_at_once(lambda: services.processing._match_banks(result))
        assert result.stages[-1].name == "hash_banks"


def test_a_second_analysis_replaces_the_stored_one_and_doubles_no_frame_hash(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    """Analysed again (requeued), a content keeps one result row, one embedding and one frame
    hash per sample: the new analysis's, in place of the first."""
    with services_for() as services:
        alice, _, content_id = two_owners(services, tmp_path)
        processing = services.processing
        assert processing.run(alice).status == "completed"

        def stored() -> tuple[list[Any], int, int]:
            with services.db.session() as session:
                results = session.execute(
                    select(VideoAnalysisResultRow.id, VideoAnalysisResultRow.processing_seconds).where(
                        VideoAnalysisResultRow.content_id == content_id
                    )
                ).all()
                hashes = session.scalar(select(func.count()).where(FrameHash.content_id == content_id))
                embeddings = session.scalar(select(func.count()).where(ContentEmbedding.content_id == content_id))
            return results, int(hashes or 0), int(embeddings or 0)

        first, hashes, embeddings = stored()
        samples = len(processing.result_without_similar(ALICE, alice).samples)
        assert len(first) == 1 and hashes == samples > 0 and embeddings == 1
        with services.db.session() as session:  # the stored row is marked, to see it replaced
            session.execute(update(VideoAnalysisResultRow).values(processing_seconds=-1.0))
        assert processing.requeue(alice)
        assert processing.run(alice).status == "completed"
        again, hashes_again, embeddings_again = stored()
        assert [row.id for row in again] == [first[0].id]  # the same row, updated
        assert again[0].processing_seconds >= 0  # the second analysis's
        assert (hashes_again, embeddings_again) == (hashes, 1)
        with services.db.session() as session:
            content = session.get_one(Content, content_id)
            assert content.status is AnalysisStatus.COMPLETED and content.analyses == 2


def test_a_failed_analysis_fails_every_waiting_video(services_for: Callable[..., Any], tmp_path: Path) -> None:
    with services_for(processing={"max_retries": 0}) as services:
        alice, bob, content_id = two_owners(services, tmp_path)
        with services.db.session() as session:
            key = session.get_one(Content, content_id).storage_key
            # alice's job claimed the analysis and was handed back (a retry, or its worker died)
            content = session.get_one(Content, content_id)
            content.status, content.analysing_video_id = AnalysisStatus.PROCESSING, alice
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


# ------------------------------------------------------------------ pictures of a deleted content
@pytest.fixture(params=["local", "s3"])
def store_groups(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The settings groups of a blob store on local disk, or in a bucket of its own on the
    machine's real Swift (S3 API), emptied and removed after the test."""
    if request.param == "local":
        yield {}
        return
    from tests.storage.swift import credentials, empty_and_delete, new_bucket_name, raw_client, s3_storage, start_swift

    endpoint = start_swift()
    credentials(monkeypatch)
    bucket = new_bucket_name()
    raw_client(endpoint).create_bucket(Bucket=bucket)
    try:
        yield {"storage": s3_storage(bucket, "pictures/", endpoint)}
    finally:
        empty_and_delete(bucket)


def pictures_left(services: Any, digest: str) -> list[str]:
    """The derived files of ``digest`` the blob store still holds (asked through the store)."""
    blobs = services.processing.blobs
    left = []
    for name in PICTURES:
        try:
            blobs.size(blobs.derived_key(digest, name))
        except FileNotFoundError:
            continue
        left.append(name)
    return left


def one_owner(services: Any, tmp_path: Path) -> tuple[str, str]:
    """alice uploads a clip (no queue runs): her video id and the content's SHA-256."""
    data = make_video(tmp_path / "alone.mp4", frames=25, seed=uuid.uuid4().int % 100_000).read_bytes()
    receipt = upload(services.uploads, ALICE, data, "alone.mp4")
    assert receipt.video_id
    return receipt.video_id, hashlib.sha256(data).hexdigest()


def gone(services: Any, digest: str) -> bool:
    with services.db.session() as session:
        return not session.scalar(select(func.count()).select_from(Content).where(Content.content_hash == digest))


def test_a_content_deleted_after_its_analysis_keeps_no_pictures(
    services_for: Callable[..., Any], store_groups: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner deletes the video after the job's last progress report (the pictures are made),
    before it stored its result: the job stores nothing, pictures included (they used to be put
    into the store after the delete had removed the content's derived files: left for good)."""
    with services_for(**store_groups) as services:
        video_id, digest = one_owner(services, tmp_path)
        analyser = services.processing.analyser
        real_analyse = analyser.analyse

        def analyse_then_deleted(*args: Any, **kwargs: Any) -> Any:
            result = real_analyse(*args, **kwargs)
            VideoDeleter(services.db, services.processing.blobs).delete(ALICE.user_id, video_id)
            return result

        monkeypatch.setattr(analyser, "analyse", analyse_then_deleted)
        assert services.processing.run(video_id).status == "superseded"
        assert gone(services, digest)
        assert pictures_left(services, digest) == []
        assert not services.processing.blobs.exists(digest)


def test_a_delete_during_the_result_transaction_waits_and_then_removes_the_pictures(
    services_for: Callable[..., Any], store_groups: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete arrives as the pictures go into the store: it waits for the content's lock,
    which the result's transaction holds, then removes them with the content."""
    with services_for(**store_groups) as services:
        video_id, digest = one_owner(services, tmp_path)
        blobs = services.processing.blobs
        real_put = blobs.put_derived
        deleting: list[threading.Thread] = []

        def delete() -> None:
            VideoDeleter(services.db, blobs).delete(ALICE.user_id, video_id)

        def put_while_deleted(content_hash: str, name: str, source: Path) -> str:
            if not deleting:
                deleting.append(threading.Thread(target=delete))
                deleting[0].start()
                deleting[0].join(timeout=1.0)  # without the lock held, the delete is done by now
            return real_put(content_hash, name, source)

        monkeypatch.setattr(blobs, "put_derived", put_while_deleted)
        assert services.processing.run(video_id).status == "completed"
        deleting[0].join(timeout=60)
        assert not deleting[0].is_alive()
        assert gone(services, digest)
        assert pictures_left(services, digest) == []


def test_pictures_stay_while_their_content_does(
    services_for: Callable[..., Any], store_groups: dict[str, Any], tmp_path: Path
) -> None:
    """The ordering of every day (the delete comes after the result): the pictures are there
    until then, and go with the content."""
    with services_for(**store_groups) as services:
        video_id, digest = one_owner(services, tmp_path)
        assert services.processing.run(video_id).status == "completed"
        assert pictures_left(services, digest) == list(PICTURES)
        VideoDeleter(services.db, services.processing.blobs).delete(ALICE.user_id, video_id)
        assert pictures_left(services, digest) == []
