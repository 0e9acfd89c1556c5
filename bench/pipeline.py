"""Benchmark: what the losslab pipeline costs on top of the work itself.

Measured in one run, on this machine, medians of --repeat runs:

1. stage: the cold `train@<scenario>` stage command (`losslab run scenario=<s> --params
   params.yaml`) in a fresh process, on a copy of the project with a new sqlite store;
2. floor: a plain-PyTorch script doing the same variants × seeds × epochs in one process
   (imports included), recording each epoch's loss like the stage does;
3. per epoch: a bare loop, the same ensemble in a Lightning Trainer with losslab's health
   recorder, and MLflow's cost per logged point on sqlite.

Prints the ratios; the target for `linear` is stage/floor <= 4. Run from the project root:

    .venv/bin/python bench/pipeline.py [--scenario linear] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BIN = Path(PY).parent

# The floor for `linear`: the same five variants × seeds × 500 epochs as plain PyTorch.
FLOOR_LINEAR = textwrap.dedent(
    """
    import math, sys, csv
    import torch
    seeds = [int(s) for s in sys.argv[1].split(",")]
    epochs = int(sys.argv[2])
    rows = list(csv.DictReader(open(sys.argv[3])))
    X = torch.tensor([[float(r["x"])] for r in rows]); Y = torch.tensor([[float(r["y"])] for r in rows])
    variants = {
        "broken": dict(lr=0.01), "sgd_small_lr": dict(lr=1e-4), "adam": dict(lr=1e-3, adam=True),
        "standardized": dict(lr=0.01, std=True), "ten_points": dict(lr=0.01, n=10),
    }
    for name, v in variants.items():
        x, y = X[: v.get("n", len(X))], Y[: v.get("n", len(Y))]
        if v.get("std"):
            x = (x - x.mean()) / x.std(unbiased=False)
        for seed in seeds:
            torch.manual_seed(seed)
            m = torch.nn.Linear(1, 1)
            torch.nn.init.xavier_uniform_(m.weight); torch.nn.init.zeros_(m.bias)
            opt = (torch.optim.Adam(m.parameters(), lr=v["lr"], eps=1e-7) if v.get("adam")
                   else torch.optim.SGD(m.parameters(), lr=v["lr"]))
            losses = []
            for _ in range(epochs):
                opt.zero_grad(); loss = torch.nn.functional.mse_loss(m(x), y); loss.backward(); opt.step()
                losses.append(loss.item())
    """
)

FLOORS = {"linear": FLOOR_LINEAR}


def _project_copy(dest: Path) -> Path:
    for name in ("conf", "data", "params.yaml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            shutil.copy(src, dest / name)
    return dest


def time_stage(scenario: str) -> float:
    with tempfile.TemporaryDirectory() as d:
        proj = _project_copy(Path(d))
        env = {**os.environ, "LOSSLAB_ROOT": str(proj), "MLFLOW_TRACKING_URI": f"sqlite:///{proj}/mlflow.db"}
        t = time.perf_counter()
        subprocess.run(
            [str(BIN / "losslab"), "run", f"scenario={scenario}", "--params", str(proj / "params.yaml")],
            cwd=proj,
            env=env,
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - t


def time_floor(scenario: str, seeds: list[int]) -> float:
    script = FLOORS[scenario]
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)
    try:
        t = time.perf_counter()
        subprocess.run(
            [PY, f.name, ",".join(map(str, seeds)), "500", str(ROOT / "data" / scenario / "points.csv")],
            check=True,
        )
        return time.perf_counter() - t
    finally:
        os.unlink(f.name)


def per_epoch(epochs: int = 500) -> dict[str, float]:
    """Seconds per epoch: bare loop, Lightning + health recorder, MLflow per logged point."""
    import logging
    import warnings

    import torch

    from losslab.datamodule import TableDataModule
    from losslab.health import HealthRecorder
    from losslab.models import Ensemble, mlp
    from losslab.module import EnsembleModule, make_trainer

    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    factory = lambda: mlp([1, 1], weight_init=torch.nn.init.xavier_uniform_)  # noqa: E731
    dm = TableDataModule("data/linear/points.csv", ["x"], ["y"], root=str(ROOT))
    dm.setup()
    dm.bind([0])

    m = factory()
    opt = torch.optim.SGD(m.parameters(), lr=1e-4)
    t = time.perf_counter()
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(m(dm.x), dm.y)
        loss.backward()
        opt.step()
        loss.item()
    bare = (time.perf_counter() - t) / epochs

    module = EnsembleModule(Ensemble(factory, [0]), torch.nn.MSELoss(), lambda p: torch.optim.SGD(p, lr=1e-4))
    trainer = make_trainer(epochs, [HealthRecorder()])
    t = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    lightning = (time.perf_counter() - t) / epochs

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    with tempfile.TemporaryDirectory() as d:
        client = MlflowClient(f"sqlite:///{d}/m.db")
        run = client.create_run(client.create_experiment("bench")).info.run_id
        now = int(time.time() * 1000)
        points = [Metric("loss", float(i), now, i) for i in range(1000)]
        t = time.perf_counter()
        client.log_batch(run, metrics=points)
        mlflow_point = (time.perf_counter() - t) / len(points)
    return {"bare": bare, "lightning": lightning, "mlflow_point": mlflow_point}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="linear", choices=sorted(FLOORS))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    seeds = [0, 1, 2, 3, 4]
    if not (ROOT / "data" / args.scenario).is_dir():
        subprocess.run([str(BIN / "losslab"), "prepare", f"scenario={args.scenario}"], cwd=ROOT, check=True)

    stage, floor = [], []
    for _ in range(args.repeat):  # interleaved, so drift on the machine hits both alike
        floor.append(time_floor(args.scenario, seeds))
        stage.append(time_stage(args.scenario))
    s, f = statistics.median(stage), statistics.median(floor)
    print(f"cold {args.scenario} stage          : {s:6.2f} s  (runs: {', '.join(f'{x:.2f}' for x in stage)})")
    print(f"plain-PyTorch floor         : {f:6.2f} s  (runs: {', '.join(f'{x:.2f}' for x in floor)})")
    print(f"ratio stage / floor         : {s / f:6.2f}   (target <= 4)")

    e = per_epoch()
    print(f"per epoch, bare loop        : {e['bare'] * 1e6:8.1f} µs")
    ratio = e["lightning"] / e["bare"]
    print(f"per epoch, Lightning+health : {e['lightning'] * 1e6:8.1f} µs  ({ratio:.1f}× bare)")
    print(f"MLflow sqlite, per point    : {e['mlflow_point'] * 1e6:8.1f} µs  (off the training process)")


if __name__ == "__main__":
    main()
