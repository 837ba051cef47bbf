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
