"""The tus upload service without HTTP: offsets, the lock, break-offs, completion (the header
grammar and the 423 answer to a held lock are the HTTP edge's: tests/api/test_tus.py)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.helpers import sha256, split
from vidgate.auth import Principal
from vidgate.db.models import SessionStatus, UploadSession
from vidgate.errors import ChecksumMismatch, ChunkInProgress, OffsetMismatch
from vidgate.uploads.tus import TOUCH_AFTER, TusService
from vidgate.uploads.writer import SinkResult
from vidgate.uploads.writing import Checksum, WritePlan

ALICE = Principal(user_id="u-alice", username="alice")


def _stream(tus: TusService, plan: WritePlan, data: bytes, *, broke_off: bool = False) -> SinkResult | None:
    async def run() -> SinkResult | None:
        sink = tus.open_sink(plan)
        for piece in split(data, 10_000):
            await sink.write(piece)
        return await (sink.keep_written() if broke_off else sink.finish())

    return asyncio.run(run())


def _create(services: Any, length: int | None) -> str:
    upload = services.tus_creation.create(
        ALICE, length=length, metadata={"filename": "clip.mp4"}, metadata_header="filename Y2xpcC5tcDQ="
    )
    return str(upload.upload_id)


def test_patches_append_at_the_offset_until_the_upload_completes(
    services_for: Callable[..., Any], video_file: Path
) -> None:
    data = video_file.read_bytes()
    half = len(data) // 2
    with services_for() as services:
        tus: TusService = services.tus
        upload_id = _create(services, len(data))
        plan = tus.begin_patch(ALICE, upload_id, 0, length=None, checksum=None)
        result = _stream(tus, plan, data[:half])
        assert result is not None
        assert tus.finish_patch(plan, result).offset == half
        with pytest.raises(OffsetMismatch):  # not where the upload stands
            tus.begin_patch(ALICE, upload_id, 0, length=None, checksum=None)
        plan = tus.begin_patch(ALICE, upload_id, half, length=None, checksum=None)
        result = _stream(tus, plan, data[half:])
        assert result is not None
        upload = tus.finish_patch(plan, result)
        assert (upload.status, upload.offset, upload.content_hash) == (SessionStatus.COMPLETED, len(data), sha256(data))


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(
    services_for: Callable[..., Any], video_file: Path
) -> None:
    with services_for() as services:
        tus: TusService = services.tus
        upload_id = _create(services, 1000)
        plan = tus.begin_patch(ALICE, upload_id, 0, length=None, checksum=None)
        with pytest.raises(ChunkInProgress):
            tus.begin_patch(ALICE, upload_id, 0, length=None, checksum=None)
        tus.abort_patch(plan, None)
        tus.abort_patch(tus.begin_patch(ALICE, upload_id, 0, length=None, checksum=None), None)


def test_a_body_that_broke_off_keeps_its_bytes_but_one_with_a_checksum_keeps_none(
    services_for: Callable[..., Any], video_file: Path
) -> None:
    data = video_file.read_bytes()
    with services_for() as services:
        tus: TusService = services.tus
        upload_id = _create(services, len(data))
        plan = tus.begin_patch(ALICE, upload_id, 0, length=None, checksum=None)
        tus.keep_received(plan, _stream(tus, plan, data[:30_000], broke_off=True))
        assert tus.get(ALICE, upload_id).offset == 30_000
        digest = hashlib.sha256(data[30_000:40_000]).digest()
        checksum = Checksum("sha256", digest, hashlib.sha256())
        plan = tus.begin_patch(ALICE, upload_id, 30_000, length=None, checksum=checksum)
        tus.keep_received(plan, _stream(tus, plan, data[30_000:40_000], broke_off=True))
        assert tus.get(ALICE, upload_id).offset == 30_000
        wrong = Checksum("sha256", b"\0" * 32, hashlib.sha256())
        plan = tus.begin_patch(ALICE, upload_id, 30_000, length=None, checksum=wrong)
        result = _stream(tus, plan, data[30_000:40_000])
        assert result is not None
        with pytest.raises(ChecksumMismatch):
            tus.finish_patch(plan, result)
        assert tus.get(ALICE, upload_id).offset == 30_000


def test_a_deferred_length_is_set_by_a_later_patch(services_for: Callable[..., Any], video_file: Path) -> None:
    data = video_file.read_bytes()
    with services_for() as services:
        tus: TusService = services.tus
        upload_id = _create(services, None)
        assert tus.get(ALICE, upload_id).length is None
        plan = tus.begin_patch(ALICE, upload_id, 0, length=len(data), checksum=None)
        result = _stream(tus, plan, data)
        assert result is not None
        upload = tus.finish_patch(plan, result)
        assert (upload.length, upload.status) == (len(data), SessionStatus.COMPLETED)


def _last_change(services: Any, upload_id: str) -> Any:
    with services.db.session() as tx:
        return tx.scalar(select(UploadSession.last_updated).where(UploadSession.session_id == upload_id))


def test_a_patch_moves_an_idle_uploads_last_change_before_its_body(
    services_for: Callable[..., Any], video_file: Path
) -> None:
    """The sweep expires an upload by its last change: a PATCH to an upload idle for more than
    TOUCH_AFTER of the timeout moves it before streaming, so the upload cannot expire under its
    body; the usual PATCH (right after the creation) only reads, and so does a length it keeps."""
    with services_for() as services:
        tus: TusService = services.tus
        upload_id = _create(services, 1000)
        created = _last_change(services, upload_id)
        tus.abort_patch(tus.begin_patch(ALICE, upload_id, 0, length=1000, checksum=None), None)
        assert _last_change(services, upload_id) == created  # a read: nothing changed
        idle = services.settings.session_timeout * (TOUCH_AFTER * 2)
        with services.db.session() as tx:
            tx.execute(
                update(UploadSession).where(UploadSession.session_id == upload_id).values(last_updated=created - idle)
            )
        plan = tus.begin_patch(ALICE, upload_id, 0, length=None, checksum=None)
        assert _last_change(services, upload_id) > created  # moved before any byte is recorded
        tus.abort_patch(plan, None)

        deferred = _create(services, None)  # a length given with a PATCH is kept by it
        tus.abort_patch(tus.begin_patch(ALICE, deferred, 0, length=500, checksum=None), None)
        with services.db.session() as tx:
            assert tx.scalar(select(UploadSession.file_size).where(UploadSession.session_id == deferred)) == 500
