"""FastAPI factory and lifespan: the app, its routes, middlewares and background rounds over the
services :mod:`vidgate.wiring` builds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread
import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException

from vidgate import __version__, web
from vidgate.api import events as events_api
from vidgate.api import hashes, health, library, me, tus, uploads, videos
from vidgate.api.content_shortcut import ContentShortcut
from vidgate.api.errors import install_error_handlers
from vidgate.api.http_protocol import ZeroCopyHttpToolsProtocol
from vidgate.api.ws_protocol import FramedWebSocketsProtocol
from vidgate.auth import count_active_keys, create_key
from vidgate.config import DatabaseBackend, Settings, load_settings
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import utcnow
from vidgate.errors import Unauthenticated
from vidgate.events.hub import Hub
from vidgate.events.webhooks import WebhookSender
from vidgate.gc_schedule import GcSchedule, freeze_startup_heap
from vidgate.library.retention import sweep_library_periodically
from vidgate.logs import redact_server_logs
from vidgate.metrics import HttpMetricsMiddleware, watch_gc_pauses
from vidgate.processing.dispatch import run_dispatcher
from vidgate.roles import Role
from vidgate.validation.pipeline import warm_up_probes
from vidgate.wiring import Services, build_services

log = logging.getLogger(__name__)


class SchemaOutdated(Exception):
    """The database is not at the newest migration."""


def prepare_database(settings: Settings, db: Database) -> None:
    """SQLite (embedded) migrates itself; PostgreSQL must be migrated with ``vidgate migrate``."""
    if settings.database_backend is DatabaseBackend.SQLITE:
        migrate.upgrade(db)
        return
    current = migrate.current_revision(db)
    if current != migrate.HEAD:
        raise SchemaOutdated(f"The database is at revision {current}, not {migrate.HEAD}: run `vidgate migrate` first.")


def ensure_dev_key(settings: Settings, db: Database) -> str | None:
    """On the embedded default with no key yet, create an admin key for user 'dev' (the desk can
    upload and review with it) and save it beside the data."""
    if settings.database_backend is not DatabaseBackend.SQLITE or not settings.auth.create_dev_key:
        return None
    if count_active_keys(db):
        return None
    key, _ = create_key(db, "dev", label="development key created at first start", role=Role.ADMIN)
    path = Path(settings.server.data_dir) / "dev-api-key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


async def _every(seconds: float, work: Callable[[], object], what: str) -> None:
    """Run ``work`` in a thread now and then every ``seconds``; a failed round is logged, not fatal."""
    while True:
        try:
            await asyncio.to_thread(work)
        except Exception:
            log.exception("%s failed", what)
        await asyncio.sleep(seconds)


class WarmUpFailed(Exception):
    """A start-up warm-up step did not do what it is there for."""


async def _warm_up(services: Services, app: FastAPI) -> None:
    """Pay at start-up what the first uploads would: the warm probe server (a process that
    imports PyAV, ~0.4 s of CPU), FastAPI's per-route set-up (built on a router's first match,
    ~80 ms), anyio's worker threads (imported on first use) and the compiled key lookup.
    ``/ready`` says ready once this has ended. A failed step is logged as a warning and
    reported by ``/ready``, but never fails start-up nor readiness: what could not be warmed is
    set up by the first request that needs it."""
    steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("the validation probe server", lambda: asyncio.to_thread(warm_up_probes)),
        ("the routes", lambda: _match_every_route(app)),
        ("the key lookup", lambda: anyio.to_thread.run_sync(_look_up_unknown_key, services)),
    ]
    try:
        for what, step in steps:
            try:
                await step()
            except Exception as exc:
                services.warm_up_failure = f"warming up {what} failed: {type(exc).__name__}: {exc}"[:300]
                log.warning("%s (the first requests set it up instead)", services.warm_up_failure)
                log.debug("warm-up failure", exc_info=True)
                return
    finally:
        services.warmed_up = True


#: under ``/v1/``, which the page mounted at ``/`` never claims (see ``vidgate.web.API_PATHS``)
WARM_UP_PATH = "/v1/.vidgate-warm-up"


async def _match_every_route(app: FastAPI) -> None:
    """Send the router (not the middlewares: no metrics, no logs) a request for a path no route
    has, so that it sets up every route on the way to its 404. Anything but that 404 means the
    request was claimed by some route, so not every route was visited: raises WarmUpFailed."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "OPTIONS",
        "scheme": "http",
        "path": WARM_UP_PATH,
        "raw_path": WARM_UP_PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
        "app": app,
        "state": {},
    }
    statuses: list[int] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))

    try:
        await app.router(scope, receive, send)
    except HTTPException as exc:  # how a Starlette router inside an app answers (its handlers render it)
        statuses.append(exc.status_code)
    if statuses != [404]:
        raise WarmUpFailed(f"OPTIONS {WARM_UP_PATH} was answered with {statuses or 'nothing'}, not the 404 of no route")


