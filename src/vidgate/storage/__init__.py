"""Where bytes live: the local part area (uploads in progress) and the blob store.

``BlobStore`` is the interface for finished, content-addressed files; ``LocalBlobStore``
keeps them on local disk (an S3-compatible store is the planned second implementation).
Part files always sit on local disk, in :class:`PartStore`, because chunks are written
into them at random offsets.
"""

from vidgate.storage.base import BlobStore
from vidgate.storage.local import LocalBlobStore, PartStore, translate_os_error

__all__ = ["BlobStore", "LocalBlobStore", "PartStore", "translate_os_error"]
