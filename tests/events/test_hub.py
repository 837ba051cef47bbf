"""The hub against a real server: events the bus never carried reach an open socket from the
store, once and in order; a late number is put behind the ones before it; replay of
everything with ``since``; a bad ``since`` is refused. Under a steady stream of events: replay
(of a session, of everything) while events flow loses and repeats nothing; a replay many
times the client buffer is sent with back-pressure, not closed with 4008; a ``since`` older
than the store keeps is told with ``events_expired``. And the hub alone: a number that
overtook the one before it waits for it without a store read; a lost one is read after the grace."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from tests.conftest import RunningServer, database_url_for, make_settings, running_server
from tests.events.test_ws import open_socket, upload_in_chunks
from tests.helpers import collect_events, wait_until
from tests.media import make_video
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import UserAccount, utcnow
from vidgate.events.hub import FLUSH_SLICE, FRAMES_EXTENSION, Connection, Hub
from vidgate.events.publisher import EventPublisher
from vidgate.events.schema import AnyEvent, Event, FailureData, UploadFailed
from vidgate.events.store import EventStore


def user_id(server: RunningServer, user: str) -> str:
    return str(server.services.keys.authenticate(server.key_for(user)).user_id)


def stage(publisher: EventPublisher, server: RunningServer, owner: str, tag: str, message: str | None = None) -> None:
    failure = FailureData(error_code="x", message=message or tag)
    with server.db.session() as session:
        publisher.to_user(UploadFailed(session_id=tag, data=failure), owner, session)


def receive(socket: ClientConnection, count: int) -> list[dict[str, Any]]:
    received = [0]

    def counted(_: dict[str, Any]) -> bool:
        received[0] += 1
        return received[0] == count

    return collect_events(socket, counted, timeout=20)


def stored(server: RunningServer, owner: str, after: int, session_id: str | None = None) -> list[tuple[int, str]]:
    """(sequence, event_id) of ``owner``'s stored events after ``after`` (of one session), oldest first."""
    found: list[tuple[int, str]] = []
    while True:
        events = server.services.events.store.read(owner, after, session_id=session_id, limit=500)
        found += [(e.sequence, e.event_id) for e in events]
        if len(events) < 500:
            return found
        after = events[-1].sequence


class Stream:
    """A steady stream of stored events for one user (through the server's own publisher, so
    each is numbered, stored and published after its commit), spread over a few sessions."""

    def __init__(self, server: RunningServer, owner: str, sessions: list[str], per_second: float = 250.0) -> None:
        self.server, self.owner, self.sessions, self.per_second = server, owner, sessions, per_second
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        began = time.monotonic()
        while not self.stop.is_set():
            session_id = self.sessions[self.sent % len(self.sessions)]
            stage(self.server.services.events, self.server, self.owner, session_id, message=f"flow {self.sent}")
            self.sent += 1
            if (delay := began + self.sent / self.per_second - time.monotonic()) > 0:
                time.sleep(delay)

    def __enter__(self) -> Stream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def end(self) -> None:
        """Stop, then mark the end in every session (what the clients read up to)."""
        self.__exit__()
        for session_id in self.sessions:
            stage(self.server.services.events, self.server, self.owner, session_id, message="end")


def is_end(event: dict[str, Any]) -> bool:
    return event["event_type"] == "upload_failed" and event["data"]["message"] == "end"


def test_events_the_bus_lost_reach_an_open_socket_once_and_in_order(server: RunningServer) -> None:
    alice = user_id(server, "alice")
    lost = EventPublisher(None, server.db)  # stores, never publishes: what an outage does to the bus
    live = server.services.events
    tag = uuid.uuid4().hex[:8]
    with open_socket(server, "alice") as socket:
        wait_until(lambda: any(c.position is not None for c in server.services.hub.connections), timeout=10)
        stage(lost, server, alice, f"{tag}-1")  # nothing follows it: found by the store watch
        first = receive(socket, 1)
        stage(lost, server, alice, f"{tag}-2")
        stage(lost, server, alice, f"{tag}-3")
        stage(live, server, alice, f"{tag}-4")  # arrives live with a gap before it: filled first
        rest = receive(socket, 3)
    got = first + rest
    assert [e["session_id"] for e in got] == [f"{tag}-{n}" for n in range(1, 5)]
    numbers = [e["sequence"] for e in got]
    assert numbers == list(range(numbers[0], numbers[0] + 4))


