"""What the upload and processing services call to tell the world.

An event is staged in the caller's transaction (the one that makes the change it describes):
numbered and stored per receiving user (:mod:`vidgate.events.store`), with its webhook
deliveries, and published on the bus only after that transaction commits. A rolled-back change
publishes nothing; a bus that is down loses nothing (the sockets catch up from the store, see
:mod:`vidgate.events.hub`), and a broken bus never breaks an upload or a job. Progress events
are throttled here, before they cost a row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from vidgate.db.engine import Database
from vidgate.events.bus import EventBus
from vidgate.events.schema import AnyEvent
from vidgate.events.store import EventStore

log = logging.getLogger(__name__)

#: Session.info key: (publisher, event) pairs to publish once the transaction has committed
_PENDING = "vidgate.events.pending"


class Stager(Protocol):
    """Writes what else an event causes in its transaction (the webhook outbox)."""

    def stage(self, session: Session, event: AnyEvent) -> None: ...


@sa_event.listens_for(Session, "after_commit")
def _publish_committed(session: Session) -> None:
    for publisher, event in session.info.pop(_PENDING, ()):
        publisher.publish(event)


@sa_event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    if not session.in_transaction():  # the whole transaction, not a savepoint, was rolled back
        session.info.pop(_PENDING, None)


class EventPublisher:
    def __init__(
        self,
        bus: EventBus | None,
        db: Database,
        *,
        progress_interval: float = 0.5,
        webhooks: Stager | None = None,
    ) -> None:
        self.bus = bus
        self.db = db
        self.store = EventStore(db)
        self.progress_interval = progress_interval
        self.webhooks = webhooks
        #: looks up the stored result of a video in a transaction (wired to the processing service)
        self.result_lookup: Callable[[str, Session], dict[str, Any] | None] = lambda video_id, session: None
        #: key -> when its last progress event went out, oldest first (see progress_due)
        self._last_progress: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._bus_down = False

    def to_user(self, event: AnyEvent, user_id: str, session: Session) -> None:
        """Stage ``event`` for ``user_id`` in ``session``'s transaction (last in it: see EventStore.append)."""
        self._stage(session, event, [user_id])

    def to_audience(self, event: AnyEvent) -> AnyEvent | None:
        """Store and publish ``event`` for its ``audience`` in a transaction of its own (an event
        that describes no change of ours, e.g. sent by another program through Celery); returns
        the first receiver's copy."""
        with self.db.session() as session:
            copies = self._stage(session, event, event.audience)
        return copies[0] if copies else None

    def progress_due(self, key: str, final: bool = False) -> bool:
        """At most one progress event per ``progress_interval`` per key; the final one always.
        Only keys seen within the last interval are remembered (an older one throttles nothing),
        so uploads and jobs that never send their final progress are forgotten too."""
        now = time.monotonic()
        with self._lock:
            last = self._last_progress
            horizon = now - self.progress_interval
            while last and next(iter(last.values())) <= horizon:
                last.popitem(last=False)
            if not final and key in last:
                return False
            if final:
                last.pop(key, None)
            else:
                last[key] = now
            return True

    def _stage(self, session: Session, event: AnyEvent, audience: Any) -> list[AnyEvent]:
        copies = []
        session.flush()  # the change's own rows (and their locks) before the counter's lock
        pending = session.info.setdefault(_PENDING, [])
        for user_id in sorted(set(audience)):  # one order for every writer: counter locks cannot deadlock
            copy = self.store.append(session, event, user_id)
            if self.webhooks is not None:
                self.webhooks.stage(session, copy)
            pending.append((self, copy))
            copies.append(copy)
        return copies

    def publish(self, event: AnyEvent) -> None:
        """Send a committed event on the bus; a failure is logged once per outage, not raised
        (the event is stored: sockets catch up when the bus is back)."""
        if self.bus is None:
            return
        try:
            self.bus.publish(event)
        except Exception as exc:
            if not self._bus_down:
                log.warning("event bus unreachable (%s); sockets will catch up from the event store", exc)
            self._bus_down = True
            return
        if self._bus_down:
            self._bus_down = False
            log.info("event bus reachable again")
