"""Prometheus metrics of one vidgate process (``/metrics`` on the API, ``vidgate worker
--metrics-port`` on a Celery worker).

Counters live in the default registry of the process that does the work: uploads and
cleanup in the API, processing stages where jobs run (the API with the inline queue, the
worker with Celery). The queue length is read from the database at scrape time, since the
``video`` table is the queue's outbox and every process sees the same number.
"""

from __future__ import annotations

import bisect
import gc
import hmac
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidgate.db.engine import Database
from vidgate.db.models import Video, VideoStatus

__all__ = ["CONTENT_TYPE_LATEST", "render"]

UPLOADS = Counter(
    "vidgate_uploads",
    "Uploads that ended, by protocol and outcome (completed, duplicate, failed, cancelled, expired).",
    ["protocol", "outcome"],
)
UPLOAD_FAILURES = Counter("vidgate_upload_failures", "Refused or failed uploads, by error code.", ["code"])
UPLOAD_DURATION = Histogram(
    "vidgate_upload_duration_seconds",
    "From session creation to the stored, validated file.",
    ["protocol"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
UPLOAD_BYTES = Counter("vidgate_upload_received_bytes", "Bytes received into uploads.", ["protocol"])
CLEANUP = Counter(
    "vidgate_cleanup",
    "What cleanup sweeps did: expired_sessions, reassembled_sessions, failed_assemblies, purged_chunk_rows, "
    "orphan_uploads_removed.",
    ["action"],
)
#: every action of CleanupReport, shown from the start (at 0) so a sweep that found nothing yet is visible
CLEANUP_ACTIONS = (
    "expired_sessions",
    "reassembled_sessions",
    "failed_assemblies",
    "purged_chunk_rows",
    "orphan_uploads_removed",
)
for _action in CLEANUP_ACTIONS:
    CLEANUP.labels(_action)
CLEANUP_RUNS = Counter("vidgate_cleanup_runs", "Cleanup sweeps run by this process (serve, beat, vidgate cleanup).")
REDISPATCHED = Counter(
    "vidgate_processing_redispatched",
    "Videos handed to the broker again: lease_lapsed (the job's worker stopped renewing it) or "
    "dispatch_timeout (the broker did not start it in time).",
    ["reason"],
)
for _reason in ("lease_lapsed", "dispatch_timeout"):
    REDISPATCHED.labels(_reason)
DEDUP_LOOKUPS = Counter("vidgate_dedup_lookups", "Completed uploads checked against stored content.")
DEDUP_HITS = Counter("vidgate_dedup_hits", "Completed uploads whose content was already stored.")
WEBSOCKET_CONNECTIONS = Gauge("vidgate_websocket_connections", "Open /ws connections of this process.")
PROCESSING_JOBS = Counter("vidgate_processing_jobs", "Processing attempts by outcome.", ["outcome"])
PROCESSING_STAGE = Histogram(
    "vidgate_processing_stage_seconds",
    "Time spent per pipeline stage and per whole job (stage=total).",
    ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
S3_REQUESTS = Counter(
    "vidgate_s3_requests",
    "HTTP requests to the object store (STORAGE_BACKEND=s3), retries included, by operation.",
    ["operation"],
)
S3_ERRORS = Counter(
    "vidgate_s3_errors",
    "Failed object-store requests by operation and kind: connection, throttled (SlowDown ...), server (5xx), "
    "client (4xx other than a missing key).",
    ["operation", "kind"],
)
HTTP_REQUESTS = Counter(
    "vidgate_http_requests", "HTTP requests by method, route template and status.", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "vidgate_http_request_duration_seconds", "HTTP request time by route template.", ["method", "route"]
)


class _QueueCollector(Collector):
    """Videos waiting for or in processing, per priority, read from the database; every
    priority of the accepted range is shown, at 0 when none waits (a series that vanished
    would read as "no data", not "empty")."""

    def __init__(self, db: Database, priorities: Iterable[int]) -> None:
        self.db = db
        self.priorities = list(priorities)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "vidgate_processing_queue_length",
            "Videos queued or processing, by priority.",
            labels=["priority", "status"],
        )
        with self.db.session() as session:
            rows = session.execute(
                select(Video.priority, Video.status, func.count())
                .where(Video.status.in_([VideoStatus.QUEUED.value, VideoStatus.PROCESSING.value]))
                .group_by(Video.priority, Video.status)
            ).all()
        waiting = (VideoStatus.QUEUED, VideoStatus.PROCESSING)
        counts = {(priority, status): 0 for priority in self.priorities for status in waiting}
        for priority, status, count in rows:
            counts[(priority, VideoStatus(status))] = count
        for (priority, status), count in sorted(counts.items()):
            family.add_metric([str(priority), status.value], count)
        yield family


#: upper bounds (seconds) of the garbage-collector pause histogram's buckets
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses(Collector):
    """``vidgate_gc_pause_seconds``: every collection of this process, timed by a
    ``gc.callbacks`` hook, by generation. A full collection stops every thread (the event loop
    included), so its pauses are the tail of request and event latency.

    The hook keeps plain lists and never takes a lock: a collection can start inside any
    allocation, a metric's own locked update included, and a locked observe there would wait
    for itself. The lists become a histogram when scraped."""

    def __init__(self) -> None:
        self._started = 0.0
        self._counts = [[0] * (len(GC_PAUSE_BUCKETS) + 1) for _ in range(3)]
        self._sums = [0.0, 0.0, 0.0]

    def watch(self) -> None:
        if self._hook not in gc.callbacks:
            gc.callbacks.append(self._hook)

    def _hook(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = info["generation"]
        self._counts[generation][bisect.bisect_left(GC_PAUSE_BUCKETS, pause)] += 1
        self._sums[generation] += pause

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "vidgate_gc_pause_seconds",
            "Garbage-collector pauses of this process, by generation.",
            labels=["generation"],
        )
        for generation in range(3):
            counts, cumulative, buckets = list(self._counts[generation]), 0, []
            for bound, count in zip((*GC_PAUSE_BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
            family.add_metric([str(generation)], buckets, self._sums[generation])
        yield family


GC_PAUSES = GcPauses()


def watch_gc_pauses() -> None:
    """Time this process's collections from now on (twice ``perf_counter`` per collection)."""
    GC_PAUSES.watch()


def render(db: Database, priorities: Iterable[int] = range(1, 11)) -> bytes:
    """The process's metrics plus the queue length from ``db`` (every priority in
    ``priorities``), in the text exposition format."""
    from prometheus_client import REGISTRY

    queue = CollectorRegistry()
    queue.register(_QueueCollector(db, priorities))
    queue.register(GC_PAUSES)
    return generate_latest(REGISTRY) + generate_latest(queue)


def token_matches(expected: str | None, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <expected>`` (always, when no token is
    set). Compared in constant time."""
    if expected is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


class HttpMetricsMiddleware:
    """Counts requests by route template (not raw path, so ids do not explode the labels)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen = StatusSeen(send)
        try:
            await self.app(scope, receive, seen)
        finally:
            route = scope.get("route")
            count_request(scope["method"], getattr(route, "path", None) or "unmatched", seen.status, started)


class StatusSeen:
    """An ASGI send that remembers the response's status (500 until one was sent)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


#: the series of each (method, route, status) once looked up: ``labels()`` takes a lock per call
_REQUEST_SERIES: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def count_request(method: str, template: str, status: int, started: float) -> None:
    """One answered request (``started``: its ``time.perf_counter()``), in
    ``vidgate_http_requests`` and ``vidgate_http_request_duration_seconds``."""
    series = _REQUEST_SERIES.get((method, template, status))
    if series is None:
        series = (HTTP_REQUESTS.labels(method, template, str(status)), HTTP_DURATION.labels(method, template))
        _REQUEST_SERIES[(method, template, status)] = series
    series[0].inc()
    series[1].observe(time.perf_counter() - started)
