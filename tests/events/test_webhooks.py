"""Webhooks against a real local HTTP receiver: signed, retried with backoff, one event id."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import RunningServer, database_url_for, make_settings, running_server
from tests.helpers import finishes_at_once, post_chunk, sqlite_write_lock_held, wait_for_video
from tests.media import make_video
from vidgate.config import WebhookSettings
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import StoredEvent, UserAccount, WebhookDelivery
from vidgate.events.publisher import EventPublisher
from vidgate.events.schema import FailureData, ProcessingFailed
from vidgate.events.webhooks import SIGNATURE_HEADER, WebhookOutbox, WebhookSender, set_webhook, verify


class Receiver:
    """Answers 500 to the first delivery of each event (unless ``fail_first`` is off), 200
    afterwards; records everything."""

    def __init__(self, fail_first: bool = True) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                first = not any(
                    h["X-Vidgate-Event-Id"] == self.headers["X-Vidgate-Event-Id"] for h, _ in receiver.calls
                )
                receiver.calls.append((dict(self.headers), body))
                self.send_response(500 if first and fail_first else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def hooked(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp(f"hooks-{backend}")
    with database_url_for(backend, data_dir) as url:
        settings = make_settings(data_dir, url, webhook={"retry_backoff_seconds": 0.3, "poll_interval_seconds": 0.1})
        with running_server(settings) as running:
            yield running


def test_processing_events_are_posted_signed_and_retried(hooked: RunningServer, tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        secret = set_webhook(hooked.db, "alice", receiver.url)
        data = make_video(tmp_path / "hook.mp4", seed=uuid.uuid4().int % 10_000).read_bytes()
        with hooked.client() as client:
            post_chunk(client, data)
        deadline = time.monotonic() + 30
        while sum(1 for h, _ in receiver.calls if h["X-Vidgate-Event-Type"] == "processing_completed") < 2:
            assert time.monotonic() < deadline, [h.get("X-Vidgate-Event-Type") for h, _ in receiver.calls]
            time.sleep(0.05)
        completed = [(h, b) for h, b in receiver.calls if h["X-Vidgate-Event-Type"] == "processing_completed"]
        (first_headers, first_body), (second_headers, second_body) = completed[:2]
        assert first_headers["X-Vidgate-Event-Id"] == second_headers["X-Vidgate-Event-Id"]  # receivers dedupe
        assert first_body == second_body
        assert verify(secret, second_headers[SIGNATURE_HEADER], second_body)
        assert not verify("whsec_wrong", second_headers[SIGNATURE_HEADER], second_body)
        event = json.loads(second_body)
        assert event["event_type"] == "processing_completed" and "audience" not in event
        assert event["data"]["flagged"] is False  # the moderation verdict travels with the event
        assert event["data"]["result"]["moderation"]["nsfw"]["status"] == "ok"
        assert all(
            h["X-Vidgate-Event-Type"] in ("processing_completed", "duplicate_detected") for h, _ in receiver.calls
        )
        with hooked.client("bob") as bob:  # bob set no webhook: nothing for him
            post_chunk(bob, make_video(tmp_path / "bob.mp4", seed=uuid.uuid4().int % 10_000).read_bytes())
        time.sleep(2)
        assert len({h["X-Vidgate-Event-Id"] for h, _ in receiver.calls}) == 1
    finally:
        receiver.close()


def test_a_delivery_recorded_with_its_event_survives_a_restart(backend: str, tmp_path: Path) -> None:
    """The first server stores the event and its delivery in one transaction but never sends it
    (its sender ran once, at start-up, and then stopped); the next server on the same database
    sends it, once, under the stored event's id."""
    receiver = Receiver(fail_first=False)
    data = make_video(tmp_path / "restart.mp4", seed=uuid.uuid4().int % 10_000).read_bytes()
    try:
        with database_url_for(backend, tmp_path) as url:
            asleep = make_settings(tmp_path, url, webhook={"poll_interval_seconds": 3600})
            with running_server(asleep) as first:
                set_webhook(first.db, "alice", receiver.url)
                with first.client() as client:
                    video_id = post_chunk(client, data).json()["data"]["video_id"]
                    assert wait_for_video(client, video_id)["status"] == "completed"
            assert receiver.calls == []
            awake = make_settings(tmp_path, url, webhook={"poll_interval_seconds": 0.1})
            with running_server(awake) as second:
                deadline = time.monotonic() + 30
                while not receiver.calls:
                    assert time.monotonic() < deadline, "the stored delivery was not sent after the restart"
                    time.sleep(0.05)
                time.sleep(1)  # a second POST of the same delivery would have come by now
                with second.db.session() as session:
                    stored_id = session.scalar(
                        select(StoredEvent.event_id).where(
                            StoredEvent.video_id == video_id, StoredEvent.event_type == "processing_completed"
                        )
                    )
                    statuses = session.scalars(select(WebhookDelivery.status)).all()
        assert [h["X-Vidgate-Event-Id"] for h, _ in receiver.calls] == [stored_id]
        assert json.loads(receiver.calls[0][1])["event_id"] == stored_id
        assert statuses == ["delivered"]
    finally:
        receiver.close()


def test_a_delivery_exists_exactly_when_its_event_was_committed(backend: str, tmp_path: Path) -> None:
    with database_url_for(backend, tmp_path) as url:
        db = Database(url)
        try:
            migrate.upgrade(db)
            with db.session() as session:
                session.add(UserAccount(id="u1", username="u1", webhook_url="http://127.0.0.1:9/hooks"))
            publisher = EventPublisher(None, db, webhooks=WebhookOutbox(db, WebhookSettings()))
            kept = ProcessingFailed(video_id="v1", data=FailureData(error_code="x", message="kept"))
            dropped = ProcessingFailed(video_id="v2", data=FailureData(error_code="x", message="rolled back"))
            with db.session() as session:
                publisher.to_user(kept, "u1", session)
            with pytest.raises(RuntimeError), db.session() as session:
                publisher.to_user(dropped, "u1", session)
                raise RuntimeError("the change failed")
            with db.session() as session:
                deliveries = session.execute(select(WebhookDelivery.event_id, WebhookDelivery.payload)).all()
                stored = session.scalars(select(StoredEvent.event_id)).all()
        finally:
            db.dispose()
    assert stored == [kept.event_id]
    assert [event_id for event_id, _ in deliveries] == [kept.event_id]
    assert json.loads(deliveries[0][1])["sequence"] == 1


def test_a_round_with_nothing_due_takes_no_write_lock(tmp_path: Path) -> None:
    """The sender polls every second: on SQLite, finding nothing must not queue behind (or hold
    up) the single writer."""
    db = Database(f"sqlite:///{tmp_path / 'hooks.db'}")
    try:
        migrate.upgrade(db)
        sender = WebhookSender(db, WebhookSettings())
        with sqlite_write_lock_held(db):
            assert finishes_at_once(sender.deliver_due) == 0
    finally:
        db.dispose()
