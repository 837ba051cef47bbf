"""Processing leases: video.lease_holder, lease_pid and lease_expires_at, indexed for the sweep.

A running job holds its video's lease and renews it; a sweep queues again a job whose lease
ran out (its worker died whole, or hangs). ``video.attempts`` is the fencing token.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("video", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_holder", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("lease_pid", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_video_status_lease_expires_at", ["status", "lease_expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("video", schema=None) as batch_op:
        batch_op.drop_index("ix_video_status_lease_expires_at")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_pid")
        batch_op.drop_column("lease_holder")
