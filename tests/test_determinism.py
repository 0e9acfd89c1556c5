"""Three cold runs of the whole pipeline (every scenario in params.yaml, fresh copy, new
store, no DVC cache) give byte-identical metrics, plot data and summary on CPU."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from projects import ROOT, copy_project, git, run_tool

pytestmark = pytest.mark.slow

OUTPUTS = ("metrics", "results", "plots")


def _digests(proj: Path) -> dict[str, str]:
    files = [p for d in OUTPUTS for p in sorted((proj / d).glob("*")) if p.is_file()]
    files.append(proj / "reports" / "summary.md")
    return {str(p.relative_to(proj)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _cold_run(dest: Path) -> dict[str, str]:
    proj = copy_project(dest)
    for d in (*OUTPUTS, "reports"):
        shutil.rmtree(proj / d)  # nothing of an earlier run survives
    git(proj, "init", "-q")
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "clone")
    r = run_tool(proj, "dvc", "repro", "--force", timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return _digests(proj)


@pytest.mark.timeout(5400)
def test_three_cold_pipeline_runs_are_byte_identical(tmp_path: Path) -> None:
    runs = [_cold_run(tmp_path / f"run{i}") for i in range(3)]
    scenarios = {p.stem for p in (ROOT / "conf" / "scenario").glob("*.yaml")}
    assert {Path(k).stem for k in runs[0] if k.startswith("metrics/")} == scenarios
    assert runs[0] == runs[1] == runs[2]
