"""The WebSocket hub of one API process: who is connected, what each wants, and a bounded
buffer per client so a slow client is dropped instead of slowing anyone else.

Each connection follows its user's numbered event stream (:mod:`vidgate.events.store`) and
remembers how far it got (``position``). The bus brings the next number almost always; a number
further on means the bus lost some (Redis was down, a publisher could not reach it), and the
connection catches up from the store before taking anything else, so a socket that stays open
through an outage still gets every event once, in order. The hub also catches up every
connection when the bus (re)connects, and checks the store's counters every
``catch_up_interval`` for connections that fell behind without noticing (nothing followed the
lost events). Replay (``since``) runs the same way, before the subject joins the live stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from vidgate import metrics
from vidgate.events.schema import AnyEvent, Heartbeat, HeartbeatData, to_client
from vidgate.events.store import EventStore

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
    #: the sequence of the user's stream up to which this connection has been fed (None: not yet known)
    position: int | None = None
    #: a catch-up from the store is running: numbered events wait for it (it reads them itself)
    catching_up: bool = False
    #: something came in while catching up: read the store once more before stopping
    behind: bool = False
    #: subscriptions asked with ``since``: (subject, or None for everything; since), replayed in order
    replays: list[tuple[str | None, int]] = field(default_factory=list)

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
    def __init__(
        self, queue_size: int, heartbeat_interval: float, store: EventStore, catch_up_interval: float = 2.0
    ) -> None:
        self.queue_size = queue_size
        self.heartbeat_interval = heartbeat_interval
        self.store = store
        self.catch_up_interval = catch_up_interval
        self.batch = max(1, min(queue_size, 500))
        self.connections: set[Connection] = set()
        self._by_user: dict[str, set[Connection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def connect(self, user_id: str, websocket: Any) -> Connection:
        """Register a connection; it starts at the user's current position, read from the store."""
        connection = Connection(user_id, websocket, asyncio.Queue(self.queue_size))
        self.connections.add(connection)
        self._by_user.setdefault(user_id, set()).add(connection)
        metrics.WEBSOCKET_CONNECTIONS.inc()
        self.catch_up(connection)
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
            for connection in list(self.connections):
                connection.offer(event)
            return
        for connection in [c for user in event.audience for c in self._by_user.get(user, ())]:
            if not event.sequence:  # not from the store (published straight onto the bus): as it is
                if connection.wants(event):
                    connection.offer(event)
            elif connection.catching_up or connection.position is None:
                connection.behind = True
            elif event.sequence == connection.position + 1:
                connection.position = event.sequence
                if connection.wants(event):
                    connection.offer(event)
            elif event.sequence > connection.position:
                self.catch_up(connection)  # a gap: the bus lost what came before this one

    def replay(self, connection: Connection, subject: str | None, since: int) -> None:
        """Send ``subject``'s stored events after ``since`` (everything's, for None), then follow
        it live: it joins the connection's subscriptions only once its past is queued."""
        connection.replays.append((subject, since))
        self.catch_up(connection)

    def catch_up(self, connection: Connection) -> None:
        """Read what ``connection`` is missing from the store (one reader per connection)."""
        if connection.catching_up:
            connection.behind = True
            return
        connection.catching_up = True
        task = asyncio.create_task(self._catch_up(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def bus_connected(self) -> None:
        """The bus (re)subscribed: what was published while it was away is only in the store."""
        for connection in list(self.connections):
            self.catch_up(connection)

    async def _catch_up(self, connection: Connection) -> None:
        user_id = connection.user_id
        try:
            while not connection.closed.is_set():
                connection.behind = False
                if connection.position is None:
                    latest = await asyncio.to_thread(self.store.latest, [user_id])
                    connection.position = latest[user_id]
                while connection.replays:
                    subject, since = connection.replays.pop(0)
                    await self._replay(connection, subject, since)
                while True:
                    events = await asyncio.to_thread(self.store.read, user_id, connection.position, limit=self.batch)
                    for event in events:
                        connection.position = event.sequence
                        if connection.wants(event):
                            connection.offer(event)
                    if len(events) < self.batch:
                        break
                if not connection.behind and not connection.replays:
                    break
        except Exception:
            log.exception("catching up a WebSocket of user %s from the event store failed", user_id)
        finally:
            connection.catching_up = False

    async def _replay(self, connection: Connection, subject: str | None, since: int) -> None:
        kind, _, value = (subject or "").partition(":")
        filters = {"session_id": value} if kind == "session" else {"video_id": value} if kind == "video" else {}
        upto = connection.position
        after = since
        while True:
            events = await asyncio.to_thread(
                self.store.read, connection.user_id, after, upto=upto, limit=self.batch, **filters
            )
            for event in events:
                connection.offer(event)
                after = event.sequence
            if len(events) < self.batch:
                break
        # No await from the last read to here: what comes after ``upto`` reaches it live.
        if subject is None:
            connection.everything = True
        else:
            connection.subjects.add(subject)

    async def watch_store(self) -> None:
        """Every ``catch_up_interval``: catch up connections whose user's stream moved on
        without them (a publish that never reached the bus, with nothing after it)."""
        while True:
            await asyncio.sleep(self.catch_up_interval)
            users = list(self._by_user)
            if not users:
                continue
            try:
                latest = await asyncio.to_thread(self.store.latest, users)
            except Exception:
                log.exception("reading the event store's counters failed")
                continue
            for user_id, last in latest.items():
                for connection in list(self._by_user.get(user_id, ())):
                    if connection.position is not None and connection.position < last:
                        self.catch_up(connection)

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
