"""A tus PATCH row carries no hash of its own: upload_chunk.chunk_hash becomes nullable.

A tus body is never re-sent to the same offset for comparison (the seed API's idempotent
chunk re-send is what chunk_hash is for); its bytes are covered by the running whole-file
SHA-256 and, when the client sends one, by Upload-Checksum. Not hashing it twice is most of
the CPU a PATCH costs beyond reading the socket.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("upload_chunk", schema=None) as batch_op:
        batch_op.alter_column("chunk_hash", existing_type=sa.String(length=128), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE upload_chunk SET chunk_hash = '' WHERE chunk_hash IS NULL")
    with op.batch_alter_table("upload_chunk", schema=None) as batch_op:
        batch_op.alter_column("chunk_hash", existing_type=sa.String(length=128), nullable=False)
