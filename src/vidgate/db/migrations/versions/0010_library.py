"""The library: key roles, review decisions, and the indexes listing reads.

- ``api_key.role``: keys made before roles existed could read and upload, so they become
  ``uploader`` (nothing they did stops working; reviewing needs a new reviewer/admin key).
- ``video_review``: every decision kept; ``video_review_state``: the latest per owner and video.
- Indexes for ``GET /v1/videos``: the owner's videos newest first (keyset), and with a status.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

DECISIONS = ("approved", "rejected", "escalated")


def upgrade() -> None:
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), server_default="uploader", nullable=False))
    decision = sa.Enum(*DECISIONS, name="review_decision")
    op.create_table(
        "video_review",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("video_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("decision", decision, nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("key_id", sa.String(length=36), nullable=True),
        sa.Column("key_label", sa.String(length=100), nullable=True),
        sa.Column("key_role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user_account.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["video_id"], ["video.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_video_review_owner_video", "video_review", ["user_id", "video_id", "created_at"])
    op.create_table(
        "video_review_state",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("video_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.Enum(*DECISIONS, name="review_decision", create_type=False), nullable=False),
        sa.Column("review_id", sa.String(length=36), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("video_created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user_account.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["video_id"], ["video.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "video_id"),
    )
    op.create_index(
        "ix_video_review_state_owner_state_created",
        "video_review_state",
        ["user_id", "state", "video_created_at", "video_id"],
    )
    op.create_index("ix_video_user_created_id", "video", ["user_id", "created_at", "id"])
    op.create_index("ix_video_user_status_created_id", "video", ["user_id", "status", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_video_user_status_created_id", table_name="video")
    op.drop_index("ix_video_user_created_id", table_name="video")
    op.drop_index("ix_video_review_state_owner_state_created", table_name="video_review_state")
    op.drop_table("video_review_state")
    op.drop_index("ix_video_review_owner_video", table_name="video_review")
    op.drop_table("video_review")
    sa.Enum(name="review_decision").drop(op.get_bind(), checkfirst=True)
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_column("role")