def test_since_replays_everything_of_the_user_then_follows_live(server: RunningServer) -> None:
    alice = user_id(server, "alice")
    live = server.services.events
    tag = uuid.uuid4().hex[:8]
    stage(live, server, alice, f"{tag}-1")
    last = server.services.events.store.latest([alice])[alice]
    stage(live, server, alice, f"{tag}-2")
    stage(live, server, alice, f"{tag}-3")
    with open_socket(server, "alice", f"subscribe=all&since={last - 1}") as socket:
        replayed = receive(socket, 3)
        stage(live, server, alice, f"{tag}-4")
        after = receive(socket, 1)
    assert [e["session_id"] for e in replayed + after] == [f"{tag}-{n}" for n in range(1, 5)]
    assert [e["sequence"] for e in replayed + after] == list(range(last, last + 4))


def test_a_bad_since_is_refused(server: RunningServer) -> None:
    with open_socket(server, "alice", "subscribe=none") as socket:
        socket.send(json.dumps({"action": "subscribe", "all": True, "since": "yesterday"}))
        answer = json.loads(socket.recv(timeout=5))
    assert (answer["event_type"], answer["data"]["code"]) == ("error", "invalid_subscription")


def test_replay_while_events_flow_loses_nothing_and_repeats_nothing(server: RunningServer, tmp_path: Path) -> None:
    """Clients subscribe with ``since`` (to a session from 0, to everything from a number) at
    random moments of a steady stream of 250 events/s: each gets exactly what the store holds
    for its subscription after its ``since``, in order. The replays run to hundreds of events,
    beyond half the buffer (256), so they are sent with back-pressure while live events arrive."""
    alice = user_id(server, "alice")
    data = make_video(tmp_path / "flow.mp4", seed=uuid.uuid4().int % 10_000).read_bytes()
    session_id = f"flow-{uuid.uuid4().hex}"
    upload_in_chunks(server, "alice", data, session_id, [0])  # a real session: started, progress
    others = [f"flow-other-{uuid.uuid4().hex[:8]}-{n}" for n in range(2)]
    start = server.services.events.store.latest([alice])[alice]

    def follow(n: int) -> tuple[str, int, list[dict[str, Any]]]:
        time.sleep(random.uniform(0.2, 2.5))
        if n % 2:
            query, since = f"session_id={session_id}&since=0", 0
        else:
            since = start + random.randint(0, 100)
            query = f"subscribe=all&since={since}"
        with open_socket(server, "alice", query) as socket:
            connected.append(n)
            return query, since, collect_events(socket, lambda e: is_end(e) and e["session_id"] == session_id)

    connected: list[int] = []
    with ThreadPoolExecutor(16) as pool, Stream(server, alice, [session_id, *others]) as stream:
        followers = [pool.submit(follow, n) for n in range(16)]
        # however busy the machine, the stream goes on past the last subscription
        wait_until(lambda: len(connected) == 16 and stream.sent >= 300, timeout=90)
        time.sleep(0.5)
        stream.end()
        results = [f.result(timeout=120) for f in followers]
    for query, since, events in results:
        want = stored(server, alice, since, session_id=session_id if query.startswith("session") else None)
        got = [(e["sequence"], e["event_id"]) for e in events]
        last = got[-1][0]  # the session's end mark: what comes after it in the store is not waited for
        assert got == [w for w in want if w[0] <= last], f"{query}: {len(got)} events, {len(want)} stored"


@pytest.fixture
def small_buffer_server(backend: str, tmp_path: Path) -> Iterator[RunningServer]:
    with (
        database_url_for(backend, tmp_path) as url,
        running_server(make_settings(tmp_path, url, websocket={"queue_size": 16})) as running,
    ):
        yield running


