"""``EventBus``: how events travel from whoever publishes them (an API process, a Celery
worker) to the WebSocket hubs of every API process.

The bus is only the fast path: events are numbered and stored before they are published
(:mod:`vidgate.events.store`), so a message the bus loses (Redis down, a subscriber
reconnecting) is found in the store by the hub. ``listen`` calls ``on_connect`` each time it
(re)subscribes, so the hub knows when to look. ``LocalBus`` lives in one process (the embedded
default); ``RedisBus`` uses pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from vidgate.events.schema import AnyEvent, from_bus, to_bus

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "vidgate:events"
Deliver = Callable[[AnyEvent], None]
OnConnect = Callable[[], None]


class EventBus(Protocol):
    def publish(self, event: AnyEvent) -> AnyEvent:
        """Deliver ``event`` to every listener, in any process. Thread-safe."""
        ...

    async def listen(self, deliver: Deliver, on_connect: OnConnect | None = None) -> None:
        """Call ``deliver`` (in this event loop) for every event published anywhere, until
        cancelled; ``on_connect`` each time listening starts or resumes after a break."""
        ...

    def close(self) -> None: ...


class LocalBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[tuple[asyncio.AbstractEventLoop, Deliver]] = []

    def publish(self, event: AnyEvent) -> AnyEvent:
        with self._lock:
            listeners = list(self._listeners)
        for loop, deliver in listeners:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(deliver, event)
        return event

    async def listen(self, deliver: Deliver, on_connect: OnConnect | None = None) -> None:
        entry = (asyncio.get_running_loop(), deliver)
        with self._lock:
            self._listeners.append(entry)
        try:
            if on_connect is not None:
                on_connect()
            await asyncio.Event().wait()
        finally:
            with self._lock:
                self._listeners.remove(entry)

    def close(self) -> None:
        pass


class RedisBus:
    def __init__(self, url: str, timeout: float = 2.0) -> None:
        import redis

        self.url = url
        # A Redis that vanished must not hold up the upload or job that publishes (after its commit).
        self._client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)

    def publish(self, event: AnyEvent) -> AnyEvent:
        self._client.publish(EVENTS_CHANNEL, to_bus(event))
        return event

    async def listen(self, deliver: Deliver, on_connect: OnConnect | None = None) -> None:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        notify = on_connect or (lambda: None)

        class PubSub(aioredis.client.PubSub):
            """Says when redis-py resubscribed by itself after a lost connection."""

            async def on_connect(self, connection: Any) -> None:
                await super().on_connect(connection)
                if self.channels:
                    notify()

        while True:
            client = aioredis.Redis.from_url(self.url)
            pubsub = PubSub(client.connection_pool, ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(EVENTS_CHANNEL)
                notify()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        try:
                            deliver(from_bus(message["data"]))
                        except ValueError:
                            log.warning("dropped a malformed event from the bus")
            except (RedisError, OSError) as exc:
                log.warning("event bus connection lost (%s); reconnecting", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                    await client.aclose()

    def close(self) -> None:
        self._client.close()
