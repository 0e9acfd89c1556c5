"""How far the pipeline is from its own training work, measured in one run on this machine.

plain     every variant × seed × epoch of every scenario in params.yaml, trained as plain
          PyTorch: each variant's seeds as one stacked ensemble (the models and data
          `losslab run` builds, each seed's own batch order), a plain loop of forward, the
          scenario's loss summed over seeds, backward (the scratch scenario's hand-written
          gradients instead), the variant's optimizer (and scheduler) step. No Lightning,
          recorders, verdicts, tracking, figures or doctor. Its final losses are checked
          against metrics/<scenario>.json (median over seeds, 1e-4 relative), so it is the
          same work. It is one program per variant with autograd and torch.optim, not yet
          the practical limit the maps' engine reaches (all variants at once, the backward
          written out): for these tiny models its per-step overhead dominates.
pipeline  a cold `dvc repro --force` in a fresh clone (a new MLflow store), stage by stage
          (`dvc repro --force --single-item <stage>`, in dvc.yaml's order): training,
          verdicts, tracking, figures, the doctor; the doctor's share is measured by running
          each train stage's command again with `doctor.enabled=false`.

    .venv/bin/python bench/limit.py [--limit-only]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig
from torch.func import vmap

from losslab.core.checks import epochs as epochs_of
from losslab.core.config import compose, variants_of
from losslab.engine import build
from losslab.engine.runtime import prepare_process

ROOT = Path(__file__).resolve().parents[1]


def _optimizers(module: torch.nn.Module) -> tuple[torch.optim.Optimizer, object]:
    got = module.configure_optimizers()
    if isinstance(got, dict):
        return got["optimizer"], got["lr_scheduler"]["scheduler"]
    return got, None


def train_plain(cfg: DictConfig) -> tuple[float, list[float]]:
    """One variant's seeds, trained as one stacked ensemble by a plain loop: (seconds, each
    seed's final epoch loss)."""
    dm = build.datamodule(cfg)
    dm.setup()
    seeds = list(cfg.seeds)
    torch.manual_seed(seeds[0])
    dm.bind(seeds)
    net = build.ensemble(cfg)
    module = build.module(cfg, net)
    opt, sched = _optimizers(module)
    epochs = epochs_of(cfg)
    hand = getattr(module, "hand", None)  # the scratch scenario: its own gradients
    loader = dm.train_dataloader()  # once: it counts epochs for each seed's batch order
    start = time.perf_counter()
    last = torch.zeros(len(seeds))
    for _ in range(epochs):
        total, batches = torch.zeros(len(seeds)), 0
        for x, y in loader:
            if hand is not None:
                params = net.params()
                with torch.no_grad():
                    losses, grads, _ = vmap(hand)({k: v.detach() for k, v in params.items()}, x, y)
                for k, v in params.items():
                    v.grad = grads[k]
            else:
                losses = module.replica_losses(module(x), y)
                opt.zero_grad()
                losses.sum().backward()
            opt.step()
            if hand is not None:
                opt.zero_grad()
            if sched is not None:
                sched.step()
            total += losses.detach()
            batches += 1
        last = total / batches
    return time.perf_counter() - start, [float(v) for v in last]


def _same(got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-12)


def limit(root: Path) -> tuple[float, dict[str, float], list[str]]:
    """(seconds in all, seconds per scenario, the variants whose final loss differs)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    prepare_process("cpu")
    per, off = {}, []
    for scenario in params["scenarios"]:
        metrics = json.loads((root / "metrics" / f"{scenario}.json").read_text())
        per[scenario] = 0.0
        for name in variants_of(root, scenario):
            cfg = compose(
                [f"scenario={scenario}", f"variant={scenario}/{name}", f"seeds={params['seeds']}",
                 f"epochs_scale={params['epochs_scale']}"],
                root,
            )  # fmt: skip
            took, finals = train_plain(cfg)
            per[scenario] += took
            median = statistics.median(finals) if all(math.isfinite(v) for v in finals) else None
            want = metrics[name].get("median_final_loss")
            if not _same(median, want):
                off.append(f"{scenario}/{name}: {median} vs metrics {want}")
    return sum(per.values()), per, off


def _env() -> dict[str, str]:
    """This environment's tools (dvc, losslab) first on PATH; no store of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LOSSLAB_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=_env(), check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def pipeline(root: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Per stage of a cold `dvc repro --force` in a fresh clone, and per train stage its
    time with the doctor off."""
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
        for d in ("data",):  # prepared data is an output: the clone makes it again
            shutil.rmtree(clone / d, ignore_errors=True)
        listed = subprocess.run(
            ["dvc", "stage", "list", "--name-only"], cwd=clone, env=_env(), check=True, capture_output=True
        )
        names = listed.stdout.decode().split()
        stages = {}
        for s in names:
            stages[s] = _run(["dvc", "repro", "--force", "--single-item", s], clone)
            print(f"  {s:<26} {stages[s]:7.1f} s", flush=True)
        quiet = {}
        for s in (n.split("@", 1)[1] for n in names if n.startswith("train@")):
            quiet[s] = _run(
                ["losslab", "run", f"scenario={s}", "doctor.enabled=false", "--params", "params.yaml"], clone
            )
            print(f"  train@{s} with the doctor off {quiet[s]:7.1f} s", flush=True)
    return stages, quiet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit-only", action="store_true", help="skip the cold dvc repro (~7 min)")
    args = ap.parse_args()
    total, per, off = limit(ROOT)
    print(f"plain: the pipeline's training work as plain PyTorch, seeds batched: {total:.2f} s")
    for s, t in per.items():
        print(f"  {s:<18} {t:7.2f} s")
    print(
        f"  final losses as metrics/*.json (1e-4 relative): {'all' if not off else 'NOT ' + '; '.join(off)}"
    )
    if args.limit_only:
        return
    print("pipeline: cold dvc repro --force, stage by stage:", flush=True)
    stages, quiet = pipeline(ROOT)
    repro = sum(stages.values())
    train = {s: t for s, t in stages.items() if s.startswith("train@")}
    doctor = sum(train[f"train@{s}"] - quiet[s] for s in quiet)
    maps = sum(t for s, t in stages.items() if s.startswith("map@"))
    print(f"pipeline: {repro:.1f} s in all")
    rest = repro - maps
    print(
        f"ratio: the repro without its maps {rest:.1f} s = {rest / total:.1f}× plain; without the "
        f"doctor's share ({doctor:.1f} s) {rest - doctor:.1f} s = {(rest - doctor) / total:.1f}×; "
        f"the maps' stages {maps:.1f} s"
    )


if __name__ == "__main__":
    main()
