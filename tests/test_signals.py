"""Every way a run ends, with real signals sent to a real `losslab run` process.

Ctrl-C (SIGINT to the process group, as a terminal sends it) and SIGTERM (to the process,
as `kill` or a scheduler sends it): one line on stderr, exit 128 + the signal, every run of
that process KILLED, no output touched. SIGKILL of the whole group (nobody left to clean
up): the next losslab start on this host marks those runs KILLED, whatever it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from projects import BIN, cli_env, run_cli, run_statuses

LONG = ["run", "scenario=linear", "fit.epochs=2000000"]  # every variant, until interrupted


def _start(project: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "losslab"), *LONG],
        cwd=project,
        env=cli_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a job in a terminal
    )


def _wait_training(project: Path, proc: subprocess.Popen) -> int:
    """Until the first group trains (linear's broken and sgd_small_lr, as one program: a
    parent and 5 seed runs each); how many runs are RUNNING then."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if run_statuses(project).count("RUNNING") >= 6:
            time.sleep(1.0)  # well inside the fit: every run of the group exists
            return run_statuses(project).count("RUNNING")
        time.sleep(0.3)
    pytest.fail(f"training never started: {proc.poll()} {proc.stderr.read() if proc.stderr else ''}")


def _outputs(project: Path) -> dict[str, bytes]:
    names = ("metrics/linear.json", "results/linear.json", "plots/linear.csv", "reports/linear.png")
    return {n: (project / n).read_bytes() for n in names}


@pytest.mark.parametrize(
    ("sig", "group", "code"),
    [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)],
    ids=["ctrl-c", "sigterm"],
)
def test_interrupt_mid_training(project: Path, sig: signal.Signals, group: bool, code: int) -> None:
    before = _outputs(project)
    proc = _start(project)
    try:
        _wait_training(project, proc)
        (os.killpg if group else os.kill)(proc.pid, sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code
    assert err.strip().splitlines() == [
        f"losslab: stopped by {sig.name}; runs it started end KILLED, no output was written"
    ]
    assert "Traceback" not in out + err and "wrote" not in out
    statuses = run_statuses(project)
    assert statuses and set(statuses) == {"KILLED"}
    assert _outputs(project) == before


def test_sigkill_then_the_next_start_reaps_the_runs(project: Path) -> None:
    proc = _start(project)
    try:
        running = _wait_training(project, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the trainer, its tracking writer, its figure worker
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(0.5)
    assert running == 12 and run_statuses(project).count("RUNNING") == running  # nobody closed them
    # Another scenario entirely: the reaping is per host, not per experiment.
    r = run_cli(project, "run", "scenario=xor", "variant=broken", "seeds=[0]", "fit.epochs=3")
    assert r.returncode == 0, r.stderr
    statuses = run_statuses(project)
    assert "RUNNING" not in statuses
    assert statuses.count("KILLED") == running and statuses.count("FINISHED") == 2
