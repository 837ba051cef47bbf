"""Hash banks: named lists of known vPDQ/PDQ hashes that every processed video is matched
against. Frames carry sixteen indexed 16-bit bands (multi-index hashing in plain SQL).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BANDS = 16


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "hash_bank",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(length=128), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "hash_bank_entry",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("bank_id", sa.Integer(), sa.ForeignKey("hash_bank.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
    )
    op.create_index("ix_hash_bank_entry_bank_id", "hash_bank_entry", ["bank_id"])
    op.create_table(
        "hash_bank_frame",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("entry_id", _id(), sa.ForeignKey("hash_bank_entry.id", ondelete="CASCADE"), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=False),
        *(sa.Column(f"w{i}", sa.BigInteger(), nullable=False) for i in range(4)),
        *(sa.Column(f"b{i}", sa.Integer(), nullable=False) for i in range(BANDS)),
    )
    op.create_index("ix_hash_bank_frame_entry_id", "hash_bank_frame", ["entry_id"])
    for i in range(BANDS):
        op.create_index(f"ix_hash_bank_frame_b{i}", "hash_bank_frame", [f"b{i}", "entry_id"])


def downgrade() -> None:
    op.drop_table("hash_bank_frame")
    op.drop_table("hash_bank_entry")
    op.drop_table("hash_bank")
