"""Cleanup: the periodic sweep that expires idle sessions and removes what nobody owns.

Expiry by the session timeout in force, a re-run of stalled assemblies (see
:mod:`vidgate.uploads.completion`), the purge of finished sessions' chunk rows and of part
files no live session owns. It never touches a live session's data.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from vidgate import metrics
from vidgate.db.models import TERMINAL_STATUSES, SessionStatus, UploadChunk, UploadSession, utcnow
from vidgate.errors import VidgateError
from vidgate.uploads.completion import Completion
from vidgate.uploads.ending import Endings
from vidgate.uploads.models import CleanupReport
from vidgate.uploads.step import Step, UploadDeps

log = logging.getLogger(__name__)

ORPHAN_GRACE_SECONDS = 300.0


class Cleanup(Step):
    def __init__(self, deps: UploadDeps, completion: Completion, endings: Endings) -> None:
        super().__init__(deps)
        self.completion = completion
        self.endings = endings

    def run(self, now: datetime | None = None, orphan_grace_seconds: float = ORPHAN_GRACE_SECONDS) -> CleanupReport:
        """Expire active sessions idle for longer than the session timeout in force now (a changed
        UPLOAD_SESSION_TIMEOUT_HOURS applies to every session, not only to those written after the
        change), re-run stalled assemblies, purge finished chunk rows and remove part files no live
        session owns. Never touches a live session's data."""
        now = now or utcnow()
        report = CleanupReport()
        with self.db.session() as tx:
            expired = tx.scalars(  # status is indexed: only active sessions are compared
                select(UploadSession.id).where(
                    UploadSession.status == SessionStatus.ACTIVE,
                    UploadSession.last_updated < now - self.settings.session_timeout,
                )
            ).all()
            stalled = tx.scalars(
                select(UploadSession.id).where(
                    UploadSession.status == SessionStatus.ASSEMBLING,
                    UploadSession.last_updated < now - timedelta(seconds=self.settings.upload.assembly_stall_seconds),
                )
            ).all()
            finished = select(UploadSession.session_id).where(
                UploadSession.status.in_([s.value for s in TERMINAL_STATUSES]), UploadSession.expires_at < now
            )
            purged = tx.execute(delete(UploadChunk).where(UploadChunk.session_id.in_(finished)))
            report.purged_chunk_rows = int(getattr(purged, "rowcount", 0) or 0)
        for row_id in expired:
            upload_id = self.endings.end(
                row_id, SessionStatus.EXPIRED, "session_expired", "The session expired before it completed."
            )[0]
            report.expired_sessions += 1
            log.info(
                "upload session %s expired",
                upload_id,
                extra={"session_id": upload_id, "event": "session_expired"},
            )
        for row_id in stalled:
            try:
                self.completion.assemble(row_id)
                report.reassembled_sessions += 1
            except VidgateError:
                report.failed_assemblies += 1
        report.orphan_uploads_removed = self._sweep_orphans(now, orphan_grace_seconds)
        metrics.CLEANUP_RUNS.inc()
        for action, count in report.model_dump().items():
            if count:
                metrics.CLEANUP.labels(action).inc(count)
        if report.expired_sessions or report.orphan_uploads_removed or report.reassembled_sessions:
            log.info("cleanup: %s", report.model_dump())
        return report

    def _sweep_orphans(self, now: datetime, grace_seconds: float) -> int:
        on_disk = list(self.parts.upload_ids_on_disk())
        if not on_disk:
            return 0
        with self.db.session() as tx:
            live = set(
                tx.scalars(
                    select(UploadSession.id).where(
                        UploadSession.id.in_([row_id for row_id, _ in on_disk]),
                        UploadSession.status.in_([SessionStatus.ACTIVE.value, SessionStatus.ASSEMBLING.value]),
                    )
                ).all()
            )
        removed = 0
        cutoff = now.timestamp() - grace_seconds
        for row_id, mtime in on_disk:
            if row_id not in live and mtime < cutoff:
                self.parts.remove(row_id)
                removed += 1
        return removed
