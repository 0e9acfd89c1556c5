"""The scripts the GitHub workflow calls, run here as the workflow runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from projects import ROOT, cli_env, copy_project, git


def _run(cwd: Path, *cmd: str, **env: str) -> subprocess.CompletedProcess:
    env_ = cli_env(cwd, **env)
    return subprocess.run(list(cmd), cwd=cwd, env=env_, capture_output=True, text=True, timeout=300)


def test_the_workflow_is_actionlint_clean_and_a_broken_one_is_not(tmp_path: Path) -> None:
    r = _run(ROOT, str(ROOT / ".ci" / "actionlint"))
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "bad.yml"
    steps = "    steps:\n      - run: echo ${{ github.nope }}\n"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n" + steps)
    r = _run(ROOT, str(ROOT / ".ci" / "actionlint"), str(bad))
    assert r.returncode == 1 and f"{bad}:6:" in r.stdout and '"nope" is not defined' in r.stdout


def test_report_writes_junit_job_summary_and_a_comment_with_the_metrics_diff(tmp_path: Path) -> None:
    proj = copy_project(tmp_path / "proj", init_git=True)
    git(proj, "branch", "base")  # the pull request's target: the committed results
    metrics = proj / "metrics" / "linear.json"
    doc = json.loads(metrics.read_text())
    doc["adam"]["success_rate"] = 0.6  # the pull request changed a number
    metrics.write_text(json.dumps(doc, indent=2) + "\n")
    summary = tmp_path / "step_summary.md"
    r = _run(proj, sys.executable, ".ci/report.py", "--junit", "reports/junit.xml", "--base", "base",
             GITHUB_STEP_SUMMARY=str(summary))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    cases = ET.parse(proj / "reports" / "junit.xml").getroot().findall(".//testcase")
    assert len(cases) == sum(1 for _ in (proj / "conf" / "variant").glob("*/*.yaml"))
    text = summary.read_text()
    assert text.startswith(f"### losslab reproduction: {len(cases)} passed, 0 failed")
    row = next(line for line in text.splitlines() if line.startswith("| linear | broken | diverged"))
    assert "| diverged 5/5" in row and row.endswith("| pass |")
    comment = (proj / "reports" / "ci-comment.md").read_text().splitlines()
    assert comment[0] == "<!-- losslab reproduce -->"
    diff = [line for line in comment if "adam.success_rate" in line]
    assert diff and "0.6" in diff[0] and "0.2" in diff[0], "\n".join(comment)


@pytest.mark.slow  # npm install of vega and vega-lite the first time (~20 s)
def test_the_dvc_plot_template_draws_every_seed_and_leaves_out_inf_and_nan(tmp_path: Path) -> None:
    """`dvc plots show` renders through Vega from a CDN; here the same spec is rendered headless
    with Vega in node: one line per variant and seed, inf/nan rows filtered out, not fatal."""
    tools = ROOT / ".ci" / ".tools"
    if not (tools / "node_modules" / "vega-lite").is_dir():
        npm = [
            "npm",
            "install",
            "--prefix",
            str(tools),
            "--no-audit",
            "--no-fund",
            "--silent",
            "vega@5",
            "vega-lite@5",
        ]
        subprocess.run(npm, check=True, capture_output=True, timeout=300)
    spec = tmp_path / "spec.json"
    r = _run(ROOT, str(Path(sys.executable).with_name("dvc")), "plots", "show", "--json", "plots/linear.csv")
    assert r.returncode == 0, r.stderr
    spec.write_text(r.stdout)
    drawn = json.loads(_run(ROOT, "node", str(ROOT / ".ci" / "plot-check.cjs"), str(spec)).stdout)
    csv_rows = (ROOT / "plots" / "linear.csv").read_text().splitlines()[1:]
    finite = [row for row in csv_rows if row.rsplit(",", 1)[1] not in ("inf", "-inf", "nan")]
    assert drawn["rows"] == len(csv_rows) and drawn["points"] == len(finite) < len(csv_rows)
    assert drawn["lines"] == 5 * 5  # every variant × seed
