"""Each owner gets a video of their own; bytes and analysis move to ``content``.

Before: one ``video`` row per SHA-256 served every owner of the same bytes, so a second
owner saw the first one's id, file name, times and priority. After: ``content`` holds the
blob, the media info and the analysis state once per SHA-256 (the analysis result and the
frame hashes now belong to it), and ``video`` holds one row per owner and content.

Existing rows: each video's content keeps the video's id (so the result and frame-hash
rows keep their values, and jobs already in the broker still name a valid video); the first
owner keeps the video and its id; every other owner with a completed session of that
content gets a video of their own built from their earliest such session, and their
sessions point to it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 10:40:00
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_ANALYSIS = sa.Enum("pending", "processing", "completed", "failed", name="analysis_status")
_VIDEO_STATUS = sa.Enum("uploaded", "queued", "processing", "completed", "failed", name="video_status")
#: names SQLite's unnamed foreign keys so batch mode can drop them
_NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}

_content = sa.table(
    "content",
    sa.column("id", sa.String),
    sa.column("content_hash", sa.String),
    sa.column("file_size", sa.BigInteger),
    sa.column("storage_key", sa.String),
    sa.column("media_info", _JSON),
    sa.column("status", _ANALYSIS),
    sa.column("analysing_video_id", sa.String),
    sa.column("analyses", sa.Integer),
    sa.column("error_message", sa.Text),
    sa.column("fingerprint", sa.BigInteger),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("started_at", sa.DateTime(timezone=True)),
    sa.column("finished_at", sa.DateTime(timezone=True)),
)
_video_columns = (
    "id",
    "user_id",
    "content_id",
    "content_type",
    "filename",
    "status",
    "priority",
    "error_message",
    "created_at",
    "updated_at",
    "processing_options",
    "stage",
    "progress",
    "attempts",
    "queued_at",
    "dispatched_at",
    "started_at",
    "finished_at",
)


def _video_table(*extra: sa.ColumnClause[Any]) -> sa.TableClause:
    types: dict[str, Any] = {
        "status": _VIDEO_STATUS,
        "priority": sa.Integer,
        "progress": sa.Float,
        "attempts": sa.Integer,
        "processing_options": _JSON,
        "error_message": sa.Text,
    }
    dates = {"created_at", "updated_at", "queued_at", "dispatched_at", "started_at", "finished_at"}
    columns = [
        sa.column(name, sa.DateTime(timezone=True) if name in dates else types.get(name, sa.String))
        for name in _video_columns
    ]
    return sa.table("video", *columns, *extra)


_session = sa.table(
    "upload_session",
    sa.column("id", sa.String),
    sa.column("video_id", sa.String),
    sa.column("user_id", sa.String),
    sa.column(
        "status",
        sa.Enum("active", "assembling", "completed", "failed", "cancelled", "expired", name="upload_session_status"),
    ),
    sa.column("filename", sa.String),
    sa.column("content_type", sa.String),
    sa.column("priority", sa.Integer),
    sa.column("upload_options", _JSON),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("completed_at", sa.DateTime(timezone=True)),
)


def _fk_name(table: str, column: str, referred: str) -> str | None:
    """The name of ``table.column``'s foreign key (SQLite's are unnamed: the naming convention's)."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        return f"fk_{table}_{column}_{referred}"
    for key in sa.inspect(bind).get_foreign_keys(table):
        if key["constrained_columns"] == [column]:
            return str(key["name"])
    return None


