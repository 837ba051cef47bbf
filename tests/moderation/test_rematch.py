"""Videos processed before a bank was imported (or updated) are matched against its new
entries from their stored hashes, and each owner is told with the usual hash_match event and
webhook, once (SQLite and PostgreSQL, a real server, real clips)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import RunningServer, database_url_for, make_settings, running_server
from tests.helpers import post_chunk, wait_for_video
from tests.moderation.test_banks import reference_features, remux
from tests.sample_clips import clips  # noqa: F401  (fixture)
from vidgate.db.models import HashBank, StoredEvent, WebhookDelivery
from vidgate.events.webhooks import set_webhook
from vidgate.moderation import rematch
from vidgate.moderation.banks import import_bank, parse_bank_file
from vidgate.processing import dispatch


@pytest.fixture
def own_server(backend: str, tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh server (no bank of other tests), one content per re-match round, and no
    periodic sweep of its own during the test (the test runs the rounds)."""
    settings = {"moderation": {"rematch_batch": 1}, "processing": {"dispatch_interval_seconds": 3600}}
    with database_url_for(backend, tmp_path) as url, running_server(make_settings(tmp_path, url, **settings)) as s:
        yield s


def bank_file(path: Path, entries: dict[str, Path]) -> Path:
    document = {
        name: [f"{f.hex},{f.quality},{f.timestamp:.3f}" for f in reference_features(clip)]
        for name, clip in entries.items()
    }
    path.write_text(json.dumps(document))
    return path


def hash_match_deliveries(server: RunningServer) -> list[tuple[str, str]]:
    with server.db.session() as session:
        rows = session.execute(
            select(WebhookDelivery.url, WebhookDelivery.payload).where(WebhookDelivery.event_type == "hash_match")
        ).all()
    return sorted((url, json.loads(payload)["video_id"]) for url, payload in rows)


def test_stored_videos_are_matched_when_a_bank_is_imported_or_updated(
    own_server: RunningServer,
    clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    server = own_server
    carphone = remux(clips["carphone_distorted"], tmp_path / "carphone.mkv")
    bikes = remux(clips["bikes"], tmp_path / "bikes.mkv")
    videos = {}
    for user, clip in (("alice", carphone), ("bob", carphone), ("carol", bikes)):
        server.key_for(user)
        set_webhook(server.db, user, f"http://127.0.0.1:9/{user}")
        with server.client(user) as client:
            video_id = post_chunk(client, clip.read_bytes(), filename=clip.name, content_type="").json()["data"][
                "video_id"
            ]
            assert wait_for_video(client, video_id)["status"] == "completed"
            assert client.get(f"/v1/videos/{video_id}/result").json()["data"]["moderation"]["flagged"] is False
        videos[user] = video_id
    assert hash_match_deliveries(server) == []

    # A list naming carphone arrives after the videos were processed.
    import_bank(
        server.db, "late-list", parse_bank_file(bank_file(tmp_path / "a.json", {"case-7": clips["carphone_distorted"]}))
    )
    reports = rematch.run_all(server.db, server.services.events, server.settings.moderation)
    # Two contents (alice's and bob's videos share one), one per round, then a short page ends the pass.
    assert [(r.bank, r.contents, r.done) for r in reports] == [
        ("late-list", 1, False),
        ("late-list", 1, False),
        ("late-list", 0, True),
    ]
    assert sum(r.flagged for r in reports) == 1
    for user in ("alice", "bob"):
        with server.client(user) as client:
            moderation = client.get(f"/v1/videos/{videos[user]}/result").json()["data"]["moderation"]
        assert moderation["flagged"] is True
        (match,) = moderation["hash_matches"]
        assert (match["bank"], match["entry_name"]) == ("late-list", "case-7")
        assert match["query_match_percent"] >= 80 and match["entry_match_percent"] >= 80
        assert match["query_start"] == 0.0 and match["entry_start"] == 0.0 and match["entry_end"] > 2
        assert any(r["code"] == "hash_match" and "late-list" in r["message"] for r in moderation["reasons"])
    with server.client("carol") as client:
        assert client.get(f"/v1/videos/{videos['carol']}/result").json()["data"]["moderation"]["flagged"] is False
    told = [("http://127.0.0.1:9/alice", videos["alice"]), ("http://127.0.0.1:9/bob", videos["bob"])]
    assert hash_match_deliveries(server) == told  # each owner, under their own video's id
    with server.db.session() as session:
        stored = session.scalars(select(StoredEvent.user_id).where(StoredEvent.event_type == "hash_match")).all()
        bank = session.scalar(select(HashBank).where(HashBank.name == "late-list"))
        assert bank is not None and (bank.revision, bank.rematched_revision, bank.rematch_target) == (1, 1, None)
    assert len(stored) == len(set(stored)) == 2  # one stored event per owner

    # Nothing pending: the sweep's step does nothing, and nobody is told twice.
    assert rematch.run_round(server.db, server.services.events, server.settings.moderation).bank is None
    assert dispatch.sweep(server.services.processing).rematched == 0

    # The bank is updated with an entry for bikes: only the new entry is matched, through the
    # dispatcher's sweep; carol is told, alice and bob are not told again.
    import_bank(server.db, "late-list", parse_bank_file(bank_file(tmp_path / "b.json", {"case-8": clips["bikes"]})))
    assert [dispatch.sweep(server.services.processing).rematched for _ in range(4)] == [1, 1, 0, 0]
    with server.client("carol") as client:
        moderation = client.get(f"/v1/videos/{videos['carol']}/result").json()["data"]["moderation"]
    assert [(m["bank"], m["entry_name"]) for m in moderation["hash_matches"]] == [("late-list", "case-8")]
    assert hash_match_deliveries(server) == sorted([*told, ("http://127.0.0.1:9/carol", videos["carol"])])
    with server.client("alice") as client:
        moderation = client.get(f"/v1/videos/{videos['alice']}/result").json()["data"]["moderation"]
    assert [m["entry_name"] for m in moderation["hash_matches"]] == ["case-7"]
