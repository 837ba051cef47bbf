"""The arena cap reaches this process's allocator and the processes it starts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from vidgate.allocator import ENVIRONMENT


def _run(code: str, env_extra: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter (the cap is process-wide), its last line printed."""
    env = {k: v for k, v in os.environ.items() if k != ENVIRONMENT} | (env_extra or {})
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_cap_is_set_and_handed_to_children() -> None:
    code = """
        import subprocess, sys
        from vidgate.allocator import limit_malloc_arenas
        assert limit_malloc_arenas(2)
        print(subprocess.run([sys.executable, "-c", "import os; print(os.environ['MALLOC_ARENA_MAX'])"],
                             capture_output=True, text=True, check=True).stdout.strip())
    """
    assert _run(code) == "2"


def test_zero_and_an_operators_own_value_leave_the_allocator_alone() -> None:
    code = """
        import os
        from vidgate.allocator import limit_malloc_arenas
        print(limit_malloc_arenas(0), limit_malloc_arenas(2), os.environ.get("MALLOC_ARENA_MAX"))
    """
    assert _run(code) == "False True 2"
    assert _run(code, {ENVIRONMENT: "6"}) == "False False 6"
