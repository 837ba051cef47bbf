"""Processing: analysis results, frame hashes for near-duplicate search, video progress columns.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 20:44:56.356076
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "frame_hash",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("video_id", sa.String(length=36), nullable=False),
        sa.Column("timestamp", sa.Float(), nullable=False),
        sa.Column("hash", sa.BigInteger(), nullable=False),
        sa.Column("band0", sa.Integer(), nullable=False),
        sa.Column("band1", sa.Integer(), nullable=False),
        sa.Column("band2", sa.Integer(), nullable=False),
        sa.Column("band3", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["video_id"], ["video.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("frame_hash", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_frame_hash_band0"), ["band0"], unique=False)
        batch_op.create_index(batch_op.f("ix_frame_hash_band1"), ["band1"], unique=False)
        batch_op.create_index(batch_op.f("ix_frame_hash_band2"), ["band2"], unique=False)
        batch_op.create_index(batch_op.f("ix_frame_hash_band3"), ["band3"], unique=False)
        batch_op.create_index(batch_op.f("ix_frame_hash_video_id"), ["video_id"], unique=False)

    op.create_table(
        "video_analysis_result",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("video_id", sa.String(length=36), nullable=False),
        sa.Column("pipeline_version", sa.String(length=16), nullable=False),
        sa.Column("model_type", sa.String(length=64), nullable=False),
        sa.Column(
            "result", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("processing_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["video_id"], ["video.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("video_id"),
    )
    with op.batch_alter_table("upload_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("is_duplicate", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("video", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "media_info",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=False,
                server_default=sa.text("'{}'"),
            )
        )
        batch_op.add_column(
            sa.Column(
                "processing_options",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=False,
                server_default=sa.text("'{}'"),
            )
        )
        batch_op.add_column(sa.Column("stage", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("progress", sa.Float(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("fingerprint", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_video_dispatched_at"), ["dispatched_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_video_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("upload_session", schema=None) as batch_op:
        batch_op.drop_column("is_duplicate")
    with op.batch_alter_table("video", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_video_status"))
        batch_op.drop_index(batch_op.f("ix_video_dispatched_at"))
        batch_op.drop_column("fingerprint")
        batch_op.drop_column("finished_at")
        batch_op.drop_column("started_at")
        batch_op.drop_column("dispatched_at")
        batch_op.drop_column("queued_at")
        batch_op.drop_column("attempts")
        batch_op.drop_column("progress")
        batch_op.drop_column("stage")
        batch_op.drop_column("processing_options")
        batch_op.drop_column("media_info")

    op.drop_table("video_analysis_result")
    with op.batch_alter_table("frame_hash", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_frame_hash_video_id"))
        batch_op.drop_index(batch_op.f("ix_frame_hash_band3"))
        batch_op.drop_index(batch_op.f("ix_frame_hash_band2"))
        batch_op.drop_index(batch_op.f("ix_frame_hash_band1"))
        batch_op.drop_index(batch_op.f("ix_frame_hash_band0"))

    op.drop_table("frame_hash")
