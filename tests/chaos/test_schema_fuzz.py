"""schemathesis against the app's own OpenAPI schema, over real HTTP to a real server: more
than 1,000 generated requests (valid, invalid, and stateful sequences) must get no 5xx and
only answers the schema documents (statuses, content types, bodies, headers, Allow).

The check "positive_data_acceptance" is left out: a schema-valid upload of random bytes is
rightly refused (it is not a video), which that heuristic counts as a failure. The statuses
the generic lists do not know (413, and tus's 412) are declared in schemathesis.toml; tus
bodies are sent as raw bytes (st_hooks.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningServer, make_settings, running_server

CONFIG = Path(__file__).with_name("schemathesis.toml")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fuzzed_server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")) as server:
        yield server


def test_generated_requests_get_no_5xx_and_match_the_schema(fuzzed_server: RunningServer) -> None:
    st = Path(sys.executable).with_name("st")
    run = subprocess.run(
        [
            str(st),
            "--config-file",
            str(CONFIG),
            "run",
            f"{fuzzed_server.base_url}/openapi.json",
            "--header",
            f"X-API-Key: {fuzzed_server.key_for('fuzz')}",
            "--max-examples",
            "80",
            "--seed",
            "1",
            "--exclude-checks",
            "positive_data_acceptance",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.chaos.st_hooks", "PYTHONPATH": str(ROOT)},
    )
    generated = re.search(r"(\d+) generated", run.stdout)
    assert run.returncode == 0, run.stdout[-6000:]
    assert generated is not None and int(generated.group(1)) >= 1000, run.stdout[-2000:]
