"""A generated corpus of hostile and broken uploads, each refused with its exact status and code,
leaving nothing on disk; and a good file of every supported container, accepted.

Every case goes through the real HTTP API, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import RunningServer, database_url_for, make_settings, running_server
from tests.helpers import UPLOAD, error_code, post_chunk, sha256, split
from tests.media import (
    CONTAINERS,
    elf_executable,
    iso_box,
    make_audio_only,
    make_huge_dimensions_avi,
    make_long_clip,
    make_video,
    pe_executable,
    zip_archive,
)
from vidgate.db.models import SessionStatus, UploadSession


class Media:
    """Real files made once per test process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[str, bytes] = {}

    def video(self, container: str, **options: str) -> bytes:
        key = f"{container}-{sorted(options.items())}"
        if key not in self.cache:
            _, _, ext = CONTAINERS[container]
            path = self.root / f"{uuid.uuid4().hex}.{ext}"
            self.cache[key] = make_video(path, container, options=options or None).read_bytes()
        return self.cache[key]

    def made(self, maker: Callable[[Path], Path], suffix: str) -> bytes:
        return maker(self.root / f"{uuid.uuid4().hex}.{suffix}").read_bytes()


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return Media(tmp_path_factory.mktemp("corpus"))


@dataclass
class Case:
    name: str
    body: Callable[[Media], bytes]
    status: int
    code: str
    filename: str = "clip.mp4"
    content_type: str = "video/mp4"
    fields: dict[str, str] = field(default_factory=dict)


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


