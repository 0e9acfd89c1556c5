"""How far the pipeline is from its own training work, measured in one run on this machine.

plain     every variant × seed × epoch of every scenario in params.yaml, trained as plain
          PyTorch: each variant's seeds as one stacked ensemble (the models and data
          `losslab run` builds, each seed's own batch order), a plain loop of forward, the
          scenario's loss summed over seeds, backward (the scratch scenario's hand-written
          gradients instead), the variant's optimizer (and scheduler) step. No Lightning,
          recorders, verdicts, tracking, figures or doctor. Its final losses are checked
          against metrics/<scenario>.json (median over seeds, 1e-4 relative), so it is the
          same work. For these tiny models its per-step overhead (autograd) dominates.
engine    the same work on the engine's loop that `losslab run` now trains with
          (`engine.direct`: stacked weights, the backward written out, torch.optim's update
          arithmetic, no host sync inside an epoch; the scratch scenario's own batched
          gradients), with no recorder, verdict, tracking or figure: the pipeline's
          training arithmetic alone. Variants train as the pipeline trains them: each one
          program over its seeds, the compatible ones of a scenario (`engine.together`) as
          one program together.
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
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig
from torch.func import vmap

from losslab.core.checks import epochs as epochs_of
from losslab.core.config import compose, variants_of
from losslab.engine import build, direct, together
from losslab.engine.hooks import FitHooks, State
from losslab.engine.runtime import prepare_process

ROOT = Path(__file__).resolve().parents[1]


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
    opt, sched = direct.optimizers(module)
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


class _LastEpoch(FitHooks):
    """Each replica's loss in the last epoch (mean over its batches), nothing else."""

    def epoch_started(self, state: State) -> None:
        self.losses: list[torch.Tensor] = []

    def batch_ended(self, state: State, outputs: dict[str, torch.Tensor]) -> None:
        self.losses.append(outputs["replica_losses"])

    def finals(self) -> list[float]:
        return [float(v) for v in torch.stack(self.losses).mean(0)]


def train_engine(cfgs: list[DictConfig]) -> tuple[float, list[list[float]]]:
    """A scenario's variants on the engine's loop (`engine.direct`: the pipeline's own
    training arithmetic, the backward written out, the variants `engine.together` finds
    compatible as one program) with no recorder: (seconds, each variant's finals)."""
    members, lasts = [], []
    for cfg in cfgs:
        dm = build.datamodule(cfg)
        dm.setup()
        dm.bind(list(cfg.seeds))
        module = build.module(cfg, build.ensemble(cfg))
        lasts.append(_LastEpoch())
        why = direct.why_not(cfg, module, dm, [lasts[-1]])
        if why:
            raise SystemExit(f"bench/limit.py: the engine cannot train {cfg.variant.name}: {why}")
        members.append(together.Member(cfg, module, dm, [lasts[-1]]))
    start = time.perf_counter()
    for group in together.groups(members):
        direct.train_together([members[i] for i in group])
    return time.perf_counter() - start, [last.finals() for last in lasts]


def each_plain(cfgs: list[DictConfig]) -> tuple[float, list[list[float]]]:
    """A scenario's variants one after the other by `train_plain`."""
    done = [train_plain(cfg) for cfg in cfgs]
    return sum(t for t, _ in done), [f for _, f in done]


def _same(got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-12)


def limit(root: Path, train: Callable = each_plain) -> tuple[float, dict[str, float], list[str]]:
    """(seconds in all, seconds per scenario, the variants whose final loss differs), each
    scenario's variants trained by `train` (`each_plain` or `train_engine`)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    prepare_process("cpu")
    per, off = {}, []
    for scenario in params["scenarios"]:
        metrics = json.loads((root / "metrics" / f"{scenario}.json").read_text())
        names = variants_of(root, scenario)
        scale = params["epochs_scale"]
        common = [f"scenario={scenario}", f"seeds={params['seeds']}", f"epochs_scale={scale}"]
        cfgs = [compose([*common, f"variant={scenario}/{name}"], root) for name in names]
        per[scenario], finals = train(cfgs)
        for name, got in zip(names, finals, strict=True):
            median = statistics.median(got) if all(math.isfinite(v) for v in got) else None
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
    ap.add_argument("--limit-only", action="store_true", help="skip the cold dvc repro (~5 min)")
    args = ap.parse_args()
    totals = {}
    for name, train in (("plain", each_plain), ("engine", train_engine)):
        total, per, off = limit(ROOT, train)
        totals[name] = total
        print(f"{name}: {WHAT[name]}: {total:.2f} s")
        for s, t in per.items():
            print(f"  {s:<18} {t:7.2f} s")
        same = "all" if not off else "NOT " + "; ".join(off)
        print(f"  final losses as metrics/*.json (1e-4 relative): {same}", flush=True)
    if args.limit_only:
        return
    print("pipeline: cold dvc repro --force, stage by stage:", flush=True)
    stages, quiet = pipeline(ROOT)
    repro = sum(stages.values())
    train = {s: t for s, t in stages.items() if s.startswith("train@")}
    doctor = sum(train[f"train@{s}"] - quiet[s] for s in quiet)
    maps = sum(t for s, t in stages.items() if s.startswith("map@"))
    print(f"pipeline: {repro:.1f} s in all; the maps' stages {maps:.1f} s; the doctor's share {doctor:.1f} s")
    for name, total in totals.items():
        rest = repro - maps
        print(
            f"ratio to {name}: the repro {repro / total:.1f}×; without its maps {rest / total:.1f}×; "
            f"without its maps and the doctor's share {(rest - doctor) / total:.1f}×"
        )


WHAT = {
    "plain": "autograd and torch.optim, each variant's seeds batched",
    "engine": (
        "the engine's loop (the backward written out), each variant's seeds batched, "
        "compatible variants as one program, no recorder"
    ),
}


if __name__ == "__main__":
    main()
