"""Dependencies injected into routes: the wired services and the authenticated user."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from vidgate.auth import KeyCache, Principal
from vidgate.config import Settings
from vidgate.db.engine import Database
from vidgate.errors import Unauthenticated
from vidgate.events.bus import EventBus
from vidgate.events.hub import Hub
from vidgate.events.publisher import EventPublisher
from vidgate.processing.queue import TaskQueue
from vidgate.processing.service import ProcessingService
from vidgate.roles import Permission
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
    keys: KeyCache
    hub: Hub | None = None
    warmed_up: bool = False  # set once start-up warm-up ended (see vidgate.app._warm_up); /ready waits for it
    warm_up_failure: str | None = None  # which warm-up step failed and why; /ready reports it

    def close(self) -> None:
        if self.queue is not None:
            self.queue.close()
        if self.bus is not None:
            self.bus.close()
        self.db.dispose()


async def get_services(request: Request) -> Services:
    """Async although it does not wait: FastAPI would run a plain function in the thread pool,
    and a thread hand-off costs more than this whole dependency."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key header")


async def current_user(
    request: Request,
    services: ServicesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    """Resolve ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``: from the key cache on the
    event loop, or from the database in the thread pool. An Authorization header that is not a
    bearer key, or two headers naming different keys, is refused rather than half-ignored."""
    if bearer is None and request.headers.get("authorization") is not None:
        raise Unauthenticated("The Authorization header must be 'Bearer KEY'.")
    if bearer is not None and api_key is not None and bearer.credentials != api_key:
        raise Unauthenticated("Authorization and X-API-Key name different keys; send one.")
    key = bearer.credentials if bearer else api_key
    cached = services.keys.cached(key)
    if cached is not None:
        return cached
    return await run_in_threadpool(services.keys.authenticate, key)


CurrentUser = Annotated[Principal, Depends(current_user)]


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """The one place roles are enforced: a dependency that authenticates the caller and refuses
    (403 ``insufficient_role``, naming the roles that may) a key whose role lacks ``permission``."""

    async def dependency(principal: CurrentUser) -> Principal:
        principal.check(permission)
        return principal

    dependency.__name__ = f"require_{permission.value}"
    return dependency


#: A caller whose key may read (every role may).
Reader = Annotated[Principal, Depends(require(Permission.READ))]
#: A caller whose key may upload (uploader, admin).
Uploader = Annotated[Principal, Depends(require(Permission.UPLOAD))]
#: A caller whose key may record review decisions (reviewer, admin).
Reviewer = Annotated[Principal, Depends(require(Permission.REVIEW))]