CORPUS = [
    # renamed executables and other non-video files
    Case("windows executable renamed", lambda m: pe_executable(), 422, "dangerous_content"),
    Case("linux executable renamed", lambda m: elf_executable(), 422, "dangerous_content"),
    Case("shell script renamed", lambda m: b"#!/bin/sh\nrm -rf ~\n", 422, "dangerous_content"),
    Case("html page renamed", lambda m: b"<!DOCTYPE html><html><script>x()</script>", 422, "dangerous_content"),
    Case("jar archive renamed", lambda m: zip_archive(), 422, "dangerous_content"),
    Case("pdf renamed", lambda m: b"%PDF-1.7\n" + b"0" * 500, 422, "dangerous_content"),
    Case("random bytes", lambda m: bytes(range(256)) * 8, 415, "unrecognized_format"),
    Case("zero bytes", lambda m: b"", 400, "empty_chunk"),
    # the container disagrees with the name or the declared type
    Case("matroska named .mp4", lambda m: m.video("mkv"), 415, "format_mismatch"),
    Case("mp4 named .webm", lambda m: m.video("mp4"), 415, "format_mismatch", "clip.webm", "video/webm"),
    Case("matroska named .webm", lambda m: m.video("mkv"), 415, "format_mismatch", "clip.webm", "video/webm"),
    Case("avi named .mkv", lambda m: m.video("avi"), 415, "format_mismatch", "clip.mkv", "video/x-matroska"),
    Case("mp4 declared as webm", lambda m: m.video("mp4"), 415, "format_mismatch", "clip.mp4", "video/webm"),
    Case(
        "mp4 declared as exe", lambda m: m.video("mp4"), 415, "format_mismatch", "clip.mp4", "application/x-msdownload"
    ),
    # truncated files
    Case("mp4 without moov", lambda m: half(m.video("mp4")), 422, "truncated_file"),
    Case("faststart mp4 cut in mdat", lambda m: half(m.video("mp4", movflags="faststart")), 422, "truncated_file"),
    Case("matroska cut mid-cluster", lambda m: half(m.video("mkv")), 422, "truncated_file", "clip.mkv", ""),
    Case("avi cut", lambda m: half(m.video("avi")), 422, "truncated_file", "clip.avi", "video/x-msvideo"),
    Case("ogg cut", lambda m: half(m.video("ogg")), 422, "truncated_file", "clip.ogg", "video/ogg"),
    Case("mp4 header only", lambda m: m.video("mp4")[:64], 422, "truncated_file"),
    # payloads appended or hidden (polyglots)
    Case("mp4 + windows executable", lambda m: m.video("mp4") + pe_executable(), 422, "dangerous_content"),
    Case("mp4 + zip (polyglot)", lambda m: m.video("mp4") + zip_archive(), 422, "dangerous_content"),
    Case("mp4 + html script", lambda m: m.video("mp4") + b"<html><script>x()</script>", 422, "dangerous_content"),
    Case(
        "mkv + linux executable",
        lambda m: m.video("mkv") + elf_executable(),
        422,
        "dangerous_content",
        "clip.mkv",
        "video/x-matroska",
    ),
    Case("webm + jar", lambda m: m.video("webm") + zip_archive(), 422, "dangerous_content", "clip.webm", "video/webm"),
    Case("mp4 + unknown bytes", lambda m: m.video("mp4") + b"\x00\x01" * 64, 422, "trailing_data"),
    Case(
        "executable in a free box",
        lambda m: m.video("mp4") + iso_box(b"free", pe_executable()),
        422,
        "dangerous_content",
    ),
    Case(
        "script in a uuid box",
        lambda m: m.video("mp4") + iso_box(b"uuid", b"0" * 16 + b"<script>x()</script>"),
        422,
        "dangerous_content",
    ),
    Case("html before the video", lambda m: b"<html>" + m.video("mp4"), 422, "dangerous_content"),
    # streams
    Case("audio-only mp4", lambda m: m.made(make_audio_only, "mp4"), 422, "no_video_stream"),
    Case(
        "audio-only ogg",
        lambda m: m.made(lambda p: make_audio_only(p, "ogg", "libopus"), "ogg"),
        422,
        "no_video_stream",
        "clip.ogg",
        "audio/ogg",
    ),
    Case(
        "16000x16000 raw frames",
        lambda m: m.made(lambda p: make_huge_dimensions_avi(p, 16_000), "avi"),
        422,
        "dimensions_too_large",
        "clip.avi",
        "video/x-msvideo",
    ),
    Case(
        "100000x100000 raw frames",
        lambda m: m.made(make_huge_dimensions_avi, "avi"),
        422,
        "undecodable_video",
        "clip.avi",
        "video/avi",
    ),
    Case(
        "48-hour clip",
        lambda m: m.made(make_long_clip, "mkv"),
        422,
        "duration_too_long",
        "clip.mkv",
        "video/x-matroska",
    ),
    # names
    Case("double extension", lambda m: m.video("mp4"), 415, "extension_blocked", "clip.mp4.exe"),
    Case("hidden inner extension", lambda m: m.video("mp4"), 415, "extension_blocked", "invoice.exe.mp4"),
    Case("right-to-left override", lambda m: m.video("mp4"), 415, "extension_blocked", "clip\u202e4pm.exe"),
    Case("NUL in the name", lambda m: m.video("mp4"), 415, "extension_blocked", "clip.exe\x00.mp4"),
    Case(
        "path traversal without extension",
        lambda m: m.video("mp4"),
        415,
        "extension_not_allowed",
        "../../etc/cron.d/job",
    ),
    Case("windows path traversal", lambda m: m.video("mp4"), 415, "extension_blocked", "..\\..\\evil.bat"),
    Case("name too long", lambda m: m.video("mp4"), 400, "invalid_filename", "a" * 300 + ".mp4"),
    # parameters
    Case("priority too high", lambda m: m.video("mp4"), 400, "invalid_parameter", fields={"priority": "11"}),
    Case("priority not a number", lambda m: m.video("mp4"), 400, "invalid_parameter", fields={"priority": "max"}),
    Case("options not json", lambda m: m.video("mp4"), 400, "invalid_options", fields={"options": "{model"}),
    Case(
        "chunk index out of range",
        lambda m: m.video("mp4"),
        400,
        "chunk_index_out_of_range",
        fields={"chunk_index": "3", "total_chunks": "3"},
    ),
    Case(
        "too many chunks",
        lambda m: m.video("mp4"),
        413,
        "too_many_chunks",
        fields={"chunk_index": "0", "total_chunks": "1000"},
    ),
    Case("oversize by header", lambda m: m.video("mp4"), 413, "file_too_large", fields={"file_size": str(1 << 40)}),
]


def disk_state(server: RunningServer) -> set[Path]:
    storage = server.settings.storage_dir
    return {p for sub in ("parts", "staging", "blobs") for p in (storage / sub).rglob("*") if p.is_file()}


def sessions_of(server: RunningServer, user: str) -> list[UploadSession]:
    with server.db.session() as session:
        user_id = session.scalar(select(UploadSession.user_id).where(UploadSession.username == user).limit(1))
        return list(session.scalars(select(UploadSession).where(UploadSession.user_id == user_id)).all())


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_bad_input_is_refused(server: RunningServer, media: Media, case: Case) -> None:
    user = f"corpus-{uuid.uuid4().hex[:8]}"
    server.key_for(user)
    before = disk_state(server)
    with server.client(user) as client:
        response = post_chunk(
            client, case.body(media), filename=case.filename, content_type=case.content_type, **case.fields
        )
    assert (response.status_code, error_code(response)) == (case.status, case.code), response.text
    assert len(response.json()["error"]["message"]) > 20
    assert str(server.settings.storage_dir) not in response.text  # where we keep files is not the client's business
    assert disk_state(server) == before, "a refused upload left files behind"
    for row in sessions_of(server, user):  # any session it opened says why it failed
        assert (row.status, row.error_code) == (SessionStatus.FAILED, case.code)


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_good_file_of_every_container_is_accepted(server: RunningServer, media: Media, container: str) -> None:
    data = media.video(container)
    _, _, ext = CONTAINERS[container]
    with server.client() as client:
        response = post_chunk(client, data, filename=f"Holiday Clip.{ext.upper()}", content_type="")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["content_hash"] == sha256(data)


