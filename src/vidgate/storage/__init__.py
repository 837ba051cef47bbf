"""Where bytes live: the part store (uploads in progress) and the blob store (finished files).

``BlobStore`` is the interface for finished, content-addressed files; ``LocalBlobStore``
keeps them on local disk, ``S3BlobStore`` (:mod:`vidgate.storage.s3`) in an S3-compatible
bucket (:func:`vidgate.wiring.make_blob_store` picks one by ``STORAGE_BACKEND``).
``PartStore`` (:mod:`vidgate.storage.parts`) is the interface for uploads in progress;
``LocalPartStore`` writes chunks into local part files at their offsets.
"""

from vidgate.storage.base import BlobStore
from vidgate.storage.local import LocalBlobStore, LocalPartStore, PartFile, storage_errors
from vidgate.storage.parts import PartStore, PartWriter

__all__ = ["BlobStore", "LocalBlobStore", "LocalPartStore", "PartFile", "PartStore", "PartWriter", "storage_errors"]
