"""Cold runs of the whole pipeline (every scenario in params.yaml, fresh copy, new store,
no DVC cache) give byte-identical metrics, results, plot data and summary on CPU: a cold
run reproduces the project's own files, and a scenario run under two different CPU
kernel families (ATen's capability) writes the same bytes (core/numerics.py)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from projects import ROOT, copy_project, git, run_cli, run_tool

pytestmark = pytest.mark.slow

OUTPUTS = ("metrics", "results", "plots")


def _digests(proj: Path) -> dict[str, str]:
    files = [p for d in OUTPUTS for p in sorted((proj / d).glob("*")) if p.is_file()]
    files += [proj / "reports" / "summary.md", *sorted((proj / "maps").glob("*.csv"))]
    return {str(p.relative_to(proj)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _cold_run(dest: Path) -> dict[str, str]:
    proj = copy_project(dest)
    for d in (*OUTPUTS, "reports", "maps"):
        shutil.rmtree(proj / d)  # nothing of an earlier run survives
    git(proj, "init", "-q")
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "clone")
    r = run_tool(proj, "dvc", "repro", "--force", timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return _digests(proj)


@pytest.mark.timeout(3600)
def test_a_cold_pipeline_run_reproduces_the_projects_outputs(tmp_path: Path) -> None:
    """The project's files came from another cold run (a `dvc repro --force` here or on the
    committer's machine): this one must write them again, byte for byte."""
    run = _cold_run(tmp_path / "run")
    scenarios = {p.stem for p in (ROOT / "conf" / "scenario").glob("*.yaml")}
    assert {Path(k).stem for k in run if k.startswith("metrics/")} == {*scenarios, "summary"}
    assert run == _digests(ROOT)


def _scenario_bytes(prepared: Path, dest: Path, **env: str) -> dict[str, bytes]:
    proj = shutil.copytree(prepared, dest)
    r = run_cli(proj, "run", "scenario=xor", "seeds=[0,1]", "--quiet", **env)
    assert r.returncode == 0, r.stderr
    return {d: (proj / d / f"xor{ext}").read_bytes() for d, ext in OUTPUT_FILES}


OUTPUT_FILES = (("metrics", ".json"), ("results", ".json"), ("plots", ".csv"))


def test_two_cpu_kernel_families_write_the_same_bytes(prepared: Path, tmp_path: Path) -> None:
    """ATEN_CPU_CAPABILITY set as another machine would have it (no vector kernels; AVX2):
    losslab pins the kernels, so xor's outputs are identical. The control: unpinned
    (LOSSLAB_CPU_CAPABILITY=native), the capability alone changes xor's loss curves."""
    plain = _scenario_bytes(prepared, tmp_path / "default", ATEN_CPU_CAPABILITY="default")
    avx2 = _scenario_bytes(prepared, tmp_path / "avx2", ATEN_CPU_CAPABILITY="avx2")
    assert plain == avx2
    native = _scenario_bytes(
        prepared, tmp_path / "native", ATEN_CPU_CAPABILITY="default", LOSSLAB_CPU_CAPABILITY="native"
    )
    assert native["plots"] != avx2["plots"]
