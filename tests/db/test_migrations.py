"""The migrations build exactly the schema the models describe, and can be walked back."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from tests.conftest import database_url_for
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import Base


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_migrated_schema_matches_the_models(backend: str, tmp_path: Path) -> None:
    with database_url_for(backend, tmp_path) as url:
        db = Database(url)
        try:
            migrate.upgrade(db)
            with db.engine.connect() as connection:
                context = MigrationContext.configure(connection, opts={"include_name": _described_by_the_models})
                differences = compare_metadata(context, Base.metadata)
                columns = {c["name"]: c for c in inspect(connection).get_columns("upload_chunk")}
        finally:
            db.dispose()
    assert differences == []
    assert columns["chunk_hash"]["nullable"]  # 0005: a tus PATCH row has no hash of its own


def test_head_names_the_newest_migration_and_an_up_to_date_start_imports_no_alembic(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head() == migrate.HEAD
    db = Database(f"sqlite:///{tmp_path / 'head.db'}")
    try:
        assert migrate.current_revision(db) is None
        migrate.upgrade(db)
        assert migrate.current_revision(db) == migrate.HEAD
    finally:
        db.dispose()
    check = (
        "import sys; from vidgate.db import migrate; from vidgate.db.engine import Database; "
        f"migrate.upgrade(Database('sqlite:///{tmp_path / 'head.db'}')); "
        "assert not [m for m in sys.modules if m.startswith('alembic')], 'alembic imported'"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


#: what 0013 (file-name search) builds that the ORM cannot describe: SQLite's FTS5 table (and the
#: tables FTS5 keeps beside it), PostgreSQL's pg_trgm index
NOT_IN_MODELS = ("video_filename", "ix_video_filename_trgm")


def _described_by_the_models(name: str | None, kind: str, parent: dict[str, str | None]) -> bool:
    return name is None or not name.startswith(NOT_IN_MODELS)


def _utc(value: str | datetime) -> datetime:
    """A timestamp read back with raw SQL (SQLite gives text without a zone)."""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _rows(connection: Connection, table: str, order: str = "id") -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_0006_gives_every_owner_a_video_of_their_own(backend: str, tmp_path: Path) -> None:
    """A shared video row of 0005 becomes a content; the first owner keeps the video and its id,
    every other owner gets their own video from their earliest completed session."""
    shared, queued = str(uuid.uuid4()), str(uuid.uuid4())
    base = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    with database_url_for(backend, tmp_path) as url:
        db = Database(url)
        try:
            migrate.upgrade(db, "0005")
            with db.engine.begin() as connection:
                for video_id, digest, status, owner in (
                    (shared, "a" * 64, "completed", "u-alice"),
                    (queued, "b" * 64, "queued", "u-alice"),
                ):
                    connection.execute(
                        text(
                            "INSERT INTO video (id, content_hash, file_size, storage_key, content_type, filename,"
                            " first_user_id, status, priority, created_at, updated_at, media_info,"
                            " processing_options, stage, progress, attempts, fingerprint, finished_at)"
                            " VALUES (:id, :digest, 1000, :digest, 'video/mp4', 'board-meeting-private.mp4', :owner,"
                            " :status, 8, :at, :at, '{}', '{}', :stage, :progress, :attempts, :fp, :finished)"
                        ),
                        dict(
                            id=video_id,
                            digest=digest,
                            owner=owner,
                            status=status,
                            at=base,
                            stage="done" if status == "completed" else "queued",
                            progress=100.0 if status == "completed" else 0.0,
                            attempts=1 if status == "completed" else 0,
                            fp=12345 if status == "completed" else None,
                            finished=base + timedelta(seconds=5) if status == "completed" else None,
                        ),
                    )
                sessions = [  # (session, owner, video, filename, priority, created minutes after base)
                    ("s-alice", "u-alice", shared, "board-meeting-private.mp4", 8, 0),
                    ("s-bob-later", "u-bob", shared, "b-again.mp4", 2, 30),
                    ("s-bob", "u-bob", shared, "b.mp4", 3, 10),
                    ("s-alice-2", "u-alice", queued, "board-meeting-private.mp4", 8, 40),
                ]
                for session_id, owner, video_id, filename, priority, minutes in sessions:
                    at = base + timedelta(minutes=minutes)
                    connection.execute(
                        text(
                            "INSERT INTO upload_session (id, session_id, filename, total_chunks, chunks_received,"
                            " bytes_received, status, user_id, username, upload_options, priority, content_hash,"
                            " video_id, is_duplicate, protocol, created_at, last_updated, expires_at, completed_at)"
                            " VALUES (:id, :sid, :filename, 1, 1, 1000, 'completed', :owner, :owner, '{}', :priority,"
                            " NULL, :video, false, 'chunks', :at, :at, :at, :at)"
                        ),
                        dict(
                            id=str(uuid.uuid4()),
                            sid=session_id,
                            filename=filename,
                            owner=owner,
                            priority=priority,
                            video=video_id,
                            at=at,
                        ),
                    )
                connection.execute(
                    text(
                        "INSERT INTO video_analysis_result (id, video_id, pipeline_version, model_type, result,"
                        " processing_seconds, created_at) VALUES ('r1', :video, '1', 'resnet50', '{}', 1.5, :at)"
                    ),
                    dict(video=shared, at=base),
                )
                connection.execute(
                    text(
                        "INSERT INTO frame_hash (video_id, timestamp, hash, band0, band1, band2, band3)"
                        " VALUES (:video, 0.0, 7, 0, 0, 0, 7)"
                    ),
                    dict(video=shared),
                )

            migrate.upgrade(db)
            with db.engine.connect() as connection:
                assert (
                    compare_metadata(
                        MigrationContext.configure(connection, opts={"include_name": _described_by_the_models}),
                        Base.metadata,
                    )
                    == []
                )
                contents = {row["id"]: row for row in _rows(connection, "content")}
                videos = _rows(connection, "video", "created_at")
                owners = {row["session_id"]: row["video_id"] for row in _rows(connection, "upload_session")}
                results = _rows(connection, "video_analysis_result")
                frames = _rows(connection, "frame_hash")
            assert set(contents) == {shared, queued}  # a content keeps its video's id
            assert contents[shared]["content_hash"] == "a" * 64 and contents[shared]["status"] == "completed"
            assert contents[shared]["fingerprint"] == 12345 and contents[shared]["analyses"] == 1
            assert contents[queued]["status"] == "pending"
            assert [(v["user_id"], v["filename"], v["priority"]) for v in videos] == [
                ("u-alice", "board-meeting-private.mp4", 8),
                ("u-alice", "board-meeting-private.mp4", 8),
                ("u-bob", "b.mp4", 3),  # bob's own, from his earliest session
            ]
            alice, bob = videos[0], videos[2]
            assert alice["id"] == shared and videos[1]["id"] == queued
            assert bob["id"] not in (shared, queued) and bob["content_id"] == shared
            assert bob["status"] == "completed" and bob["attempts"] == 1
            assert _utc(bob["created_at"]) == base + timedelta(minutes=10)
            assert owners == {"s-alice": shared, "s-alice-2": queued, "s-bob": bob["id"], "s-bob-later": bob["id"]}
            assert [r["content_id"] for r in results] == [shared] and [f["content_id"] for f in frames] == [shared]

            migrate.downgrade(db, "0005")  # and back: one video per content, the first owner's
            with db.engine.connect() as connection:
                videos = _rows(connection, "video")
                owners = {row["session_id"]: row["video_id"] for row in _rows(connection, "upload_session")}
                results = _rows(connection, "video_analysis_result")
            assert {v["id"]: v["first_user_id"] for v in videos} == {shared: "u-alice", queued: "u-alice"}
            assert set(owners.values()) == {shared, queued} and owners["s-bob"] == shared
            assert [r["video_id"] for r in results] == [shared]
            migrate.upgrade(db)
        finally:
            db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_keys_from_before_roles_become_uploaders(backend: str, tmp_path: Path) -> None:
    """0010: a key made before roles existed keeps what it could do (read and upload), no more."""
    with database_url_for(backend, tmp_path) as url:
        db = Database(url)
        try:
            migrate.upgrade(db, "0005")
            with db.engine.begin() as connection:
                connection.execute(
                    text("INSERT INTO user_account (id, username, created_at) VALUES ('u1', 'old', CURRENT_TIMESTAMP)")
                )
                connection.execute(
                    text(
                        "INSERT INTO api_key (id, user_id, key_hash, key_prefix, created_at) "
                        "VALUES ('k1', 'u1', 'h', 'vg_x', CURRENT_TIMESTAMP)"
                    )
                )
            migrate.upgrade(db)
            with db.engine.connect() as connection:
                role = connection.execute(text("SELECT role FROM api_key WHERE id = 'k1'")).scalar_one()
        finally:
            db.dispose()
    assert role == "uploader"
