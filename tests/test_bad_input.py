"""Bad input: one line on stderr naming the problem, non-zero exit, nothing left RUNNING.

Runs the real CLI in a temp project against a real sqlite MLflow store.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import mlflow
import pytest

from projects import FAULTY_SCHEDULE, fault_env, run_cli, run_statuses

CASES = [
    # (id, args, file edits, expected fragment of the one stderr line)
    ("unknown-scenario", ["scenario=nope"], {}, "unknown scenario 'nope' (available: linear"),
    ("unknown-variant", ["scenario=linear", "variant=nope"], {}, "unknown variant 'nope'"),
    ("malformed-override", ["optimizer.lr=="], {}, "invalid override"),
    ("unknown-key", ["optimiser.lr=0.1"], {}, "invalid override"),
    ("lr-zero", ["optimizer.lr=0"], {}, "optimizer.lr must be a positive finite number, got 0"),
    ("lr-negative", ["optimizer.lr=-0.1"], {}, "optimizer.lr must be a positive finite number"),
    ("lr-nan", ["optimizer.lr=nan"], {}, "got nan"),
    ("lr-text", ["optimizer.lr=fast"], {}, "got 'fast'"),
    ("epochs-negative", ["fit.epochs=-1"], {}, "fit.epochs must be a positive integer"),
    ("seeds-not-int", ["seeds=[0,1.5]"], {}, "seeds must be non-negative integers"),
    ("seeds-text", ["seeds=[a,b]"], {}, "seeds must be non-negative integers, got 'a'"),
    ("seeds-empty", ["seeds=[]"], {}, "seeds must be a non-empty list"),
    ("epochs-scale-zero", ["epochs_scale=0"], {}, "epochs_scale must be a positive finite number"),
    ("accelerator-unknown", ["trainer.accelerator=tpu9"], {}, "trainer.accelerator must be one of"),
    ("n-points-too-many", ["variant=ten_points", "data.n_points=99"], {}, "only 20 rows"),
    ("missing-data", [], {"data/linear/points.csv": None}, "missing data file"),
    ("truncated-data", [], {"data/linear/points.csv": "x,y\n1.0,0.5\n2.0\n"}, "line 3 has 1 fields"),
    ("text-in-data", [], {"data/linear/points.csv": "x,y\n1.0,oops\n"}, "'oops' is not a number"),
    ("nan-in-data", [], {"data/linear/points.csv": "x,y\n1.0,nan\n"}, "(not finite)"),
    ("inf-in-data", [], {"data/linear/points.csv": "x,y\ninf,1.0\n"}, "(not finite)"),
    ("empty-data", [], {"data/linear/points.csv": ""}, "empty, expected a header row"),
    ("wrong-columns", [], {"data/linear/points.csv": "a,b\n1,2\n"}, "lacks column(s) x, y"),
    # The other scenarios' own data and configs go through the same checks.
    ("xor-missing-data", ["scenario=xor"], {"data/xor/points.csv": None}, "missing data file"),
    (
        "xor-unknown-variant",
        ["scenario=xor", "variant=nope"],
        {},
        "unknown variant 'nope' for scenario 'xor'",
    ),
    ("relu-head-columns", ["scenario=relu_head"], {"data/relu_head/line.csv": "a,b\n1,2\n"}, "lacks column"),
    ("scratch-lr-text", ["scenario=scratch_backprop", "optimizer.lr=fast"], {}, "got 'fast'"),
    (
        "scratch-truncated",
        ["scenario=scratch_backprop"],
        {"data/scratch_backprop/moons.csv": "x1,x2,y\n0.1\n"},
        "line 2 has 1 fields",
    ),
    ("server-unreachable", ["tracking.uri=http://127.0.0.1:9"], {}, "unreachable"),
    ("uri-malformed", ["tracking.uri=not-a-uri"], {}, "malformed tracking URI"),
    ("uri-scheme", ["tracking.uri=ftp://127.0.0.1/x"], {}, "unsupported tracking URI scheme"),
    ("store-unwritable", ["tracking.uri=sqlite:////proc/m.db"], {}, "tracking store is not writable"),
    ("store-corrupt", [], {"mlflow.db": "this is not sqlite" * 100}, "not a usable sqlite database"),
    ("store-dir-missing", ["tracking.uri=sqlite:////nonexistent/dir/m.db"], {}, "does not exist"),
    ("bad-params-file", ["--params", "nope.yaml"], {}, "cannot read params file"),
    # A file where the metrics directory should be: unwritable even for root.
    ("unwritable-output", [], {"metrics": "not a directory"}, "output metrics/linear.json is not writable"),
    ("sweep-unknown-variant", ["-m", "variant=broken,nope"], {}, "unknown variant 'nope'"),
    ("sweep-bad-lr", ["-m", "optimizer.lr=0.01,-1"], {}, "optimizer.lr must be a positive finite number"),
    ("sweep-malformed", ["-m", "optimizer.lr=0.01,,"], {}, "invalid override"),
    ("unknown-option", ["--frobnicate"], {}, "unrecognized arguments"),
    ("layers-vs-columns", ["model.sizes=[2,1]"], {}, "model.sizes=[2, 1] must start with 1 (data.inputs: x)"),
    # A variant of another scenario would graft its deltas onto this one.
    (
        "foreign-variant",
        ["scenario=linear", "variant=xor/adam"],
        {},
        "belongs to scenario 'xor', not 'linear'",
    ),
    ("foreign-variant-default", ["variant=xor/adam"], {}, "belongs to scenario 'xor'"),
    # Every value against its legal range; the optimizer's own constructor judges its own
    # (more constructor cases in-process: tests/test_config.py).
    ("sgd-momentum", ["+optimizer.momentum=-1"], {}, "optimizer: ValueError: Invalid momentum value"),
    ("layer-zero", ["scenario=xor", "model.sizes=[2,0,1]"], {}, "model.sizes[1] must be a positive integer"),
    ("layers-short", ["model.sizes=[1]"], {}, "model.sizes must list at least two layer widths"),
    ("batch-zero", ["data.batch_size=0"], {}, "data.batch_size must be a positive integer, got 0"),
    ("scale-unknown", ["data.scale=log"], {}, "data.scale must be one of null, standardize, minmax"),
    ("column-missing", ["data.inputs=[z]"], {}, "lacks column(s) z"),
    ("split-fraction", ["scenario=relu_head", "data.split.val_fraction=1.5"], {}, "val_fraction must be"),
    ("min-rate", ["variant.expect.min_rate=2"], {}, "variant.expect.min_rate must be a number in (0, 1]"),
    ("scratch-bug-typo", ["scenario=scratch_backprop", "module.bugs=[typo]"], {}, "unknown bugs ['typo']"),
]


def _runs(project: Path) -> list:
    db = project / "mlflow.db"
    if not db.exists():
        return []
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


@pytest.mark.parametrize(("args", "edits", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(project: Path, args: list[str], edits: dict, message: str) -> None:
    for rel, content in edits.items():
        if (project / rel).is_dir():
            shutil.rmtree(project / rel)
        if content is None:
            (project / rel).unlink()
        else:
            (project / rel).write_text(content)
    scenario = next((a.split("=", 1)[1] for a in args if a.startswith("scenario=")), "linear")
    metrics = project / "metrics" / f"{scenario}.json"
    before = metrics.read_bytes() if metrics.is_file() else None
    r = run_cli(
        project, "run", *(["scenario=linear"] if not any("scenario=" in a for a in args) else []), *args
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("losslab: error: ")
    assert message in lines[0]
    assert "Traceback" not in r.stdout + r.stderr
    if "mlflow.db" not in edits:  # a store corrupted on purpose has no runs to read
        assert "RUNNING" not in run_statuses(project)
        assert run_statuses(project) == []  # nothing was created: the error came first
    assert (metrics.read_bytes() if metrics.is_file() else None) == before  # no output claimed


def test_training_failure_marks_runs_failed(project: Path) -> None:
    """A config that passes every check but fails while training: one line, exit 2, FAILED."""
    r = run_cli(project, "run", "scenario=linear", *FAULTY_SCHEDULE, **fault_env())
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "losslab: error: training linear/broken failed: RuntimeError: schedule failed at step 3"
    ]
    runs = _runs(project)
    assert runs, "runs are created before training"
    assert {run.info.status for run in runs} == {"FAILED"}


def test_debug_shows_the_traceback(project: Path) -> None:
    r = run_cli(project, "--debug", "run", "scenario=linear", "optimizer.lr=0")
    assert "Traceback" in r.stderr and r.returncode == 2


def test_sigkill_midway_leaves_no_run_running(project: Path) -> None:
    """The tracking writer sees the trainer die and marks its runs KILLED."""
    import subprocess

    from projects import BIN, cli_env

    proc = subprocess.Popen(
        [str(BIN / "losslab"), "run", "scenario=linear", "variant=broken", "fit.epochs=2000000"],
        cwd=project,
        env=cli_env(project),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if run_statuses(project) == ["RUNNING"] * 6:
                break
            time.sleep(0.5)
        else:
            pytest.fail("runs never started")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 60
        while time.time() < deadline and "RUNNING" in run_statuses(project):
            time.sleep(0.5)
        assert {r.info.status for r in _runs(project)} == {"KILLED"}
    finally:
        if proc.poll() is None:
            proc.kill()
