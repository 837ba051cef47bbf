"""What every step of an upload stands on, given once: settings, database, part store, locks,
the running file hash and the limits (as tus-node-server's handlers share a ``BaseHandler``)."""

from __future__ import annotations

from dataclasses import dataclass

from vidgate.config import Settings
from vidgate.db.engine import Database
from vidgate.storage.parts import PartStore
from vidgate.uploads.frontier import HashFrontier
from vidgate.uploads.locks import Locker
from vidgate.validation.limits import UploadLimits


@dataclass(frozen=True)
class UploadDeps:
    """Built once by :func:`vidgate.wiring.build_services` and shared by every step."""

    settings: Settings
    db: Database
    parts: PartStore
    locker: Locker
    frontier: HashFrontier


class Step:
    """A step of an upload: the shared dependencies as attributes."""

    def __init__(self, deps: UploadDeps) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.db = deps.db
        self.parts = deps.parts
        self.locker = deps.locker
        self.frontier = deps.frontier
        self.limits = UploadLimits.from_settings(deps.settings)
