"""The page's JavaScript modules (model, /ws reconnection, checksums, formatting, error
extraction) under Node's own test runner, plus the build: the committed bundle is what web/
builds, byte for byte."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.web.conftest import ROOT, WEB_DIR
from vidgate.errors import all_error_classes
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


def test_the_pages_refusal_codes_are_the_servers(node: str) -> None:
    """The page says "Refused" for exactly the server's codes answered 400, 401, 403, 413, 415
    or 422 (the file or request as sent will never be taken), "Failed" for every other code: a
    code added to vidgate.errors must be placed here too."""
    script = (
        "import('./web/src/errors.js').then((m) => console.log(JSON.stringify("
        "{codes: [...m.REFUSAL_CODES], statuses: [...m.REFUSAL_STATUSES]})))"
    )
    run = subprocess.run([node, "-e", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    page = json.loads(run.stdout)
    statuses = set(page["statuses"])
    assert statuses == {400, 401, 403, 413, 415, 422}
    assert sorted(page["codes"]) == sorted(cls.code for cls in all_error_classes() if cls.status in statuses)
