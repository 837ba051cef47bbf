"""Full garbage collections on a schedule, not whenever the heap has grown by a quarter.

CPython collects its oldest generation when the objects that survived into it have grown by
25 % since the last full collection. With start-up frozen (:func:`freeze_startup_heap`) the
live heap of a busy server is its connections: with 1,000 sockets
open, every few seconds of uploads grew it enough for another full collection, and each stops
every thread, the event loop included, for as long as walking every connection's objects
takes (``vidgate_gc_pause_seconds``; one pause of 564 ms in a 20 s ``bench/ws_latency.py`` row
on a loaded machine). Those pauses were the tail of event latency.

The serve process therefore turns automatic full collections off and runs one every
``VIDGATE_GC_FULL_INTERVAL_SECONDS`` (0 keeps CPython's own rule). The young generations are
collected as before, so cycles that die young (most of them) go at once; what reaches the
oldest generation and then becomes garbage waits for the next scheduled collection, which
bounds the memory it can hold to what the process frees in one interval.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

#: a threshold the oldest generation's count never reaches: no automatic full collection
_NEVER = 2**31 - 1


def freeze_startup_heap() -> None:
    """Move what start-up allocated (modules, settings, models, compiled statements) out of the
    garbage collector's reach: full collections then walk only what serving creates, which keeps
    their pauses, the tail of the event latency, short."""
    gc.collect()
    gc.freeze()


class GcSchedule:
    """Turns automatic full collections off while at least one schedule of the process is
    started (the tests run several servers inside one process), and back on when the last
    one stops."""

    _started = 0
    _original: tuple[int, int, int] | None = None

    def __init__(self, interval_seconds: float) -> None:
        self.interval_seconds = interval_seconds
        self.active = False

    def start(self) -> None:
        if self.interval_seconds <= 0 or self.active:
            return
        if GcSchedule._started == 0:
            GcSchedule._original = gc.get_threshold()
            young, middle, _ = GcSchedule._original
            gc.set_threshold(young, middle, _NEVER)
        GcSchedule._started += 1
        self.active = True

    def stop(self) -> None:
        if not self.active:
            return
        self.active = False
        GcSchedule._started -= 1
        if GcSchedule._started == 0 and GcSchedule._original is not None:
            gc.set_threshold(*GcSchedule._original)

    def collect(self) -> float:
        """One full collection now, on the calling thread; its seconds."""
        started = time.perf_counter()
        found = gc.collect()
        seconds = time.perf_counter() - started
        log.debug("scheduled full collection: %d unreachable objects, %.1f ms", found, seconds * 1000)
        return seconds

    async def run(self) -> None:
        """Every interval, one full collection on the event loop (in a thread it would stop the
        loop all the same: a collection holds the interpreter lock throughout)."""
        if not self.active:
            return
        while True:
            await asyncio.sleep(self.interval_seconds)
            self.collect()
