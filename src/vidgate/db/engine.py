"""Engine and session factory for SQLite (embedded) and PostgreSQL (distributed)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

#: execution option of the sessions :meth:`Database.reading` hands out
READ_ONLY = "vidgate_read_only"


def _normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use psycopg 3 for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, *, echo: bool = False) -> Engine:
    url = _normalise_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, open transactions (see _sqlite_begin).
            dbapi_connection.isolation_level = None
            # WAL lets readers run beside the single writer; busy_timeout waits instead of failing.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            # Writers take the write lock up front: a read-then-write transaction can then never
            # fail half-way with "database is locked", and concurrent chunk commits serialise
            # cleanly. Readers (Database.reading) take none: in WAL they read a snapshot beside
            # the writer instead of queueing behind every commit.
            read_only = connection.get_execution_options().get(READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Database:
    """Owns the engine and hands out short transactional sessions."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = _normalise_url(url)
        self.engine = create_db_engine(url, echo=echo)
        #: the engine for reads outside a session: on SQLite its transactions take no write lock
        self.read_engine = self.engine.execution_options(**{READ_ONLY: True})
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(self.read_engine, expire_on_commit=False)
        url_of = make_url(self.url)
        self._sqlite_file = url_of.database if url_of.drivername.startswith("sqlite") else None
        if self._sqlite_file == ":memory:":
            self._sqlite_file = None
        self._instant = threading.local()
        self._instant_connections: list[sqlite3.Connection] = []
        self._instant_lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on error."""
        with self._factory() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads: one consistent snapshot, and on SQLite no write lock,
        so frequent reads (the event store's catch-up and replay) never wait for writers or
        hold them up. Writing in it is a mistake (SQLite may then refuse with "locked")."""
        with self._reader() as session, session.begin():
            yield session

    def instant_reader(self) -> sqlite3.Connection | None:
        """On SQLite, this thread's own connection for small reads that never wait, so that the
        event loop can make them without a thread hop (the content route's ownership check):
        autocommit (each statement reads the newest commits and holds no snapshot after it),
        ``query_only``, and no busy timeout (a busy database raises ``sqlite3.OperationalError``
        at once; the caller then asks in a worker thread). None on PostgreSQL (network)."""
        if not self._sqlite_file:
            return None
        connection: sqlite3.Connection | None = getattr(self._instant, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self._sqlite_file, timeout=0, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA query_only=ON")
            self._instant.connection = connection
            with self._instant_lock:
                self._instant_connections.append(connection)
        return connection

    def dispose(self) -> None:
        self.engine.dispose()
        with self._instant_lock:
            for connection in self._instant_connections:
                connection.close()
            self._instant_connections.clear()
            self._instant = threading.local()
