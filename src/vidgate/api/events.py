"""``/ws``: live events for the authenticated user's sessions and videos.

Authenticate with ``Authorization: Bearer KEY`` / ``X-API-Key`` or, from a browser (which
cannot set headers on a WebSocket), ``?api_key=KEY``. Choose what to receive with query
parameters (``?subscribe=all``, ``?session_id=...``, ``?video_id=...``, each with an optional
``&since=N``) or messages::

    {"action": "subscribe", "session_id": "...", "since": 12}
    {"action": "subscribe", "video_id": "..."}
    {"action": "subscribe", "all": true}
    {"action": "unsubscribe", "session_id": "..."}

``sequence`` numbers each user's events (all their sessions and videos) without gaps;
``since`` first replays the stored events numbered after N (of that subscription), so a client
that reconnects with the last number it saw loses nothing and gets nothing twice (events are
kept for ``WEBSOCKET_EVENT_RETENTION_SECONDS``). ``{"action": "subscribe", "all": true,
"since": N}`` and ``?subscribe=all&since=N`` replay everything of the user's. Replay is sent
with back-pressure (however long, it never closes the client); a ``since`` older than what is
kept gets an ``events_expired`` event first (fetch the state over HTTP). A client that falls
``WEBSOCKET_QUEUE_SIZE`` live events behind is closed with code 4008; a bad key closes with 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from vidgate.api.deps import Services
from vidgate.auth import Principal, authenticate
from vidgate.errors import VidgateError
from vidgate.events.hub import CLOSE_UNAUTHENTICATED, Connection
from vidgate.events.schema import Error, ErrorData, to_client

router = APIRouter(tags=["events"])


def _key(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return websocket.headers.get("x-api-key") or websocket.query_params.get("api_key")


async def _send_error(connection: Connection, code: str, message: str) -> None:
    await connection.websocket.send_text(to_client(Error(data=ErrorData(code=code, message=message))))


async def _subscribe(services: Services, principal: Principal, connection: Connection, request: dict[str, Any]) -> None:
    raw_since = request.get("since")
    since: int | None = None
    if raw_since is not None:
        try:
            since = int(raw_since)
        except (TypeError, ValueError):
            since = -1
        if since < 0:
            message = f"since must be a sequence number (0 or more), got {raw_since!r}."
            await _send_error(connection, "invalid_subscription", message)
            return
    subject: str | None = None
    try:
        if request.get("all"):
            pass
        elif request.get("session_id"):
            session_id = str(request["session_id"])
            await run_in_threadpool(services.uploads.get_session, principal, session_id)
            subject = f"session:{session_id}"
        elif request.get("video_id"):
            video_id = str(request["video_id"])
            await run_in_threadpool(services.processing.owned_video, principal, video_id)
            subject = f"video:{video_id}"
        else:
            await _send_error(connection, "invalid_subscription", "Name a session_id, a video_id, or all: true.")
            return
    except VidgateError as exc:
        await _send_error(connection, exc.code, exc.message)
        return
    hub = services.hub
    assert hub is not None
    hub.subscribe(connection, subject, since)  # with since, the subject joins once its past is queued


async def _read(services: Services, principal: Principal, connection: Connection, websocket: WebSocket) -> None:
    while True:
        text = await websocket.receive_text()
        try:
            request = json.loads(text)
            action = request.get("action")
        except (ValueError, AttributeError):
            await _send_error(connection, "invalid_message", 'Send JSON objects such as {"action": "subscribe"}.')
            continue
        if action == "subscribe":
            await _subscribe(services, principal, connection, request)
        elif action == "unsubscribe":
            if request.get("all"):
                connection.unfollow(None)
            for key, prefix in (("session_id", "session"), ("video_id", "video")):
                if request.get(key):
                    connection.unfollow(f"{prefix}:{request[key]}")
        else:
            await _send_error(connection, "invalid_message", f"Unknown action {action!r}.")


@router.websocket("/ws")
async def events_socket(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    try:
        principal = await run_in_threadpool(authenticate, services.db, _key(websocket))
    except VidgateError:
        await websocket.close(code=CLOSE_UNAUTHENTICATED, reason="unknown or missing API key")
        return
    await websocket.accept()
    hub = services.hub
    assert hub is not None
    connection = hub.connect(principal.user_id, websocket)
    params = websocket.query_params
    initial: list[dict[str, Any]] = []
    if params.get("subscribe") == "all":
        initial.append({"all": True, "since": params.get("since")})
    for key in ("session_id", "video_id"):
        for value in params.getlist(key):
            initial.append({key: value, "since": params.get("since")})
    pump = asyncio.create_task(hub.pump(connection))
    reader = asyncio.create_task(_initial_then_read(services, principal, connection, websocket, initial))
    dropped = asyncio.create_task(connection.closed.wait())  # a send blocked on a full buffer must not hang us
    try:
        done, _ = await asyncio.wait({pump, reader, dropped}, return_when=asyncio.FIRST_COMPLETED)
        done.discard(dropped)
        for task in done:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                task.result()
    finally:
        hub.disconnect(connection)
        for task in (pump, reader, dropped):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task
        if connection.close_code is not None:
            # The close frame waits behind what the client has not read; do not wait for it forever.
            with contextlib.suppress(RuntimeError, TimeoutError, WebSocketDisconnect):
                await asyncio.wait_for(
                    websocket.close(code=connection.close_code, reason="the client could not keep up"), 2
                )


async def _initial_then_read(
    services: Services,
    principal: Principal,
    connection: Connection,
    websocket: WebSocket,
    initial: list[dict[str, Any]],
) -> None:
    for request in initial:
        if request.get("since") is None:
            request.pop("since", None)
        await _subscribe(services, principal, connection, request)
    await _read(services, principal, connection, websocket)
