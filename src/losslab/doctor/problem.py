"""A training problem as the Python door receives it, and a plain loop that trains it.

`Problem` holds factories, not objects (a fresh model per seed, an optimizer per model), so
the doctor can rerun it with one thing changed: a smaller learning rate, standardised
inputs, reshaped targets, a linear head. The loop is what a user's own would be: shuffled
mini-batches (or the full batch), zero_grad, backward, step; the epoch's loss is the mean
over its batches. It stops at the first non-finite loss, which then stands for the rest.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from losslab.core.errors import LosslabError


@dataclass(frozen=True)
class Problem:
    make_model: Callable[[int], nn.Module]
    x: torch.Tensor
    y: torch.Tensor
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    make_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
    epochs: int
    batch_size: int | None
    shuffle: bool
    seeds: tuple[int, ...]
    metrics: tuple[str, ...] = ()
    lr_scale: float = 1.0  # a counterfactual: every group's lr times this
    head: nn.Module | None = None  # a counterfactual: the Sequential's last module replaced
    # A counterfactual on the hidden layers: "relu" swaps every hidden Sigmoid/Tanh for a
    # ReLU with He (fan-in) init; "fan_in" keeps the activations and re-draws every Linear
    # with a fan-in-scaled (Glorot) init.
    rebuild: str | None = None
    # Success as the caller defines it: (problem, trained model, its losses) -> solved?
    # None: R² ≥ 0.95 on the training set (regression), accuracy ≥ 95% (classes).
    solved: Callable[[Problem, nn.Module, np.ndarray], bool] | None = None

    def but(self, **changes: object) -> Problem:
        return replace(self, **changes)

    def model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        try:
            model = self.make_model(seed)
        except Exception as e:
            raise LosslabError(f"model factory failed for seed {seed}: {type(e).__name__}: {e}") from e
        if not isinstance(model, nn.Module):
            raise LosslabError(f"model factory must return a torch.nn.Module, got {type(model).__name__}")
        if self.head is not None and isinstance(model, nn.Sequential):
            model[-1] = self.head
        if self.rebuild is not None and isinstance(model, nn.Sequential):
            _rebuild(model, self.rebuild)
        return model

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        opt = self.make_optimizer(model.parameters())
        for g in opt.param_groups:
            g["lr"] = g["lr"] * self.lr_scale
        return opt


def _rebuild(model: nn.Sequential, how: str) -> None:
    """Apply the `rebuild` counterfactual in place (the head, the last module, is kept)."""
    for i, layer in enumerate(model[:-1]):
        if how == "relu" and isinstance(layer, (nn.Sigmoid, nn.Tanh)):
            model[i] = nn.ReLU()
    for layer in model:
        if isinstance(layer, nn.Linear):
            if how == "relu":
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias) if layer.bias is not None else None


def as_tensors(data: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, y) as float32 tensors (integer class labels stay integers), y in the shape given."""
    try:
        x, y = data
    except (TypeError, ValueError):
        raise LosslabError("data must be a pair (X, y) of arrays or tensors") from None
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    x = x.float() if x.is_floating_point() or x.dtype in (torch.int32, torch.int64) else x
    y = y.float() if y.is_floating_point() else y
    if x.ndim == 1:
        x = x[:, None]
    if len(x) != len(y) or len(x) == 0:
        raise LosslabError(f"X has {len(x)} rows and y has {len(y)}: they must match and not be empty")
    return x, y


@dataclass
class Trained:
    seed: int
    losses: np.ndarray  # per epoch; NaN after the first non-finite epoch
    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None


def train(problem: Problem, seed: int, max_steps: int | None = None) -> Trained:
    """The plain loop over every epoch (or only its first `max_steps` updates)."""
    model = problem.model(seed)
    opt = problem.optimizer(model)
    x, y = problem.x, problem.y
    n = len(x)
    bs = problem.batch_size or n
    losses = np.full(problem.epochs, np.nan)
    steps = 0
    for epoch in range(problem.epochs):
        if problem.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        else:
            order = torch.arange(n)
        total = 0.0
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            opt.zero_grad()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the doctor reports a broadcasting loss itself
                value = problem.loss(model(x[idx]), y[idx])
            if not isinstance(value, torch.Tensor) or value.ndim != 0:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise LosslabError(f"loss(output, target) must return a scalar tensor, got {shape}")
            value.backward()
            opt.step()
            total += float(value.detach())
            steps += 1
            if steps == max_steps:
                return Trained(seed, losses, model, opt)
        losses[epoch] = total / math.ceil(n / bs)
        if not math.isfinite(losses[epoch]):
            losses[epoch:] = losses[epoch]  # blown up: no point training on
            break
    return Trained(seed, losses, model, opt)
