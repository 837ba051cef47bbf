"""Where an upload's S3 multipart UploadId is kept: its ``upload_session`` row.

:class:`SessionUploadIds` is the :class:`vidgate.storage.s3_parts.UploadIds` the S3 part store
is built with (by :mod:`vidgate.wiring`): the first host to write a byte of an upload creates
its multipart upload and records the UploadId with one conditional ``UPDATE`` (only while none
is recorded), so two hosts taking an upload's first chunks at once agree on one of them.
"""

from __future__ import annotations

from sqlalchemy import select, update

from vidgate.db.engine import Database
from vidgate.db.models import UploadSession
from vidgate.errors import SessionNotFound


class SessionUploadIds:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, key: str) -> str | None:
        with self.db.session() as tx:
            return tx.scalar(select(UploadSession.s3_upload_id).where(UploadSession.id == key))

    def claim(self, key: str, upload_id: str) -> str:
        """Record ``upload_id`` for ``key`` unless one is recorded already; return the one recorded."""
        with self.db.session() as tx:
            tx.execute(
                update(UploadSession)
                .where(UploadSession.id == key, UploadSession.s3_upload_id.is_(None))
                .values(s3_upload_id=upload_id)
            )
            recorded = tx.scalar(select(UploadSession.s3_upload_id).where(UploadSession.id == key))
        if recorded is None:
            raise SessionNotFound(f"No upload session row {key!r} to record its multipart upload in.")
        return recorded

    def forget(self, key: str) -> None:
        with self.db.session() as tx:
            tx.execute(update(UploadSession).where(UploadSession.id == key).values(s3_upload_id=None))
