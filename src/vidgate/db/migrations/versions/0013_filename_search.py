"""The listing's "file name contains" filter from a trigram index, not a walk of the library.

A rare word in the owner's file names made ``GET /v1/videos?filename=...`` walk the owner's
keyset index and test every name (half the library for a page of 50 when 0.1 % match). A
trigram index finds the few names holding the text instead:

- PostgreSQL: ``pg_trgm``'s GIN index ``ix_video_filename_trgm`` on ``video.filename``, which
  serves ``ILIKE '%text%'`` itself (the planner picks it when the text is rare, the keyset
  index when it is common). The extension is created if the server has it (it is in
  PostgreSQL's contrib, trusted since 13); without it the listing works as before, slower.
  ``fastupdate = off``: a new name goes into the index at once, not into GIN's pending list,
  which every search would otherwise scan until a vacuum (a name is written once per upload,
  searched many times).
- SQLite: ``video_filename``, an FTS5 table with the trigram tokenizer (one row per video: id,
  owner, file name), kept by triggers on ``video``; the listing asks it for the owner's ids
  whose name holds the text (texts of 3 characters or more, without LIKE wildcards) and, when
  they are few (``listing.RARE_NAMES``), reads only those, checking the same ILIKE as before;
  a common text walks the keyset index as before (a page of matches is found soon). A later
  batch migration that recreates ``video`` on SQLite drops these triggers with it and must
  create them again (:func:`sqlite_triggers`).

Not in the models (neither an FTS5 table nor an operator-class index is something the ORM
describes); tests/db/test_migrations.py leaves them out of its comparison by name.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 17:15:00
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SQLITE_TRIGGERS = (
    """CREATE TRIGGER video_filename_insert AFTER INSERT ON video BEGIN
        INSERT INTO video_filename (video_id, user_id, filename) VALUES (new.id, new.user_id, new.filename);
    END""",
    """CREATE TRIGGER video_filename_delete AFTER DELETE ON video BEGIN
        DELETE FROM video_filename WHERE video_id = old.id;
    END""",
    """CREATE TRIGGER video_filename_update AFTER UPDATE OF id, user_id, filename ON video BEGIN
        UPDATE video_filename SET video_id = new.id, user_id = new.user_id, filename = new.filename
        WHERE video_id = old.id;
    END""",
)


def sqlite_triggers() -> None:
    for statement in SQLITE_TRIGGERS:
        op.execute(statement)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        available = (
            op.get_bind().exec_driver_sql("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'").scalar()
        )
        if available:
            op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            op.execute(
                "CREATE INDEX ix_video_filename_trgm ON video USING gin (filename gin_trgm_ops) WITH (fastupdate = off)"
            )
    elif dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE video_filename USING fts5("
            "video_id UNINDEXED, user_id UNINDEXED, filename, tokenize = 'trigram')"
        )
        op.execute("INSERT INTO video_filename (video_id, user_id, filename) SELECT id, user_id, filename FROM video")
        sqlite_triggers()


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_video_filename_trgm")
    elif dialect == "sqlite":
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS video_filename_{name}")
        op.execute("DROP TABLE IF EXISTS video_filename")
