"""Stability maps: the batched engine against the single-run path, the theory line, the
command's files and run, and bad input answered before anything trains."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from omegaconf import DictConfig

from losslab.core.config import compose
from losslab.core.grid import Grid, knob_override, map_config
from losslab.core.outcome import OUTCOMES
from losslab.engine.runtime import prepare_process
from losslab.fit import fit
from losslab.mapping.result import MapResult
from losslab.mapping.track import marks
from losslab.mapping.train import run_map
from projects import run_cli, run_statuses

# The variants that differ from the map's only in lr, the axis knob or the epochs.
MARKED = {
    "linear": {"broken", "sgd_small_lr", "ten_points"},
    "xor": {"broken", "small_lr"},
    "relu_head": {"broken"},
}


def _same(got: np.ndarray, ref: np.ndarray) -> None:
    """Per epoch to 1e-5 relative, inf/NaN at the same epochs. Where the loss has fallen
    below 1e-6 of its first value it is float32 rounding of the residuals (two correct
    float32 programs differ there by percents), so only the absolute size is compared."""
    assert np.array_equal(np.isfinite(ref), np.isfinite(got))
    assert np.array_equal(np.isnan(ref), np.isnan(got))
    fin = np.isfinite(ref)
    floor = 1e-6 * abs(ref[0])
    np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-5, atol=floor)


def _against_single_runs(prepared: Path, cfg: DictConfig, grid: Grid, keep: dict) -> MapResult:
    """Train the map keeping `keep`'s cells, and check each against `fit` of the same
    variant and overrides, axis value (set as the map sets it), seed and lr."""
    result = run_map(cfg, grid, keep)
    for (vi, si, li), slot in keep.items():
        single = compose(
            [
                f"scenario={grid.scenario}",
                f"variant={grid.scenario}/{grid.variant}",
                *grid.overrides,
                knob_override(grid.knob, grid.values[vi]),
                f"seeds=[{grid.seeds[si]}]",
                f"optimizer.lr={float(grid.lrs[li])}",
                "+fit.loop=lightning",  # the single-run path: autograd under a Trainer
            ],
            prepared,
        )
        _same(result.curves[slot], fit(single).curves["loss"][0])
    return result


@pytest.mark.slow
def test_the_batched_engine_gives_the_single_run_paths_losses(prepared: Path) -> None:
    prepare_process("cpu")
    cfg, grid = map_config(["scenario=linear", "map.lr.num=40", "map.seeds=[0,2]"], prepared)
    # (n_points index, seed index, lr index): converging, far past the line (inf then NaN),
    # just past it (slow growth), tiny lr (still falling), on both seeds.
    keep = {(3, 1, 30): 0, (10, 0, 35): 1, (18, 0, 5): 2, (18, 1, 26): 3, (0, 0, 39): 4}
    result = _against_single_runs(prepared, cfg, grid, keep)
    assert not np.isfinite(result.curves[1][-1])  # a diverging cell was among them


@pytest.mark.slow
def test_mini_batches_shuffled_per_seed_give_the_single_run_paths_losses(prepared: Path) -> None:
    """relu_head: batches of 100 in each seed's own order every epoch, the epoch's loss the
    mean of its batches', the held-out criterion; an input scale that is not the file's."""
    prepare_process("cpu")
    axis = ["map.axis.values=[0.01,1.0]", "map.lr.values=[1e-6,1e-5,1e-4,3e-3,0.01]", "map.seeds=[0,1,2]"]
    cfg, grid = map_config(["scenario=relu_head", *axis], prepared)
    # (scale index, seed index, lr index). Seed 2's head is alive at init, seeds 0 and 1's
    # dead: converging (scaled down, small lr), past the line (the head blows up and dies),
    # a dead head, the original (scale 1, lr 0.01) alive and dead.
    keep = {(0, 2, 1): 0, (0, 2, 3): 1, (0, 0, 2): 2, (1, 2, 4): 3, (1, 0, 4): 4}
    result = _against_single_runs(prepared, cfg, grid, keep)
    assert result.labels[0, 2, 1] == OUTCOMES.index("converged")  # scaled down, it trains
    assert result.risen[0, 2, 3] and not result.risen[0, 2, 1]  # past the line its loss rose
    assert np.isinf(result.bounds[:, :2]).all()  # a dead head has no curvature, so no bound


# Adam variants on each map: per-configuration lr, moments per stacked parameter, the step
# count per update (relu_head: six mini-batches an epoch); xor's BCE on logits; an override
# of the run config (a tanh MLP); the shape bug's (N, 1) outputs against (N,) targets.
# Cells: (value, seed, lr) indices.
OTHER = {
    "linear": (["map.variant=adam", "map.axis.values=[5,20]", "map.lr.values=[0.001,0.05,1.0]"],
               [(0, 0, 0), (1, 1, 1), (1, 0, 2), (0, 1, 2)]),
    "xor": (["map.variant=adam", "map.axis.values=[2,8]", "map.lr.values=[0.01,0.3,3.0]"],
            [(0, 0, 0), (1, 1, 1), (1, 0, 2), (0, 1, 1)]),
    "relu_head": (["map.variant=linear_head_adam", "map.axis.values=[0.01,1.0]",
                   "map.lr.values=[0.0001,0.01,1.0]"], [(0, 0, 1), (1, 1, 0), (0, 1, 2), (1, 0, 2)]),
    "xor-bce": (["map.variant=bce_logits", "map.axis.values=[2,8]", "map.lr.values=[0.1,3.0,100.0]"],
                [(0, 0, 0), (1, 1, 1), (1, 0, 2), (0, 1, 2)]),
    "xor-shape_bug": (["map.variant=shape_bug", "map.axis.values=[2,8]", "map.lr.values=[0.3,10.0]"],
                      [(0, 0, 0), (1, 1, 0), (1, 0, 1)]),
    "xor-tanh": (["model.activation._target_=torch.nn.Tanh", "map.axis.values=[4]",
                  "map.lr.values=[0.1,1.0,5.0]"], [(0, 0, 0), (0, 1, 1), (0, 0, 2)]),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(OTHER))
def test_adam_bce_and_overrides_map_with_the_single_run_paths_losses(prepared: Path, case: str) -> None:
    prepare_process("cpu")
    over, cells = OTHER[case]
    cfg, grid = map_config([f"scenario={case.split('-')[0]}", *over, "map.seeds=[0,1]"], prepared)
    _against_single_runs(prepared, cfg, grid, {cell: i for i, cell in enumerate(cells)})


@pytest.mark.slow  # three CLI runs that load torch and Lightning (~7 s each)
@pytest.mark.parametrize(
    ("args", "said"), [(["scenario=xor", "map.variant=bce_logits", "data.target_shape=flat"],
                        "its targets have shape 'flat' with torch.nn.BCEWithLogitsLoss"),
                       (["scenario=linear", "++optimizer.momentum=0.9"], "its optimizer sets momentum=0.9"),
                       (["scenario=linear", "loss._target_=torch.nn.L1Loss"], "its loss is torch.nn.L1Loss")]
)  # fmt: skip
def test_what_the_engine_cannot_train_is_refused(project: Path, args: list[str], said: str) -> None:
    r = run_cli(project, "map", *args)
    assert r.returncode == 2 and said in r.stderr and "map.variant=broken" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert run_statuses(project) == []  # refused before any run was started


@pytest.mark.slow
def test_the_linear_map_follows_two_over_lambda_max(prepared: Path) -> None:
    prepare_process("cpu")
    cfg, grid = map_config(["scenario=linear", "map.lr.num=80", "map.seeds=[0,1]"], prepared)
    result = run_map(cfg, grid)
    x = np.arange(1.0, 21.0)
    for n, crit in zip(grid.values.astype(int), result.critical_lr, strict=True):
        xs = x[:n]  # the closed form: H = (2/N)·[[Σx², Σx], [Σx, N]]
        lam = np.linalg.eigvalsh(2 / n * np.array([[xs @ xs, xs.sum()], [xs.sum(), n]]))[-1]
        assert crit == pytest.approx(2 / lam, rel=1e-9)
    for by in ("rose", "outcome"):
        agree, far = result.agreement(0.02, by)
        assert far > 1000 and agree >= 0.99, by


@pytest.mark.slow
def test_map_command_writes_the_csv_the_figure_and_one_mlflow_run(project: Path) -> None:
    r = run_cli(project, "map", "scenario=linear", "map.lr.num=24", "map.seeds=[0,1]")
    assert r.returncode == 0, r.stderr
    assert "trainings in" in r.stdout and "'the loss rises at some epoch' in 100.0%" in r.stdout
    rows = list(csv.DictReader((project / "maps" / "linear.csv").open()))
    assert len(rows) == 24 * 19
    assert list(rows[0]) == [
        "lr",
        "n_points",
        "seeds",
        "converged",
        "rising",
        "diverged",
        "oscillating",
        "stalled",
        "improving",
        "rose",
        "final_loss",
        "critical_lr",
    ]
    assert {r["seeds"] for r in rows} == {"2"}
    assert (project / "maps" / "linear.png").read_bytes()[:4] == b"\x89PNG"
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("linear-map")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["role"] == "map"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"linear.csv", "linear.png"}


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["map.axis.values=[]"], "map.axis (data.n_points) is empty"),
        (["map.lr.start=-0.1"], "must be positive, got -0.1"),
        (["map.lr.values=[0.01,0]"], "map.lr must be positive, got 0"),
        (["map.axis.knob=model.depth"], "map.axis.knob must be one of"),
        (["map.memory_mib=0.0001"], "more than map.memory_mib=0.0001"),
        (["map.axis.values=[2.5]"], "must be a positive integer"),
        (["map.seeds=[]"], "map.seeds must be a non-empty list"),
    ],
)
def test_bad_grids_are_one_line_before_anything_trains(project: Path, args: list[str], said: str) -> None:
    before = {p.name: p.read_bytes() for p in (project / "maps").glob("*")}
    r = run_cli(project, "map", "scenario=linear", *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and said in lines[0], r.stderr
    assert {p.name: p.read_bytes() for p in (project / "maps").glob("*")} == before
    assert run_statuses(project) == []


@pytest.mark.slow
def test_a_map_of_a_scenario_whose_data_is_not_prepared_prepares_it(project: Path) -> None:
    """`maps:` may name a scenario that `scenarios:` leaves out (no prepare stage runs for
    it): the map makes its data as `losslab prepare` would."""
    shutil.rmtree(project / "data" / "xor")
    r = run_cli(project, "map", "scenario=xor", "map.lr.num=4", "map.seeds=[0]")
    assert r.returncode == 0, r.stderr
    assert (project / "data" / "xor" / "points.csv").exists() and "wrote maps/xor.csv" in r.stdout


def test_an_input_scale_must_be_positive_and_may_be_fractional(project: Path) -> None:
    r = run_cli(project, "map", "scenario=relu_head", "map.axis.values=[0.5,0]")
    assert r.returncode == 2 and "map.axis (data.input_scale) must be positive, got 0" in r.stderr
    _, grid = map_config(["scenario=relu_head", "map.axis.values=[0.5,2.5]"], project)
    assert list(grid.values) == [0.5, 2.5]


def test_a_scenario_without_a_map_says_which_have_one(project: Path) -> None:
    r = run_cli(project, "map", "scenario=scratch_backprop")
    said = "no map for scenario 'scratch_backprop' (maps: linear, relu_head, xor)"
    assert r.returncode == 2 and said in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["linear", "xor", "relu_head"])
def test_each_marked_variant_gets_the_outcomes_its_own_run_got(prepared: Path, scenario: str) -> None:
    """The map's label for a variant's own lr, axis value, epochs and seeds is the verdict
    `losslab run` gave it (results/<scenario>.json, committed): one classifier, one criterion."""
    prepare_process("cpu")
    cfg, grid = map_config([f"scenario={scenario}"], prepared)
    marked = marks(cfg, grid)
    results = json.loads((prepared / "results" / f"{scenario}.json").read_text())["variants"]
    assert {m.name for m in marked} == MARKED[scenario]
    for m in marked:
        one = [f"map.lr.values=[{m.lr}]", f"map.axis.values=[{int(m.value)}]", f"map.epochs={m.epochs}"]
        cfg, grid = map_config([f"scenario={scenario}", *one, "map.seeds=[0,1,2,3,4]"], prepared)
        labels = run_map(cfg, grid).labels.ravel()
        got = {OUTCOMES[i]: int((labels == i).sum()) for i in set(labels.tolist())}
        assert got == results[m.name]["outcomes"], m.name
