"""tus creation: a new upload (creation, creation-defer-length) or a final one (concatenation).

The HTTP edge (:mod:`vidgate.api.tus`) parses the headers; this module makes the session row
and, for a final upload, its part from the partial uploads' parts.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vidgate.auth import Principal
from vidgate.db.models import SessionStatus, UploadSession, new_id, utcnow
from vidgate.errors import FileTooLarge, InvalidParameter, SessionNotActive, SessionNotFound
from vidgate.uploads.completion import Completion
from vidgate.uploads.models import TusUpload
from vidgate.uploads.records import Records, insert_session
from vidgate.uploads.step import Step, UploadDeps
from vidgate.uploads.tus_store import Identity, TusStore, to_upload
from vidgate.uploads.writing import safe_filename

log = logging.getLogger(__name__)


class TusCreation(Step):
    def __init__(self, deps: UploadDeps, records: Records, completion: Completion, store: TusStore) -> None:
        super().__init__(deps)
        self.records = records
        self.completion = completion
        self.store = store

    def create(
        self,
        principal: Principal,
        *,
        length: int | None,
        metadata: dict[str, str],
        metadata_header: str | None,
        partial_upload: bool = False,
    ) -> TusUpload:
        """A new upload of ``length`` bytes (None: announced later, creation-defer-length)."""
        max_size = self.limits.max_file_size
        if length is not None and length > max_size:
            raise FileTooLarge(f"Upload-Length {length} exceeds the limit of {max_size} bytes (Tus-Max-Size).")
        filename, content_type, priority = self._describe(metadata, partial_upload)
        with self.db.session() as tx:
            row = self._new_row(
                tx,
                principal,
                metadata_header,
                session_id=secrets.token_hex(16),
                filename=filename,
                content_type=content_type,
                priority=priority,
                file_size=length,
                total_chunks=0,
                chunks_received=0,
                bytes_received=0,
                status=SessionStatus.ACTIVE,
                concat="partial" if partial_upload else None,
            )
            self.records.log_now(tx.connection(), row, "upload_started", "tus upload created", row.created_at)
            upload_id, row_id = row.session_id, row.id
            if not partial_upload:
                self.records.started(tx, principal.user_id, upload_id, filename, 1, length)
        self.store.remember(upload_id, Identity(row_id, principal.user_id, row.concat))
        log.info(
            "tus upload %s created by %s (%s bytes)",
            upload_id,
            principal.username,
            length,
            extra={"session_id": upload_id, "event": "session_created", "user": principal.username},
        )
        if length == 0 and not partial_upload:
            self.store.complete(row_id)
            return self.store.get(principal, upload_id)
        return to_upload(row, self.settings.session_timeout)  # as it was committed: no read of its own

    def concatenate(
        self, principal: Principal, part_ids: list[str], metadata: dict[str, str], metadata_header: str | None
    ) -> TusUpload:
        """A final upload made of complete partial uploads, in the order given (concatenation)."""
        if not part_ids:
            raise InvalidParameter("Upload-Concat: final needs at least one partial upload.")
        filename, content_type, priority = self._describe(metadata, False)
        with self.db.session() as tx:
            rows = {
                r.session_id: r for r in tx.scalars(select(UploadSession).where(UploadSession.session_id.in_(part_ids)))
            }
            parts: list[tuple[str, int]] = []
            for part_id in part_ids:
                row = rows.get(part_id)
                if row is None or row.user_id != principal.user_id or row.protocol != "tus":
                    raise SessionNotFound(f"No upload {part_id!r}.")
                if row.concat != "partial":
                    raise InvalidParameter(f"Upload {part_id!r} is not a partial upload (Upload-Concat: partial).")
                if (
                    row.status is not SessionStatus.ACTIVE
                    or row.file_size is None
                    or row.bytes_received != row.file_size
                ):
                    raise InvalidParameter(f"Partial upload {part_id!r} is not complete; finish it first.")
                parts.append((row.id, row.file_size))
        total = sum(size for _, size in parts)
        if total > self.limits.max_file_size:
            raise FileTooLarge(f"The parts add up to {total} bytes; the limit is {self.limits.max_file_size}.")
        final_id = secrets.token_hex(16)
        with contextlib.ExitStack() as locks:
            for part_row_id, _ in parts:
                locks.enter_context(self.locker.hold(part_row_id, "tus"))
            row_id = new_id()
            self.parts.concatenate(row_id, parts)
            now = utcnow()
            with self.db.session() as tx:
                for part_row in tx.scalars(
                    select(UploadSession).where(UploadSession.session_id.in_(part_ids)).with_for_update()
                ):
                    if part_row.status is not SessionStatus.ACTIVE:
                        raise SessionNotActive(f"Partial upload {part_row.session_id!r} is {part_row.status.value}.")
                    part_row.status = SessionStatus.COMPLETED
                    part_row.completed_at = part_row.last_updated = now
                row = self._new_row(
                    tx,
                    principal,
                    metadata_header,
                    id=row_id,
                    session_id=final_id,
                    filename=filename,
                    content_type=content_type,
                    priority=priority,
                    file_size=total,
                    total_chunks=len(parts),
                    chunks_received=len(parts),
                    bytes_received=total,
                    status=SessionStatus.ASSEMBLING,
                    concat="final",
                    concat_parts=part_ids,
                )
                message = f"tus final upload of {len(parts)} parts"
                self.records.log_now(tx.connection(), row, "upload_started", message, now)
                self.records.started(tx, principal.user_id, final_id, filename, 1, total)
        for part_row_id, _ in parts:
            self.parts.remove(part_row_id)
        self.completion.assemble(row_id)
        return self.store.get(principal, final_id)

    def _new_row(self, tx: Session, principal: Principal, metadata_header: str | None, **fields: Any) -> UploadSession:
        """A tus session row of ``principal`` made in ``tx``: what every tus row shares, plus ``fields``."""
        now = utcnow()
        return insert_session(
            tx.connection(),
            user_id=principal.user_id,
            username=principal.username,
            upload_options={},
            protocol="tus",
            upload_metadata=metadata_header,
            created_at=now,
            last_updated=now,
            expires_at=now + timedelta(seconds=self.settings.session_timeout_seconds),
            **fields,
        )

    def _describe(self, metadata: dict[str, str], partial_upload: bool) -> tuple[str, str | None, int]:
        """File name, type and priority from Upload-Metadata, checked like the seed API's fields."""
        raw_priority = metadata.get("priority")
        priority = self.settings.processing.default_priority
        if raw_priority:
            try:
                priority = int(raw_priority)
            except ValueError as exc:
                raise InvalidParameter(f"Upload-Metadata priority must be an integer, got {raw_priority!r}.") from exc
        self.limits.check_priority(priority)
        kind = metadata.get("filetype") or metadata.get("type")
        content_type = kind[:100] if kind else None
        if partial_upload:  # named by its final upload; clients send partials without metadata
            return "partial", content_type, priority
        return safe_filename(self.settings, metadata.get("filename") or metadata.get("name")), content_type, priority
