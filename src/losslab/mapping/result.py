"""What a map measured: per training its outcome, whether its loss rose and its own bound;
and the pieces a map's parts send back, merged into one.

A map trained in parts (`losslab map -m map.parts=K`, on any Hydra launcher) gives one
`Piece` per part; `merge` checks that every training arrived exactly once and lays them out
as one process would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from losslab.core.errors import LosslabError
from losslab.core.grid import Grid
from losslab.core.outcome import OUTCOMES

UNSTABLE = ("diverged", "rising", "oscillating")  # what the bound says happens above the line


@dataclass
class Piece:
    """Some trainings of a map, by flat index into [values, seeds, lrs] (lr fastest)."""

    index: np.ndarray  # int64
    finals: np.ndarray  # the last epoch's loss
    labels: np.ndarray  # int8, index into OUTCOMES
    risen: np.ndarray  # bool: the loss went above its first value at some epoch
    curves: dict[int, np.ndarray] = field(default_factory=dict)  # kept slot -> per-epoch loss


@dataclass
class MapResult:
    """One row per cell (lr fastest, then the axis); per training, its outcome, whether its
    loss rose, and its own bound."""

    grid: Grid
    shares: dict[str, np.ndarray]  # outcome -> [values, lrs] share of seeds, for every OUTCOME
    final_loss: np.ndarray  # median over seeds (inf/NaN where they ended so)
    critical_lr: np.ndarray  # [values]: median over the seeds whose loss has curvature
    labels: np.ndarray  # [values, seeds, lrs]: each training's outcome (index into OUTCOMES)
    risen: np.ndarray  # [values, seeds, lrs]: its loss went above its first value at some epoch
    bounds: np.ndarray  # [values, seeds]: 2/λ_max at that seed's initial weights (inf: λ <= 0)
    epochs: int
    seconds: float = 0.0
    curves: dict[int, np.ndarray] = field(default_factory=dict)  # kept cells' per-epoch loss

    @property
    def rose(self) -> np.ndarray:
        """[values, lrs]: the share of seeds whose loss rose at some epoch."""
        return self.risen.mean(1)

    @property
    def rose_bounded(self) -> np.ndarray:
        """[values, lrs]: that share among the seeds that have a bound (NaN: none has),
        where the figure draws its measured line."""
        bounded = np.isfinite(self.bounds)[:, :, None]
        count = bounded.sum(1)
        with np.errstate(invalid="ignore"):
            return np.where(count > 0, (self.risen & bounded).sum(1) / count, np.nan)

    def agreement(self, margin: float = 0.02, by: str = "rose") -> tuple[float, int]:
        """Share of the trainings farther than `margin` from their own seed's bound that did
        what the bound says, and how many there are. `rose`: the loss went up at some epoch
        iff lr > 2/λ_max (the symptom users ask about; on a quadratic, gradient descent
        below the line never raises the loss). `outcome`: the run ended unstable (diverged,
        rising or oscillating) iff lr > 2/λ_max. A seed with no curvature has no bound:
        its trainings count as below it."""
        lr, bound = self.grid.lrs[None, None, :], self.bounds[:, :, None]
        far = np.abs(lr / bound - 1) > margin
        ended = np.isin(self.labels, [OUTCOMES.index(k) for k in UNSTABLE])
        agree = (self.risen if by == "rose" else ended) == (lr > bound)
        n = int(far.sum())
        return (float(agree[far].mean()) if n else math.nan), n


def merge(grid: Grid, bounds: np.ndarray, epochs: int, pieces: list[Piece], seconds: float) -> MapResult:
    """One map from its pieces; every training must arrive exactly once (a part lost or run
    twice is an error, never a map with holes)."""
    shape = (len(grid.values), len(grid.seeds), len(grid.lrs))
    finals, labels = np.full(shape, np.nan), np.zeros(shape, dtype=np.int8)
    risen, seen = np.zeros(shape, dtype=bool), np.zeros(grid.size, dtype=np.int64)
    curves: dict[int, np.ndarray] = {}
    for p in pieces:
        np.add.at(seen, p.index, 1)
        at = np.unravel_index(p.index, shape)
        finals[at], labels[at], risen[at] = p.finals, p.labels, p.risen
        curves.update(p.curves)
    if not np.all(seen == 1):
        missing, twice = int((seen == 0).sum()), int((seen > 1).sum())
        raise LosslabError(
            f"the map's parts do not add up: {missing} trainings missing, {twice} trained twice"
        )
    finite = np.where(np.isfinite(bounds), bounds, np.nan)
    crit = np.full(len(grid.values), np.inf)
    has = np.isfinite(finite).any(1)
    crit[has] = np.nanmedian(finite[has], axis=1)
    shares = {name: (labels == i).mean(1) for i, name in enumerate(OUTCOMES)}
    median = np.median(np.where(labels == OUTCOMES.index("diverged"), np.inf, finals), axis=1)
    return MapResult(grid, shares, median, crit, labels, risen, bounds, epochs, seconds, curves)
