"""Uploads in progress in an S3 bucket: each upload is an S3 multipart upload.

- ``upload_session.s3_upload_id``: the UploadId of the upload's multipart upload
  (STORAGE_BACKEND=s3 with uploads in the bucket). Set once, by the first host that writes a
  byte of the upload, with ``UPDATE ... WHERE s3_upload_id IS NULL``, so two hosts taking the
  first chunks of one upload at the same time agree on one multipart upload.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("upload_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("s3_upload_id", sa.String(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("upload_session", schema=None) as batch_op:
        batch_op.drop_column("s3_upload_id")
