"""The cleanup sweep without HTTP: expiry by the timeout in force, orphans, purges, and
assemblies a crashed process left (finished by the sweep)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.helpers import sha256, split
from tests.uploads.test_chunked import ALICE, CHUNK, send
from vidgate.db.models import SessionStatus, UploadChunk, UploadSession, utcnow
from vidgate.errors import SessionNotActive
from vidgate.uploads.chunked import ChunkedUploads


def _start_session(uploads: ChunkedUploads, session_id: str, chunks: list[bytes], count: int) -> str:
    for index in range(count):
        send(uploads, chunks[index], session_id=session_id, chunk_index=index, total_chunks=len(chunks))
    with uploads.db.session() as session:
        upload_id = session.scalar(select(UploadSession.id).where(UploadSession.session_id == session_id))
    assert upload_id
    return upload_id


def test_cleanup_expires_old_sessions_only(services_for: Callable[..., Any], video_file: Path) -> None:
    data = video_file.read_bytes()
    chunks = split(data, CHUNK)
    with services_for() as services:
        uploads: ChunkedUploads = services.uploads
        old = _start_session(uploads, "old", chunks, 2)
        live = _start_session(uploads, "live", chunks, 2)
        with uploads.db.session() as session:
            session.execute(
                update(UploadSession)
                .where(UploadSession.id == old)
                .values(last_updated=utcnow() - timedelta(days=30))  # idle far past the timeout
            )
        report = services.cleanup.run()
        assert report.expired_sessions == 1
        assert not uploads.parts.part_path(old).exists()
        assert uploads.parts.part_path(live).exists()
        with uploads.db.session() as session:
            statuses = dict(session.execute(select(UploadSession.session_id, UploadSession.status)).all())
            old_rows = session.scalar(select(func.count()).where(UploadChunk.session_id == "old"))
        assert statuses == {"old": SessionStatus.EXPIRED, "live": SessionStatus.ACTIVE}
        assert old_rows == 0
        with pytest.raises(SessionNotActive):
            send(uploads, chunks[2], session_id="old", chunk_index=2, total_chunks=len(chunks))
        # The live session was not touched: it completes with the right bytes.
        for index in range(2, len(chunks)):
            receipt = send(uploads, chunks[index], session_id="live", chunk_index=index, total_chunks=len(chunks))
        assert receipt.content_hash == sha256(data)


def test_cleanup_removes_orphans_and_purges_finished_chunks(services_for: Callable[..., Any], video_file: Path) -> None:
    data = video_file.read_bytes()
    chunks = split(data, CHUNK)
    with services_for() as services:
        uploads: ChunkedUploads = services.uploads
        live = _start_session(uploads, "live", chunks, 1)
        stale = uploads.parts.part_path("0" * 8 + "-stale")
        stale.write_bytes(b"left by a crash")
        hour_ago = time.time() - 3600
        os.utime(stale, (hour_ago, hour_ago))
        os.utime(uploads.parts.part_path(live), (hour_ago, hour_ago))
        fresh = uploads.parts.part_path("0" * 8 + "-fresh")
        fresh.write_bytes(b"just created")
        for index in range(len(chunks)):
            send(uploads, chunks[index], session_id="done", chunk_index=index, total_chunks=len(chunks))
        report = services.cleanup.run()
        assert report.orphan_uploads_removed == 1
        assert not stale.exists()
        assert fresh.exists()  # younger than the grace period: may belong to a session being created
        assert uploads.parts.part_path(live).exists()  # old, but its session is active
        # Chunk rows of a completed session stay until it would have expired, then go.
        later = utcnow() + timedelta(hours=48)
        report = services.cleanup.run(now=later, orphan_grace_seconds=0)
        with uploads.db.session() as session:
            remaining = session.scalar(select(func.count()).where(UploadChunk.session_id == "done"))
        assert report.purged_chunk_rows == len(chunks)
        assert remaining == 0


def test_interrupted_assembly_is_finished_by_cleanup(services_for: Callable[..., Any], video_file: Path) -> None:
    """A process that dies between the last chunk and the stored file leaves `assembling`."""
    data = video_file.read_bytes()
    chunks = split(data, CHUNK)
    with services_for() as services:
        uploads: ChunkedUploads = services.uploads
        crashed = uploads.completion.assemble
        uploads.completion.assemble = lambda row_id, early=None: None  # type: ignore[method-assign]  # the process "dies" here
        for index in range(len(chunks)):
            send(uploads, chunks[index], session_id="crash", chunk_index=index, total_chunks=len(chunks))
        uploads.completion.assemble = crashed  # type: ignore[method-assign]
        with uploads.db.session() as session:
            row = session.scalars(select(UploadSession).where(UploadSession.session_id == "crash")).one()
            assert row.status is SessionStatus.ASSEMBLING
            session.execute(
                update(UploadSession)
                .where(UploadSession.id == row.id)
                .values(last_updated=utcnow() - timedelta(hours=1))
            )
        uploads.frontier.drop(row.id)  # a restarted process has no in-memory hash state
        report = services.cleanup.run()
        assert report.reassembled_sessions == 1
        view = uploads.get_session(ALICE, "crash")
        assert view.status is SessionStatus.COMPLETED
        assert view.content_hash == sha256(data)


def test_the_timeout_in_force_decides_expiry_of_seed_and_tus_sessions(
    backend: str, tmp_path: Path, video_file: Path
) -> None:
    """Sessions written under UPLOAD_SESSION_TIMEOUT_HOURS=24, then the setting changes (a restart):
    the views and tus Upload-Expires say last activity + the new timeout, a sweep under a longer
    timeout keeps them past 24 h, and one under a shorter timeout expires them. An expired
    session's counters agree: what had arrived before it expired."""
    import base64
    from email.utils import parsedate_to_datetime

    from tests.conftest import database_url_for, make_settings, running_server
    from tests.helpers import post_chunk
    from vidgate.wiring import build_services

    chunks = split(video_file.read_bytes(), CHUNK)
    tus = {"Tus-Resumable": "1.0.0"}
    name = base64.b64encode(b"clip.mp4").decode()
    with database_url_for(backend, tmp_path) as url:
        with running_server(make_settings(tmp_path, url)) as server, server.client() as client:
            for index in (0, 1):
                post_chunk(client, chunks[index], session_id="seed-idle", chunk_index=index, total_chunks=len(chunks))
            created = client.post(
                "/v1/tus/", headers={**tus, "Upload-Length": "100000", "Upload-Metadata": f"filename {name}"}
            )
            location = "/v1/tus/" + created.headers["location"].rsplit("/", 1)[1]
            tus_id = location.rsplit("/", 1)[1]
            body = b"".join(chunks)[:5000]
            patched = client.patch(
                location,
                content=body,
                headers={**tus, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"},
            )
            assert patched.status_code == 204, patched.text
        with server.db.session() as session:
            last_activity = {
                row.session_id: row.last_updated
                for row in session.scalars(
                    select(UploadSession).where(UploadSession.session_id.in_(["seed-idle", tus_id]))
                )
            }

        def naive(moment: Any) -> Any:
            return moment.replace(tzinfo=None, microsecond=0)

        # A restart with a shorter timeout: what clients are told follows it at once.
        with (
            running_server(make_settings(tmp_path, url, upload={"session_timeout_hours": 1})) as restarted,
            restarted.client() as client,
        ):
            view = client.get("/v1/upload/video/session/seed-idle").json()["data"]
            expires = client.head(location, headers=tus).headers["upload-expires"]
        seed_expires = datetime.fromisoformat(view["expires_at"])
        assert naive(seed_expires) == naive(last_activity["seed-idle"] + timedelta(hours=1))
        assert naive(parsedate_to_datetime(expires)) == naive(last_activity[tus_id] + timedelta(hours=1))

        def sweep(hours: float, hours_later: float) -> dict[str, Any]:
            services = build_services(make_settings(tmp_path, url, upload={"session_timeout_hours": hours}))
            try:
                report = services.cleanup.run(now=utcnow() + timedelta(hours=hours_later))
                views = {sid: services.uploads.records.view(sid) for sid in ("seed-idle", tus_id)}
                return {"expired": report.expired_sessions, "views": views}
            finally:
                services.db.dispose()

        kept = sweep(hours=48, hours_later=25)  # written to expire after 24 h: the 48 h in force keeps them
        assert kept["expired"] == 0
        assert {view.status for view in kept["views"].values()} == {SessionStatus.ACTIVE}
        swept = sweep(hours=1, hours_later=2)  # written to last 24 h: the 1 h in force expires them
        assert swept["expired"] == 2
        seed_view, tus_view = swept["views"]["seed-idle"], swept["views"][tus_id]
        assert (seed_view.status, tus_view.status) == (SessionStatus.EXPIRED, SessionStatus.EXPIRED)
        counters = [(v.chunks_received, v.bytes_received, v.missing_chunks) for v in (seed_view, tus_view)]
        assert counters == [(2, 2 * CHUNK, []), (1, 5000, [])]
