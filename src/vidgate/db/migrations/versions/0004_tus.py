"""tus uploads share upload_session: protocol, concatenation and the raw Upload-Metadata.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("upload_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("protocol", sa.String(length=16), server_default="chunks", nullable=False))
        batch_op.add_column(sa.Column("concat", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("concat_parts", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("upload_metadata", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("upload_session", schema=None) as batch_op:
        batch_op.drop_column("upload_metadata")
        batch_op.drop_column("concat_parts")
        batch_op.drop_column("concat")
        batch_op.drop_column("protocol")
