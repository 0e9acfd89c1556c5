"""A stability map's grid: learning rate × one config knob × seeds, read from conf/map/.

No torch here: the grid is checked (every axis non-empty, learning rates and sizes
positive, a known knob, a chunk that fits the memory budget) before anything trains, and
each failure is one line that says what to type.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from losslab.core.config import available, compose
from losslab.core.errors import LosslabError

# Knobs a map's second axis may vary, and what their values must be.
KNOBS = {
    "data.n_points": "a positive integer (the first N rows of the training data)",
    "model.sizes.1": "a positive integer (the hidden width)",
    "data.input_scale": "a positive number (the raw inputs are multiplied by it)",
}
INTEGER = ("data.n_points", "model.sizes.1")
# A knob a variant's config leaves unset means: (None: as many rows as the largest value)
UNSET = {"data.n_points": None, "data.input_scale": 1.0}


def knob_override(knob: str, value: float) -> str:
    """The Hydra override that sets a map's knob (added where the config lacks it)."""
    return f"++{knob}={int(value)}" if knob in INTEGER else f"++{knob}={float(value)!r}"


@dataclass(frozen=True)
class Grid:
    """Every configuration of a map, flattened: lr varies fastest, then seeds, then the axis."""

    scenario: str
    variant: str
    axis: str  # the CSV column, e.g. n_points
    knob: str  # the config key it sets, e.g. data.n_points
    lrs: np.ndarray  # float64, log-spaced
    values: np.ndarray  # the second axis
    seeds: tuple[int, ...]
    epochs: int | None
    memory_mib: float
    accelerator: str
    parts: int = 1  # `losslab map -m`: the trainings split into this many Hydra jobs
    overrides: tuple[str, ...] = ()  # the command's overrides of the run config (not map.*)

    @property
    def size(self) -> int:
        return len(self.lrs) * len(self.values) * len(self.seeds)

    def cells(self) -> int:
        return len(self.lrs) * len(self.values)


def _positive(values: np.ndarray, what: str) -> None:
    if values.size == 0:
        raise LosslabError(f"{what} is empty: give at least one value")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        bad = values[~(np.isfinite(values) & (values > 0))][0]
        raise LosslabError(f"{what} must be positive, got {bad:g}")


def _lrs(spec: DictConfig) -> np.ndarray:
    if spec.get("values") is not None:
        lrs = np.asarray(list(spec["values"]), dtype=np.float64)
    else:
        num = spec.get("num")
        if not isinstance(num, int) or num < 1:
            raise LosslabError(f"map.lr.num must be a positive integer, got {num!r}")
        lo, hi = float(spec.get("start", math.nan)), float(spec.get("stop", math.nan))
        _positive(np.asarray([lo, hi]), "map.lr.start/stop")
        lrs = np.geomspace(lo, hi, num)
    _positive(lrs, "map.lr")
    return lrs


def _values(spec: DictConfig, knob: str) -> np.ndarray:
    if spec.get("values") is not None:
        values = np.asarray(list(spec["values"]), dtype=np.float64)
    elif spec.get("range") is not None:
        lo, hi = (int(v) for v in spec["range"])
        values = np.arange(lo, hi + 1, dtype=np.float64)
    else:
        raise LosslabError("map.axis needs `values: [...]` or `range: [first, last]`")
    _positive(values, f"map.axis ({knob})")
    if knob in INTEGER and not np.all(values == np.round(values)):
        raise LosslabError(f"map.axis ({knob}) must be {KNOBS[knob]}")
    return values


def grid_of(cfg: DictConfig) -> Grid:
    """The map `cfg.map` describes, checked."""
    m = cfg.get("map")
    if m is None:
        raise LosslabError(
            f"no map for scenario '{cfg.scenario.name}': add conf/map/{cfg.scenario.name}.yaml"
        )
    axis = m.get("axis") or {}
    knob = axis.get("knob")
    if knob not in KNOBS:
        raise LosslabError(f"map.axis.knob must be one of {', '.join(KNOBS)}; got {knob!r}")
    seeds = OmegaConf.to_container(m.get("seeds", cfg.seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise LosslabError(f"map.seeds must be a non-empty list of seeds (integers >= 0), got {seeds!r}")
    epochs = m.get("epochs")
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise LosslabError(f"map.epochs must be a positive integer or null, got {epochs!r}")
    budget = m.get("memory_mib", 2048)
    if not isinstance(budget, (int, float)) or budget <= 0:
        raise LosslabError(f"map.memory_mib must be a positive number, got {budget!r}")
    parts = m.get("parts", 1)
    if not isinstance(parts, int) or isinstance(parts, bool) or parts < 1:
        raise LosslabError(f"map.parts must be a positive integer, got {parts!r}")
    return Grid(
        scenario=cfg.scenario.name,
        variant=str(m.get("variant", "broken")),
        axis=str(axis.get("name") or knob.rsplit(".", 1)[-1]),
        knob=knob,
        lrs=_lrs(m.get("lr") or {}),
        values=_values(axis, knob),
        seeds=tuple(seeds),
        epochs=epochs,
        memory_mib=float(budget),
        accelerator=str(m.get("accelerator", "cpu")),
        parts=parts,
    )


def chunk_size(grid: Grid, bytes_per_config: float) -> int:
    """How many configurations train at once within the memory budget."""
    fits = int(grid.memory_mib * 2**20 // max(bytes_per_config, 1.0))
    if fits < 1:
        need = bytes_per_config / 2**20
        raise LosslabError(
            f"one configuration needs {need:.1f} MiB, more than map.memory_mib={grid.memory_mib:g}: "
            f"raise it (e.g. map.memory_mib={math.ceil(need * 2)})"
        )
    return fits


# Overrides the map sets itself: the rest (e.g. optimizer.momentum=0.9, model.sizes=[1,4,1])
# apply to every configuration, as they would to `losslab run`.
RESERVED = ("scenario=", "variant=", "map=", "map.", "seeds=", "hydra")


def map_config(overrides: list[str], root: Path) -> tuple[DictConfig, Grid]:
    """The scenario's config with its map (conf/map/<scenario>.yaml), and the checked grid."""
    scenario = next((o.split("=", 1)[1] for o in overrides if o.startswith("scenario=")), None)
    if scenario is None:
        raise LosslabError("which scenario? e.g. losslab map scenario=linear")
    if scenario not in available(Path(root), "map"):
        have = ", ".join(available(Path(root), "map")) or "none"
        raise LosslabError(f"no map for scenario '{scenario}' (maps: {have}); add conf/map/{scenario}.yaml")
    cfg = compose([f"+map={scenario}", *overrides], root)
    grid = grid_of(cfg)
    own = tuple(o for o in overrides if not o.lstrip("+~").startswith(RESERVED))
    return cfg, dataclasses.replace(grid, overrides=own)
