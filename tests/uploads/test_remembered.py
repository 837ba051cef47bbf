"""The bounded map of facts read once: the oldest put goes first, a forgotten key reads as unknown."""

from __future__ import annotations

from vidgate.uploads.remembered import Remembered


def test_the_oldest_put_is_forgotten_first() -> None:
    remembered: Remembered[str, int] = Remembered(limit=2)
    remembered.put("a", 1)
    remembered.put("b", 2)
    remembered.put("a", 3)  # put again: now the newest
    remembered.put("c", 4)
    assert (remembered.get("a"), remembered.get("b"), remembered.get("c")) == (3, None, 4)
    remembered.forget("a")
    remembered.forget("missing")
    assert remembered.get("a") is None and remembered.get("c") == 4