def test_a_replay_many_times_the_buffer_is_sent_whole_even_to_a_slow_reader(
    small_buffer_server: RunningServer,
) -> None:
    """600 stored events, a buffer of 16: a client that asks for all of them (and reads slowly
    at first, while new events keep coming) gets every one, then the live ones, and stays open."""
    server = small_buffer_server
    alice = user_id(server, "alice")
    tag = f"long-{uuid.uuid4().hex[:8]}"
    start = server.services.events.store.latest([alice])[alice]
    for n in range(600):
        stage(server.services.events, server, alice, tag, message=f"old {n}")
    with open_socket(server, "alice", f"subscribe=all&since={start}") as socket, Stream(server, alice, [tag], 100):
        slow = [json.loads(socket.recv(timeout=20)) for _ in range(40)]
        for _ in range(20):
            time.sleep(0.02)  # a slow start: the server has to wait for it
            slow.append(json.loads(socket.recv(timeout=20)))
        time.sleep(1.0)
        rest = collect_events(socket, lambda e: e["data"].get("message", "").startswith("flow"), timeout=60)
        live = collect_events(socket, lambda e: e["data"]["message"] == "flow 150", timeout=60)
    got = [(e["sequence"], e["event_id"]) for e in slow + rest + live if e["event_type"] != "heartbeat"]
    assert got == stored(server, alice, start)[: len(got)]
    assert len(got) > 600 + 150


def test_a_since_older_than_the_store_keeps_is_told_then_what_is_kept_follows(
    small_buffer_server: RunningServer,
) -> None:
    server = small_buffer_server
    alice = user_id(server, "alice")
    events = server.services.events
    tag = f"gone-{uuid.uuid4().hex[:8]}"
    first = events.store.latest([alice])[alice] + 1
    for n in range(5):
        stage(events, server, alice, tag, message=f"gone {n}")
    assert events.store.sweep(utcnow() + timedelta(seconds=1)) >= 5  # past retention: swept
    kept = events.store.latest([alice])[alice] + 1
    for n in range(3):
        stage(events, server, alice, tag, message=f"kept {n}")
    with open_socket(server, "alice", f"subscribe=all&since={first}") as socket:
        told = collect_events(socket, lambda e: e["data"].get("message") == "kept 2", timeout=20)
    assert told[0]["event_type"] == "events_expired" and told[0]["sequence"] == 0
    assert told[0]["data"] == {"since": first, "oldest_sequence": kept}
    assert [e["sequence"] for e in told[1:]] == [kept, kept + 1, kept + 2]
    with open_socket(server, "alice", f"subscribe=all&since={kept - 1}") as socket:  # nothing it lacks is gone
        again = collect_events(socket, lambda e: e["data"].get("message") == "kept 2", timeout=20)
    assert [e["event_type"] for e in again] == ["upload_failed"] * 3


def test_a_session_subscription_replays_into_a_socket_that_follows_everything_without_repeats(
    server: RunningServer, tmp_path: Path
) -> None:
    """A socket following everything adds a session with since=0: it gets that session's events it
    did not have yet (those before it connected), never one twice."""
    alice = user_id(server, "alice")
    data = make_video(tmp_path / "both.mp4", seed=uuid.uuid4().int % 10_000).read_bytes()
    session_id = f"both-{uuid.uuid4().hex}"
    upload_in_chunks(server, "alice", data, session_id, [0])
    before = stored(server, alice, 0, session_id=session_id)
    with open_socket(server, "alice") as socket:
        wait_until(lambda: all(c.following for c in server.services.hub.connections), timeout=10)
        stage(server.services.events, server, alice, session_id, message="live")
        live = collect_events(socket, lambda e: e["data"].get("message") == "live", timeout=20)
        socket.send(json.dumps({"action": "subscribe", "session_id": session_id, "since": 0}))
        replayed = collect_events(socket, lambda e: e["sequence"] == before[-1][0], timeout=20)
        stage(server.services.events, server, alice, session_id, message="end")
        rest = replayed + collect_events(socket, is_end, timeout=20)
    session_events = [(e["sequence"], e["event_id"]) for e in live + rest if e["session_id"] == session_id]
    assert sorted(session_events) == stored(server, alice, 0, session_id=session_id)
    assert len(set(session_events)) == len(session_events) == len(before) + 2


