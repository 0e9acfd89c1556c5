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
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BIN = Path(PY).parent


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


def time_floor(scenarios: list[str], seeds: list[int]) -> float:
    """bench/floor.py: the same runs as plain PyTorch, one process, imports included."""
    t = time.perf_counter()
    cmd = [PY, str(ROOT / "bench" / "floor.py"), str(ROOT / "data"), ",".join(map(str, seeds)), *scenarios]
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def time_repro_all() -> tuple[float, float, int]:
    """Cold `dvc repro --force` of every scenario in a temp git copy, then a no-op
    `dvc repro`: (cold seconds, no-op seconds, peak RSS of the whole process tree)."""
    with tempfile.TemporaryDirectory() as d:
        proj = Path(d)
        for rel in subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split():
            (proj / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, proj / rel)
        git = ["git", "-c", "user.email=b@b", "-c", "user.name=bench"]
        for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench"]):
            subprocess.run([*git, *cmd], cwd=proj, check=True)
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("LOSSLAB_ROOT", None)
        t = time.perf_counter()
        proc = subprocess.Popen(
            [str(BIN / "dvc"), "repro", "--force"],
            cwd=proj,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ps, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss(ps))
            time.sleep(0.1)
        cold = time.perf_counter() - t
        assert proc.returncode == 0, "dvc repro failed"
        t = time.perf_counter()
        subprocess.run([str(BIN / "dvc"), "repro"], cwd=proj, env=env, check=True, capture_output=True)
        return cold, time.perf_counter() - t, peak


def per_epoch(epochs: int = 500) -> dict[str, float]:
    """Seconds per epoch: bare loop, Lightning + health recorder, MLflow per logged point."""
    import logging
    import warnings

    import torch

    from losslab.engine.datamodule import TableDataModule
    from losslab.engine.models import Ensemble, mlp
    from losslab.engine.module import EnsembleModule, make_trainer
    from losslab.recorders import HealthRecorder

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
    ap.add_argument("--scenario", default="linear", help="the stage to time against its floor")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--all", action="store_true", help="also: cold dvc repro of every scenario vs the floor")
    args = ap.parse_args()
    seeds = [0, 1, 2, 3, 4]
    if not (ROOT / "data" / args.scenario).is_dir():
        subprocess.run([str(BIN / "losslab"), "prepare", f"scenario={args.scenario}"], cwd=ROOT, check=True)

    stage, floor = [], []
    for _ in range(args.repeat):  # interleaved, so drift on the machine hits both alike
        floor.append(time_floor([args.scenario], seeds))
        stage.append(time_stage(args.scenario))
    s, f = statistics.median(stage), statistics.median(floor)
    print(f"cold {args.scenario} stage          : {s:6.2f} s  (runs: {', '.join(f'{x:.2f}' for x in stage)})")
    print(f"plain-PyTorch floor         : {f:6.2f} s  (runs: {', '.join(f'{x:.2f}' for x in floor)})")
    print(f"ratio stage / floor         : {s / f:6.2f}   (target <= 4)")

    e = per_epoch()
    ratio = e["lightning"] / e["bare"]
    print(f"per epoch, bare loop        : {e['bare'] * 1e6:8.1f} µs")
    print(f"per epoch, Lightning+health : {e['lightning'] * 1e6:8.1f} µs  ({ratio:.1f}× bare)")
    print(f"MLflow sqlite, per point    : {e['mlflow_point'] * 1e6:8.1f} µs  (off the training process)")

    if args.all:
        cold, noop, peak = time_repro_all()
        f_all = time_floor([], seeds)
        print(f"cold dvc repro, all         : {cold:6.1f} s")
        print(f"plain-PyTorch floor, all    : {f_all:6.1f} s")
        print(f"ratio repro / floor         : {cold / f_all:6.2f}   (target <= 3)")
        print(f"no-op dvc repro             : {noop:6.2f} s  (target <= 3)")
        print(f"peak memory, process tree   : {peak / 2**30:6.2f} GiB  (target <= 1.5 per stage)")


if __name__ == "__main__":
    main()
