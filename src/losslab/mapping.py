"""`losslab map`: where training breaks, for every learning rate × one knob × seed at once.

The grid comes from conf/map/<scenario>.yaml (`core.grid`). For each value of the second
axis the variant's config is composed with that value (so data, scaling and the model are
exactly those of `losslab run`), each seed's model is built as the single-run path builds
it, and every (lr, value, seed) trains as one stacked tensor program (`engine.batched`),
in chunks sized to the memory budget. A data-set size axis on unscaled data shares one
tensor: configuration c sees its first n rows. Each cell gets the share of seeds that
converged, rose or diverged, the median final loss and the theory bound 2/λ_max at the
seeds' initial weights (float64 Hessian-vector products, median over seeds).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from losslab.core.config import compose, variants_of
from losslab.core.errors import Interrupted
from losslab.core.files import atomic_write, map_paths
from losslab.core.grid import Grid, chunk_size
from losslab.engine import build
from losslab.engine.batched import CPU_CHUNK, Stacked, train_sgd
from losslab.probes import lambda_max
from losslab.report.maps import map_csv, map_png
from losslab.tracking.writer import TrackerProcess


@dataclass
class MapResult:
    """One row per cell (lr fastest, then the axis), the bound per axis value."""

    grid: Grid
    converged: np.ndarray  # [values, lrs] share of seeds
    rising: np.ndarray
    diverged: np.ndarray
    final_loss: np.ndarray  # median over seeds (inf/NaN where they ended so)
    critical_lr: np.ndarray  # [values]
    seconds: float = 0.0
    curves: dict[int, np.ndarray] = field(default_factory=dict)  # kept cells' per-epoch loss

    def agreement(self, margin: float = 0.02) -> tuple[float, int]:
        """Share of cells farther than `margin` from the line whose majority outcome is
        what the bound says (unstable — diverged or rising — iff lr > critical_lr)."""
        lr = self.grid.lrs[None, :]
        crit = self.critical_lr[:, None]
        far = np.abs(lr / crit - 1) > margin
        unstable = (self.diverged + self.rising) > 0.5
        agree = unstable == (lr > crit)
        n = int(far.sum())
        return (float(agree[far].mean()) if n else math.nan), n


def _value_cfg(cfg: DictConfig, grid: Grid, value: float) -> DictConfig:
    root = Path(cfg.paths.root)
    knob = f"{grid.knob}={int(value)}"
    seeds = f"seeds=[{','.join(str(s) for s in grid.seeds)}]"
    return compose(
        [f"scenario={grid.scenario}", f"variant={grid.scenario}/{grid.variant}", knob, seeds], root
    )


def _models(cfg: DictConfig, seeds: tuple[int, ...]) -> list[torch.nn.Module]:
    """Each seed's initial model, built exactly as the single-run path's Ensemble builds it."""
    factory = instantiate(cfg.model)
    out = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out.append(factory())
    return out


def _bytes_per_config(models: list[torch.nn.Module], rows: int) -> float:
    params = sum(p.numel() for p in models[0].parameters())
    widths = sum(m.out_features for m in models[0] if isinstance(m, torch.nn.Linear))
    return 4.0 * (4 * params + 4 * rows * (widths + 1)) + 64


Ready = list[tuple[DictConfig, object, list[torch.nn.Module], int]]


def prepare_map(cfg: DictConfig, grid: Grid) -> Ready:
    """Every axis value's config, data and initial models, and its chunk checked against the
    memory budget: all that can be refused is refused here, before any run or training."""
    ready = []
    for value in grid.values:
        vcfg = _value_cfg(cfg, grid, value)
        dm = build.datamodule(vcfg)
        dm.setup()
        models = _models(vcfg, grid.seeds)
        ready.append((vcfg, dm, models, chunk_size(grid, _bytes_per_config(models, len(dm.x)))))
    return ready


def _groups(grid: Grid, ready: Ready) -> list[tuple[list[int], object, torch.Tensor | None]]:
    """Which axis values train as one tensor: a data-set size on unscaled data is a prefix of
    the largest set (one group, a row count per configuration); anything else, one group per
    value. Each: (value indices, the datamodule whose rows are used, counts per value)."""
    prefix = grid.knob == "data.n_points" and all(r[0].data.get("scale") is None for r in ready)
    if prefix:
        largest = int(np.argmax(grid.values))
        return [(list(range(len(ready))), ready[largest][1], torch.as_tensor(grid.values, dtype=torch.long))]
    return [([vi], r[1], None) for vi, r in enumerate(ready)]


def run_map(
    cfg: DictConfig,
    grid: Grid,
    keep: dict[tuple[int, int, int], int] | None = None,
    ready: Ready | None = None,
) -> MapResult:
    """Train the grid; `keep`: (value index, seed index, lr index) -> slot, whose per-epoch
    loss lands in `MapResult.curves` (the exactness test)."""
    ready = ready if ready is not None else prepare_map(cfg, grid)
    start = time.perf_counter()
    auto = grid.accelerator == "auto" and torch.cuda.is_available()
    device = torch.device("cuda" if grid.accelerator in ("gpu", "cuda") or auto else "cpu")
    nv, ns, nl = len(grid.values), len(grid.seeds), len(grid.lrs)
    finals, initial = np.empty((nv, ns, nl)), np.empty((nv, ns, nl))
    bad = np.zeros((nv, ns, nl), dtype=bool)
    crit = np.empty(nv)
    result_curves: dict[int, np.ndarray] = {}
    for vi, (vcfg, dm, models, _) in enumerate(ready):  # the theory line, per value
        loss_fn = instantiate(vcfg.loss)
        crit[vi] = 2.0 / float(np.median([lambda_max(m, loss_fn, dm.x, dm.y) for m in models]))
    lrs = torch.as_tensor(grid.lrs, dtype=torch.float32)
    for members, dm, counts in _groups(grid, ready):
        vcfg, _, models, per = ready[members[0]]
        per = min(ready[m][3] for m in members)
        per = min(per, CPU_CHUNK) if device.type == "cpu" else per
        epochs = grid.epochs or round(vcfg.fit.epochs * vcfg.epochs_scale)
        x, y = dm.x.to(device), dm.y.to(device)
        base = Stacked.of(models)
        total = len(members) * ns * nl
        for lo in range(0, total, per):
            idx = torch.arange(lo, min(lo + per, total))
            vi = torch.as_tensor(members)[idx // (ns * nl)]
            si, li = (idx // nl) % ns, idx % nl
            net = Stacked([w[si].clone() for w in base.weights], [b[si].clone() for b in base.biases],
                          base.activation, base.output_activation).to(device)  # fmt: skip
            cells = list(zip(vi.tolist(), si.tolist(), li.tolist(), strict=True))
            wanted = [(j, keep[c]) for j, c in enumerate(cells) if keep and c in keep]
            k = torch.as_tensor([j for j, _ in wanted], dtype=torch.long, device=device)
            count = None if counts is None else counts[vi].to(device)
            trace = train_sgd(net, x, y, lrs[li].to(device), epochs, count=count, keep=k)
            at = (vi.numpy(), si.numpy(), li.numpy())
            finals[at] = trace.final.double().cpu().numpy()
            initial[at] = trace.initial.double().cpu().numpy()
            bad[at] = trace.first_nonfinite.cpu().numpy() > 0
            for row, (_, slot) in enumerate(wanted):
                result_curves[slot] = trace.curves[row].double().cpu().numpy()
    below = float(cfg.scenario.outcome.get("converge_below") or 0.01)
    converged = ~bad & (finals < below)
    rising = ~bad & ~converged & (finals > initial * (1 + 1e-3))
    median = np.median(np.where(bad, np.inf, finals), axis=1)
    seconds = time.perf_counter() - start
    return MapResult(
        grid, converged.mean(1), rising.mean(1), bad.mean(1), median, crit, seconds, result_curves
    )


def marks(cfg: DictConfig, grid: Grid) -> list[tuple[str, float, float]]:
    """The scenario's variants that sit on this map (plain SGD on unscaled data): name,
    their value of the axis knob (null: all rows), their lr."""
    root = Path(cfg.paths.root)
    out = []
    for name in variants_of(root, grid.scenario):
        v = compose([f"scenario={grid.scenario}", f"variant={grid.scenario}/{name}"], root)
        opt = v.optimizer
        plain = str(opt.get("_target_", "")).endswith("SGD") and not opt.get("momentum")
        if not plain or v.data.get("scale") is not None:
            continue
        value = OmegaConf.select(v, grid.knob)
        if value is None:  # every row of the data: as many as the largest value reaches
            value = grid.values.max()
        out.append((name, float(value), float(opt.lr)))
    return out


def outputs(result: MapResult, root: Path, marked: list[tuple[str, float, float]]) -> tuple[str, bytes]:
    """maps/<scenario>.csv and maps/<scenario>.png, written; their contents returned."""
    g = result.grid
    shares = {"converged": result.converged, "rising": result.rising, "diverged": result.diverged}
    text = map_csv(g.axis, g.values, g.lrs, len(g.seeds), shares, result.final_loss, result.critical_lr)
    agree, far = result.agreement()
    title = (
        f"{g.scenario}/{g.variant}: {g.size:,} trainings ({len(g.lrs)} lr × {len(g.values)} {g.axis} × "
        f"{len(g.seeds)} seeds)\nunstable iff lr > 2/λ_max in {agree:.1%} of the {far} cells off the line"
    )
    png = map_png(g.axis, g.values, g.lrs, shares, result.final_loss, result.critical_lr, marked, title)
    csv_path, png_path = map_paths(root, g.scenario)
    atomic_write(csv_path, text)
    atomic_write(png_path, png)
    return text, png


def track(cfg: DictConfig, grid: Grid, tracker: TrackerProcess) -> MapResult:
    """Train the map, write its files and log one MLflow run (experiment `<scenario>-map`)
    holding both; an interrupt ends the run KILLED and writes nothing."""
    key = "map"
    try:
        ready = prepare_map(cfg, grid)
        experiment = tracker.experiment(f"{grid.scenario}-map")
        name = f"{grid.variant}: lr × {grid.axis} ({grid.size:,} trainings)"
        tracker.start(key, experiment, name, {"role": "map", "variant": grid.variant}, [])
        result = run_map(cfg, grid, ready=ready)
        marked = marks(cfg, grid)
        text, png = outputs(result, Path(cfg.paths.root), marked)
        agree, far = result.agreement()
        params = {
            "axis": grid.knob,
            "lrs": f"{grid.lrs.min():g}..{grid.lrs.max():g} ({len(grid.lrs)}, log)",
            "values": f"{grid.values.min():g}..{grid.values.max():g} ({len(grid.values)})",
            "seeds": str(list(grid.seeds)),
            "configurations": str(grid.size),
        }
        summary = {"theory_agreement": agree if far else None, "seconds": result.seconds}
        tracker.log(key, params=params, summary=summary)
        tracker.artifact_text(key, text, f"{grid.scenario}.csv")
        tracker.artifact_bytes(key, png, f"{grid.scenario}.png")
        tracker.end(key)
        tracker.close()
    except BaseException as e:
        with contextlib.suppress(Exception):
            tracker.end_all("KILLED" if isinstance(e, (Interrupted, KeyboardInterrupt)) else "FAILED")
        tracker.abort()
        raise
    return result
