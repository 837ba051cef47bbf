"""Durable events: every event a user receives is stored, numbered per user, in the transaction
of the state change it describes (the transactional outbox of the WebSocket bus and webhooks).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 10:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_store",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=True),
        sa.Column("video_id", sa.String(length=36), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "sequence", name="uq_event_store_user_sequence"),
    )
    with op.batch_alter_table("event_store", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_store_created_at"), ["created_at"], unique=False)
    op.create_table(
        "event_counter",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )


def downgrade() -> None:
    op.drop_table("event_counter")
    with op.batch_alter_table("event_store", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_store_created_at"))
    op.drop_table("event_store")
