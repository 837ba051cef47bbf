"""Size, chunk and priority limits, all from settings, checked as early as possible."""

from __future__ import annotations

from dataclasses import dataclass

from vidgate.config import Settings
from vidgate.errors import (
    ChunkIndexOutOfRange,
    ChunkTooLarge,
    FileTooLarge,
    InvalidParameter,
    TooManyChunks,
)


@dataclass(frozen=True)
class UploadLimits:
    max_file_size: int
    max_chunk_size: int
    max_chunks: int
    min_priority: int
    max_priority: int

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            max_file_size=int(settings.upload.max_file_size),
            max_chunk_size=int(settings.upload.max_chunk_size),
            max_chunks=settings.upload.max_chunks,
            min_priority=settings.processing.min_priority,
            max_priority=settings.processing.max_priority,
        )

    def check_priority(self, priority: int) -> None:
        if not self.min_priority <= priority <= self.max_priority:
            raise InvalidParameter(
                f"priority must be between {self.min_priority} and {self.max_priority}, got {priority}."
            )

    def check_total_chunks(self, total_chunks: int) -> None:
        if total_chunks < 1:
            raise InvalidParameter(f"total_chunks must be at least 1, got {total_chunks}.")
        if total_chunks > self.max_chunks:
            raise TooManyChunks(f"total_chunks is {total_chunks}; at most {self.max_chunks} chunks are allowed.")

    def check_chunk_index(self, chunk_index: int, total_chunks: int) -> None:
        if not 0 <= chunk_index < total_chunks:
            raise ChunkIndexOutOfRange(
                f"chunk_index {chunk_index} is outside 0..{total_chunks - 1} for a {total_chunks}-chunk upload."
            )

    def check_file_size(self, file_size: int) -> None:
        if file_size > self.max_file_size:
            raise FileTooLarge(f"The file is {file_size} bytes; the limit is {self.max_file_size} bytes.")

    def check_chunk_size(self, chunk_size: int) -> None:
        if chunk_size > self.max_chunk_size:
            raise ChunkTooLarge(f"chunk_size is {chunk_size} bytes; the limit is {self.max_chunk_size} bytes.")
        if chunk_size < 1:
            raise InvalidParameter(f"chunk_size must be positive, got {chunk_size}.")

    def check_announced(self, total_chunks: int, chunk_size: int | None, file_size: int | None) -> None:
        """Refuse an upload whose announcement alone already breaks a limit."""
        self.check_total_chunks(total_chunks)
        if file_size is not None:
            self.check_file_size(file_size)
        if chunk_size is not None:
            self.check_chunk_size(chunk_size)
            if (total_chunks - 1) * chunk_size >= self.max_file_size:
                raise FileTooLarge(
                    f"{total_chunks} chunks of {chunk_size} bytes exceed the limit of {self.max_file_size} bytes."
                )
        if file_size is not None and total_chunks > 1:
            if file_size > total_chunks * self.max_chunk_size:
                raise ChunkTooLarge(
                    f"{file_size} bytes in {total_chunks} chunks needs chunks over the limit of "
                    f"{self.max_chunk_size} bytes."
                )
            if chunk_size is not None and not (total_chunks - 1) * chunk_size < file_size <= total_chunks * chunk_size:
                raise InvalidParameter(
                    f"file_size {file_size} does not fit {total_chunks} chunks of {chunk_size} bytes."
                )
