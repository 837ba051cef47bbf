"""``EventBus``: how events travel from whoever publishes them (an API process, a Celery
worker) to the WebSocket hubs of every API process.

Both implementations number events per subject and keep the last ``replay_size`` of each
subject for ``replay_ttl`` seconds, so a client that reconnects can ask for what it missed.
``LocalBus`` lives in one process (the embedded default); ``RedisBus`` uses INCR for the
numbers, a capped list per subject for replay and pub/sub for delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Protocol

from vidgate.events.schema import AnyEvent, from_wire, to_wire

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "vidgate:events"
Deliver = Callable[[AnyEvent], None]


class EventBus(Protocol):
    def publish(self, event: AnyEvent) -> AnyEvent:
        """Number ``event`` within its subject, keep it for replay, deliver it. Thread-safe."""
        ...

    def replay(self, subject: str, since: int) -> list[AnyEvent]:
        """Kept events of ``subject`` numbered after ``since``, oldest first."""
        ...

    async def listen(self, deliver: Deliver) -> None:
        """Call ``deliver`` (in this event loop) for every event published anywhere, until cancelled."""
        ...

    def close(self) -> None: ...


class LocalBus:
    def __init__(self, replay_size: int = 500, replay_ttl: float = 3600.0) -> None:
        self._lock = threading.Lock()
        self._sequences: dict[str, int] = defaultdict(int)
        self._kept: dict[str, deque[tuple[float, AnyEvent]]] = defaultdict(lambda: deque(maxlen=replay_size))
        self._ttl = replay_ttl
        self._listeners: list[tuple[asyncio.AbstractEventLoop, Deliver]] = []

    def publish(self, event: AnyEvent) -> AnyEvent:
        subject = event.subject
        with self._lock:
            if subject is not None:
                self._sequences[subject] += 1
                event.sequence = self._sequences[subject]
                self._kept[subject].append((time.monotonic(), event))
            listeners = list(self._listeners)
        for loop, deliver in listeners:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(deliver, event)
        return event

    def replay(self, subject: str, since: int) -> list[AnyEvent]:
        horizon = time.monotonic() - self._ttl
        with self._lock:
            return [e for t, e in self._kept.get(subject, ()) if e.sequence > since and t >= horizon]

    async def listen(self, deliver: Deliver) -> None:
        entry = (asyncio.get_running_loop(), deliver)
        with self._lock:
            self._listeners.append(entry)
        try:
            await asyncio.Event().wait()
        finally:
            with self._lock:
                self._listeners.remove(entry)

    def close(self) -> None:
        pass


class RedisBus:
    def __init__(self, url: str, replay_size: int = 500, replay_ttl: float = 3600.0) -> None:
        import redis

        self.url = url
        self._client = redis.Redis.from_url(url)
        self._replay_size = replay_size
        self._ttl = int(replay_ttl)

    def publish(self, event: AnyEvent) -> AnyEvent:
        subject = event.subject
        if subject is not None:
            event.sequence = int(self._client.incr(f"vidgate:seq:{subject}"))
        wire = to_wire(event)
        pipe = self._client.pipeline(transaction=False)
        if subject is not None:
            key = f"vidgate:replay:{subject}"
            pipe.rpush(key, wire)
            pipe.ltrim(key, -self._replay_size, -1)
            pipe.expire(key, self._ttl)
            pipe.expire(f"vidgate:seq:{subject}", self._ttl)
        pipe.publish(EVENTS_CHANNEL, wire)
        pipe.execute()
        return event

    def replay(self, subject: str, since: int) -> list[AnyEvent]:
        kept = self._client.lrange(f"vidgate:replay:{subject}", 0, -1)
        events = [from_wire(raw) for raw in kept]
        return [e for e in events if e.sequence > since]

    async def listen(self, deliver: Deliver) -> None:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        while True:
            client = aioredis.Redis.from_url(self.url)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(EVENTS_CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        try:
                            deliver(from_wire(message["data"]))
                        except ValueError:
                            log.warning("dropped a malformed event from the bus")
            except (RedisError, OSError) as exc:
                log.warning("event bus connection lost (%s); reconnecting", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                    await client.aclose()

    def close(self) -> None:
        self._client.close()
