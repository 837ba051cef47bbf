"""vidgate.metrics' garbage-collector pause histogram: every collection is counted by its
generation, with its time."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry, generate_latest

from vidgate.metrics import GcPauses


def exposition(collector: GcPauses) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    samples: dict[str, float] = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_each_collection_is_counted_by_generation_with_its_time() -> None:
    pauses = GcPauses()
    pauses.watch()
    pauses.watch()  # once only
    try:
        for _ in range(3):
            gc.collect()
        gc.collect(0)
    finally:
        gc.callbacks.remove(pauses._hook)
    assert pauses._hook not in gc.callbacks
    samples = exposition(pauses)
    assert samples['vidgate_gc_pause_seconds_count{generation="2"}'] >= 3
    assert samples['vidgate_gc_pause_seconds_count{generation="0"}'] >= 1
    assert samples['vidgate_gc_pause_seconds_bucket{generation="2",le="+Inf"}'] >= 3
    assert samples['vidgate_gc_pause_seconds_sum{generation="2"}'] > 0
