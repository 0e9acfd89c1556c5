"""End to end in a temp git repo: real `dvc repro`, real sqlite MLflow store, `losslab verify`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pytest

from projects import copy_project, git, run_cli, run_statuses, run_tool

pytestmark = pytest.mark.slow


def ok(r) -> str:
    assert r.returncode == 0, f"{r.args}\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    proj = copy_project(tmp_path_factory.mktemp("clone") / "repo")
    # The DVC/MLflow mechanics on the fastest scenario; .ci/run reproduces all of them.
    params = proj / "params.yaml"
    params.write_text(re.sub(r"(?m)^scenarios: .*$", "scenarios: [linear]", params.read_text()))
    git(proj, "init", "-q")
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "clone")
    out = ok(run_tool(proj, "dvc", "repro", "--force"))
    for stage in ("prepare@linear", "train@linear", "report"):
        assert f"Running stage '{stage}'" in out
    assert "compare linear runs: http://127.0.0.1:5000/#/compare-runs?runs=" in out
    return proj


def test_outputs(repo: Path) -> None:
    doc = json.loads((repo / "results" / "linear.json").read_text())
    v = doc["variants"]
    assert list(v) == ["broken", "adam", "sgd_small_lr", "standardized", "ten_points"]
    assert v["broken"]["outcomes"] == {"diverged": 5} and v["broken"]["first_inf_epoch"] is not None
    assert v["broken"]["critical_lr"] == pytest.approx(2 / 288.539, rel=1e-4)
    assert v["broken"]["min_diverging_n"] == 17
    assert v["standardized"]["numbers"]["pred_x25"] == pytest.approx(12.5, abs=0.01)
    assert v["sgd_small_lr"]["success_rate"] == 1.0
    # metrics: numbers only, the same few per variant (the rates and the key numbers)
    metrics = json.loads((repo / "metrics" / "linear.json").read_text())
    assert list(metrics) == list(v)
    assert metrics["broken"] == {
        "success_rate": 0.0, "expected_rate": 1.0, "median_final_loss": None,
        "first_nonfinite_epoch": v["broken"]["first_inf_epoch"], "critical_lr": v["broken"]["critical_lr"],
        "pred_x25": None,
    }  # fmt: skip
    assert all(set(m) == set(metrics["broken"]) for m in metrics.values())
    plots = (repo / "plots" / "linear.csv").read_text().splitlines()
    assert plots[0] == "variant,seed,epoch,loss" and len(plots) == 1 + 5 * 5 * 500
    broken = [line.split(",")[3] for line in plots if line.startswith("broken,0,")]
    first_inf, first_nan = broken.index("inf"), broken.index("nan")  # apart, in that order
    assert 0 < first_inf < first_nan and all(x == "nan" for x in broken[first_nan:])
    assert (repo / "reports" / "linear.png").read_bytes()[:4] == b"\x89PNG"
    summary = (repo / "reports" / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| broken | broken |"))
    assert "| diverged 5 |" in row and "x = 1..20 unscaled" in row
    assert (repo / "reports" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    # The one declared DVC metrics file: a column per scenario in `dvc exp show`.
    assert all(e["expectation_met"] is True for e in v.values())
    assert json.loads((repo / "metrics" / "summary.json").read_text()) == {"linear": {"met": 1.0}}
    shown = ok(run_tool(repo, "dvc", "metrics", "show", "--json"))
    assert list(json.loads(shown)[""]["data"]) == ["metrics/summary.json"]
    # The doctor's reading of every variant: a file, and a column of the summary.
    diagnoses = json.loads((repo / "reports" / "linear.diagnosis.json").read_text())
    assert list(diagnoses) == list(v) and diagnoses["broken"]["cause"] == "lr_too_high"
    assert diagnoses["broken"]["findings"][0]["evidence"]["lambda_max"] == pytest.approx(288.539, rel=1e-4)
    assert {diagnoses[k]["cause"] for k in ("sgd_small_lr", "standardized", "ten_points")} == {"healthy"}
    assert row.rstrip().endswith("| lr_too_high (high) [+ unscaled_inputs] |")


def test_mlflow_runs(repo: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("linear")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 5 and len(children) == 25
    assert {r.info.status for r in runs} == {"FINISHED"}
    by_variant = {r.data.tags["variant"]: r for r in parents}
    broken = by_variant["broken"]
    for tag in ("scenario", "variant", "role", "description", "source", "git_commit", "outcome"):
        assert broken.data.tags[tag], tag
    assert broken.data.tags["role"] == "broken" and by_variant["adam"].data.tags["role"] == "fix"
    assert broken.data.tags["outcome"] == "diverged 5/5"
    assert int(broken.data.tags["first_inf_epoch"]) < int(broken.data.tags["first_nan_epoch"])
    assert broken.data.params["optimizer.lr"] == "0.01"
    assert broken.data.metrics["critical_lr"] == pytest.approx(0.00693, rel=1e-3)

    client = mlflow.MlflowClient()
    fix = by_variant["sgd_small_lr"]
    for key in ("loss", "grad_norm", "weight", "bias"):
        hist = client.get_metric_history(fix.info.run_id, key)
        assert [m.step for m in hist] == list(range(1, 501)), key
    lr = client.get_metric_history(fix.info.run_id, "lr")
    assert [m.step for m in lr] == [1, 500] and {m.value for m in lr} == {1e-4}  # constant: 2 points
    assert "pred_x25" in fix.data.metrics
    artifacts = {a.path for a in client.list_artifacts(fix.info.run_id)}
    assert {"config.yaml", "loss_curve.png", "curves.csv", "diagnosis.md"} <= artifacts
    assert (broken.data.tags["diagnosis.cause"], broken.data.tags["diagnosis.confidence"]) == (
        "lr_too_high",
        "high",
    )
    assert fix.data.tags["diagnosis.cause"] == "healthy"
    text = client.download_artifacts(broken.info.run_id, "diagnosis.md")
    assert "# Diagnosis: lr_too_high" in Path(text).read_text()

    seed_runs = [r for r in children if r.data.tags["mlflow.parentRunId"] == broken.info.run_id]
    assert len(seed_runs) == 5
    for r in seed_runs:
        assert r.data.tags["outcome"] == "diverged" and "first_inf_epoch" in r.data.tags
        loss = client.get_metric_history(r.info.run_id, "loss")
        assert loss[-1].step == 500  # the NaN tail is kept, compressed to its ends
        first_inf = int(r.data.tags["first_inf_epoch"])
        assert [m.step for m in loss[:first_inf]] == list(range(1, first_inf + 1))


def test_incremental_determinism_verify_and_experiments(repo: Path) -> None:
    before = (repo / "metrics" / "linear.json").read_bytes()

    out = ok(run_tool(repo, "dvc", "repro"))
    assert "Running stage" not in out and "up to date" in out

    adam = repo / "conf" / "variant" / "linear" / "adam.yaml"
    adam.write_text(adam.read_text() + "# reviewed\n")  # a change DVC sees, the results must not
    status = ok(run_tool(repo, "dvc", "status"))
    assert "train@linear" in status and "prepare@linear" not in status
    out = ok(run_tool(repo, "dvc", "repro"))
    assert "Running stage 'train@linear'" in out and "Running stage 'prepare@linear'" not in out
    # A second cold run of every variant: byte-identical metrics.
    assert (repo / "metrics" / "linear.json").read_bytes() == before

    assert "broken.first_nonfinite_epoch" in ok(run_tool(repo, "dvc", "metrics", "show", "-R", "metrics"))
    ok(run_tool(repo, "dvc", "metrics", "diff", "--targets", "metrics", "-R"))

    r = run_cli(repo, "verify")
    assert r.returncode == 0 and "5 passed, 0 failed" in r.stdout
    broken = repo / "conf" / "variant" / "linear" / "broken.yaml"
    good = broken.read_text()
    broken.write_text(good.replace("outcome: diverged", "outcome: converged"))
    r = run_cli(repo, "verify")
    assert r.returncode == 1 and "FAIL" in r.stdout and "1 failed" in r.stdout
    broken.write_text(good)

    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "reword adam")
    ok(run_tool(repo, "dvc", "exp", "run", "-S", "seeds=[3,7]", "-S", "epochs_scale=0.5"))
    doc = json.loads((repo / "results" / "linear.json").read_text())
    assert sum(doc["variants"]["broken"]["outcomes"].values()) == 2
    plots = (repo / "plots" / "linear.csv").read_text().splitlines()
    assert len(plots) == 1 + 5 * 2 * 250
    # `dvc exp show`: one metric column per scenario, not one per variant × number.
    header = ok(run_tool(repo, "dvc", "exp", "show", "--csv")).splitlines()[0].split(",")
    assert [c for c in header if c.endswith(".met") or "rate" in c] == ["linear.met"]


def test_sigkill_stage_then_repro(tmp_path: Path) -> None:
    """SIGKILL the whole `dvc repro` process group in the middle of train@linear, after a
    params change: the next `dvc repro` completes, the killed runs end KILLED, and the
    outputs and report describe the new state only."""
    import os
    import signal
    import subprocess
    import time

    from projects import BIN, cli_env

    proj = copy_project(tmp_path / "repo")
    params = proj / "params.yaml"
    text = re.sub(r"(?m)^scenarios: .*$", "scenarios: [linear]", params.read_text())
    text = re.sub(r"(?m)^maps: .*$", "maps: [linear]", text)
    params.write_text(text.replace("epochs_scale: 1.0", "epochs_scale: 0.5"))
    git(proj, "init", "-q")
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "clone")
    ok(run_tool(proj, "dvc", "repro", "--force"))  # the old state: 250 epochs
    db = proj / "mlflow.db"
    old_runs = len(run_statuses(proj))
    assert old_runs == 30 + 1  # 5 variants × (parent + 5 seeds), and map@linear's one run

    params.write_text(text)  # the new state: 500 epochs
    proc = subprocess.Popen(
        [str(BIN / "dvc"), "repro"],
        cwd=proj,
        env=cli_env(proj),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # midway: one new variant done, the next one running
            s = run_statuses(proj)
            if len(s) > old_runs + 6 and "RUNNING" in s:
                break
            time.sleep(0.2)
        else:
            pytest.fail("train@linear never got midway")
        os.killpg(proc.pid, signal.SIGKILL)  # dvc, the stage and its tracking writer
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "RUNNING" in run_statuses(proj)  # nobody was left to close them

    out = ok(run_tool(proj, "dvc", "repro"))
    assert "Running stage 'train@linear'" in out and "Running stage 'report'" in out
    assert "RUNNING" not in run_statuses(proj)  # reaped as KILLED on the next start
    assert "KILLED" in run_statuses(proj)
    assert "Data and pipelines are up to date" in ok(run_tool(proj, "dvc", "status"))

    plots = (proj / "plots" / "linear.csv").read_text().splitlines()
    assert len(plots) == 1 + 5 * 5 * 500  # the new state's epochs, not the killed or old ones
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    exp = mlflow.get_experiment_by_name("linear")
    finished = mlflow.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", output_format="list")
    latest = {}
    for r in finished:
        if "mlflow.parentRunId" not in r.data.tags:
            latest.setdefault(r.data.tags["variant"], r)  # newest first
    doc = json.loads((proj / "results" / "linear.json").read_text())
    for name, v in doc["variants"].items():
        assert latest[name].data.params["epochs_scale"] == "1.0"
        assert latest[name].data.metrics["success_rate"] == v["success_rate"]
