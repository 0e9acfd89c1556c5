"""bench/gpu_check.py runs where no GPU is (--accelerator cpu): the same code path the
GPU machine runs, against the committed results."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from projects import ROOT, cli_env


@pytest.mark.slow  # ~30 s: every xor variant over five seeds
def test_gpu_check_on_the_cpu_matches_the_committed_verdicts() -> None:
    cmd = [sys.executable, "bench/gpu_check.py", "--accelerator", "cpu", "--scenarios", "xor"]
    r = subprocess.run(cmd, cwd=ROOT, env=cli_env(ROOT), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("xor/")]
    assert len(rows) == len(list((ROOT / "conf" / "variant" / "xor").glob("*.yaml")))
    assert all(" ~" not in row and "PASS" in row for row in rows)  # the CPU reproduces itself exactly
    assert "0 verdict(s) differ" in r.stdout


def test_gpu_check_says_so_where_there_is_no_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: run bench/gpu_check.py itself")
    cmd = [sys.executable, "bench/gpu_check.py", "--scenarios", "xor"]
    r = subprocess.run(cmd, cwd=ROOT, env=cli_env(ROOT), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no CUDA device here" in r.stderr
