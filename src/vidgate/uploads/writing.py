"""The one write path of both protocols: a plan, its target in the part store, its sink.

A request that carries bytes (a seed chunk, a tus PATCH) is planned by its protocol
(:mod:`vidgate.uploads.chunked`, :mod:`vidgate.uploads.tus`) into a :class:`WritePlan`; from
there the steps are shared: :meth:`WritePath.open` opens the target (the part at the plan's
offset, or a staging slot) and claims the running file hash, :meth:`WritePath.open_sink` gives
the sink the HTTP edge streams into, and the protocol records the result, then calls
:meth:`WritePath.recorded`, or :meth:`WritePath.abort` when it broke off or was refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial

from vidgate.config import Settings
from vidgate.errors import VidgateError
from vidgate.hashing import Hasher
from vidgate.storage.parts import PartWriter
from vidgate.uploads.ending import Endings
from vidgate.uploads.step import Step, UploadDeps
from vidgate.uploads.writer import ChunkSink
from vidgate.validation.filenames import sanitize_filename
from vidgate.validation.formats import HEAD_BYTES, check_head


class WriteMode(StrEnum):
    DIRECT = "direct"  # straight into the part at the plan's offset
    STAGED = "staged"  # offset unknown yet (chunk size not learnt): a staging slot, placed at assembly
    VERIFY = "verify"  # chunk already received: hash only and compare


@dataclass(frozen=True)
class Checksum:
    """A digest the client announced for this body (tus checksum), and the hasher that checks it."""

    algorithm: str
    digest: bytes
    hasher: Hasher


@dataclass
class WritePlan:
    """Everything decided before a request's bytes are read, for either protocol."""

    row_id: str  # upload_session.id: the key of its part, locks and running hash
    upload_id: str  # the id clients know (seed session id, tus upload id)
    offset: int
    limit: int  # the most bytes this request may bring
    too_large: VidgateError  # raised by the sink when the body goes past ``limit``
    mode: WriteMode = WriteMode.DIRECT
    chunk_index: int = 0
    total_chunks: int = 1
    #: bytes of storage to reserve in the part up front (the whole file when its size is known)
    reserve: int | None = None
    #: the running whole-file hash follows these bytes (they may extend its frontier)
    runs_file_hash: bool = False
    #: the sink hashes the body itself (the seed's chunk hash); tus relies on the file hash
    hash_body: bool = True
    existing_hash: str | None = None  # VERIFY: the hash the chunk was received with
    checksum: Checksum | None = None
    head_check: Callable[[bytes], object] | None = None  # raises to refuse the first bytes
    #: the session was made by this request under a server-chosen id nobody else knows yet:
    #: if the request fails, nobody can resume it, so it is failed and deleted at once
    anonymous_new_session: bool = False
    created: bool = False  # this request created the session
    partial: bool = False  # a tus partial upload (no progress events, not assembled on its own)
    whole_file: bool = False  # the body is the whole file (a seed upload in one chunk)
    file_end: int | None = None  # tus: the upload's length, when known
    user_id: str = ""  # the owner, who gets this request's progress event
    location: str = ""  # where the bytes land, as the chunk row records it
    target: PartWriter | None = None
    frontier_hasher: Hasher | None = None
    sink: ChunkSink | None = None  # the sink open_sink made (its trailing hash, for the frontier)
    locks: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def completes_file(self, size: int) -> bool:
        """Whether ``size`` bytes of this body make the file complete, by the plan alone (its
        record then starts the assembly): a seed upload in one chunk, or a tus body that reaches
        the upload's length. Decides only whether the file's probe starts before the record."""
        if self.mode is not WriteMode.DIRECT or self.partial:
            return False
        return self.whole_file or (self.file_end is not None and self.offset + size == self.file_end)

    def close(self) -> None:
        if self.target is not None:
            self.target.close()
            self.target = None
        self.locks.close()


def first_bytes_check(filename: str, content_type: str | None) -> Callable[[bytes], object]:
    """The check of a file's first bytes against its name and type, before any byte is stored."""
    return partial(check_head, extension=filename.rpartition(".")[2].lower(), content_type=content_type)


def safe_filename(settings: Settings, raw: str | None) -> str:
    """The client's file name, sanitised and checked against the allowed and blocked extensions."""
    return sanitize_filename(
        raw,
        max_length=settings.upload.max_filename_length,
        allowed_extensions=settings.validation.allowed_extensions,
        blocked_extensions=settings.validation.blocked_extensions,
    ).name


class WritePath(Step):
    def __init__(self, deps: UploadDeps, endings: Endings) -> None:
        super().__init__(deps)
        self.endings = endings

    def open(self, plan: WritePlan) -> None:
        """Open the plan's target and claim the running file hash (if these bytes extend it).
        On failure the plan is closed (its locks released) and the error raised."""
        try:
            if plan.mode is WriteMode.DIRECT:
                # a seed chunk of several is placed by its index; tus and one-chunk uploads append
                index = plan.chunk_index if plan.total_chunks > 1 else None
                plan.target = self.parts.open_part(plan.row_id, reserve=plan.reserve, chunk_index=index)
                plan.location = plan.location or self.parts.location(plan.row_id)
                if plan.runs_file_hash:
                    plan.frontier_hasher = self.frontier.claim(plan.row_id, plan.offset)
            elif plan.mode is WriteMode.STAGED:
                plan.location, plan.target = self.parts.stage(plan.row_id, f"{plan.chunk_index}.chunk")
        except BaseException:
            plan.close()
            raise

    def open_sink(self, plan: WritePlan) -> ChunkSink:
        # No answer needs the running file hash: it may finish after the answer (the next
        # claim, a catch-up and assembly wait for it). A seed chunk's own hash and a tus
        # Upload-Checksum are in or decide the answer: those are waited for.
        plan.sink = ChunkSink(
            plan.target,
            plan.offset,
            plan.limit,
            plan.too_large,
            extra_hashers=[plan.checksum.hasher if plan.checksum else None],
            hash_body=plan.hash_body,
            fsync=self.settings.upload.fsync,
            head_check=plan.head_check,
            head_bytes=HEAD_BYTES,
            trailing_hasher=plan.frontier_hasher,
        )
        return plan.sink

    def recorded(self, plan: WritePlan, size: int) -> None:
        """The bytes are on record: move the running hash past them and release the plan."""
        if plan.target is not None:
            plan.target.recorded()
        if plan.frontier_hasher is not None:
            self.frontier.commit(plan.row_id, size, plan.sink.trailing if plan.sink is not None else None)
        plan.close()

    def abort(self, plan: WritePlan, error: BaseException | None) -> bool:
        """Undo a write that broke off or was refused; True when that failed the session.

        A refusal of the content itself (``error.fails_session``) fails the whole session, as
        does any failure of a session nobody else knows the id of yet."""
        if plan.frontier_hasher is not None:
            self.frontier.rollback(plan.row_id)
        if plan.mode is WriteMode.STAGED and plan.location:
            self.parts.discard_staged(plan.location)
        plan.close()
        refused = isinstance(error, VidgateError) and error.fails_session
        if not (refused or plan.anonymous_new_session):
            return False
        code = error.code if isinstance(error, VidgateError) else "upload_interrupted"
        message = error.message if isinstance(error, VidgateError) else "The upload broke off."
        self.endings.fail(plan.row_id, code, message)
        return True
