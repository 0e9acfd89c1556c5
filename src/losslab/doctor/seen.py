"""What a watch saw in someone else's training: plain numbers, no hooks and no verdict.

The plain-loop door (`doctor/watch.py`) and the Lightning door (`doctor/callback.py`) fill
one `Seen`; `doctor/watching.py` turns it into the doctor's report. Keeping the record
separate from the hooks is what lets both doors share one judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

RISE = 3.0  # a loss past 3× its lowest so far, and above its first value: a sharp rise


def sampled(step: int) -> bool:
    """Steps where the costly probes run: 0, 1, 2, 4, 8, 16, … (a few per decade of steps)."""
    return step < 3 or (step & (step - 1)) == 0


@dataclass(frozen=True)
class Moment:
    """λ_max on the fixed batch at one moment, and the lr against the optimizer's bound."""

    step: int
    label: str  # init | early | rise
    lam: float
    ratio: float | None  # lr over the optimizer's stability bound (None: no bound known)


@dataclass
class Seen:
    """Everything measured; each field says where it comes from."""

    optimizer: str = ""  # the optimizer's class name
    lr: float = math.nan
    momentum: float = 0.0
    known_optimizer: bool = True
    steps: int = 0  # optimizer steps taken
    losses: list[float] = field(default_factory=list)  # one per backward (or training step)
    epochs: list[int] = field(default_factory=list)  # the epoch of each loss (Lightning only)
    nonfinite_batch: dict | None = None  # the first batch with NaN/inf: step, epoch, rows, where
    broadcast: tuple[tuple[int, ...], tuple[int, ...], str] | None = None  # outputs, targets, call
    carried: int = 0  # backward calls that met the previous step's gradients still there
    checked: int = 0  # backward calls after a step (where a carried gradient could be seen)
    carry_growth: float = math.nan  # grad norm at the latest sampled step / at the first
    missing: list[str] = field(default_factory=list)  # have gradients, in no optimizer group
    frozen: list[str] = field(default_factory=list)  # requires_grad=False
    frozen_share: float = 0.0  # of all parameter elements
    first_grads: dict[str, float] = field(default_factory=dict)  # per weight, before step 0
    moments: list[Moment] = field(default_factory=list)
    update_ratio: float = math.nan  # rms(ΔW)/rms(W), largest layer, first step (adaptive)
    input_abs_max: float = math.nan
    lam_standardised: float = math.nan  # λ_max at init on the standardised fixed batch
    dead: dict[str, float] = field(default_factory=dict)  # ReLU module -> share never active
    dead_at_init: dict[str, float] = field(default_factory=dict)
    saturated: dict[str, float] = field(default_factory=dict)  # tanh/sigmoid -> share pinned
    head_outside: float = math.nan  # share of targets outside the head's range
    head_range: tuple[float, float] = (-math.inf, math.inf)
    distinct_targets: int = 0
    accuracy_logged: bool = False
    notes: list[str] = field(default_factory=list)
    lowest: float = math.inf  # the lowest finite loss so far
    first_nonfinite: int | None = None  # the index of the first inf/NaN loss (step or batch)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def rose_sharply(self) -> bool:
        """The latest loss is non-finite, or past RISE× the lowest so far and above the first."""
        if not self.losses:
            return False
        last = self.losses[-1]
        if not math.isfinite(last):
            return True
        return len(self.losses) > 1 and last > RISE * max(self.lowest, 1e-12) and last > self.losses[0]

    def outcome(self) -> str:
        """diverged (a non-finite loss), rising, stalled (< 10% down) or improving: the start
        and end levels are the means of the first and last tenth of the losses."""
        values = self.losses
        if not values:
            return "unknown"
        if self.first_nonfinite is not None:
            return "diverged"
        k = max(1, len(values) // 10)
        start, end = sum(values[:k]) / k, sum(values[-k:]) / k
        if end > 1.1 * start:
            return "rising"
        if end > 0.9 * start:
            return "stalled"
        return "improving"

    def worst_ratio(self) -> float | None:
        ratios = [m.ratio for m in self.moments if m.ratio is not None and math.isfinite(m.ratio)]
        return max(ratios) if ratios else None


def optimizer_facts(optimizer: torch.optim.Optimizer) -> tuple[str, float, float, bool]:
    """(class name, lr, momentum, whether the doctor knows a stability bound for it)."""
    group = optimizer.param_groups[0]
    kind = type(optimizer).__name__
    lr = group.get("lr")
    lr = float(lr) if isinstance(lr, (int, float)) or torch.is_tensor(lr) else math.nan
    momentum = float(group.get("momentum") or 0.0) if kind == "SGD" else 0.0
    known = kind in KNOWN_OPTIMIZERS
    return kind, lr, momentum, known


# SGD: the quadratic bound (2 + 2μ)/λ_max; the adaptive ones: the first update's size.
KNOWN_OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Adadelta")


def nonfinite_rows(t: torch.Tensor) -> int:
    """Rows (first dimension) of a floating tensor holding a NaN or inf; 0 otherwise."""
    if not t.is_floating_point() or t.numel() == 0:
        return 0
    bad = ~torch.isfinite(t.detach())
    if not bool(bad.any()):
        return 0
    return int(bad.reshape(len(t), -1).any(1).sum()) if t.ndim else 1