def _repoint(table: str, old: str, new: str, referred_before: str, referred_after: str, *, unique: bool) -> None:
    """Rename ``table.old`` to ``new`` and point its foreign key at ``referred_after``."""
    name = _fk_name(table, old, referred_before)
    with op.batch_alter_table(table, naming_convention=_NAMING) as batch:
        if name:
            batch.drop_constraint(name, type_="foreignkey")
        if not unique:
            batch.drop_index(f"ix_{table}_{old}")
        batch.alter_column(old, new_column_name=new, existing_type=sa.String(length=36), existing_nullable=False)
    with op.batch_alter_table(table, naming_convention=_NAMING) as batch:
        batch.create_foreign_key(
            f"fk_{table}_{new}_{referred_after}", referred_after, [new], ["id"], ondelete="CASCADE"
        )
        if not unique:
            batch.create_index(f"ix_{table}_{new}", [new], unique=False)


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "content",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("storage_key", sa.String(length=512), nullable=False),
        sa.Column("media_info", _JSON, nullable=False),
        sa.Column("status", _ANALYSIS, nullable=False),
        sa.Column("analysing_video_id", sa.String(length=36), nullable=True),
        sa.Column("analyses", sa.Integer(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("content_hash"),
    )
    op.create_index("ix_content_status", "content", ["status"], unique=False)

    old = sa.table(
        "video",
        *(
            sa.column(name)
            for name in (
                "id",
                "content_hash",
                "file_size",
                "storage_key",
                "media_info",
                "status",
                "attempts",
                "error_message",
                "fingerprint",
                "created_at",
                "started_at",
                "finished_at",
                "first_user_id",
            )
        ),
    )
    status = sa.cast(old.c.status, sa.String(16))
    analysis = sa.case(
        (status.in_(["completed", "failed", "processing"]), status),
        else_=sa.literal("pending"),
    )
    bind.execute(
        _content.insert().from_select(
            [c.name for c in _content.columns],
            sa.select(
                old.c.id,
                old.c.content_hash,
                old.c.file_size,
                old.c.storage_key,
                old.c.media_info,
                sa.cast(analysis, _ANALYSIS),
                sa.case((status == "processing", old.c.id), else_=sa.null()),
                old.c.attempts,
                old.c.error_message,
                old.c.fingerprint,
                old.c.created_at,
                old.c.started_at,
                old.c.finished_at,
            ),
        )
    )

    with op.batch_alter_table("video") as batch:
        batch.add_column(sa.Column("user_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("content_id", sa.String(length=36), nullable=True))
    video = _video_table(sa.column("first_user_id", sa.String))
    bind.execute(sa.update(video).values(user_id=video.c.first_user_id, content_id=video.c.id))

    _repoint("video_analysis_result", "video_id", "content_id", "video", "content", unique=True)
    _repoint("frame_hash", "video_id", "content_id", "video", "content", unique=False)

    with op.batch_alter_table("video") as batch:
        if bind.dialect.name != "sqlite":  # SQLite's batch copy leaves out a dropped column's constraint
            batch.drop_constraint("video_content_hash_key", type_="unique")
        for column in ("content_hash", "file_size", "storage_key", "media_info", "fingerprint"):
            batch.drop_column(column)
    _split_other_owners(video)
    with op.batch_alter_table("video") as batch:
        batch.drop_column("first_user_id")
        batch.alter_column("user_id", existing_type=sa.String(length=128), nullable=False)
        batch.alter_column("content_id", existing_type=sa.String(length=36), nullable=False)
        batch.create_index("ix_video_user_id", ["user_id"], unique=False)
        batch.create_index("ix_video_content_id", ["content_id"], unique=False)
        batch.create_unique_constraint("uq_video_user_content", ["user_id", "content_id"])
        batch.create_foreign_key("fk_video_content_id_content", "content", ["content_id"], ["id"])


def _split_other_owners(video: sa.TableClause) -> None:
    """A video of their own for every owner but the first, from their earliest completed session."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(
            video.c.id,
            video.c.status,
            video.c.stage,
            video.c.progress,
            video.c.error_message,
            video.c.finished_at,
            _session.c.user_id,
            _session.c.filename,
            _session.c.content_type,
            _session.c.priority,
            _session.c.upload_options,
            _session.c.created_at,
            _session.c.completed_at,
        )
        .join(_session, _session.c.video_id == video.c.id)
        .where(_session.c.status == "completed", _session.c.user_id != video.c.first_user_id)
        .order_by(video.c.id, _session.c.user_id, _session.c.created_at)
    ).all()
    seen: set[tuple[str, str]] = set()
    for row in rows:
        if (row.id, row.user_id) in seen:
            continue
        seen.add((row.id, row.user_id))
        new_id = str(uuid.uuid4())
        status = row.status
        done = status in ("completed", "failed")
        uploaded = row.completed_at or row.created_at
        finished = max(row.finished_at, uploaded) if done and row.finished_at else (uploaded if done else None)
        bind.execute(
            sa.insert(video).values(
                id=new_id,
                user_id=row.user_id,
                content_id=row.id,
                content_type=row.content_type,
                filename=row.filename,
                status=status,
                priority=row.priority,
                error_message=row.error_message if status == "failed" else None,
                created_at=row.created_at,
                updated_at=finished or uploaded,
                processing_options=row.upload_options or {},
                stage=row.stage,
                progress=row.progress,
                attempts=1 if done else 0,
                queued_at=uploaded,
                dispatched_at=None,  # a queued one is handed to the broker by the dispatcher
                started_at=uploaded if status != "queued" else None,
                finished_at=finished,
                first_user_id=row.user_id,
            )
        )
        bind.execute(
            sa.update(_session)
            .where(_session.c.video_id == row.id, _session.c.user_id == row.user_id)
            .values(video_id=new_id)
        )


def downgrade() -> None:
    """One video per content again: the content's own id (the first owner's video) or the
    oldest video keeps it; other owners' sessions point to that one."""
    bind = op.get_bind()
    with op.batch_alter_table("video") as batch:
        batch.add_column(sa.Column("content_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("file_size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("storage_key", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("media_info", _JSON, nullable=True))
        batch.add_column(sa.Column("fingerprint", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("first_user_id", sa.String(length=128), nullable=True))
    video = _video_table(
        sa.column("content_hash", sa.String),
        sa.column("file_size", sa.BigInteger),
        sa.column("storage_key", sa.String),
        sa.column("media_info", _JSON),
        sa.column("fingerprint", sa.BigInteger),
        sa.column("first_user_id", sa.String),
    )
    contents = bind.execute(sa.select(_content)).all()
    keepers: dict[str, str] = {}
    for content in contents:
        videos = bind.execute(
            sa.select(video.c.id, video.c.user_id)
            .where(video.c.content_id == content.id)
            .order_by((video.c.id != content.id), video.c.created_at)
        ).all()
        if not videos:
            continue
        keeper, owner = videos[0]
        keepers[content.id] = keeper
        others = [v.id for v in videos[1:]]
        if others:
            bind.execute(sa.update(_session).where(_session.c.video_id.in_(others)).values(video_id=keeper))
            bind.execute(sa.delete(video).where(video.c.id.in_(others)))
        bind.execute(
            sa.update(video)
            .where(video.c.id == keeper)
            .values(
                content_hash=content.content_hash,
                file_size=content.file_size,
                storage_key=content.storage_key,
                media_info=content.media_info,
                fingerprint=content.fingerprint,
                first_user_id=owner,
            )
        )
    for table in ("video_analysis_result", "frame_hash"):
        rows = sa.table(table, sa.column("content_id", sa.String))
        bind.execute(sa.delete(rows).where(rows.c.content_id.not_in(list(keepers) or [""])))
        for content_id, keeper in keepers.items():
            if keeper != content_id:
                bind.execute(sa.update(rows).where(rows.c.content_id == content_id).values(content_id=keeper))
    _repoint("video_analysis_result", "content_id", "video_id", "content", "video", unique=True)
    _repoint("frame_hash", "content_id", "video_id", "content", "video", unique=False)
    with op.batch_alter_table("video", naming_convention=_NAMING) as batch:
        batch.drop_constraint("fk_video_content_id_content", type_="foreignkey")
        batch.drop_constraint("uq_video_user_content", type_="unique")
        batch.drop_index("ix_video_content_id")
        batch.drop_index("ix_video_user_id")
        batch.drop_column("content_id")
        batch.drop_column("user_id")
        for column, kind in (
            ("content_hash", sa.String(length=64)),
            ("file_size", sa.BigInteger()),
            ("storage_key", sa.String(length=512)),
            ("media_info", _JSON),
            ("first_user_id", sa.String(length=128)),
        ):
            batch.alter_column(column, existing_type=kind, nullable=False)
        batch.create_unique_constraint("video_content_hash_key", ["content_hash"])
    op.drop_index("ix_content_status", table_name="content")
    op.drop_table("content")
    _ANALYSIS.drop(bind, checkfirst=True)
