"""after_answer: a request's hand-overs to the in-process queue wait for its answer, or are made
at once when the request fails (no answer of ours would carry them)."""

from __future__ import annotations

import asyncio

import pytest

from vidgate.api.receiving import after_answer


def test_hand_overs_kept_in_the_block_run_as_the_answers_background_task() -> None:
    made: list[str] = []
    with after_answer() as later:
        later.later.append(lambda: made.append("video-1"))
    assert made == []  # not before the answer
    task = later.task()
    assert task is not None
    asyncio.run(task())
    assert made == ["video-1"] and later.later == []


def test_a_request_without_hand_overs_has_no_background_task() -> None:
    with after_answer() as later:
        pass
    assert later.task() is None


def test_a_failing_request_makes_its_hand_overs_at_once() -> None:
    made: list[str] = []
    with pytest.raises(RuntimeError), after_answer() as later:
        later.later.append(lambda: made.append("video-2"))
        raise RuntimeError("the answer failed")
    assert made == ["video-2"] and later.later == []