def _look_up_unknown_key(services: Services) -> None:
    with contextlib.suppress(Unauthenticated):
        services.keys.authenticate("vg_warm-up")


async def _periodic_dispatch(services: Services) -> None:
    """Offer queued videos the broker has not taken (it was down, lost them, or the process
    restarted) and queue again jobs whose lease ran out (:mod:`vidgate.processing.dispatch`)."""
    if services.settings.processing.queue == "inline":
        await asyncio.to_thread(services.processing.requeue_abandoned)
    await run_dispatcher(services.processing)


async def _deliver_webhooks(services: Services) -> None:
    sender = WebhookSender(services.db, services.settings.webhook)
    try:
        await _every(services.settings.webhook.poll_interval_seconds, sender.deliver_due, "webhook delivery round")
    finally:
        sender.close()


async def _sweep_events(services: Services) -> None:
    """Delete stored events older than ``WEBSOCKET_EVENT_RETENTION_SECONDS`` (replay horizon)."""
    retention = timedelta(seconds=services.settings.websocket.event_retention_seconds)

    def sweep() -> None:
        swept = services.events.store.sweep(utcnow() - retention)
        if swept:
            log.info("event store: %d events past retention deleted", swept)

    await _every(services.settings.upload.cleanup_interval_seconds, sweep, "event store sweep")


async def _periodic_cleanup(services: Services) -> None:
    """Sweep at start (finishing what a crashed process left) and then every interval."""
    await _every(services.settings.upload.cleanup_interval_seconds, services.cleanup.run, "periodic cleanup")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, start_queue=True)
        prepare_database(settings, services.db)
        services.hub = Hub(
            settings.websocket.queue_size,
            settings.websocket.heartbeat_interval,
            services.events.store,
            settings.websocket.catch_up_interval_seconds,
            settings.websocket.reorder_grace_seconds,
        )
        app.state.services = services
        freeze_startup_heap()
        watch_gc_pauses()
        collections = GcSchedule(settings.server.gc_full_interval_seconds)
        collections.start()
        tasks = [
            asyncio.create_task(_warm_up(services, app)),
            asyncio.create_task(_periodic_cleanup(services)),
            asyncio.create_task(_periodic_dispatch(services)),
            asyncio.create_task(_deliver_webhooks(services)),
            asyncio.create_task(_sweep_events(services)),
            asyncio.create_task(sweep_library_periodically(services)),
            asyncio.create_task(collections.run()),
        ]
        if settings.websocket.enabled and services.bus is not None:
            tasks.append(asyncio.create_task(services.bus.listen(services.hub.deliver, services.hub.bus_connected)))
            tasks.append(asyncio.create_task(services.hub.watch_store()))
            tasks.append(asyncio.create_task(services.hub.heartbeats()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.to_thread(services.close)
            collections.stop()

    app = FastAPI(
        title="vidgate",
        version=__version__,
        summary="Resumable video uploads with validation, dedup, processing and live progress.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(tus.TusProtocolMiddleware)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.server.cors_origins,
        allow_methods=["GET", "POST", "HEAD", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=tus.EXPOSED_HEADERS,
        max_age=3600,
    )
    app.add_middleware(ContentShortcut)  # outermost of ours: a player's seeks skip the rest (its module says why)
    app.include_router(library.router)
    app.include_router(health.router)
    app.include_router(uploads.router)
    app.include_router(tus.router)
    app.include_router(videos.router)
    app.include_router(me.router)
    app.include_router(hashes.router)
    if settings.websocket.enabled:
        app.include_router(events_api.router)
    web.install(app)
    return app


def uvicorn_config(
    settings: Settings, *, host: str | None = None, port: int | None = None, log_level: str | None = None
) -> uvicorn.Config:
    """How ``vidgate serve`` (and the tests) run the app: uvloop, httptools with ``sendfile`` for
    stored files and prebuilt WebSocket frames for speed, and WebSocket pings every heartbeat
    interval so a client that vanished without closing (no pong within one more interval) is
    dropped."""
    heartbeat = settings.websocket.heartbeat_interval
    config = uvicorn.Config(
        create_app(settings),
        host=host or settings.server.host,
        port=port or settings.server.port,
        loop="uvloop",
        http=ZeroCopyHttpToolsProtocol,  # httptools, plus zero-copy file bodies (api/http_protocol.py)
        ws=FramedWebSocketsProtocol,  # one write per socket for all it has queued (api/ws_protocol.py)
        ws_ping_interval=heartbeat,
        ws_ping_timeout=heartbeat,
        ws_per_message_deflate=settings.websocket.compression,  # WEBSOCKET_COMPRESSION
        log_level=(log_level or settings.server.log_level).lower(),
        # JSON logs: uvicorn's own loggers propagate to the root handler set by configure_logging
        log_config=None if settings.server.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        timeout_graceful_shutdown=10,
    )
    redact_server_logs()  # uvicorn configured its loggers just now
    return config
