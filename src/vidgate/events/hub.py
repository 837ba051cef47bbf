"""The WebSocket hub of one API process: who is connected, what each wants, and a bounded
buffer per client so a slow client is dropped instead of slowing anyone else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from vidgate import metrics
from vidgate.events.schema import AnyEvent, Heartbeat, HeartbeatData, to_client

log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_SLOW = 4008


@dataclass(eq=False)
class Connection:
    user_id: str
    websocket: Any
    queue: asyncio.Queue[AnyEvent]
    subjects: set[str] = field(default_factory=set)
    everything: bool = False
    last_sent: dict[str, int] = field(default_factory=dict)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None

    def wants(self, event: AnyEvent) -> bool:
        if event.event_type == "heartbeat":
            return True
        if self.user_id not in event.audience:
            return False
        if self.everything:
            return True
        return any(
            subject in self.subjects
            for subject in (
                f"session:{event.session_id}" if event.session_id else None,
                f"video:{event.video_id}" if event.video_id else None,
            )
            if subject
        )

    def offer(self, event: AnyEvent) -> None:
        """Queue without waiting; a full buffer means the client cannot keep up: drop it."""
        if self.closed.is_set():
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("closing a WebSocket of user %s: it fell %d events behind", self.user_id, self.queue.qsize())
            self.close_code = CLOSE_TOO_SLOW
            self.closed.set()

    def fresh(self, event: AnyEvent) -> bool:
        """False for an event already sent (replay and live delivery may overlap)."""
        subject = event.subject
        if subject is None or not event.sequence:
            return True
        if event.sequence <= self.last_sent.get(subject, 0):
            return False
        self.last_sent[subject] = event.sequence
        return True


class Hub:
    def __init__(self, queue_size: int, heartbeat_interval: float) -> None:
        self.queue_size = queue_size
        self.heartbeat_interval = heartbeat_interval
        self.connections: set[Connection] = set()
        self._by_user: dict[str, set[Connection]] = {}

    def connect(self, user_id: str, websocket: Any) -> Connection:
        connection = Connection(user_id, websocket, asyncio.Queue(self.queue_size))
        self.connections.add(connection)
        self._by_user.setdefault(user_id, set()).add(connection)
        metrics.WEBSOCKET_CONNECTIONS.inc()
        return connection

    def disconnect(self, connection: Connection) -> None:
        if connection in self.connections:
            metrics.WEBSOCKET_CONNECTIONS.dec()
        self.connections.discard(connection)
        mine = self._by_user.get(connection.user_id)
        if mine is not None:
            mine.discard(connection)
            if not mine:
                del self._by_user[connection.user_id]
        connection.closed.set()

    def deliver(self, event: AnyEvent) -> None:
        """Offer ``event`` to the connections of its audience that asked for it (indexed by
        user, so the cost of an event does not grow with everyone else's connections)."""
        if event.event_type == "heartbeat":
            targets: list[Connection] = list(self.connections)
        else:
            targets = [c for user in event.audience for c in self._by_user.get(user, ())]
        for connection in targets:
            if connection.wants(event):
                connection.offer(event)

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            beat = Heartbeat(data=HeartbeatData(interval_seconds=self.heartbeat_interval))
            for connection in list(self.connections):
                connection.offer(beat)

    async def pump(self, connection: Connection) -> None:
        """Send queued events until the connection closes."""
        while not connection.closed.is_set():
            getter = asyncio.ensure_future(connection.queue.get())
            closer = asyncio.ensure_future(connection.closed.wait())
            try:
                done, _ = await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when this pump is cancelled: leave no waiter behind
                for waiter in (getter, closer):
                    if not waiter.done():
                        waiter.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await waiter
            if getter not in done:
                break
            event = getter.result()
            if connection.fresh(event):
                await connection.websocket.send_text(to_client(event))
