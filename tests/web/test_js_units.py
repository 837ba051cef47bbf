"""The page's JavaScript modules (model, /ws reconnection, checksums, formatting, error
extraction) under Node's own test runner, plus the build: the committed bundle is what web/
builds, byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.web.conftest import ROOT, WEB_DIR
from vidgate.web import STATIC_DIR


def test_javascript_unit_tests(node: str) -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "web" / "js").glob("*.test.mjs"))
    assert len(files) >= 2
    run = subprocess.run([node, "--test", *files], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout


def test_the_committed_bundle_is_what_the_sources_build(node: str, web_modules: Path, tmp_path: Path) -> None:
    subprocess.run([node, "build.mjs", "--outdir", str(tmp_path)], cwd=WEB_DIR, check=True, timeout=120)
    built = sorted(p.name for p in tmp_path.iterdir())
    assert built == ["app.js", "index.html", "style.css"]
    for name in built:
        assert (tmp_path / name).read_bytes() == (STATIC_DIR / name).read_bytes(), (
            f"{name} is stale: run scripts/build-web and commit src/vidgate/web/static"
        )
