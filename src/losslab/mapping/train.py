"""`losslab map`: where training breaks, for every learning rate × one knob × seed at once.

The grid comes from conf/map/<scenario>.yaml (`core.grid`). For each value of the second
axis the variant's config is composed with that value (so data, scaling and the model are
exactly those of `losslab run`), each seed's model is built as the single-run path builds
it, and every (lr, value, seed) trains as one stacked tensor program (`engine.batched`),
in chunks sized to the memory budget. A data-set size axis on unscaled data shares one
tensor: configuration c sees its first n rows. Every training gets the outcome `losslab run`
would give that seed (`core.outcome.classify_many`: the same rules, from the first, last
and last quarter's losses, and the scenario's own success criterion where it is a margin
on the outputs); each cell, the share of seeds per outcome, the median final loss and the
theory bound 2/λ_max at the seeds' initial weights (float64 HVPs, median over seeds).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from losslab.core.config import compose
from losslab.core.criteria import MARGIN, Criterion
from losslab.core.errors import LosslabError
from losslab.core.grid import Grid, chunk_size, knob_override
from losslab.core.outcome import classify_many, tail_length
from losslab.engine import build
from losslab.engine.batched import CPU_CHUNK, Stacked, outputs, train_sgd
from losslab.engine.losses import kind_of
from losslab.engine.updates import unsupported, update_of
from losslab.mapping.result import MapResult, Piece, merge
from losslab.probes import lambda_max
from losslab.probes.inputs import class_margin

JUDGED = (MARGIN, "test_mae", "test_rel_mae")  # end-of-fit numbers a map can judge success on


def _value_cfg(cfg: DictConfig, grid: Grid, value: float) -> DictConfig:
    root = Path(cfg.paths.root)
    knob = knob_override(grid.knob, value)
    seeds = f"seeds=[{','.join(str(s) for s in grid.seeds)}]"
    variant = [f"scenario={grid.scenario}", f"variant={grid.scenario}/{grid.variant}"]
    return compose([*variant, *grid.overrides, knob, seeds], root)


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
    first = _value_cfg(cfg, grid, grid.values[0])
    why = unsupported(first)  # before the other values are composed and built
    if why is not None:
        what = f"variant '{grid.variant}'" + (f" with {' '.join(grid.overrides)}" if grid.overrides else "")
        raise LosslabError(
            f"the map's engine trains SGD or Adam on the MSE or BCE with logits, as `losslab run` does; "
            f"{what} cannot be mapped: {why} (map one without that, e.g. map.variant=broken)"
        )
    ready = []
    for i, value in enumerate(grid.values):
        vcfg = first if i == 0 else _value_cfg(cfg, grid, value)
        dm = build.datamodule(vcfg)
        dm.setup()
        models = _models(vcfg, grid.seeds)
        ready.append((vcfg, dm, models, chunk_size(grid, _bytes_per_config(models, len(dm.x)))))
    crit = Criterion.of(ready[0][0])  # the variant's (a variant may change the criterion)
    if crit.number is not None and (crit.number not in JUDGED or grid.knob == "data.n_points"):
        raise LosslabError(
            f"a map judges success on the final loss, a margin over all training rows or the "
            f"held-out error ({', '.join(JUDGED[1:])}); "
            f"scenario '{grid.scenario}' is judged on {crit.number}: set "
            f"scenario.outcome.solved=null and scenario.outcome.converge_below=<loss>"
        )
    return ready


def _groups(grid: Grid, ready: Ready) -> list[tuple[list[int], object, torch.Tensor | None]]:
    """Which axis values train as one tensor: a data-set size on unscaled data (full batches,
    the MSE) is a prefix of the largest set (one group, a row count per configuration);
    anything else, one group per value. Each: (value indices, the datamodule whose rows are
    used, counts per value)."""
    prefix = grid.knob == "data.n_points" and all(
        r[0].data.get("scale") is None and r[0].data.get("batch_size") is None and kind_of(r[0]) == "mse"
        for r in ready
    )
    if prefix:
        largest = int(np.argmax(grid.values))
        return [(list(range(len(ready))), ready[largest][1], torch.as_tensor(grid.values, dtype=torch.long))]
    return [([vi], r[1], None) for vi, r in enumerate(ready)]


def _solved(crit: Criterion, net: Stacked, dm: object, x: torch.Tensor, y: torch.Tensor) -> np.ndarray | None:
    """Each configuration's success by the scenario's own end-of-fit number, computed as
    `fit` computes it (a margin on the training outputs, or the held-out error in the
    targets' units); None: judged on the final loss."""
    if crit.number is None or crit.bound is None:
        return None
    if crit.number == MARGIN:
        out = outputs(net, x)
        out = torch.sigmoid(out) if crit.link == "sigmoid" else out
        value = class_margin(out.reshape(len(net), -1), y)
    else:  # test_mae, test_rel_mae (recorders.RegressionHealth)
        x_test, _ = dm.part("test")
        truth = dm.raw["test"][1].to(x.device)
        err = (dm.decode_y(outputs(net, x_test.to(x.device))) - truth).abs().mean((1, 2))
        value = err / truth.abs().mean().clamp_min(1e-12) if crit.number == "test_rel_mae" else err
    return np.asarray([crit.bound.met(float(v)) for v in value.double().cpu()])


Unit = tuple[int, int, int]  # (group, first, last + 1): configurations trained as one tensor


def _device(grid: Grid) -> torch.device:
    auto = grid.accelerator == "auto" and torch.cuda.is_available()
    return torch.device("cuda" if grid.accelerator in ("gpu", "cuda") or auto else "cpu")


def units(grid: Grid, ready: Ready) -> list[Unit]:
    """The chunks the grid trains in: within the memory budget, and at least `grid.parts`
    of them, so a map split into parts has work for every part. A configuration's numbers
    do not depend on which others share its chunk (every sum runs within one configuration)."""
    groups, ns, nl = _groups(grid, ready), len(grid.seeds), len(grid.lrs)
    total = sum(len(members) for members, _, _ in groups) * ns * nl
    share = -(-total // grid.parts)
    out = []
    for g, (members, _, _) in enumerate(groups):
        per = min(ready[m][3] for m in members)
        per = min(per, CPU_CHUNK) if _device(grid).type == "cpu" else per
        per = min(per, share)
        size = len(members) * ns * nl
        out += [(g, lo, min(lo + per, size)) for lo in range(0, size, per)]
    return out


def theory(grid: Grid, ready: Ready) -> np.ndarray:
    """[values, seeds]: each seed's bound 2/λ_max at its initial weights (inf: no curvature,
    e.g. a ReLU head dead at init), by float64 HVP power iteration (`probes.lambda_max`)."""
    bounds = np.empty((len(grid.values), len(grid.seeds)))
    for vi, (vcfg, dm, models, _) in enumerate(ready):
        loss_fn = instantiate(vcfg.loss)
        lams = np.asarray([lambda_max(m, loss_fn, dm.x, dm.y) for m in models])
        bounds[vi] = np.where(lams > 0, 2.0 / np.where(lams > 0, lams, 1.0), np.inf)
    return bounds


def epochs_of(grid: Grid, ready: Ready) -> int:
    return grid.epochs or round(ready[0][0].fit.epochs * ready[0][0].epochs_scale)


def train_part(
    grid: Grid, ready: Ready, part: int = 0, keep: dict[tuple[int, int, int], int] | None = None
) -> Piece:
    """Train the chunks `units(...)[part::grid.parts]` and label every training as `losslab
    run` labels a seed (`core.outcome`); `keep`: (value index, seed index, lr index) -> slot,
    whose per-epoch loss lands in the piece's curves (the exactness test)."""
    device, ns, nl = _device(grid), len(grid.seeds), len(grid.lrs)
    criterion = Criterion.of(ready[0][0])
    epochs = epochs_of(grid, ready)
    lrs = torch.as_tensor(grid.lrs, dtype=torch.float64)  # Adam divides it in double, as torch
    groups = _groups(grid, ready)
    index, finals, labels, risen, curves = [], [], [], [], {}
    for g, lo, hi in units(grid, ready)[part :: grid.parts]:
        members, dm, counts = groups[g]
        vcfg, _, models, _ = ready[members[0]]
        x, y = dm.x.to(device), dm.y.to(device)
        base = Stacked.of(models)
        idx = torch.arange(lo, hi)
        vi = torch.as_tensor(members)[idx // (ns * nl)]
        si, li = (idx // nl) % ns, idx % nl
        net = Stacked([w[si].clone() for w in base.weights], [b[si].clone() for b in base.biases],
                      base.activation, base.output_activation).to(device)  # fmt: skip
        cells = list(zip(vi.tolist(), si.tolist(), li.tolist(), strict=True))
        wanted = [(j, keep[c]) for j, c in enumerate(cells) if keep and c in keep]
        k = torch.as_tensor([j for j, _ in wanted], dtype=torch.long, device=device)
        count = None if counts is None else counts[vi].to(device)
        shuffle = (list(grid.seeds), si.to(device)) if vcfg.data.get("shuffle") else None
        batch = vcfg.data.get("batch_size")
        tail = tail_length(epochs)
        update = update_of(vcfg, lrs[li].to(device))
        kind = kind_of(vcfg)
        trace = train_sgd(net, x, y, lrs[li].to(device), epochs, count, k, tail, batch, shuffle, update, kind)
        final = trace.final.double().cpu().numpy()
        above = trace.peak > trace.start * (1 + 1e-3)  # as `rising` compares the final
        risen.append((above | (trace.first_nonfinite > 0) | trace.peak.isnan()).cpu().numpy())
        labels.append(classify_many(
            trace.initial.cpu().numpy(),
            final,
            trace.tail.cpu().numpy(),
            trace.first_nonfinite.cpu().numpy() > 0,
            epochs,
            criterion.converge_below,
            criterion.improve_factor,
            None if counts is not None else _solved(criterion, net, dm, x, y),
        ))  # fmt: skip
        index.append(((vi * ns + si) * nl + li).numpy())
        finals.append(final)
        for row, (_, slot) in enumerate(wanted):
            curves[slot] = trace.curves[row].double().cpu().numpy()
    arrays = _cat(index, np.int64), _cat(finals, np.float64), _cat(labels, np.int8), _cat(risen, bool)
    return Piece(*arrays, curves)


def _cat(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype) if arrays else np.empty(0, dtype)


def run_map(
    cfg: DictConfig,
    grid: Grid,
    keep: dict[tuple[int, int, int], int] | None = None,
    ready: Ready | None = None,
) -> MapResult:
    """Train the whole grid in this process (every part in turn) and merge it."""
    ready = ready if ready is not None else prepare_map(cfg, grid)
    start = time.perf_counter()
    bounds = theory(grid, ready)
    pieces = [train_part(grid, ready, part, keep) for part in range(grid.parts)]
    return merge(grid, bounds, epochs_of(grid, ready), pieces, time.perf_counter() - start)
