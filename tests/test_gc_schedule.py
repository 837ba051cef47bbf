"""vidgate.gc_schedule: while a schedule runs, no automatic full collection happens (young ones
do), one runs every interval, and the process's thresholds come back when the last schedule
of the process stops."""

from __future__ import annotations

import asyncio
import gc

from vidgate.gc_schedule import GcSchedule
from vidgate.metrics import GcPauses


def full_collections_during(work: object) -> tuple[int, int]:
    """(full, young) collections while ``work()`` runs."""
    counts = [0, 0]

    def hook(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            counts[0 if info["generation"] == 2 else 1] += 1

    gc.callbacks.append(hook)
    try:
        work()  # type: ignore[operator]
    finally:
        gc.callbacks.remove(hook)
    return counts[0], counts[1]


def churn() -> None:
    """Many container objects that survive young collections, then die in cycles."""
    kept: list[list[object]] = []
    for n in range(300_000):
        cell: list[object] = [n]
        cell.append(cell)
        kept.append(cell)
        if len(kept) > 50_000:
            kept.clear()


def test_no_automatic_full_collection_while_started_and_thresholds_restored() -> None:
    before = gc.get_threshold()  # a server of this test process may already hold a schedule
    gc.set_threshold(700, 10, 10)  # CPython's own rule, for the baseline
    try:
        gc.collect()
        full, young = full_collections_during(churn)
    finally:
        gc.set_threshold(*before)
    assert full >= 1 and young > 0  # what CPython's own rule does with this churn
    first, second = GcSchedule(300), GcSchedule(300)
    first.start()
    second.start()  # two servers in one process
    try:
        assert gc.get_threshold()[2] > 10**9
        full, young = full_collections_during(churn)
        assert full == 0 and young > 0
        first.stop()
        assert gc.get_threshold()[2] > 10**9  # the other schedule still runs
    finally:
        first.stop()
        second.stop()
    assert gc.get_threshold() == before


def test_a_zero_interval_leaves_cpythons_rule() -> None:
    before = gc.get_threshold()
    schedule = GcSchedule(0)
    schedule.start()
    assert not schedule.active and gc.get_threshold() == before
    assert asyncio.run(asyncio.wait_for(schedule.run(), 1)) is None  # returns at once


def test_the_schedule_collects_every_interval() -> None:
    pauses = GcPauses()
    schedule = GcSchedule(0.05)
    schedule.start()
    pauses.watch()
    try:

        async def until_three() -> float:
            task = asyncio.create_task(schedule.run())
            began = asyncio.get_running_loop().time()
            while sum(pauses._counts[2]) < 3 and asyncio.get_running_loop().time() - began < 10:
                await asyncio.sleep(0.01)
            task.cancel()
            return asyncio.get_running_loop().time() - began

        took = asyncio.run(until_three())
    finally:
        gc.callbacks.remove(pauses._hook)
        schedule.stop()
    assert sum(pauses._counts[2]) >= 3  # the schedule's (automatic ones are off)
    assert took >= 3 * 0.05
