"""One contract for every ``EventBus`` (as tus-node-server runs one store suite over each
store): ``LocalBus`` and ``RedisBus`` against the real Redis. Pub/sub channels are shared by
every Redis database, so each test follows only the events it published itself."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.cluster import redis_database
from vidgate.events.bus import EventBus, LocalBus, RedisBus
from vidgate.events.schema import AnyEvent, FailureData, UploadFailed


@pytest.fixture(params=["local", "redis"])
def bus(request: pytest.FixtureRequest) -> Iterator[EventBus]:
    if request.param == "local":
        local = LocalBus()
        yield local
        local.close()
        return
    with redis_database() as url:
        remote = RedisBus(url)
        yield remote
        remote.close()


def _event(tag: str, n: int) -> UploadFailed:
    return UploadFailed(session_id=tag, sequence=n, audience=["u"], data=FailureData(error_code="x", message=str(n)))


async def _listen_until(bus: EventBus, tag: str, count: int, publish: Callable[[], None]) -> tuple[list[AnyEvent], int]:
    """Listen, call ``publish()`` once listening started, and gather ``count`` events of ``tag``."""
    got: list[AnyEvent] = []
    done = asyncio.Event()
    connects = 0
    started = asyncio.Event()

    def deliver(event: AnyEvent) -> None:
        if event.session_id == tag:
            got.append(event)
            if len(got) >= count:
                done.set()

    def on_connect() -> None:
        nonlocal connects
        connects += 1
        started.set()

    listener = asyncio.create_task(bus.listen(deliver, on_connect))
    try:
        await asyncio.wait_for(started.wait(), 10)
        publish()
        await asyncio.wait_for(done.wait(), 10)
    finally:
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listener
    return got, connects


def test_events_arrive_whole_and_in_order(bus: EventBus) -> None:
    tag = uuid.uuid4().hex
    sent = [_event(tag, n) for n in range(1, 51)]

    def publish() -> None:
        for event in sent:
            assert bus.publish(event) is event

    got, connects = asyncio.run(_listen_until(bus, tag, len(sent), publish))
    assert connects >= 1  # told when listening started: the hub catches up from the store then
    assert [e.event_id for e in got] == [e.event_id for e in sent]
    assert [e.sequence for e in got] == list(range(1, 51))
    assert got[-1].model_dump() == sent[-1].model_dump()  # same fields, audience included


def test_a_publish_from_another_thread_reaches_the_listening_loop(bus: EventBus) -> None:
    """Workers and the threadpool publish from threads; the listener's loop receives it."""
    tag = uuid.uuid4().hex

    def publish() -> None:
        thread = threading.Thread(target=bus.publish, args=(_event(tag, 1),))
        thread.start()
        thread.join()

    got, _ = asyncio.run(_listen_until(bus, tag, 1, publish))
    assert [e.session_id for e in got] == [tag]


def test_every_listener_gets_every_event(bus: EventBus) -> None:
    tag = uuid.uuid4().hex

    async def two_listeners() -> tuple[list[str], list[str]]:
        first: list[str] = []
        second: list[str] = []
        both = asyncio.Event()
        ready = [asyncio.Event(), asyncio.Event()]

        def collector(into: list[str]) -> Callable[[AnyEvent], None]:
            def deliver(event: AnyEvent) -> None:
                if event.session_id == tag:
                    into.append(event.event_id)
                    if len(first) == 3 and len(second) == 3:
                        both.set()

            return deliver

        tasks = [
            asyncio.create_task(bus.listen(collector(into), ready[n].set)) for n, into in enumerate((first, second))
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)
            for n in range(3):
                bus.publish(_event(tag, n + 1))
            await asyncio.wait_for(both.wait(), 10)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return first, second

    first, second = asyncio.run(two_listeners())
    assert first == second and len(first) == 3
