"""Where bytes live: the local part area (uploads in progress) and the blob store.

``BlobStore`` is the interface for finished, content-addressed files: ``LocalBlobStore``
keeps them on local disk, ``S3BlobStore`` (:mod:`vidgate.storage.s3`) in an S3-compatible
bucket; :func:`make_blob_store` builds the one ``STORAGE_BACKEND`` names. Part files sit on
local disk, in :class:`PartStore`, because chunks are written into them at random offsets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vidgate.storage.base import BlobStore
from vidgate.storage.local import LocalBlobStore, PartStore, translate_os_error

if TYPE_CHECKING:
    from vidgate.config import Settings

__all__ = ["BlobStore", "LocalBlobStore", "PartStore", "make_blob_store", "translate_os_error"]


def make_blob_store(settings: Settings) -> BlobStore:
    """The blob store of ``STORAGE_BACKEND`` (no request is made: :meth:`BlobStore.check` does)."""
    if settings.storage.backend == "s3":
        from vidgate.storage.s3 import S3BlobStore  # imports boto3: only when used

        return S3BlobStore(settings.storage)
    return LocalBlobStore(settings.storage_dir)
