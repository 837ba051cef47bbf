"""Where bytes live: the part store (uploads in progress) and the blob store (finished files).

``BlobStore`` is the interface for finished, content-addressed files; ``LocalBlobStore``
keeps them on local disk (an S3-compatible store is the planned second implementation).
``PartStore`` (:mod:`vidgate.storage.parts`) is the interface for uploads in progress;
``LocalPartStore`` writes chunks into local part files at their offsets.
"""

from vidgate.storage.base import BlobStore
from vidgate.storage.local import LocalBlobStore, LocalPartStore, PartFile, storage_errors
from vidgate.storage.parts import PartStore, PartWriter

__all__ = ["BlobStore", "LocalBlobStore", "LocalPartStore", "PartFile", "PartStore", "PartWriter", "storage_errors"]
