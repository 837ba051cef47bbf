"""What the WebSocket hub itself costs per event per socket, without the network.

    .venv/bin/python bench/hub_fanout.py [--sockets 1000] [--events 500]

``--sockets`` connections of one user, all following everything, get ``--events`` numbered
upload_progress events through :meth:`vidgate.events.hub.Hub.deliver`; then every
connection's pump sends its buffer to a socket whose send does nothing. Prints microseconds
per event per socket for the two halves (deliver: who wants it, numbering, buffering; pump:
taking it out and handing it to the send; one text per send, and vidgate's prebuilt frames, up
to 64 queued in one send, building each event's frame once) and, as the baseline, one empty ``await`` per event
per socket (the least any per-socket send loop costs in asyncio). What is left for a real
socket is Starlette's and uvicorn's send and the frame (bench/ws_latency.py measures it whole).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vidgate.events.hub import FRAMES_EXTENSION, Connection, Hub
from vidgate.events.schema import UploadProgress, UploadProgressData
from vidgate.events.store import EventStore


class NullSocket:
    """A socket that takes every message at once; the last event expected closes the connection.
    ``framed``: its server takes prebuilt frames (vidgate's own, see vidgate.api.ws_protocol)."""

    def __init__(self, expected: int, framed: bool) -> None:
        self.expected = expected
        self.connection: Connection | None = None
        self.scope: dict[str, Any] = {"extensions": {FRAMES_EXTENSION: {}} if framed else {}}

    async def send(self, message: dict[str, Any]) -> None:
        self.expected -= len(message.get(FRAMES_EXTENSION) or [message["text"]])
        if self.expected == 0 and self.connection is not None:
            self.connection.close()


async def nothing() -> None:
    return None


async def measure(sockets: int, events: int, framed: bool) -> tuple[float, float, float]:
    hub = Hub(events + 1, 30.0, cast(EventStore, None), catch_up_interval=3600.0)
    connections = []
    for _ in range(sockets):
        socket = NullSocket(events, framed)
        connection = Connection("u1", socket, events + 1)
        socket.connection = connection
        connection.position, connection.following[None] = 0, 0
        hub.connections.add(connection)
        hub._by_user.setdefault("u1", set()).add(connection)
        connections.append(connection)
    numbered: list[Any] = []
    for sequence in range(1, events + 1):
        data = UploadProgressData(
            chunks_received=sequence, total_chunks=events, bytes_received=sequence, progress_percentage=1.0
        )
        event = UploadProgress(session_id=f"s{sequence % 7}", data=data)
        numbered.append(event.model_copy(update={"sequence": sequence, "audience": ["u1"]}))
    per = 1e6 / (sockets * events)
    started = time.perf_counter()
    for event in numbered:
        hub.deliver(event)
    deliver = (time.perf_counter() - started) * per
    started = time.perf_counter()
    await asyncio.gather(*(connection.pump() for connection in connections))
    pump = (time.perf_counter() - started) * per
    started = time.perf_counter()
    for _ in range(sockets * events):
        await nothing()
    baseline = (time.perf_counter() - started) * per
    return deliver, pump, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args()
    deliver, pump, baseline = asyncio.run(measure(args.sockets, args.events, framed=False))
    _, framed_pump, _ = asyncio.run(measure(args.sockets, args.events, framed=True))
    print(f"{args.sockets} sockets of one user, {args.events} numbered events; microseconds per event per socket")
    print(f"{'deliver':<44}{deliver:>8.2f}")
    print(f"{'pump, one text per send (null send)':<44}{pump:>8.2f}")
    print(f"{'pump, prebuilt frames batched (null send)':<44}{framed_pump:>8.2f}")
    print(f"{'baseline: one empty await':<44}{baseline:>8.2f}")


if __name__ == "__main__":
    main()
