"""Liveness (``/health``), readiness (``/ready``) and Prometheus metrics (``/metrics``).

All three answer without an API key, as load balancers and scrapers expect; none of them
reveals anything about uploads beyond counts. ``METRICS_TOKEN`` puts ``/metrics`` behind a
bearer token of its own (scrapers support one; API keys are for users).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from vidgate import __version__, metrics
from vidgate.api.deps import Services, ServicesDep
from vidgate.api.schemas import ErrorEnvelope
from vidgate.errors import Unauthenticated

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    version: str


class Check(BaseModel):
    ok: bool
    detail: str | None = None


class Readiness(BaseModel):
    """``ready`` while every check is ok, except that a warm-up which ended but failed (reported
    in ``checks.warm_up``) does not make the server not ready."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]


@router.get("/health", response_model=Health, summary="The process is up")
async def health() -> Health:
    return Health(status="ok", version=__version__)


def _check_all(services: Services) -> Readiness:
    checks: dict[str, Check] = {}

    def run(name: str, probe: Callable[[], object]) -> None:
        try:
            probe()
            checks[name] = Check(ok=True)
        except Exception as exc:
            checks[name] = Check(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])

    def database() -> None:
        with services.db.read_engine.connect() as connection:  # SQLite: no write lock for a read
            connection.execute(text("SELECT 1"))

    warmed_up = services.warmed_up  # read once: warm-up may end while the other checks run
    if not warmed_up:
        checks["warm_up"] = Check(ok=False, detail="starting: the validation probe server is warming up")
    elif services.warm_up_failure is not None:
        checks["warm_up"] = Check(ok=False, detail=services.warm_up_failure)
    else:
        checks["warm_up"] = Check(ok=True)
    run("database", database)
    run("storage", services.blobs.check)
    settings = services.settings
    if settings.processing.queue == "celery" or settings.event_bus == "redis" or settings.upload_locks == "redis":
        import redis

        url = settings.websocket.redis_url or settings.celery.broker_url

        def ping() -> None:
            client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
            try:
                client.ping()
            finally:
                client.close()

        run("redis", ping)
    # a warm-up that ended but failed is reported, not blocking: the server serves (its first requests
    # set up what was not warmed), and a load balancer must not keep it out of rotation for that
    ready = all(check.ok for name, check in checks.items() if name != "warm_up" or not warmed_up)
    return Readiness(status="ready" if ready else "not_ready", checks=checks)


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    summary="Warmed up; database, storage and (distributed mode) Redis reachable",
)
async def ready(services: ServicesDep, response: Response) -> Readiness:
    readiness = await run_in_threadpool(_check_all, services)
    if readiness.status != "ready":
        response.status_code = 503
    return readiness


METRICS_TOKEN_NEEDED = "The metrics need the metrics token: send Authorization: Bearer <METRICS_TOKEN>."


@router.get(
    "/metrics",
    summary="Prometheus metrics (with METRICS_TOKEN set: Authorization: Bearer <token>)",
    response_class=Response,
    responses={401: {"model": ErrorEnvelope}},
)
async def prometheus_metrics(
    services: ServicesDep, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Response:
    token = services.settings.metrics.token
    if not metrics.token_matches(token.get_secret_value() if token else None, authorization):
        raise Unauthenticated(METRICS_TOKEN_NEEDED)
    processing = services.settings.processing
    priorities = range(processing.min_priority, processing.max_priority + 1)
    body = await run_in_threadpool(metrics.render, services.db, priorities)
    return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)
