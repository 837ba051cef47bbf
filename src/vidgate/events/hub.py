"""The WebSocket hub of one API process: who is connected, what each wants, and a bounded
buffer per client so a slow client is dropped instead of slowing anyone else.

Each connection follows its user's numbered event stream (:mod:`vidgate.events.store`) and
remembers how far it got (``position``). The bus brings the next number almost always. A number
further on usually means two publishers overtook each other between their commits and their
publishes (an upload thread and a processing thread of one user): it is held, and delivered in
order as soon as the missing number comes. Only if that number has not come within
``reorder_grace`` (the bus lost it: Redis was down, a publisher could not reach it) does the
connection catch up from the store, before taking anything else, so a socket that stays open
through an outage still gets every event once, in order. (Catching up at once on every
overtaking made each of a user's sockets read the store for nothing: with 200 sockets of one
user, the store reads took a third of the server's time.) The hub also catches up every
connection when the bus (re)connects, and checks the store's counters every
``catch_up_interval`` for connections that fell behind without noticing (nothing followed the
lost events).

Subscriptions are applied by that same catch-up, in order, so a subscription with ``since``
(replay) is atomic with respect to live delivery: while it reads the store, the user's live
events are not queued (the catch-up reads them from the store after the replay), and the
subject joins the live stream only once its past is queued. What comes from the store is
history the client asked for (or that the bus lost): it is sent with back-pressure, never more
than half the buffer at a time, so however long it is it never closes the client; only live
events that find the buffer full close it (4008). A replay that asks for more than the store
still keeps (swept after ``WEBSOCKET_EVENT_RETENTION_SECONDS``) starts with an
``events_expired`` event. Each subscription remembers the number after which the connection
has had all of its events, so a replay sends nothing the connection already had.

Per message the hub allocates nothing but the send: each event's client JSON is made once
for every socket (:func:`~vidgate.events.schema.to_client`) and buffers hold that text, its
subjects are worked out once, and the pump waits on one future only when its buffer is empty.
(Buffers of events made each pump ask Pydantic for the cached JSON, a private attribute: with
the subjects made per socket, 28 us per event per socket against 7 us now, measured with 1,000
sockets of one user.)
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from vidgate import metrics
from vidgate.events.schema import (
    AnyEvent,
    Event,
    EventsExpired,
    EventsExpiredData,
    Heartbeat,
    HeartbeatData,
    to_client,
)
from vidgate.events.store import EventStore

log = logging.getLogger(__name__)

#: the ASGI extension (in ``scope["extensions"]``) of a server that takes prebuilt frames, and the
#: key of a ``websocket.send`` message that carries them, in order (see :mod:`vidgate.api.ws_protocol`)
FRAMES_EXTENSION = "vidgate.frames"


def text_frame(text: str) -> bytes:
    """One unmasked, uncompressed, unfragmented WebSocket text frame holding ``text``: what a
    server sends, the same bytes for every receiver (the hub makes it once per event)."""
    from websockets.frames import Frame, Opcode  # (only API processes send; workers stay lean)

    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def sends_frames(scope: dict[str, Any]) -> bool:
    """The server of this WebSocket scope takes prebuilt frames."""
    return FRAMES_EXTENSION in (scope.get("extensions") or {})


def frame_writer(scope: dict[str, Any]) -> Callable[[Sequence[bytes]], bool] | None:
    """The server's own synchronous writer of prebuilt frames for this socket, if it has one: it
    writes at once and returns True, or writes nothing and returns False (the socket's buffer is
    full or it is closing: the event then waits in the connection's buffer for the pump)."""
    extension = (scope.get("extensions") or {}).get(FRAMES_EXTENSION)
    write = extension.get("write") if isinstance(extension, dict) else None
    return write if callable(write) else None


#: the most queued events a socket sends in one write (when its server takes prebuilt frames)
SEND_BATCH = 64

#: sockets written per turn of the event loop (see Hub._flush): 1,000 writes take 13-25 ms, and
#: an event that comes meanwhile then joins the sockets not yet written instead of waiting for all
FLUSH_SLICE = 100

CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_SLOW = 4008

#: a subscription: a subject ("session:ID", "video:ID") or None for everything of the user's
Subject = str | None


class Outgoing:
    """One event as sockets send it: its client JSON and, made by the first socket that needs it
    and shared by the rest, its WebSocket frame (see :mod:`vidgate.api.ws_protocol`)."""

    __slots__ = ("_frame", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = text_frame(self.text)
        return self._frame


def outgoing_of(event: AnyEvent) -> Outgoing:
    """``event`` as sockets send it, made once for all of them: live, held back or read from the
    store (connections catching up together share the events of one read)."""
    made: Outgoing | None = event._outgoing
    if made is None:
        made = event._outgoing = Outgoing(to_client(event))
    return made


def _flush_at_turn_end(connection: Connection) -> None:
    """Flush one connection at the end of this loop turn (a connection without a Hub)."""
    asyncio.get_running_loop().call_soon(connection.flush)


class Connection:
    """One socket: what it follows, how far it got in its user's stream, and its buffer."""

    def __init__(self, user_id: str, websocket: Any, queue_size: int) -> None:
        self.user_id = user_id
        self.websocket = websocket
        self.queue_size = queue_size
        #: history (store reads) fills at most this much of the buffer, so live events find room
        self.history_room = max(1, queue_size // 2)
        #: the queued events (each made once for every socket it goes to)
        self.outbox: deque[Outgoing] = deque()
        #: what it follows: subject (None: everything) -> the sequence after which it had all of it
        self.following: dict[Subject, int] = {}
        self.closed = asyncio.Event()
        self._closed = False  # closed.is_set(), as a plain attribute (read per socket per event)
        self.close_code: int | None = None
        #: the sequence of the user's stream up to which this connection has been fed (None: not yet known)
        self.position: int | None = None
        #: a catch-up from the store is running: numbered events wait for it (it reads them itself)
        self.catching_up = False
        #: something came in while catching up: read the store once more before stopping
        self.behind = False
        #: subscriptions to apply, in order: (subject, since or None for "from now on")
        self.pending: deque[tuple[Subject, int | None]] = deque()
        #: numbered events that came ahead of the next one, by sequence (see Hub.deliver)
        self.held: dict[int, AnyEvent] = {}
        #: the timer that gives up waiting for the missing number and reads the store
        self.gap_timer: asyncio.TimerHandle | None = None
        #: writes prebuilt frames at once if the socket takes them (see offer and flush), or None
        self._write_now = frame_writer(getattr(websocket, "scope", None) or {})
        self._sending = False  # the pump is handing events to the server
        self._flush_due = False  # a flush of this connection is scheduled for this loop turn
        #: schedules this connection's flush at the end of the loop turn (set by the Hub)
        self._flush_soon: Callable[[Connection], None] = _flush_at_turn_end
        self._wake: asyncio.Future[None] | None = None  # the pump waits here on an empty buffer
        self._room: asyncio.Future[None] | None = None  # history waits here on a full buffer

    @property
    def everything(self) -> bool:
        return None in self.following

    @property
    def subjects(self) -> set[str]:
        return {subject for subject in self.following if subject is not None}

    def unfollow(self, subject: Subject) -> None:
        self.following.pop(subject, None)

    @staticmethod
    def _subjects_of(event: AnyEvent) -> tuple[str | None, str | None]:
        return (
            f"session:{event.session_id}" if event.session_id else None,
            f"video:{event.video_id}" if event.video_id else None,
        )

    def wants(self, event: AnyEvent, subjects: tuple[Subject, ...] | None = None) -> bool:
        """A subscription of this connection covers ``event``: its subject (or everything), and for
        a numbered event a number after the one the subscription started from (a client may ask
        ``since`` a number the stream has not reached yet: it has what comes before)."""
        if event.event_type == "heartbeat":
            return True
        if self.user_id not in event.audience:
            return False
        for subject in subjects or (None, *self._subjects_of(event)):  # (a missing one checks None again)
            start = self.following.get(subject)
            if start is not None and (not event.sequence or event.sequence > start):
                return True
        return False

    def had(self, event: AnyEvent) -> bool:
        """True if a subscription already brought this (numbered) event to this connection."""
        for subject in (None, *self._subjects_of(event)):  # (a missing subject checks None again)
            complete = self.following.get(subject)
            if complete is not None and event.sequence > complete:
                return True
        return False

    def offer(self, outgoing: Outgoing) -> None:
        """Queue an event without waiting; a full buffer means the client cannot keep up: drop it.
        Through a server that writes prebuilt frames, what is queued is written at the end of
        this turn of the event loop, or in a later turn when many sockets are due (:meth:`flush`,
        ``Hub._flush``): events that arrive together (one commit publishes several) go out in one
        write, with no task switch and no ASGI call. With 1,000 sockets that is most of what an
        event costs."""
        if self._closed:
            return
        outbox = self.outbox
        if len(outbox) >= self.queue_size:
            log.warning("closing a WebSocket of user %s: it fell %d events behind", self.user_id, len(outbox))
            self.close(CLOSE_TOO_SLOW)
            return
        outbox.append(outgoing)
        if self._write_now is not None and not self._sending:
            if not self._flush_due:
                self._flush_due = True
                self._flush_soon(self)
            return
        self._wake_pump()

    def flush(self) -> None:
        """Write what is queued now if the socket takes it; else (its buffer is full) the pump
        sends it once the socket drains."""
        self._flush_due = False
        outbox, write = self.outbox, self._write_now
        if not outbox or self._sending or write is None or self._closed:
            return
        frames = [outgoing.frame for outgoing in outbox]
        if write(frames):
            outbox.clear()
            self._make_room()
        else:
            self._wake_pump()

    def _make_room(self) -> None:
        """Let history that waits for room (see put) go on once the buffer is below its share."""
        if self._room is not None and not self._room.done() and len(self.outbox) < self.history_room:
            self._room.set_result(None)

    def _wake_pump(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def put(self, event: AnyEvent) -> None:
        """Queue history: wait while the buffer holds ``history_room`` events (back-pressure)."""
        while len(self.outbox) >= self.history_room and not self.closed.is_set():
            self._room = asyncio.get_running_loop().create_future()
            await self._room
        self.offer(outgoing_of(event))

    def drop_held(self) -> None:
        self.held.clear()
        if self.gap_timer is not None:
            self.gap_timer.cancel()
            self.gap_timer = None

    def close(self, code: int | None = None) -> None:
        self.drop_held()
        if code is not None and self.close_code is None:
            self.close_code = code
        self._closed = True
        self.closed.set()
        for waiter in (self._wake, self._room):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def pump(self) -> None:
        """Send queued events until the connection closes: through a server that takes prebuilt
        frames, all that is queued (up to ``SEND_BATCH``) in one message, else one by one."""
        websocket, outbox = self.websocket, self.outbox
        framed = sends_frames(getattr(websocket, "scope", {}))
        loop = asyncio.get_running_loop()
        while not self.closed.is_set():
            if not outbox:
                self._wake = loop.create_future()
                await self._wake
                continue
            if framed:
                frames = [outbox.popleft().frame for _ in range(min(len(outbox), SEND_BATCH))]
                message = {"type": "websocket.send", FRAMES_EXTENSION: frames}
            else:
                message = {"type": "websocket.send", "text": outbox.popleft().text}
            self._make_room()
            self._sending = True
            try:
                await websocket.send(message)
            finally:
                self._sending = False


class Hub:
    def __init__(
        self,
        queue_size: int,
        heartbeat_interval: float,
        store: EventStore,
        catch_up_interval: float = 2.0,
        reorder_grace: float = 0.25,
    ) -> None:
        self.queue_size = queue_size
        self.heartbeat_interval = heartbeat_interval
        self.store = store
        self.catch_up_interval = catch_up_interval
        self.reorder_grace = reorder_grace
        self.batch = max(1, min(queue_size, 500))
        self.connections: set[Connection] = set()
        self._by_user: dict[str, set[Connection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: connections with events to write at the end of this loop turn (one callback for all)
        self._to_flush: list[Connection] = []
        #: the connections of the flush under way, written FLUSH_SLICE a turn (see _flush)
        self._flushing: deque[Connection] = deque()
        #: store reads in flight, shared by the connections that want the same events
        self._reads: dict[tuple[str, int], asyncio.Future[list[Event]]] = {}

    def connect(self, user_id: str, websocket: Any) -> Connection:
        """Register a connection; it starts at the user's current position, read from the store."""
        connection = Connection(user_id, websocket, self.queue_size)
        connection._flush_soon = self._flush_soon
        self.connections.add(connection)
        self._by_user.setdefault(user_id, set()).add(connection)
        metrics.WEBSOCKET_CONNECTIONS.inc()
        self.catch_up(connection)
        return connection

    def _flush_soon(self, connection: Connection) -> None:
        if not self._to_flush and not self._flushing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._to_flush.append(connection)

    def _flush(self) -> None:
        """End of a loop turn: write what the events queued, one write per socket, ``FLUSH_SLICE``
        sockets a turn. An event that arrives before a socket's turn joins its write (a socket
        waiting for its turn is still due, so offer only queues); one that arrives after goes out
        in the next flush. With 1,000 sockets of one user, the event that came during another's
        writes (a worker's processing_initiated right after the upload_completed it follows) used
        to wait for all 1,000 writes and then make 1,000 of its own."""
        flushing = self._flushing
        if not flushing:
            flushing.extend(self._to_flush)
            self._to_flush = []
        for _ in range(min(FLUSH_SLICE, len(flushing))):
            flushing.popleft().flush()
        if flushing or self._to_flush:
            asyncio.get_running_loop().call_soon(self._flush)

    def disconnect(self, connection: Connection) -> None:
        if connection in self.connections:
            metrics.WEBSOCKET_CONNECTIONS.dec()
        self.connections.discard(connection)
        mine = self._by_user.get(connection.user_id)
        if mine is not None:
            mine.discard(connection)
            if not mine:
                del self._by_user[connection.user_id]
        connection.close()

    def deliver(self, event: AnyEvent) -> None:
        """Offer ``event`` to the connections of its audience that asked for it (indexed by
        user, so the cost of an event does not grow with everyone else's connections)."""
        outgoing = outgoing_of(event)
        if event.event_type == "heartbeat":
            for connection in list(self.connections):
                connection.offer(outgoing)
            return
        subjects = (None, *Connection._subjects_of(event))
        sequence = event.sequence
        for user in event.audience:
            for connection in list(self._by_user.get(user, ())):
                position = connection.position
                if not sequence:  # not from the store (published straight onto the bus): as it is
                    if connection.wants(event, subjects):
                        connection.offer(outgoing)
                elif connection.catching_up or position is None:
                    connection.behind = True
                elif sequence == position + 1:
                    connection.position = sequence
                    # (the usual socket follows everything from before this event: its user is the
                    # audience's, so that is all ``wants`` would find; per socket, this is the cost)
                    start = connection.following.get(None)
                    if (start is not None and sequence > start) or connection.wants(event, subjects):
                        connection.offer(outgoing)
                    if connection.held:
                        self._release_held(connection)
                elif sequence > position:
                    self._hold(connection, event)

    @staticmethod
    def _release_held(connection: Connection) -> None:
        """The next number came: take the held ones that follow it without a gap."""
        held, position = connection.held, connection.position
        assert position is not None  # (only a connection with a position holds)
        while (event := held.pop(position + 1, None)) is not None:
            connection.position = position = event.sequence
            if connection.wants(event):
                connection.offer(outgoing_of(event))
        if not held:
            connection.drop_held()  # (its timer)

    def _hold(self, connection: Connection, event: AnyEvent) -> None:
        """A number ahead of the next: wait ``reorder_grace`` for the missing one to overtake it
        back; a store read after that (or once a buffer's worth is held)."""
        connection.held[event.sequence] = event
        if len(connection.held) >= connection.queue_size:
            self.catch_up(connection)
        elif connection.gap_timer is None:  # the missing number did not come: the bus lost it
            connection.gap_timer = asyncio.get_running_loop().call_later(self.reorder_grace, self.catch_up, connection)

    def subscribe(self, connection: Connection, subject: Subject, since: int | None = None) -> None:
        """Follow ``subject`` (everything of the user's, for None); with ``since``, first send its
        stored events numbered after ``since``. Applied in order by the connection's catch-up."""
        connection.pending.append((subject, since))
        self.catch_up(connection)

    def catch_up(self, connection: Connection) -> None:
        """Read what ``connection`` is missing from the store (one reader per connection)."""
        connection.drop_held()  # the store has them too: they were published after their commit
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
                while connection.pending and not connection.closed.is_set():
                    subject, since = connection.pending.popleft()
                    await self._apply(connection, subject, since)
                while not connection.closed.is_set():
                    after = connection.position
                    events = await self._read(user_id, after)
                    if events and events[0].sequence > after + 1 and connection.following:
                        # swept before this connection read them (it fell a retention period behind)
                        await connection.put(self._expired(None, after, events[0].sequence))
                    for event in events:
                        connection.position = event.sequence
                        if connection.wants(event):
                            await connection.put(event)
                    if len(events) < self.batch:
                        break
                if not connection.behind and not connection.pending:
                    break
        except Exception:
            log.exception("catching up a WebSocket of user %s from the event store failed", user_id)
        finally:
            connection.catching_up = False

    async def _read(self, user_id: str, after: int) -> list[Event]:
        """The user's stored events after ``after``: one store read for every connection of the
        user that asks for the same ones meanwhile (a bus reconnection catches up all of them
        at once; 1,000 sockets of one user would otherwise read the same rows 1,000 times)."""
        key = (user_id, after)
        shared = self._reads.get(key)
        if shared is None:
            shared = asyncio.ensure_future(asyncio.to_thread(self.store.read, user_id, after, limit=self.batch))
            self._reads[key] = shared
            shared.add_done_callback(lambda _: self._reads.pop(key, None))
        return await asyncio.shield(shared)

    async def _apply(self, connection: Connection, subject: Subject, since: int | None) -> None:
        upto = connection.position
        assert upto is not None
        if since is None or since >= upto:
            start = upto if since is None else since
            connection.following[subject] = min(start, connection.following.get(subject, start))
            return
        kind, _, value = (subject or "").partition(":")
        filters = {"session_id": value} if kind == "session" else {"video_id": value} if kind == "video" else {}
        oldest = await asyncio.to_thread(self.store.oldest, connection.user_id)
        if since + 1 < oldest:
            await connection.put(self._expired(subject, since, oldest))
        after = since
        while not connection.closed.is_set():
            events = await asyncio.to_thread(
                self.store.read, connection.user_id, after, upto=upto, limit=self.batch, **filters
            )
            for event in events:
                after = event.sequence
                if not connection.had(event):
                    await connection.put(event)
            if len(events) < self.batch:
                break
        # What comes after ``upto`` this same catch-up reads next (live events wait for it).
        connection.following[subject] = min(since, connection.following.get(subject, since))

    @staticmethod
    def _expired(subject: Subject, since: int, oldest: int) -> EventsExpired:
        kind, _, value = (subject or "").partition(":")
        return EventsExpired(
            session_id=value if kind == "session" else None,
            video_id=value if kind == "video" else None,
            data=EventsExpiredData(since=since, oldest_sequence=oldest),
        )

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
            beat = outgoing_of(Heartbeat(data=HeartbeatData(interval_seconds=self.heartbeat_interval)))
            for connection in list(self.connections):
                connection.offer(beat)

    async def pump(self, connection: Connection) -> None:
        """Send queued events until the connection closes."""
        await connection.pump()
