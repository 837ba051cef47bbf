"""What the upload and processing services call to tell the world: builds the audience of an
event (the users allowed to see it), throttles progress, records webhook deliveries, and
never lets a broken bus break an upload or a job."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from vidgate.db.engine import Database
from vidgate.events.bus import EventBus
from vidgate.events.schema import AnyEvent

log = logging.getLogger(__name__)

Recorder = Callable[[AnyEvent], None]


class EventPublisher:
    def __init__(
        self,
        bus: EventBus | None,
        db: Database,
        *,
        progress_interval: float = 0.5,
        webhooks: Recorder | None = None,
    ) -> None:
        self.bus = bus
        self.db = db
        self.progress_interval = progress_interval
        self.webhooks = webhooks
        #: looks up the stored result of a video (wired to the processing service)
        self.result_lookup: Callable[[str], dict[str, Any] | None] = lambda video_id: None
        self._last_progress: dict[str, float] = {}
        self._lock = threading.Lock()

    def to_user(self, event: AnyEvent, user_id: str) -> None:
        event.audience = [user_id]
        self._send(event)

    def progress_due(self, key: str, final: bool = False) -> bool:
        """At most one progress event per ``progress_interval`` per key; the final one always."""
        now = time.monotonic()
        with self._lock:
            if not final and now - self._last_progress.get(key, 0.0) < self.progress_interval:
                return False
            if final:
                self._last_progress.pop(key, None)
            else:
                self._last_progress[key] = now
            return True

    def _send(self, event: AnyEvent) -> None:
        if self.bus is not None:
            try:
                self.bus.publish(event)
            except Exception:
                log.warning("event %s not delivered: the bus is unreachable", event.event_type, exc_info=True)
        if self.webhooks is not None:
            try:
                self.webhooks(event)
            except Exception:
                log.exception("webhook delivery for event %s not recorded", event.event_id)
