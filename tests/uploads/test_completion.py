"""Completion without HTTP: what one upload costs in transactions (the recording transaction hands
assembly what it read, the completing one gives the answer and claims the hand-over to the queue)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from tests.helpers import sha256, split
from vidgate.auth import Principal
from vidgate.db.engine import READ_ONLY
from vidgate.db.models import SessionStatus, UploadSession, Video, VideoStatus
from vidgate.errors import EmptyChunk, InvalidParameter, QueueUnavailable
from vidgate.uploads import completion
from vidgate.uploads.chunked import ChunkedUploads
from vidgate.uploads.models import ChunkReceipt, ChunkRequest
from vidgate.uploads.tus import TusService
from vidgate.validation import pipeline

ALICE = Principal(user_id="u-alice", username="alice")


def _send(service: ChunkedUploads, data: bytes, **fields: Any) -> ChunkReceipt:
    plan = service.begin_chunk(ALICE, ChunkRequest(filename="clip.mp4", **fields))

    async def stream() -> Any:
        sink = service.open_sink(plan)
        for piece in split(data, 64 * 1024):
            await sink.write(piece)
        return await sink.finish()

    return service.finish_chunk(plan, asyncio.run(stream()))


class _Broker:
    """A queue that keeps what it is handed (or refuses, like a broker that is down)."""

    starts_here = False

    def __init__(self, *, down: bool = False) -> None:
        self.jobs: list[tuple[str, int]] = []
        self.down = down

    def enqueue(self, video_id: str, priority: int) -> None:
        if self.down:
            raise QueueUnavailable("the broker is down")
        self.jobs.append((video_id, priority))

    def close(self) -> None:
        pass


def _handed_over_at(services: Any, video_id: str) -> Any:
    with services.db.session() as tx:
        return tx.execute(select(Video.status, Video.dispatched_at).where(Video.id == video_id)).one()


@contextmanager
def _transactions(services: Any) -> Iterator[list[bool]]:
    """The transactions begun on the services' engine within the block: True for a read (which
    takes no write lock on SQLite), False for a writer."""
    begun: list[bool] = []

    def count(connection: Any) -> None:
        begun.append(bool(connection.get_execution_options().get(READ_ONLY, False)))

    event.listen(services.db.engine, "begin", count)
    try:
        yield begun
    finally:
        event.remove(services.db.engine, "begin", count)


def test_a_single_file_upload_takes_three_transactions(services_for: Callable[..., Any], unique_video: Path) -> None:
    """Plan (the session made), record (the chunk, the session moved to assembling with its
    content hash, which the chunk's hash is, and what assembly needs) and completion (the video
    and its hand-over's claim, whose row also gives the answer); the job is then on the queue,
    with no transaction of its own."""
    data = unique_video.read_bytes()
    with services_for() as services:
        uploads: ChunkedUploads = services.uploads
        services.processing.queue = broker = _Broker()
        with _transactions(services) as begun:
            receipt = _send(uploads, data)
        assert (receipt.status, receipt.content_hash, receipt.file_size) == (
            SessionStatus.COMPLETED,
            sha256(data),
            len(data),
        )
        assert receipt.video_id and receipt.chunks_received == 1 and receipt.missing_chunks == []
        assert begun == [False, False, False]
        assert broker.jobs == [(receipt.video_id, 5)]
        status, dispatched_at = _handed_over_at(services, receipt.video_id)
        assert status is VideoStatus.QUEUED and dispatched_at is not None  # claimed with the completion


def test_a_broker_that_is_down_leaves_the_video_for_the_dispatcher(
    services_for: Callable[..., Any], unique_video: Path
) -> None:
    """The claim committed with the completion is released when the broker refuses the job, so
    the dispatcher's next round offers the video (it does not wait for the dispatch timeout)."""
    with services_for() as services:
        services.processing.queue = broker = _Broker(down=True)
        receipt = _send(services.uploads, unique_video.read_bytes())
        assert receipt.status is SessionStatus.COMPLETED and broker.jobs == []
        assert _handed_over_at(services, receipt.video_id) == (VideoStatus.QUEUED, None)
        broker.down = False
        assert services.processing.dispatch_pending() == 1
        assert broker.jobs == [(receipt.video_id, 5)]


def test_a_hand_over_that_would_start_here_waits_for_the_answer(
    services_for: Callable[..., Any], unique_video: Path
) -> None:
    """With a queue whose jobs start in this process, the hand-over is kept for after the answer
    (:func:`completion.deferring`); the claim is committed already, so a process that dies before
    making it leaves a video the dispatch timeout offers again."""
    with services_for() as services:
        services.processing.queue = broker = _Broker()
        broker.starts_here = True
        with completion.deferring() as later:
            receipt = _send(services.uploads, unique_video.read_bytes())
        assert broker.jobs == [] and len(later) == 1
        status, dispatched_at = _handed_over_at(services, receipt.video_id)
        assert status is VideoStatus.QUEUED and dispatched_at is not None
        completion.run_all(later)
        assert broker.jobs == [(receipt.video_id, 5)] and later == []


def test_the_last_chunk_hands_assembly_what_it_read(services_for: Callable[..., Any], unique_video: Path) -> None:
    """A chunked upload: its last chunk costs plan, record, content hash and completion."""
    data = unique_video.read_bytes()
    chunks = split(data, 64 * 1024)
    with services_for() as services:
        uploads: ChunkedUploads = services.uploads
        common = {"session_id": "handed", "total_chunks": len(chunks)}
        services.processing.queue = _Broker()
        for index, chunk in enumerate(chunks[:-1]):
            _send(uploads, chunk, chunk_index=index, **common)
        with _transactions(services) as begun:
            receipt = _send(uploads, chunks[-1], chunk_index=len(chunks) - 1, **common)
        assert (receipt.status, receipt.content_hash) == (SessionStatus.COMPLETED, sha256(data))
        assert receipt.chunks_received == len(chunks) and receipt.progress_percentage == 100.0
        assert len(begun) == 4


def test_a_tus_upload_in_one_patch_takes_four_transactions(
    services_for: Callable[..., Any], unique_video: Path
) -> None:
    """Creation, the PATCH's offset check (a read), its record (what assembly needs comes back
    from its UPDATE; the content hash, which the running hash has by then, goes with it) and
    completion."""
    data = unique_video.read_bytes()
    with services_for() as services:
        tus: TusService = services.tus
        services.processing.queue = broker = _Broker()
        with _transactions(services) as begun:
            created = services.tus_creation.create(
                ALICE, length=len(data), metadata={"filename": "clip.mp4"}, metadata_header="filename Y2xpcC5tcDQ="
            )
            assert (created.offset, created.length, created.status) == (0, len(data), SessionStatus.ACTIVE)
            plan = tus.begin_patch(ALICE, created.upload_id, 0, length=None, checksum=None)

            async def stream() -> Any:
                sink = tus.open_sink(plan)
                for piece in split(data, 64 * 1024):
                    await sink.write(piece)
                return await sink.finish()

            upload = tus.finish_patch(plan, asyncio.run(stream()))
        assert (upload.status, upload.offset, upload.content_hash) == (SessionStatus.COMPLETED, len(data), sha256(data))
        assert upload.video_id and broker.jobs == [(upload.video_id, 5)]
        assert len(begun) == 4 and begun.count(True) == 1


def _seen_during_validation(services: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """What the session rows say while the file is validated (status, content hash), and every
    probe forked by validation itself, recorded by wrapping the services' validator."""
    seen: list[tuple[Any, ...]] = []
    validator = services.uploads.completion.validator
    validate = validator.validate

    def watching(source: Any, *args: Any) -> Any:
        with services.db.session() as tx:
            seen.extend(tx.execute(select(UploadSession.status, UploadSession.content_hash)).all())
        return validate(source, *args)

    def probed_again(*args: Any, **kwargs: Any) -> Any:
        seen.append(("probed at validation",))
        return probe_in_warm_child(*args, **kwargs)

    probe_in_warm_child = pipeline._probe_in_warm_child
    monkeypatch.setattr(validator, "validate", watching)
    monkeypatch.setattr(pipeline, "_probe_in_warm_child", probed_again)
    return seen


def test_a_one_chunk_upload_is_probed_beside_its_record_with_its_hash_committed(
    services_for: Callable[..., Any], unique_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's probe started before the record (validation takes its answer, forking none),
    and the record committed the content hash before validation and ``put_file`` (what
    deletion looks for: library/deletion.py)."""
    data = unique_video.read_bytes()
    with services_for() as services:
        services.processing.queue = _Broker()
        seen = _seen_during_validation(services, monkeypatch)
        receipt = _send(services.uploads, data)
        assert receipt.status is SessionStatus.COMPLETED
        assert seen == [(SessionStatus.ASSEMBLING, sha256(data))]


def test_a_tus_patch_that_completes_is_probed_beside_its_record_with_its_hash_committed(
    services_for: Callable[..., Any], unique_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = unique_video.read_bytes()
    half = len(data) // 2
    with services_for() as services:
        tus: TusService = services.tus
        services.processing.queue = _Broker()
        seen = _seen_during_validation(services, monkeypatch)
        created = services.tus_creation.create(
            ALICE, length=len(data), metadata={"filename": "clip.mp4"}, metadata_header="filename Y2xpcC5tcDQ="
        )
        for offset, body in ((0, data[:half]), (half, data[half:])):  # the second PATCH completes it
            plan = tus.begin_patch(ALICE, created.upload_id, offset, length=None, checksum=None)

            async def stream(plan: Any = plan, body: bytes = body) -> Any:
                sink = tus.open_sink(plan)
                for piece in split(body, 64 * 1024):
                    await sink.write(piece)
                return await sink.finish()

            upload = tus.finish_patch(plan, asyncio.run(stream()))
        assert (upload.status, upload.content_hash) == (SessionStatus.COMPLETED, sha256(data))
        assert seen == [(SessionStatus.ASSEMBLING, sha256(data))]


def test_a_refused_record_ends_the_probe_started_for_it(
    services_for: Callable[..., Any], unique_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is complete by its plan, so its probe starts; the record refuses it (an empty
    file): the probe child is ended with the request, nothing is left running. A part reserved
    at a size the body did not reach is not the file: no probe starts for it."""
    data = unique_video.read_bytes()
    with services_for() as services:
        validator = services.uploads.completion.validator
        started: list[Any] = []
        start_probe = validator.start_probe

        def keeping(path: Path) -> Any:
            started.append(start_probe(path))
            return started[-1]

        monkeypatch.setattr(validator, "start_probe", keeping)
        with pytest.raises(InvalidParameter):
            _send(services.uploads, data, file_size=len(data) + 1)
        assert len(started) == 0  # the part is reserved at the announced size: not the file yet
        with pytest.raises(EmptyChunk):
            _send(services.uploads, b"")
        assert started and started[0] is not None and started[0].closed
        process = started[0].child[0]
        process.join(timeout=10)
        assert not process.is_alive()
