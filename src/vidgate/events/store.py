"""The event store: every event a user receives, numbered in that user's stream and written in
the transaction of the state change it describes (a transactional outbox).

The number comes from one ``event_counter`` row per user, incremented by an upsert in the same
transaction. Its row lock serialises a user's writers until they commit, so a user's events
commit in sequence order and a rolled-back change leaves no gap: whoever reads the store and
sees number N has every number below N too. The bus only carries a copy for speed; replay with
``since``, the catch-up of sockets that missed a message and webhooks all rely on these rows.

Statements are built once per dialect (building them per call costs more than running them).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from vidgate.db.engine import Database
from vidgate.db.models import EventCounter, StoredEvent, utcnow
from vidgate.events.schema import AnyEvent, Event, from_client, to_client

_COUNTERS = cast(Table, EventCounter.__table__)
_EVENTS = cast(Table, StoredEvent.__table__)


def _next_sequence_statement(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT (user_id) DO UPDATE SET last_sequence = last_sequence + 1
    RETURNING last_sequence``: one round trip, atomic on SQLite and PostgreSQL alike."""
    make_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = make_insert(_COUNTERS).values(user_id=bindparam("user_id"), last_sequence=1)
    return statement.on_conflict_do_update(
        index_elements=[_COUNTERS.c.user_id], set_={"last_sequence": _COUNTERS.c.last_sequence + 1}
    ).returning(_COUNTERS.c.last_sequence)


_NEXT_SEQUENCE = {dialect: _next_sequence_statement(dialect) for dialect in ("postgresql", "sqlite")}
_INSERT_EVENT = insert(_EVENTS)


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._next_sequence = _NEXT_SEQUENCE["postgresql" if db.engine.dialect.name == "postgresql" else "sqlite"]

    def append(self, session: Session, event: AnyEvent, user_id: str) -> AnyEvent:
        """Number ``event`` in ``user_id``'s stream and store it in the caller's transaction;
        return the user's copy (its sequence set, the user as its only audience). Call it last in
        a transaction: the counter row stays locked until the commit."""
        connection = session.connection()
        sequence = int(connection.execute(self._next_sequence, {"user_id": user_id}).scalar_one())
        copy = event.model_copy(update={"sequence": sequence, "audience": [user_id]})
        copy._client_json = copy._outgoing = None  # the original's, if made, lack this sequence
        connection.execute(
            _INSERT_EVENT,
            {
                "user_id": user_id,
                "sequence": sequence,
                "event_id": copy.event_id,
                "event_type": copy.event_type,
                "session_id": copy.session_id,
                "video_id": copy.video_id,
                "payload": to_client(copy),
                "created_at": utcnow(),
            },
        )
        return copy

    def read(
        self,
        user_id: str,
        after: int,
        *,
        upto: int | None = None,
        session_id: str | None = None,
        video_id: str | None = None,
        limit: int = 500,
    ) -> list[Event]:
        """``user_id``'s stored events numbered after ``after`` (and up to ``upto``), oldest first,
        optionally only those of one session or video."""
        query = select(StoredEvent.payload).where(StoredEvent.user_id == user_id, StoredEvent.sequence > after)
        if upto is not None:
            query = query.where(StoredEvent.sequence <= upto)
        if session_id is not None:
            query = query.where(StoredEvent.session_id == session_id)
        if video_id is not None:
            query = query.where(StoredEvent.video_id == video_id)
        with self.db.reading() as session:
            payloads = session.scalars(query.order_by(StoredEvent.sequence).limit(limit)).all()
        events = [from_client(payload) for payload in payloads]
        for event in events:
            event.audience = [user_id]
        return events

    def latest(self, user_ids: Iterable[str]) -> dict[str, int]:
        """The last sequence given to each of ``user_ids`` (0 for a user with no events yet)."""
        wanted = list(user_ids)
        found: dict[str, int] = {}
        with self.db.reading() as session:
            for start in range(0, len(wanted), 500):
                batch = wanted[start : start + 500]
                rows = session.execute(
                    select(EventCounter.user_id, EventCounter.last_sequence).where(EventCounter.user_id.in_(batch))
                ).all()
                found.update({user_id: int(last) for user_id, last in rows})
        return {user_id: found.get(user_id, 0) for user_id in wanted}

    def oldest(self, user_id: str) -> int:
        """The oldest of ``user_id``'s sequences still kept (one past the last if none is kept):
        a client that has seen up to N lost events to the sweep if N + 1 is below it."""
        with self.db.reading() as session:
            first = session.scalar(select(func.min(StoredEvent.sequence)).where(StoredEvent.user_id == user_id))
        if first is not None:
            return int(first)
        return self.latest([user_id])[user_id] + 1

    def sweep(self, older_than: datetime) -> int:
        """Delete events stored before ``older_than`` (the counters stay); return how many."""
        with self.db.session() as session:
            result = session.execute(delete(StoredEvent).where(StoredEvent.created_at < older_than))
        return int(getattr(result, "rowcount", 0) or 0)
