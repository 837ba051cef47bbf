"""The malloc arena cap: which variables ``serve`` starts with, and when it re-executes itself
for them (the processes themselves are checked in tests/test_cli.py)."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from vidgate import cli
from vidgate.allocator import ENVIRONMENT, arena_environment


def test_the_cap_travels_in_the_environment_unless_zero_or_the_operator_set_one() -> None:
    assert arena_environment(2, {}) == {ENVIRONMENT: "2"}
    assert arena_environment(0, {}) == {}
    assert arena_environment(2, {ENVIRONMENT: "6"}) == {}


class Exec(Exception):
    """os.execv, stopped before it replaces the test's process."""


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def execv(path: str, argv: list[str]) -> None:
        calls.append(argv)
        raise Exec

    monkeypatch.setattr(os, "execv", execv)
    # a copy: ``_run_as_module`` sets the variable itself, which monkeypatch would not undo, and
    # the leaked cap reached the next test's servers on the same worker
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    monkeypatch.setattr(sys, "argv", ["vidgate", "serve", "--port", "9"])
    return calls


def _main(monkeypatch: pytest.MonkeyPatch, *, script: str | None, spec: str | None) -> None:
    main = types.ModuleType("__main__")
    if script is not None:
        main.__file__ = script
    main.__spec__ = types.SimpleNamespace(name=spec) if spec else None  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "__main__", main)


def test_the_console_script_and_a_module_run_without_the_cap_start_again_with_it(
    monkeypatch: pytest.MonkeyPatch, execs: list[list[str]]
) -> None:
    for script, spec in ((str(Path(sys.executable).parent / "vidgate"), None), (None, "vidgate.__main__")):
        _main(monkeypatch, script=script, spec=spec)
        monkeypatch.delenv(ENVIRONMENT, raising=False)
        with pytest.raises(Exec):
            cli._run_as_module({ENVIRONMENT: "2"})
        assert execs.pop() == [sys.executable, "-m", "vidgate", "serve", "--port", "9"]
        assert os.environ[ENVIRONMENT] == "2"


def test_a_module_run_with_the_cap_or_another_program_is_left_as_it_is(
    monkeypatch: pytest.MonkeyPatch, execs: list[list[str]]
) -> None:
    _main(monkeypatch, script=None, spec="vidgate.__main__")
    monkeypatch.setenv(ENVIRONMENT, "2")
    cli._run_as_module({ENVIRONMENT: "2"})
    cli._run_as_module({})
    _main(monkeypatch, script="/usr/bin/pytest", spec=None)
    monkeypatch.delenv(ENVIRONMENT)
    cli._run_as_module({ENVIRONMENT: "2"})
    _main(monkeypatch, script=None, spec="pytest.__main__")
    cli._run_as_module({ENVIRONMENT: "2"})
    assert execs == [] and ENVIRONMENT not in os.environ