# The hub on its own (no server): a number that overtakes the one before it is held for it,
# not answered with a store read; a number the bus really lost is read after the grace.


@pytest.fixture
def store_db(backend: str, tmp_path: Path) -> Iterator[Database]:
    with database_url_for(backend, tmp_path) as url:
        database = Database(url)
        migrate.upgrade(database)
        with database.session() as tx:
            tx.add(UserAccount(id="u1", username="u1"))
        try:
            yield database
        finally:
            database.dispose()


class CountingStore(EventStore):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.reads = 0

    def read(self, *args: Any, **kwargs: Any) -> list[Event]:
        self.reads += 1
        return super().read(*args, **kwargs)


def numbered(db: Database, store: EventStore, count: int) -> list[AnyEvent]:
    """``count`` events stored for u1 (numbered 1..count), as the bus would carry them."""
    copies = []
    for n in range(count):
        with db.session() as tx:
            copies.append(
                store.append(tx, UploadFailed(session_id="s", data=FailureData(error_code="x", message=str(n))), "u1")
            )
    return copies


def sequences(connection: Connection) -> list[int]:
    return [json.loads(outgoing.text)["sequence"] for outgoing in connection.outbox]


async def followed(hub: Hub) -> Connection:
    connection = hub.connect("u1", websocket=None)
    hub.subscribe(connection, None)
    while connection.catching_up:
        await asyncio.sleep(0.01)
    return connection


def test_an_event_that_overtook_the_one_before_it_waits_for_it_without_a_store_read(store_db: Database) -> None:
    store = CountingStore(store_db)

    async def scenario() -> tuple[list[int], int]:
        hub = Hub(16, 30.0, store, catch_up_interval=60.0, reorder_grace=30.0)
        connection = await followed(hub)
        reads = store.reads
        first, second, third = numbered(store_db, store, 3)
        hub.deliver(third)
        hub.deliver(second)
        assert not connection.outbox  # both wait for 1
        hub.deliver(first)
        return sequences(connection), store.reads - reads

    delivered, reads = asyncio.run(scenario())
    assert delivered == [1, 2, 3]
    assert reads == 0


def test_a_number_the_bus_lost_is_read_from_the_store_after_the_grace(store_db: Database) -> None:
    store = CountingStore(store_db)

    async def scenario() -> tuple[list[int], list[int]]:
        hub = Hub(16, 30.0, store, catch_up_interval=60.0, reorder_grace=0.05)
        connection = await followed(hub)
        events = numbered(store_db, store, 3)
        hub.deliver(events[2])  # 1 and 2 never come on the bus
        before = sequences(connection)
        for _ in range(200):
            if len(connection.outbox) == 3:
                break
            await asyncio.sleep(0.01)
        return before, sequences(connection)

    before, after = asyncio.run(scenario())
    assert before == []
    assert after == [1, 2, 3]


def test_sockets_of_one_user_catching_up_together_share_one_store_read(store_db: Database) -> None:
    store = CountingStore(store_db)

    async def scenario() -> tuple[list[list[int]], int]:
        hub = Hub(16, 30.0, store, catch_up_interval=60.0)
        connections = [await followed(hub) for _ in range(5)]
        numbered(store_db, store, 3)  # published while the bus was away
        reads = store.reads
        hub.bus_connected()
        for _ in range(200):
            if all(len(connection.outbox) == 3 for connection in connections):
                break
            await asyncio.sleep(0.01)
        return [sequences(connection) for connection in connections], store.reads - reads

    outboxes, reads = asyncio.run(scenario())
    assert outboxes == [[1, 2, 3]] * 5
    assert reads == 1  # for all five (each would read once on its own)


