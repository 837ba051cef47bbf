"""Run Alembic migrations programmatically (``vidgate migrate``, and SQLite start-up)."""

from __future__ import annotations

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
    config = alembic_config(database.url)
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
