"""A map's files and MLflow run, and the scenario's own variants placed on it.

Marks are the variants that differ from the map's variant only in what the map varies (the
learning rate, the axis knob) or in the number of epochs: the rest (another loss, another
optimizer, scaled data) would not sit on this map.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf

from losslab.core.config import compose, variants_of
from losslab.core.errors import Interrupted
from losslab.core.files import atomic_write, map_paths
from losslab.core.grid import UNSET, Grid
from losslab.mapping.result import MapResult
from losslab.mapping.train import Ready, prepare_map, run_map
from losslab.report.maps import map_csv, map_png
from losslab.tracking.writer import TrackerProcess


def _rest(cfg: DictConfig, knobs: tuple[str, ...]) -> dict:
    """The config without the keys a map varies or a mark may differ in."""
    out = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(out, dict)
    for dotted in knobs:
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
        elif isinstance(node, list) and leaf.isdigit() and int(leaf) < len(node):
            node[int(leaf)] = None
    return out


class Mark(NamedTuple):
    """A variant of the scenario that sits on the map."""

    name: str
    value: float  # its value of the axis knob (null in its config: all rows, the largest value)
    lr: float
    epochs: int


def marks(cfg: DictConfig, grid: Grid) -> list[Mark]:
    """The scenario's variants that sit on this map (see the module's docstring)."""
    root = Path(cfg.paths.root)
    varied = ("variant", "optimizer.lr", grid.knob, "fit.epochs")
    variant = [f"scenario={grid.scenario}", f"variant={grid.scenario}/{grid.variant}"]
    base = compose([*variant, *grid.overrides], root)
    same = _rest(base, varied)
    out = []
    for name in variants_of(root, grid.scenario):
        v = compose([f"scenario={grid.scenario}", f"variant={grid.scenario}/{name}"], root)
        if _rest(v, varied) != same:
            continue
        value = OmegaConf.select(v, grid.knob, default=UNSET.get(grid.knob))
        if value is None:  # every row of the data: as many as the largest value reaches
            value = grid.values.max()
        out.append(Mark(name, float(value), float(v.optimizer.lr), round(v.fit.epochs * v.epochs_scale)))
    return out


def write_outputs(result: MapResult, root: Path, marked: list[Mark]) -> tuple[str, bytes]:
    """maps/<scenario>.csv and maps/<scenario>.png, written; their contents returned."""
    g = result.grid
    shares = result.shares
    text = map_csv(
        g.axis, g.values, g.lrs, len(g.seeds), shares, result.rose, result.final_loss, result.critical_lr
    )
    (rose, far), (ended, _) = result.agreement(), result.agreement(by="outcome")
    title = (
        f"{g.scenario}/{g.variant}: {g.size:,} trainings ({len(g.lrs)} lr × {len(g.values)} {g.axis} × "
        f"{len(g.seeds)} seeds)\nlr > 2/λ_max (per seed) agrees, in the {far:,} trainings off it, with\n"
        f"'the loss rises at some epoch' in {rose:.1%} and 'the run ends unstable' in {ended:.1%}"
    )
    points = [
        (m.name if m.epochs == result.epochs else f"{m.name} ({m.epochs} epochs)", m.value, m.lr)
        for m in marked
    ]
    png = map_png(
        g.axis,
        g.values,
        g.lrs,
        shares,
        result.rose_bounded,
        result.final_loss,
        result.critical_lr,
        points,
        title,
    )
    csv_path, png_path = map_paths(root, g.scenario)
    atomic_write(csv_path, text)
    atomic_write(png_path, png)
    return text, png


def track(
    cfg: DictConfig, grid: Grid, tracker: TrackerProcess, train: Callable[[Ready], MapResult] | None = None
) -> MapResult:
    """Train the map, write its files and log one MLflow run (experiment `<scenario>-map`)
    holding both; an interrupt ends the run KILLED and writes nothing. `train`: how the
    prepared grid trains (default: here, `run_map`; `losslab map -m`: as Hydra jobs)."""
    key = "map"
    try:
        ready = prepare_map(cfg, grid)
        experiment = tracker.experiment(f"{grid.scenario}-map")
        name = f"{grid.variant}: lr × {grid.axis} ({grid.size:,} trainings)"
        tracker.start(key, experiment, name, {"role": "map", "variant": grid.variant}, [])
        result = train(ready) if train else run_map(cfg, grid, ready=ready)
        marked = marks(cfg, grid)
        text, png = write_outputs(result, Path(cfg.paths.root), marked)
        (agree, far), (ended, _) = result.agreement(), result.agreement(by="outcome")
        params = {
            "axis": grid.knob,
            "lrs": f"{grid.lrs.min():g}..{grid.lrs.max():g} ({len(grid.lrs)}, log)",
            "values": f"{grid.values.min():g}..{grid.values.max():g} ({len(grid.values)})",
            "seeds": str(list(grid.seeds)),
            "configurations": str(grid.size),
            "parts": str(grid.parts),
        }
        summary = {
            "theory_agreement": agree if far else None,  # the loss rises iff lr > 2/λ_max
            "theory_agreement_outcome": ended if far else None,  # the run ends unstable iff …
            "seconds": result.seconds,
        }
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
