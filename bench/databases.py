"""The two databases every database bench runs on: a fresh SQLite file and a fresh PostgreSQL
database on the local server (127.0.0.1:5432, user postgres), both removed afterwards."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from vidgate.db.engine import Database

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def databases() -> Iterator[list[tuple[str, Database]]]:
    """``[("SQLite", db), ("PostgreSQL", db)]``, empty (not migrated), dropped on exit."""
    name = f"vidgate_bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        dbs = [
            ("SQLite", Database(f"sqlite:///{tmp}/bench.db")),
            ("PostgreSQL", Database(f"{ADMIN.rsplit('/', 1)[0]}/{name}")),
        ]
        try:
            yield dbs
        finally:
            for _, db in dbs:
                db.dispose()
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
