"""Dependencies injected into routes: the wired services and the authenticated user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from vidgate.auth import Principal, authenticate
from vidgate.config import Settings
from vidgate.db.engine import Database
from vidgate.events.bus import EventBus
from vidgate.events.hub import Hub
from vidgate.events.publisher import EventPublisher
from vidgate.processing.queue import TaskQueue
from vidgate.processing.service import ProcessingService
from vidgate.uploads.service import UploadService
from vidgate.uploads.tus import TusService


@dataclass
class Services:
    """Everything the app wires at start-up (see :func:`vidgate.app.build_services`)."""

    settings: Settings
    db: Database
    uploads: UploadService
    processing: ProcessingService
    queue: TaskQueue | None
    bus: EventBus | None
    events: EventPublisher
    tus: TusService
    hub: Hub | None = None

    def close(self) -> None:
        if self.queue is not None:
            self.queue.close()
        if self.bus is not None:
            self.bus.close()
        self.db.dispose()


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key header")


def current_user(
    services: ServicesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    """Resolve ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (runs in the thread pool)."""
    key = bearer.credentials if bearer else api_key
    return authenticate(services.db, key)


CurrentUser = Annotated[Principal, Depends(current_user)]