def test_webm_named_mkv_is_accepted(server: RunningServer, media: Media) -> None:
    with server.client() as client:
        response = post_chunk(client, media.video("webm"), filename="clip.mkv", content_type="video/x-matroska")
    assert response.status_code == 200, response.text


def test_first_chunk_is_checked_before_the_rest_arrives(server: RunningServer, media: Media) -> None:
    """A chunked upload whose chunk 0 is an executable fails at chunk 0; the session says why."""
    payload = pe_executable() + bytes(200_000)
    chunks = split(payload, 64 * 1024)
    session_id = f"exe-{uuid.uuid4().hex}"
    before = disk_state(server)
    with server.client() as client:
        first = post_chunk(client, chunks[0], session_id=session_id, chunk_index=0, total_chunks=len(chunks))
        assert (first.status_code, error_code(first)) == (422, "dangerous_content")
        later = post_chunk(client, chunks[1], session_id=session_id, chunk_index=1, total_chunks=len(chunks))
        assert (later.status_code, error_code(later)) == (409, "session_not_active")
        view = client.get(f"{UPLOAD}/session/{session_id}").json()["data"]
    assert (view["status"], view["error_code"]) == ("failed", "dangerous_content")
    assert "Windows executable" in view["error_message"]
    assert disk_state(server) == before


def test_a_refusal_never_touches_another_session(server: RunningServer, media: Media) -> None:
    good = media.video("mp4", movflags="faststart")
    chunks = split(good, 64 * 1024)
    session_id = f"bystander-{uuid.uuid4().hex}"
    with server.client() as client:
        post_chunk(client, chunks[0], session_id=session_id, chunk_index=0, total_chunks=len(chunks))
        bad = post_chunk(client, half(good), filename="other.mp4")
        assert bad.status_code == 422
        last = None
        for index in range(1, len(chunks)):
            last = post_chunk(client, chunks[index], session_id=session_id, chunk_index=index, total_chunks=len(chunks))
    assert last is not None and last.json()["data"]["content_hash"] == sha256(good)


@pytest.fixture(scope="module")
def small_limits_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp(f"small-{backend}")
    with database_url_for(backend, data_dir) as url:
        settings = make_settings(
            data_dir, url, upload={"max_file_size": 300_000, "max_chunk_size": 100_000, "max_chunks": 10}
        )
        with running_server(settings) as running:
            yield running


def test_oversize_by_stream_is_cut_off(small_limits_server: RunningServer, media: Media) -> None:
    """No Content-Length (chunked transfer): the body is refused as soon as it passes the limit."""
    server = small_limits_server
    data = make_video(media.root / "big.mp4", frames=60, seed=9).read_bytes()
    assert len(data) > 300_000
    boundary = "limitboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        yield from split(data, 16_384)
        yield f"\r\n--{boundary}--\r\n".encode()

    before = disk_state(server)
    with server.client() as client:
        response = client.post(
            UPLOAD, content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        assert (response.status_code, error_code(response)) == (413, "file_too_large")
        oversize_chunk = post_chunk(
            client, data[:150_000], session_id=f"s-{uuid.uuid4().hex}", chunk_index=0, total_chunks=3
        )
        assert (oversize_chunk.status_code, error_code(oversize_chunk)) == (413, "chunk_too_large")
        announced = post_chunk(client, data[:1000], file_size="400000")
        assert (announced.status_code, error_code(announced)) == (413, "file_too_large")
        by_length = client.post(UPLOAD, files={"file": ("big.mp4", data * 6, "video/mp4")})
        assert (by_length.status_code, error_code(by_length)) == (413, "file_too_large")
        # Chunk 0 teaches the chunk size: 10 chunks of 90 KB cannot fit 300 KB, refused at once.
        learnt = post_chunk(client, data[:90_000], session_id=f"s-{uuid.uuid4().hex}", chunk_index=0, total_chunks=10)
        assert (learnt.status_code, error_code(learnt)) == (413, "file_too_large")
    assert disk_state(server) - before == set()
