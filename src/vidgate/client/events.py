"""Waiting for a video's processing to end, by following its events on ``/ws``.

Events only wake the client up; the video's state on the API decides. That makes the wait
immune to races (processing may end before the socket is open), to stale events replayed
from an earlier attempt, and to a dropped connection (it reconnects with ``since`` = the last
sequence seen, so nothing is missed). Where there is no usable socket (``/ws`` switched off),
it falls back to polling the API.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from vidgate.client.errors import WaitTimeout
from vidgate.client.models import ProcessingOutcome

log = logging.getLogger(__name__)

# Events after which the video's state is worth checking at once.
TERMINAL_EVENTS = frozenset({"processing_completed", "processing_failed", "duplicate_detected"})
MAX_MESSAGE = 64 << 20  # a processing_completed event carries the whole result

Check = Callable[[], ProcessingOutcome | None]


def websocket_url(base_url: str, **params: str | int) -> str:
    scheme, _, rest = base_url.partition("://")
    ws_scheme = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme)
    return f"{ws_scheme}://{rest.rstrip('/')}/ws?{urlencode(params)}"


class _Clock:
    def __init__(self, timeout: float | None) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout

    def remaining(self, cap: float) -> float:
        if self.deadline is None:
            return cap
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"processing did not end within {self.timeout:g} s")
        return min(left, cap)


def wait_for_video(
    base_url: str,
    headers: Mapping[str, str],
    video_id: str,
    check: Check,
    *,
    timeout: float | None = None,
    recheck_seconds: float = 15.0,
    poll_seconds: float = 1.0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> ProcessingOutcome:
    """Block until ``check()`` reports an outcome; events on ``/ws`` say when to ask."""
    clock = _Clock(timeout)
    since = 0
    failures = 0
    while True:
        url = websocket_url(base_url, video_id=video_id, since=since)
        try:
            with connect(
                url, additional_headers=dict(headers), open_timeout=clock.remaining(10.0), max_size=MAX_MESSAGE
            ) as socket:
                failures = 0
                # Subscribed (with replay from `since`) before this check: nothing can slip between.
                while (outcome := check()) is None:
                    recheck_at = time.monotonic() + recheck_seconds
                    while time.monotonic() < recheck_at:
                        try:
                            raw = socket.recv(timeout=clock.remaining(max(recheck_at - time.monotonic(), 0.01)))
                        except TimeoutError:
                            break
                        event = json.loads(raw)
                        if not isinstance(event, dict):
                            continue
                        if event.get("video_id") == video_id and not event.get("session_id"):
                            since = max(since, int(event.get("sequence") or 0))
                        if on_event is not None:
                            on_event(event)
                        if event.get("event_type") in TERMINAL_EVENTS or event.get("event_type") == "error":
                            break
                return outcome
        except InvalidStatus:
            # Refused handshake: a bad key (check() raises it clearly) or /ws switched off (poll).
            return _poll(check, clock, poll_seconds)
        except (ConnectionClosed, InvalidHandshake, OSError) as exc:
            failures += 1
            log.debug("event socket lost (%s); reconnecting with since=%d", exc, since)
            if failures > 5:
                return _poll(check, clock, poll_seconds)
            time.sleep(clock.remaining(min(0.2 * 2**failures, 5.0)))


def _poll(check: Check, clock: _Clock, interval: float) -> ProcessingOutcome:
    while (outcome := check()) is None:
        time.sleep(clock.remaining(interval))  # raises WaitTimeout once the deadline has passed
    return outcome
