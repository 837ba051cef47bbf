"""Dependencies injected into routes: the wired services (:mod:`vidgate.wiring`) and the authenticated user."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from vidgate.auth import Principal
from vidgate.errors import Unauthenticated
from vidgate.roles import Permission
from vidgate.wiring import Services as Services  # routes name it from here (api/events.py, api/health.py)


async def get_services(request: Request) -> Services:
    """Async although it does not wait: FastAPI would run a plain function in the thread pool,
    and a thread hand-off costs more than this whole dependency."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key header")


def api_key_in(headers: Headers) -> str | None:
    """The key of ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (None: neither header),
    read as FastAPI's HTTPBearer and APIKeyHeader read them. An Authorization header that is
    not a bearer key, or two headers naming different keys, is refused rather than half-ignored."""
    authorization = headers.get("authorization")
    api_key = headers.get("x-api-key") or None
    bearer = None
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthenticated("The Authorization header must be 'Bearer KEY'.")
        bearer = credentials.strip()
    if bearer is not None and api_key is not None and bearer != api_key:
        raise Unauthenticated("Authorization and X-API-Key name different keys; send one.")
    return bearer or api_key


async def current_user(
    request: Request,
    services: ServicesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    """Resolve ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (:func:`api_key_in`; the
    two dependencies declare the schemes in the OpenAPI schema): from the key cache on the
    event loop, or from the database in the thread pool."""
    key = api_key_in(request.headers)
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