class FrameSocket:
    """A socket whose server takes prebuilt frames (as vidgate.api.ws_protocol's): ``write``
    writes at once unless ``full``; ``send`` is what the pump uses. Keeps the order of both."""

    def __init__(self) -> None:
        self.full = False
        self.written: list[int] = []  # sequences, in the order they reached the socket
        self.direct = 0
        self.scope = {"extensions": {FRAMES_EXTENSION: {"write": self.write}}}

    def _record(self, frames: Any) -> None:
        for frame in frames:  # an unmasked frame: its header is 2, 4 or 10 bytes by its length byte
            header = {126: 4, 127: 10}.get(frame[1] & 0x7F, 2)
            self.written.append(json.loads(frame[header:])["sequence"])

    def write(self, frames: Any) -> bool:
        if self.full:
            return False
        self.direct += 1
        self._record(frames)
        return True

    async def send(self, message: dict[str, Any]) -> None:
        self._record(message[FRAMES_EXTENSION])


def test_events_of_one_loop_turn_go_out_in_one_write_and_a_full_socket_keeps_the_order(
    store_db: Database,
) -> None:
    store = EventStore(store_db)

    async def scenario() -> tuple[FrameSocket, list[int], int, int]:
        hub = Hub(64, 30.0, store, catch_up_interval=60.0)
        socket = FrameSocket()
        connection = hub.connect("u1", websocket=socket)
        hub.subscribe(connection, None)
        while connection.catching_up:
            await asyncio.sleep(0.01)
        events = numbered(store_db, store, 6)
        hub.deliver(events[0])
        hub.deliver(events[1])  # the same turn of the loop (one commit published both)
        await asyncio.sleep(0)
        assert not connection.outbox  # written at the end of the turn, no pump needed
        writes = socket.direct
        socket.full = True  # the client reads slowly: its kernel buffer is full
        hub.deliver(events[2])
        await asyncio.sleep(0)
        hub.deliver(events[3])
        await asyncio.sleep(0)
        socket.full = False
        hub.deliver(events[4])  # may not overtake 3 and 4: they were refused, and wait for the pump
        queued = sequences(connection)
        pump = asyncio.create_task(hub.pump(connection))
        while connection.outbox:
            await asyncio.sleep(0.01)
        hub.deliver(events[5])
        await asyncio.sleep(0)
        connection.close()
        await pump
        return socket, queued, writes, socket.direct

    socket, queued, first_writes, direct = asyncio.run(scenario())
    assert first_writes == 1  # 1 and 2 in one write
    assert queued == [3, 4, 5]
    assert socket.written == [1, 2, 3, 4, 5, 6]
    assert direct >= 2  # 6 went straight too


def test_an_event_that_comes_during_a_long_flush_joins_the_writes_not_yet_made_in_order(
    store_db: Database,
) -> None:
    store = EventStore(store_db)
    count = FLUSH_SLICE * 2 + 10

    async def scenario() -> tuple[list[FrameSocket], set[int]]:
        hub = Hub(64, 30.0, store, catch_up_interval=60.0)
        sockets = [FrameSocket() for _ in range(count)]
        connections = [hub.connect("u1", websocket=socket) for socket in sockets]
        for connection in connections:
            hub.subscribe(connection, None)
        while any(connection.catching_up for connection in connections):
            await asyncio.sleep(0.01)
        first, second = numbered(store_db, store, 2)
        hub.deliver(first)
        await asyncio.sleep(0)  # one turn: FLUSH_SLICE sockets are written
        early = {n for n, socket in enumerate(sockets) if socket.written}
        hub.deliver(second)  # while the others wait for their turn
        while any(len(socket.written) < 2 for socket in sockets):
            await asyncio.sleep(0)
        return sockets, early

    sockets, early = asyncio.run(scenario())
    assert len(early) == FLUSH_SLICE
    assert all(socket.written == [1, 2] for socket in sockets)
    # the sockets written before the second came took two writes; the rest one for both
    assert {n for n, socket in enumerate(sockets) if socket.direct == 2} == early
    assert all(socket.direct == 1 for n, socket in enumerate(sockets) if n not in early)
