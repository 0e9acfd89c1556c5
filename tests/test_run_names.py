"""MLflow runs say what ran: the variant, and the overrides the user gave on top of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from losslab.core.plan import changed_by_user
from projects import run_cli


def test_only_the_users_own_changes_name_a_run() -> None:
    knobs = ["seeds=[0,1]", "trainer.accelerator=cpu", "epochs_scale=0.5", "hydra.job.chdir=false"]
    given = [*knobs, "scenario=linear", "variant=adam", "optimizer.lr=0.05", "+fit.extra=1"]
    assert changed_by_user(given) == ("optimizer.lr=0.05", "+fit.extra=1")


def _parents(project: Path) -> list:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("linear")
    runs = client.search_runs([exp.experiment_id])
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags], runs


@pytest.mark.slow  # ~15 s: a CLI run
def test_an_overridden_run_is_named_and_described_by_what_ran(project: Path) -> None:
    args = ("run", "scenario=linear", "variant=adam", "optimizer.lr=0.05", "seeds=[0]", "fit.epochs=5", "-q")
    r = run_cli(project, *args)
    assert r.returncode == 0, r.stderr
    (parent,), runs = _parents(project)
    tags = parent.data.tags
    name = "adam optimizer.lr=0.05 fit.epochs=5"  # seeds: a params.yaml knob, not in the name
    assert parent.info.run_name == name and tags["overrides"] == "optimizer.lr=0.05 fit.epochs=5"
    assert "0.001" not in tags["mlflow.note.content"] and "0.001" not in tags["description"]
    assert "0.001" in tags["variant.description"]  # the variant's own text, kept apart
    assert parent.data.params["optimizer.lr"] == "0.05"
    assert {x.info.run_name for x in runs} == {name, f"{name}/seed=0"}


@pytest.mark.slow  # ~20 s: a CLI run of 500 epochs
def test_a_run_as_configured_keeps_the_variants_name_and_description(project: Path) -> None:
    r = run_cli(project, "run", "scenario=linear", "variant=adam", "seeds=[0]", "-q")
    assert r.returncode == 0, r.stderr
    (parent,), _ = _parents(project)
    assert parent.info.run_name == "adam" and "overrides" not in parent.data.tags
    assert parent.data.tags["description"] == parent.data.tags["variant.description"]
