"""Turn a run's per-epoch loss into an outcome a beginner would recognise.

Order of precedence:
- `diverged`: a non-finite loss anywhere (with the first inf and the first NaN epoch,
  1-based: epoch 1's loss is the loss before the first update);
- `converged`: final loss below the scenario's threshold (or, where the scenario
  defines one, its success criterion on the outputs is met);
- `stalled`: the loss sits on a plateau (its last quarter moved by less than 0.1%). A
  dead ReLU head freezes the loss after one explosive epoch: lower than epoch 1, but
  stuck; and a frozen loss may drift up by round-off, so this comes before `rising`;
- `oscillating`: over the last quarter the loss swings up and down (the direction flips
  at least every other epoch, the typical swing ≥ 15% of its level) with no net fall
  beyond two swings: bouncing across a valley, not descending it;
- `rising`: final loss above the first by more than 0.1%;
- `stalled`: fell by less than the scenario's `improve_factor`;
- `improving`: anything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OUTCOMES = ("diverged", "rising", "oscillating", "stalled", "improving", "converged")


@dataclass(frozen=True)
class Outcome:
    """One seed's verdict, with the epochs (1-based) where the loss first became inf and NaN."""

    label: str
    initial_loss: float
    final_loss: float
    first_inf_epoch: int | None
    first_nan_epoch: int | None

    @property
    def diverged_epoch(self) -> int | None:
        """First epoch whose loss is not finite."""
        epochs = [e for e in (self.first_inf_epoch, self.first_nan_epoch) if e is not None]
        return min(epochs) if epochs else None


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) + 1 if hits.size else None


def _plateau(losses: np.ndarray, rel: float = 1e-3) -> bool:
    tail = losses[-max(2, len(losses) // 4) :]
    return len(losses) >= 4 and float(tail.max() - tail.min()) <= rel * abs(float(tail.mean()))


def _oscillating(losses: np.ndarray) -> bool:
    """Last quarter: the direction flips at least every other epoch, the typical swing
    (median |Δ|) is ≥ 15% of the typical level, and the fitted line over it moves by less
    than two swings (no net descent). Medians: one spike is not an oscillation."""
    if len(losses) < 16:
        return False
    tail = losses[-max(8, len(losses) // 4) :]
    d = np.diff(tail)
    flips = float(np.mean(np.sign(d[1:]) != np.sign(d[:-1])))
    swing = float(np.median(np.abs(d)))
    drift = abs(float(np.polyfit(np.arange(len(tail)), tail, 1)[0])) * (len(tail) - 1)
    return flips >= 0.5 and swing >= 0.15 * abs(float(np.median(tail))) and drift < 2 * swing


def classify(
    losses: np.ndarray, converge_below: float, improve_factor: float = 0.5, solved: bool | None = None
) -> Outcome:
    """`solved`, when the scenario defines a success criterion on the outputs (e.g. every
    XOR output on the right side of 0.5 by a margin), replaces the loss threshold."""
    losses = np.asarray(losses, dtype=np.float64)
    inf_at, nan_at = _first(np.isinf(losses)), _first(np.isnan(losses))
    initial, final = float(losses[0]), float(losses[-1])
    if inf_at is not None or nan_at is not None:
        label = "diverged"
    elif solved if solved is not None else final < converge_below:
        label = "converged"
    elif _plateau(losses):  # before `rising`: a frozen loss may drift up by round-off
        label = "stalled"
    elif _oscillating(losses):
        label = "oscillating"
    elif final > initial * (1 + 1e-3):
        label = "rising"
    elif final > improve_factor * initial:
        label = "stalled"
    else:
        label = "improving"
    return Outcome(label, initial, final, inf_at, nan_at)


def finite_or_none(v: float | None) -> float | None:
    """JSON and DVC have no inf/NaN: a non-finite number is written as null."""
    return v if v is not None and math.isfinite(v) else None


def tail_length(epochs: int) -> int:
    """How many last losses `classify` looks at (its oscillation window; the plateau's is
    the last `max(2, epochs // 4)` of them): what a batched run keeps per configuration."""
    return min(epochs, max(8, epochs // 4))


def classify_many(
    initial: np.ndarray,
    final: np.ndarray,
    tail: np.ndarray,
    nonfinite: np.ndarray,
    epochs: int,
    converge_below: float,
    improve_factor: float = 0.5,
    solved: np.ndarray | None = None,
) -> np.ndarray:
    """`classify` for many runs at once, from what a batched run keeps of each: its first
    and last loss, its last `tail_length(epochs)` losses [runs, T], whether any loss was
    inf or NaN. The same rules in the same order; returns indices into OUTCOMES."""
    initial, final = np.asarray(initial, np.float64), np.asarray(final, np.float64)
    tail = np.asarray(tail, np.float64).reshape(len(initial), -1)
    label = np.full(len(initial), OUTCOMES.index("improving"))
    with np.errstate(all="ignore"):
        label[final > improve_factor * initial] = OUTCOMES.index("stalled")
        label[final > initial * (1 + 1e-3)] = OUTCOMES.index("rising")
        if epochs >= 16:
            d = np.diff(tail, axis=1)
            flips = np.mean(np.sign(d[:, 1:]) != np.sign(d[:, :-1]), axis=1)
            swing = np.median(np.abs(d), axis=1)
            t = np.arange(tail.shape[1]) - (tail.shape[1] - 1) / 2
            slope = (tail * t).sum(1) / (t * t).sum()
            drift = np.abs(slope) * (tail.shape[1] - 1)
            osc = (flips >= 0.5) & (swing >= 0.15 * np.abs(np.median(tail, axis=1))) & (drift < 2 * swing)
            label[osc] = OUTCOMES.index("oscillating")
        if epochs >= 4:
            plateau = tail[:, -max(2, epochs // 4) :]
            flat = plateau.max(1) - plateau.min(1) <= 1e-3 * np.abs(plateau.mean(1))
            label[flat] = OUTCOMES.index("stalled")
        label[solved if solved is not None else final < converge_below] = OUTCOMES.index("converged")
    label[np.asarray(nonfinite, bool)] = OUTCOMES.index("diverged")
    return label
