"""How an upload ends without a file: failed, cancelled or expired.

Ending moves the session to its terminal state, keeps the reason, deletes its data (chunk
rows, part, staged chunks, locks, the running hash) and publishes ``upload_failed`` or
``session_expired``. Refusals of either protocol, a client's cancel and the expiry sweep all
end a session here.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select

from vidgate import metrics
from vidgate.auth import Principal
from vidgate.db.models import SessionStatus, UploadChunk, UploadSession, utcnow
from vidgate.errors import SessionNotActive, SessionNotFound
from vidgate.events.schema import FailureData, SessionExpired, SessionExpiredData, UploadFailed
from vidgate.uploads.models import SessionView
from vidgate.uploads.records import Records
from vidgate.uploads.step import Step, UploadDeps

log = logging.getLogger(__name__)


class Endings(Step):
    def __init__(self, deps: UploadDeps, records: Records) -> None:
        super().__init__(deps)
        self.records = records

    def fail(self, row_id: str, code: str, message: str) -> None:
        """End a session as refused: data deleted, reason kept, ``upload_failed`` published."""
        upload_id = self.end(row_id, SessionStatus.FAILED, code, message)[0]
        metrics.UPLOAD_FAILURES.labels(code).inc()
        log.warning(
            "upload %s failed (%s): %s",
            upload_id,
            code,
            message,
            extra={"session_id": upload_id, "event": "upload_failed", "error_code": code},
        )

    def cancel(self, principal: Principal, upload_id: str) -> SessionView:
        """The client gives up: an active session is cancelled; a finished one stays as it is."""
        with self.db.session() as tx:
            row = tx.scalar(select(UploadSession).where(UploadSession.session_id == upload_id).with_for_update())
            if row is None or row.user_id != principal.user_id:
                raise SessionNotFound(f"No upload session {upload_id!r}.")
            status, row_id = row.status, row.id
        if status in (SessionStatus.COMPLETED, SessionStatus.ASSEMBLING):
            raise SessionNotActive(f"Upload session {upload_id!r} is {status.value}; it can no longer be cancelled.")
        if status is SessionStatus.ACTIVE:
            self.end(row_id, SessionStatus.CANCELLED, "cancelled", "Cancelled by the client.")
            log.info("upload session %s cancelled", upload_id)
        return self.records.view(upload_id)

    def end(
        self, row_id: str, status: SessionStatus, code: str | None, message: str | None
    ) -> tuple[str, str, int, int]:
        """Move a session to a terminal state and delete its data (chunk rows, part, staging);
        return its (upload id, user id, chunks received, total chunks)."""
        with self.db.session() as tx:
            row = tx.get_one(UploadSession, row_id)
            ended = (row.session_id, row.user_id, row.chunks_received, row.total_chunks)
            metrics.UPLOADS.labels(row.protocol, status.value).inc()
            row.status = status
            row.error_code = code
            row.error_message = message
            row.last_updated = utcnow()
            tx.execute(delete(UploadChunk).where(UploadChunk.session_id == row.session_id))
            event = {SessionStatus.FAILED: "upload_failed", SessionStatus.EXPIRED: "session_expired"}.get(
                status, "upload_cancelled"
            )
            self.records.log(tx, row, event, message)
            events = self.records.events
            if events is not None and status is SessionStatus.FAILED:
                failure = FailureData(error_code=code or "upload_failed", message=message or "")
                events.to_user(UploadFailed(session_id=row.session_id, data=failure), row.user_id, tx)
            elif events is not None and status is SessionStatus.EXPIRED:
                counts = SessionExpiredData(chunks_received=ended[2], total_chunks=ended[3])
                events.to_user(SessionExpired(session_id=row.session_id, data=counts), row.user_id, tx)
        self.frontier.drop(row_id)
        self.parts.remove(row_id)
        return ended
