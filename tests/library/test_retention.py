"""RETENTION_DAYS: old videos are deleted by the sweep through the one delete path."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from tests.conftest import RunningServer, database_url_for, make_settings, running_server
from tests.helpers import blob_path, post_chunk, role_client, sha256
from tests.media import make_video
from vidgate.config import load_settings
from vidgate.db.models import Content, StoredEvent, Video, utcnow
from vidgate.library.retention import sweep_library


def test_retention_days_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().library.retention_days is None  # unset: kept forever
    monkeypatch.setenv("RETENTION_DAYS", "30")
    assert load_settings().library.retention_days == 30


@pytest.fixture(scope="module")
def retaining(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp(f"retention-{backend}")
    with (
        database_url_for(backend, data_dir) as url,
        running_server(make_settings(data_dir, url, library={"retention_days": 30})) as running,
    ):
        yield running


def test_the_sweep_deletes_videos_older_than_retention_days_the_same_way(
    retaining: RunningServer, tmp_path: Path
) -> None:
    name, other = f"ret-{uuid.uuid4().hex[:6]}", f"ret-{uuid.uuid4().hex[:6]}"
    old_data = make_video(tmp_path / "old.mp4", frames=8, seed=uuid.uuid4().int % 10_000).read_bytes()
    new_data = make_video(tmp_path / "new.mp4", frames=8, seed=uuid.uuid4().int % 10_000 + 10_000).read_bytes()
    ids = {}
    with role_client(retaining, name, "uploader") as client, role_client(retaining, other, "uploader") as peer:
        for label, data in (("old", old_data), ("new", new_data)):
            ids[label] = post_chunk(client, data, filename=f"{label}.mp4", content_type="").json()["data"]["video_id"]
        peers = post_chunk(peer, old_data, filename="p.mp4", content_type="").json()["data"]["video_id"]
    with retaining.db.session() as session:  # uploaded 31 days ago (the peer's copy: 29 days ago)
        session.execute(update(Video).where(Video.id == ids["old"]).values(created_at=utcnow() - timedelta(days=31)))
        session.execute(update(Video).where(Video.id == peers).values(created_at=utcnow() - timedelta(days=29)))
    report = sweep_library(retaining.services)
    assert report.expired_videos_deleted == 1
    with retaining.db.session() as session:
        left = set(session.scalars(select(Video.id).where(Video.id.in_([*ids.values(), peers]))).all())
        assert left == {ids["new"], peers}
        assert session.scalar(select(func.count()).select_from(Content).where(Content.content_hash == sha256(old_data)))
        stored = session.scalars(
            select(StoredEvent.payload).where(
                StoredEvent.video_id == ids["old"], StoredEvent.event_type == "video_deleted"
            )
        ).all()
    assert [json.loads(p)["data"]["reason"] for p in stored] == ["retention"]
    assert json.loads(stored[0])["data"]["key_id"] is None
    assert blob_path(retaining.settings.storage_dir, sha256(old_data)).is_file()  # the peer still holds it
    # two days on, the peer's copy is past retention too: then the bytes go
    report = sweep_library(retaining.services, now=utcnow() + timedelta(days=2))
    assert report.expired_videos_deleted >= 1
    assert not blob_path(retaining.settings.storage_dir, sha256(old_data)).exists()
