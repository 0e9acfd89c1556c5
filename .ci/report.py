"""The reproduction's verdicts for CI: JUnit XML, the job summary, a pull-request comment.

    .venv/bin/python .ci/report.py --junit reports/junit.xml [--base main]

Runs the same checks as `losslab verify` (every scenario in params.yaml against its
variants' expectations) and writes
- the JUnit file (one test case per scenario × variant; a miss says observed vs expected);
- reports/ci-summary.md: the verdict table and the summary figure's place, appended to the
  job summary when GITHUB_STEP_SUMMARY is set (GitHub Actions);
- reports/ci-comment.md: the same table plus `dvc metrics diff` against the base branch
  (`--base`, e.g. the pull request's target), for .ci/pr-comment.
Exits 1 when a check fails, like `losslab verify`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from losslab.core.config import project_root
from losslab.core.files import atomic_write
from losslab.core.knobs import scenarios
from losslab.report.junit import junit_xml
from losslab.report.tables import markdown_table
from losslab.verify import check_scenario

MARKER = "<!-- losslab reproduce -->"  # the comment's first line: how .ci/pr-comment finds it


def metrics_diff(root: Path, base: str) -> str:
    """`dvc metrics diff` of the workspace against `base` (origin/<base> when that exists),
    over every file in metrics/: the per-variant numbers too, not only the summary that is
    the pipeline's declared metrics."""
    remote = f"origin/{base}"
    known = subprocess.run(["git", "rev-parse", "--verify", "-q", remote], cwd=root, capture_output=True)
    ref = remote if known.returncode == 0 else base
    dvc = Path(sys.executable).with_name("dvc")
    cmd = [str(dvc) if dvc.exists() else "dvc", "metrics", "diff", ref, "--targets", "metrics", "-R", "--md"]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`dvc metrics diff {ref}` failed: {last}"
    return r.stdout.strip() or f"No metric changed against `{ref}`."


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--junit", default="reports/junit.xml", help="where to write the JUnit XML")
    ap.add_argument("--base", default="", help="the branch to diff metrics against (empty: none)")
    args = ap.parse_args()
    root = project_root()
    checks = [c for name in scenarios(root, [], None) for c in check_scenario(root, name)]
    atomic_write(root / args.junit, junit_xml(checks))
    failed = [c for c in checks if not c.ok]
    rows = [[c.scenario, c.variant, c.expected, c.observed, "FAIL" if not c.ok else "pass"] for c in checks]
    table = markdown_table(["scenario", "variant", "expected", "observed", "verdict"], rows)
    head = f"### losslab reproduction: {len(checks) - len(failed)} passed, {len(failed)} failed"
    figure = "The loss curves: `reports/summary.png` in the `reproduction` artifact of this run."
    summary = f"{head}\n\n{table}\n\n{figure}\n"
    atomic_write(root / "reports" / "ci-summary.md", summary)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as f:
            f.write(summary)
    diff = (
        f"\n#### `dvc metrics diff` against `{args.base}`\n\n{metrics_diff(root, args.base)}\n"
        if args.base
        else ""
    )
    atomic_write(root / "reports" / "ci-comment.md", f"{MARKER}\n{summary}{diff}")
    print(summary + diff)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
