"""The migrations build exactly the schema the models describe, and can be walked back."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from tests.conftest import database_url_for
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import Base


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_migrated_schema_matches_the_models(backend: str, tmp_path: Path) -> None:
    with database_url_for(backend, tmp_path) as url:
        db = Database(url)
        try:
            migrate.upgrade(db)
            with db.engine.connect() as connection:
                differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
                columns = {c["name"]: c for c in inspect(connection).get_columns("upload_chunk")}
        finally:
            db.dispose()
    assert differences == []
    assert columns["chunk_hash"]["nullable"]  # 0005: a tus PATCH row has no hash of its own


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_keys_from_before_roles_become_uploaders(backend: str, tmp_path: Path) -> None:
    """0010: a key made before roles existed keeps what it could do (read and upload), no more."""
    from sqlalchemy import text

    with database_url_for(backend, tmp_path) as url:
        db = Database(url)
        try:
            migrate.upgrade(db, "0005")
            with db.engine.begin() as connection:
                connection.execute(
                    text("INSERT INTO user_account (id, username, created_at) VALUES ('u1', 'old', CURRENT_TIMESTAMP)")
                )
                connection.execute(
                    text(
                        "INSERT INTO api_key (id, user_id, key_hash, key_prefix, created_at) "
                        "VALUES ('k1', 'u1', 'h', 'vg_x', CURRENT_TIMESTAMP)"
                    )
                )
            migrate.upgrade(db)
            with db.engine.connect() as connection:
                role = connection.execute(text("SELECT role FROM api_key WHERE id = 'k1'")).scalar_one()
        finally:
            db.dispose()
    assert role == "uploader"
