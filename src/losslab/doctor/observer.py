"""The part of a watch both doors share: the record, the fixed batch, the moments.

`Observer` holds what the plain-loop `Watch` (doctor/watch.py) and the Lightning
`DoctorCallback` (doctor/callback.py) both do: remember a fixed batch, note non-finite
batches, count dead and saturated units in bursts, read the optimizer, and at the first
update measure who is held, the gradient flow, the head's reach and the curvature (the
door supplies `loss_at(x)`: λ_max of its own loss on the fixed batch with inputs x).
Expensive probes run at a few chosen steps only. Any error inside turns the watch off
with one line on stderr; the user's training goes on.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from losslab.doctor.curvature import relative_update
from losslab.doctor.evidence import standardised
from losslab.doctor.report import Diagnosis
from losslab.doctor.seen import Moment, Seen, nonfinite_rows, optimizer_facts
from losslab.doctor.spy import Activity, Spy
from losslab.doctor.watching import judge
from losslab.probes import head_range, targets_outside

EARLY = 8  # "after a few steps": the second curvature moment
ROWS = 128  # the fixed batch's rows (curvature, scale, head range)
LANCZOS = 12  # Hessian-vector products per curvature moment


def guarded(fn: Callable) -> Callable:
    """A hook that can never fail the training it watches."""

    @functools.wraps(fn)
    def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
        obs = self if isinstance(self, Observer) else self.observer
        if obs is None or obs.off or obs.busy:
            return None
        try:
            return fn(self, *args, **kwargs)
        except Exception as e:
            obs.fail(e)
            return None

    return hook


class Observer:
    """The shared record keeping; a door subclasses it and adds its hooks."""

    name = "losslab.watch"

    def __init__(self, model: nn.Module, curvature: bool = True) -> None:
        self.model, self.curvature = model, curvature
        self.seen = Seen()
        self.off = self.busy = False
        self.x: torch.Tensor | None = None  # the fixed batch
        self.y: torch.Tensor | None = None
        self.rise = False
        self.before: dict[str, torch.Tensor] = {}
        self.init_params: dict[str, torch.Tensor] = {}  # kept only while inputs look unscaled
        self.current: dict[str, torch.Tensor] = {}  # this step's inputs and targets
        self.spy = Spy(self.target, getattr(self, "backward", None), self.fail)
        self.activity = Activity(model)
        self.named = list(model.named_parameters())
        if not self.named:
            self.fail(None, "the model has no parameters: there is nothing to watch")

    def fail(self, error: BaseException | None, text: str = "") -> None:
        """Turn the watch off with one line on stderr; the training goes on."""
        detail = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else ""
        why = text or f"{type(error).__name__}: {detail}"
        print(f"{self.name}: stopped watching ({why})", file=sys.stderr)
        self.seen.note(f"the watch stopped early: {why}")
        self.close()
        self.off = True

    def close(self) -> None:
        self.spy.close()
        if self.activity.running:
            self.activity_done()

    def report(self) -> Diagnosis:
        """The doctor's report on the training so far (`str`: the table; `to_dict()`: JSON)."""
        self.close()
        s = self.seen
        s.broadcast = s.broadcast or self.spy.broadcast
        if self.init_params and s.outcome() in ("diverged", "rising", "stalled") and self.x is not None:
            # Only a failing run asks whether the scale explains it: λ_max at the initial
            # weights on the standardised fixed batch, measured now, once.
            s.lam_standardised = self.lam(standardised(self.x), self.init_params)
            self.init_params = {}
        return judge(s)

    def read_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        s = self.seen
        s.optimizer, s.lr, s.momentum, s.known_optimizer = optimizer_facts(optimizer)

    def this_step(self, tensors: dict[str, torch.Tensor]) -> None:
        """This step's batch (references, no copy): read only if its loss is not finite."""
        self.current = dict(tensors)

    def loss_seen(self, value: float, epoch: int | None = None) -> None:
        """A training step's loss. The first non-finite one has its batch searched for NaN/inf:
        data that is not finite makes the loss so at its first batch, so a finite loss means
        there is nothing to search, and healthy steps pay nothing for the check."""
        s = self.seen
        s.losses.append(value)
        if value < s.lowest:
            s.lowest = value
        if epoch is not None:
            s.epochs.append(epoch)
        if math.isfinite(value) or s.first_nonfinite is not None:
            return
        s.first_nonfinite = len(s.losses) - 1
        if s.nonfinite_batch is not None:
            return
        for where, t in self.current.items():
            if rows := nonfinite_rows(t):
                s.nonfinite_batch = {"step": s.steps, "epoch": epoch, "rows": rows, "where": where}
                return

    def inputs(self, x: torch.Tensor) -> None:
        if self.x is None and x.is_floating_point():
            self.x = x.detach()[:ROWS].clone()

    def target(self, y: torch.Tensor) -> None:
        self.current.setdefault("targets", y)
        if self.y is None:
            self.y = y.detach()[:ROWS].clone()
            if y.is_floating_point():
                self.seen.distinct_targets = int(torch.unique(self.y).numel())

    def activity_done(self) -> None:
        dead, saturated = self.activity.stop()
        if not self.seen.dead_at_init:
            self.seen.dead_at_init = dead
        self.seen.dead, self.seen.saturated = dead, saturated

    def first_step(self, optimizers: list[torch.optim.Optimizer], head: nn.Module) -> None:
        """Before the first update: who is held, gradient flow, the fixed batch's facts."""
        s = self.seen
        held = {id(p) for o in optimizers for g in o.param_groups for p in g["params"]}
        s.missing = [n for n, p in self.named if p.grad is not None and id(p) not in held]
        s.frozen = [n for n, p in self.named if not p.requires_grad]
        total = sum(p.numel() for _, p in self.named)
        s.frozen_share = sum(p.numel() for _, p in self.named if not p.requires_grad) / max(total, 1)
        s.first_grads = {n: float(p.grad.norm()) for n, p in self.named if p.ndim >= 2 and p.grad is not None}
        if s.optimizer != "SGD":
            self.before = {n: p.detach().clone() for n, p in self.named if p.ndim >= 2}
        if self.y is not None and self.y.is_floating_point():
            s.head_range = head_range(head)
            s.head_outside = targets_outside(self.y, *s.head_range)
        lam = self.moment("init")
        x = self.x
        if x is not None and len(x) > 1 and x.is_floating_point():
            s.input_abs_max = float(x.abs().max())
            if s.input_abs_max > 3 and math.isfinite(lam):
                self.init_params = {n: p.detach().clone() for n, p in self.named if p.requires_grad}

    def stepped(self) -> None:
        """After an optimizer step: the first update's size (adaptive optimizers)."""
        if self.seen.steps == 0 and self.before:
            self.seen.update_ratio = relative_update(self.before, dict(self.model.named_parameters()))
            self.before = {}
        self.seen.steps += 1

    def maybe_moments(self) -> None:
        """Before a step: curvature after a few steps, and at the first sharp rise."""
        s = self.seen
        if s.steps == EARLY:
            self.moment("early")
        if not self.rise and s.steps > 0 and s.rose_sharply():
            self.rise = True
            self.moment("rise")

    def lam(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> float:
        """λ_max of the door's loss on the fixed batch with inputs x, at `params` (default:
        the weights now); NaN where it cannot be measured (class labels, no loss, no batch)."""
        if not self.curvature or self.y is None or not self.y.is_floating_point():
            return math.nan
        self.busy = self.activity.paused = True  # our own forward passes are not training steps
        try:
            weights = params or {n: p.detach() for n, p in self.named if p.requires_grad}
            return self.loss_at(x, weights)
        finally:
            self.busy = self.activity.paused = False

    def loss_at(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> float:
        """A door's λ_max of its own loss on the fixed batch (inputs x) at `params`."""
        return math.nan

    def moment(self, label: str) -> float:
        s = self.seen
        lam = self.lam(self.x) if self.x is not None else math.nan
        ratio = s.lr * lam / (2 + 2 * s.momentum) if s.optimizer == "SGD" and math.isfinite(lam) else None
        s.moments.append(Moment(s.steps, label, lam, ratio))
        return lam
