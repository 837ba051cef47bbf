"""The publisher and what stays in memory: 10,000 upload sessions' worth of events through the
real publisher, store, bus and hub (a socket following everything, one following a session)
leave the process's memory where 1,000 left it; the progress throttle forgets keys; a
processing write refused because its lease was lost (rolled back) stores and publishes nothing."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tests.events.test_store import RecordingBus
from tests.processing.test_lease import JOB_TIMEOUT, _analysed, _claim, _content, _expire, _queued_video
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import StoredEvent, UserAccount
from vidgate.events.bus import LocalBus
from vidgate.events.hub import Hub
from vidgate.events.publisher import EventPublisher
from vidgate.events.schema import (
    UploadCompleted,
    UploadCompletedData,
    UploadProgress,
    UploadProgressData,
    UploadStarted,
    UploadStartedData,
)
from vidgate.processing import lease


class CountingSocket:
    """Stands for a client's WebSocket: counts what it is sent, keeps nothing."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, message: dict[str, Any]) -> None:
        self.sent += 1


def one_session(publisher: EventPublisher, db: Database, user: str, n: int) -> None:
    """What an upload session tells: started, throttled progress, then completed (two in three)
    or nothing more (abandoned: its final progress never comes), with a 2 KB payload each."""
    session_id = f"s{n}"
    with db.session() as session:
        publisher.to_user(
            UploadStarted(session_id=session_id, data=UploadStartedData(filename="x" * 2000, total_chunks=4)),
            user,
            session,
        )
        for chunk in range(3):
            if publisher.progress_due(f"upload:{session_id}", final=False):
                progress = UploadProgressData(
                    chunks_received=chunk, total_chunks=4, bytes_received=chunk, progress_percentage=25.0 * chunk
                )
                publisher.to_user(UploadProgress(session_id=session_id, data=progress), user, session)
        if n % 3:
            publisher.progress_due(f"upload:{session_id}", final=True)
            done = UploadCompletedData(video_id=f"v{n}", content_hash="0" * 64, file_size=4)
            publisher.to_user(UploadCompleted(session_id=session_id, data=done), user, session)


def test_ten_thousand_sessions_of_events_leave_memory_bounded(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'events.db'}")
    migrate.upgrade(db)
    with db.session() as session:
        session.add(UserAccount(id="u1", username="u1"))
    bus = LocalBus()
    publisher = EventPublisher(bus, db, progress_interval=0.05)
    hub = Hub(queue_size=256, heartbeat_interval=3600, store=publisher.store)
    sizes: dict[int, int] = {}

    def sessions(first: int, count: int) -> None:
        for n in range(first, first + count):
            one_session(publisher, db, "u1", n)

    async def run() -> tuple[CountingSocket, CountingSocket]:
        listening = asyncio.create_task(bus.listen(hub.deliver, hub.bus_connected))
        everything, one = CountingSocket(), CountingSocket()
        connections = [hub.connect("u1", everything), hub.connect("u1", one)]
        hub.subscribe(connections[0], None)
        hub.subscribe(connections[1], "session:s1", since=0)
        pumps = [asyncio.create_task(hub.pump(c)) for c in connections]
        await asyncio.sleep(0.2)
        for n in range(0, 10_000, 50):
            await asyncio.to_thread(sessions, n, 50)
            if n + 50 in (1_000, 10_000):
                while any(c.outbox for c in connections) or any(c.catching_up for c in connections):
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)  # the progress keys of the last sessions age past the interval
                publisher.progress_due("upload:probe", final=True)  # (pruning happens on a call)
                gc.collect()
                sizes[n + 50] = sys.getallocatedblocks()
        assert all(not c.closed.is_set() for c in connections)
        for task in [*pumps, listening]:
            task.cancel()
        await asyncio.gather(*pumps, listening, return_exceptions=True)
        return everything, one

    try:
        everything, one = asyncio.run(run())
        with db.session() as session:
            stored = session.scalar(select(func.count()).select_from(StoredEvent))
    finally:
        db.dispose()
    assert stored is not None and stored > 25_000
    assert everything.sent == stored and one.sent == 3  # all of it, and all of session s1
    grown = sizes[10_000] - sizes[1_000]
    print(f"allocated blocks: {sizes[1_000]} after 1,000 sessions, {sizes[10_000]} after 10,000")
    # 9,000 more sessions (24,000 events, 2 KB each) through the hub: whatever were kept per
    # session or per event (a dict entry, a copy) would add thousands of blocks.
    assert grown < 1_000, f"{grown} more memory blocks in use after 10,000 sessions than after 1,000"
    assert len(publisher._last_progress) <= 1


def test_the_progress_throttle_lets_one_through_per_interval_and_forgets_old_keys(tmp_path: Path) -> None:
    publisher = EventPublisher(None, Database(f"sqlite:///{tmp_path / 'x.db'}"), progress_interval=3600)
    assert publisher.progress_due("a") and not publisher.progress_due("a")
    assert publisher.progress_due("a", final=True) and publisher.progress_due("a")  # the final one resets
    publisher.progress_interval = 0.0  # every key is now older than the interval: all are forgotten
    for n in range(1000):
        assert publisher.progress_due(f"k{n}")
    assert len(publisher._last_progress) == 1


def test_a_processing_write_refused_for_a_lost_lease_stores_and_publishes_no_event(
    services_for: Callable[..., Any], tmp_path: Path
) -> None:
    """A late original (its lease lapsed, its video handed to another worker) reports progress,
    stores its result and fails: each write is refused (LeaseLost, the transaction rolled back)
    and none leaves an event in the store or on the bus."""
    with services_for() as services:
        processing = services.processing
        video_id = _queued_video(services, tmp_path)
        original = _claim(services, video_id, "worker-a@host").lease
        assert original is not None
        content = _content(services, video_id)
        late = _analysed(services, content)
        _expire(services, video_id)
        lease.reclaim_lapsed(services.db, JOB_TIMEOUT)
        assert _claim(services, video_id, "worker-b@host").lease is not None  # attempt 2 is running
        bus = RecordingBus()
        services.events.bus = bus

        def events_stored() -> list[tuple[int, str]]:
            with services.db.session() as session:
                rows = session.execute(select(StoredEvent.sequence, StoredEvent.event_type))
                return [(int(sequence), str(event_type)) for sequence, event_type in rows]

        before = events_stored()
        assert before and bus.published == []
        writes: list[Callable[[], object]] = [
            lambda: processing._progress_writer(content.id, original)("analysing", 0.5),
            # the last report (100 %) is told by the result's transaction: refused with it
            lambda: processing._store(late, content.id, "resnet50", original, final_progress=("analysing", 100.0)),
            lambda: processing.mark_failed(content.id, "the late original failed", original),
        ]
        for write in writes:
            try:
                write()
            except lease.LeaseLost:
                pass
            else:
                raise AssertionError("a write of a superseded attempt was not refused")
        assert events_stored() == before
        assert bus.published == []
