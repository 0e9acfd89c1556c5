"""A training problem as the Python door receives it, and a plain loop that trains it.

`Problem` holds factories, not objects (a fresh model per seed, an optimizer per model), so
the doctor can rerun it with one thing changed: a smaller learning rate, standardised
inputs, reshaped targets, a linear head. The loop is what a user's own would be: shuffled
mini-batches (or the full batch), zero_grad, backward, step; the epoch's loss is the mean
over its batches. It stops at the first non-finite loss, which then stands for the rest.

`train_seeds` trains every seed at once where it can: the seeds' models stacked with
torch.func and run as one vmapped program, the user's own optimizer class stepping the
stacked tensors (an element-wise rule such as SGD or Adam updates each seed's slice exactly
as it would alone). A model vmap cannot run (dropout, batch-norm statistics, `.item()`) or
another optimizer falls back to the loop, seed after seed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from losslab.core.errors import LosslabError

# Optimizers whose update of a tensor is element-wise: stepping the stacked seeds is
# stepping each seed alone (LBFGS and anything unknown take the loop).
ELEMENTWISE = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad,
    torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adadelta,
)  # fmt: skip


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

    def optimizer(self, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        """The user's optimizer over `params` (a model's, or the seeds' stacked tensors), every
        group's lr times `lr_scale`."""
        opt = self.make_optimizer(params)
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


def _order(problem: Problem, seed: int, epoch: int) -> torch.Tensor:
    n = len(problem.x)
    if problem.shuffle:
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return torch.arange(n)


def _scalar(value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim != 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise LosslabError(f"loss(output, target) must return a scalar tensor, got {shape}")
    return value


def train_seeds(problem: Problem) -> list[Trained]:
    """Every seed trained over every epoch: as one stacked program where that is exact, else
    seed after seed (`train`)."""
    models = [problem.model(seed) for seed in problem.seeds]
    if not isinstance(problem.optimizer(models[0].parameters()), ELEMENTWISE) or len(models) < 2:
        return [train(problem, seed) for seed in problem.seeds]
    try:
        return _stacked(problem, models)
    except (RuntimeError, NotImplementedError):  # vmap cannot run this model: the loop can
        return [train(problem, seed) for seed in problem.seeds]


def _stacked(problem: Problem, models: list[nn.Module]) -> list[Trained]:
    """The loop of `train` for every seed at once; a seed's loss stops at its first
    non-finite epoch, and its model is the one of that moment (as `train` leaves it)."""
    params, buffers = stack_module_state(models)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    template = models[0]
    opt = problem.optimizer(params.values())

    def one(p: dict, b: dict, xi: torch.Tensor) -> torch.Tensor:
        return functional_call(template, (p, b), (xi,))

    x, y, k, n = problem.x, problem.y, len(models), len(problem.x)
    bs = problem.batch_size or n
    losses = np.full((k, problem.epochs), np.nan)
    final: list[dict | None] = [None] * k
    for epoch in range(problem.epochs):
        order = torch.stack([_order(problem, seed, epoch) for seed in problem.seeds])
        total = torch.zeros(k)
        for start in range(0, n, bs):
            idx = order[:, start : start + bs]
            opt.zero_grad()
            out = vmap(one, randomness="error")(params, buffers, x[idx])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the doctor reports a broadcasting loss itself
                per_seed = torch.stack([_scalar(problem.loss(out[i], y[idx[i]])) for i in range(k)])
            per_seed.sum().backward()  # each seed's slice gets exactly its own gradient
            opt.step()
            total += per_seed.detach()
        epoch_loss = (total / math.ceil(n / bs)).numpy()
        for i in range(k):
            if final[i] is None:
                losses[i, epoch] = epoch_loss[i]
                if not math.isfinite(epoch_loss[i]):
                    losses[i, epoch:] = epoch_loss[i]
                    final[i] = {name: v[i].detach().clone() for name, v in params.items()}
        if all(f is not None for f in final):
            break
    trained = []
    for i, (seed, model) in enumerate(zip(problem.seeds, models, strict=True)):
        state = final[i] or {name: v[i].detach() for name, v in params.items()}
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(state[name])
        trained.append(Trained(seed, losses[i], model))
    return trained


def train(problem: Problem, seed: int, max_steps: int | None = None) -> Trained:
    """The plain loop over every epoch (or only its first `max_steps` updates)."""
    model = problem.model(seed)
    opt = problem.optimizer(model.parameters())
    x, y = problem.x, problem.y
    n = len(x)
    bs = problem.batch_size or n
    losses = np.full(problem.epochs, np.nan)
    steps = 0
    for epoch in range(problem.epochs):
        order = _order(problem, seed, epoch)
        total = 0.0
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            opt.zero_grad()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the doctor reports a broadcasting loss itself
                value = _scalar(problem.loss(model(x[idx]), y[idx]))
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
