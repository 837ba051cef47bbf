"""The retention sweep's index: videos by upload time, whoever owns them.

``RETENTION_DAYS`` deletes every video created before a cut-off, oldest first, in batches;
the owner-first listing indexes cannot answer that without a scan of the whole table.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_video_created_at", "video", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_video_created_at", table_name="video")
