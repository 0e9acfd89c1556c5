"""Hydra multirun on the real joblib launcher (2 workers) into one new sqlite store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from losslab.core.config import available, variants_of
from projects import FAULTY_SCHEDULE, fault_env, run_cli

VARIANTS = ["broken", "adam", "sgd_small_lr", "standardized"]


def _rows(db: Path) -> list[tuple[str, str, str, str | None, int, int, str]]:
    """(run_uuid, status, variant tag, parent run id, start, end, pid) for every run in the store."""
    query = """
        SELECT r.run_uuid, r.status,
               (SELECT value FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = 'variant'),
               (SELECT value FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = 'mlflow.parentRunId'),
               r.start_time, r.end_time,
               (SELECT value FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = 'losslab.trainer_pid')
        FROM runs r
    """
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return list(con.execute(query))


def test_joblib_multirun_loses_and_duplicates_no_run(project: Path) -> None:
    assert not (project / "mlflow.db").exists()  # the workers would race its creation
    r = run_cli(
        project,
        "run",
        "-m",
        "scenario=linear",
        f"variant={','.join(VARIANTS)}",
        "seeds=[0,1]",
        "epochs_scale=0.1",
        "hydra.launcher.n_jobs=2",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in r.stdout + r.stderr
    link = next(
        line for line in r.stdout.splitlines() if line.startswith("compare linear runs of this sweep")
    )

    rows = _rows(project / "mlflow.db")
    parents = [row for row in rows if row[3] is None]
    children = [row for row in rows if row[3] is not None]
    assert sorted(row[2] for row in parents) == sorted(VARIANTS)  # each once: none lost or duplicated
    assert len(children) == 2 * len(VARIANTS)
    assert {row[3] for row in children} == {row[0] for row in parents}
    assert {row[1] for row in rows} == {"FINISHED"}
    assert all(row[0] in link for row in parents)  # one link lines the whole sweep up
    # The jobs really ran on the two workers: two processes trained the four of them. (Whether
    # two short jobs overlap in time depends on the machine's load, so that is not asserted.)
    assert len({row[6] for row in parents}) == 2
    # Each job wrote its own Hydra record next to the others.
    assert len(list((project / "multirun").glob("*/*/*/.hydra/overrides.yaml"))) == len(VARIANTS)


@pytest.mark.slow
def test_multirun_matches_single_runs(project: Path) -> None:
    """A job of the sweep logs the same numbers as the same variant run alone."""
    import json

    args = ["scenario=linear", "seeds=[0]", "epochs_scale=0.05"]
    assert run_cli(project, "run", "-m", *args, "variant=broken,adam").returncode == 0
    assert run_cli(project, "run", *args, "variant=adam").returncode == 0
    query = """
        SELECT m.value FROM metrics m JOIN tags t ON t.run_uuid = m.run_uuid
        WHERE t.key = 'variant' AND t.value = 'adam' AND m.key = 'median_final_loss'
    """
    with sqlite3.connect(f"file:{project / 'mlflow.db'}?mode=ro", uri=True) as con:
        values = [v for (v,) in con.execute(query)]
    assert len(values) == 2 and values[0] == values[1], json.dumps(values)


@pytest.mark.slow
def test_sweep_over_every_scenario(project: Path) -> None:
    """`-m scenario=a,b,…` runs whole scenarios as jobs: every variant of every scenario
    lands once, and each job writes its scenario's DVC outputs."""
    import json

    scenarios = available(project, "scenario")
    r = run_cli(project, "run", "-m", f"scenario={','.join(scenarios)}", "seeds=[0]", "epochs_scale=0.05")
    assert r.returncode == 0, r.stderr[-3000:]
    query = """
        SELECT e.name, t.value, r.status FROM runs r
        JOIN experiments e ON e.experiment_id = r.experiment_id
        JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'variant'
        WHERE NOT EXISTS (SELECT 1 FROM tags p WHERE p.run_uuid = r.run_uuid AND p.key = 'mlflow.parentRunId')
    """
    with sqlite3.connect(f"file:{project / 'mlflow.db'}?mode=ro", uri=True) as con:
        rows = list(con.execute(query))
    assert {status for _, _, status in rows} == {"FINISHED"}
    for name in scenarios:
        assert sorted(v for s, v, _ in rows if s == name) == sorted(variants_of(project, name))
        doc = json.loads((project / "results" / f"{name}.json").read_text())
        assert list(doc["variants"]) == variants_of(project, name)
        assert all(sum(v["outcomes"].values()) == 1 for v in doc["variants"].values())  # seeds=[0]


def test_a_failing_job_fails_the_sweep_in_one_line_each(project: Path) -> None:
    """A config that composes but cannot train: each job says so in one line, the other
    jobs still run, the sweep exits non-zero and no run is left RUNNING."""
    r = run_cli(
        project,
        "run",
        "-m",
        "scenario=linear",
        "variant=broken,adam",
        *FAULTY_SCHEDULE,
        "seeds=[0]",
        **fault_env(),
    )
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("losslab: error: sweep job")]
    assert len(errors) == 2 and all("training linear/" in e for e in errors)
    assert "Traceback" not in r.stderr
    statuses = {row[1] for row in _rows(project / "mlflow.db")}
    assert statuses == {"FAILED"}
