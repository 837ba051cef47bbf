"""Run Alembic migrations programmatically (``vidgate migrate``, and SQLite start-up)."""

from __future__ import annotations

from collections.abc import Callable

from alembic import command
from alembic.config import Config

from vidgate.db.engine import Database


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "vidgate.db:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to call on an up-to-date database."""
    _run(database, command.upgrade, revision)


def downgrade(database: Database, revision: str) -> None:
    """Walk the schema back to ``revision``."""
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
