"""Hash banks, matched from memory and re-matched against stored videos.

- ``hash_bank_state``: one row whose ``token`` changes with every import or delete, so each
  process knows when its in-memory bank index is stale (one indexed read per match).
- ``hash_bank.revision`` counts imports into the bank; ``hash_bank_entry.revision`` is the
  import that added the entry. ``rematched_revision`` is how far stored videos have been
  matched against the bank; ``rematch_target`` and the cursor (``rematch_after``,
  ``rematch_cursor``: the last content done, by finish time and id) are the pass in progress,
  so a restarted process resumes it. ``ix_content_finished_at`` keeps the pass's pages cheap.
- ``content_embedding``: each content's video embedding, for the near-duplicate search's
  second stage (crops).
- ``hash_bank_frame.timestamp``: where the frame is in the bank's video (None for images), to
  report matching time ranges.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    state = op.create_table(
        "hash_bank_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token", sa.String(length=32), nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "token": "initial"}])
    with op.batch_alter_table("hash_bank", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revision", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("rematched_revision", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("rematch_target", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rematch_after", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("rematch_cursor", sa.String(length=36), nullable=True))
    with op.batch_alter_table("hash_bank_entry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revision", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("hash_bank_frame", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timestamp", sa.Float(), nullable=True))
    op.create_index("ix_content_finished_at", "content", ["finished_at", "id"])
    op.create_table(
        "content_embedding",
        sa.Column(
            "content_id", sa.String(length=36), sa.ForeignKey("content.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("model_type", sa.String(length=255), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("content_embedding")
    op.drop_index("ix_content_finished_at", table_name="content")
    with op.batch_alter_table("hash_bank_frame", schema=None) as batch_op:
        batch_op.drop_column("timestamp")
    with op.batch_alter_table("hash_bank_entry", schema=None) as batch_op:
        batch_op.drop_column("revision")
    with op.batch_alter_table("hash_bank", schema=None) as batch_op:
        for column in ("rematch_cursor", "rematch_after", "rematch_target", "rematched_revision", "revision"):
            batch_op.drop_column(column)
    op.drop_table("hash_bank_state")
