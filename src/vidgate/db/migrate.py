"""Run Alembic migrations programmatically (``vidgate migrate``, and SQLite start-up).

A database already at :data:`HEAD` is left as it is without importing Alembic (its import costs
every API process ~10 MiB of memory it would keep): the revision is read from
``alembic_version`` directly. tests/db/test_migrations.py checks :data:`HEAD` against the
migration scripts, so a new migration cannot be forgotten here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text

from vidgate.db.engine import Database

if TYPE_CHECKING:
    from alembic.config import Config

HEAD = "0013"  # the newest migration's revision (db/migrations/versions)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "vidgate.db:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def current_revision(database: Database) -> str | None:
    """The database's revision (None: never migrated)."""
    with database.engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to call on an up-to-date database."""
    if revision in ("head", HEAD) and current_revision(database) == HEAD:
        return
    from alembic import command

    _run(database, command.upgrade, revision)


def downgrade(database: Database, revision: str) -> None:
    """Walk the schema back to ``revision``."""
    from alembic import command

    _run(database, command.downgrade, revision)


def _run(database: Database, step: Callable[[Config, str], None], revision: str) -> None:
    """One transaction. On SQLite foreign keys are off meanwhile (checked after): altering a
    table there means copying it and dropping the original, which rows of other tables refer to."""
    config = alembic_config(database.url)
    sqlite = database.engine.dialect.name == "sqlite"
    with database.engine.connect() as connection:
        raw = connection.connection.driver_connection
        if sqlite and raw is not None:  # outside any transaction, where the pragma takes effect
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                step(config, revision)
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                connection.rollback()
                if broken:
                    raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")
        finally:
            if sqlite and raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")
