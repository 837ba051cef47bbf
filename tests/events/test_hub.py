"""The hub against a real server: events the bus never carried reach an open socket from the
store, once and in order; a late number is put behind the ones before it; replay of
everything with ``since``; a bad ``since`` is refused."""

from __future__ import annotations

import json
import uuid
from typing import Any

from websockets.sync.client import ClientConnection

from tests.conftest import RunningServer
from tests.events.test_ws import open_socket
from tests.helpers import wait_until
from vidgate.events.publisher import EventPublisher
from vidgate.events.schema import FailureData, UploadFailed


def user_id(server: RunningServer, user: str) -> str:
    return str(server.services.keys.authenticate(server.key_for(user)).user_id)


def stage(publisher: EventPublisher, server: RunningServer, owner: str, tag: str) -> None:
    with server.db.session() as session:
        publisher.to_user(UploadFailed(session_id=tag, data=FailureData(error_code="x", message=tag)), owner, session)


def receive(socket: ClientConnection, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < count:
        event = json.loads(socket.recv(timeout=20))
        if event["event_type"] != "heartbeat":
            events.append(event)
    return events


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
