"""A from-scratch dense network: forward and *hand-written* backward side by side.

The port of a NumPy network whose training "gets stuck". Its backward pass had four
bugs, each behind a flag so each one's effect can be seen alone:

1. chain_rule   the activation derivative was taken at the incoming gradient, not at the
                layer's pre-activation, and not multiplied by the incoming gradient;
2. bias_grad    the bias gradient came from the incoming gradient, not the delta;
3. feature_mean gradients were averaged over the feature dimension (input.shape[1]),
                not the batch;
4. (init)       weights and biases drawn as randn · 6/sqrt(n_in·n_out): far too large
                (`init_div: 100` is the answer's fix).

Training uses these gradients only (Lightning manual optimization); autograd is used
only to check them (`gradient_check`), in float64, on the same weights.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from functools import partial

import pytorch_lightning as pl
import torch
from torch import nn
from torch.func import grad, vmap

from losslab.health import Recorder
from losslab.models import Ensemble
from losslab.module import EnsembleModule

EPS = 1e-10  # the original clips probabilities to [EPS, 1 - EPS]


def _act(name: str) -> tuple[Callable, Callable]:
    """(activation, its derivative as a function of the pre-activation)."""
    if name == "sigmoid":
        return torch.sigmoid, lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z))
    if name == "relu":
        return torch.relu, lambda z: (z > 0).to(z.dtype)
    raise ValueError(f"unknown activation {name!r}")


class ScratchNet(nn.Module):
    """Dense layers W_i, b_i; `activation` between them, sigmoid on the output."""

    def __init__(self, sizes: list[int], activation: str = "sigmoid", init_div: float = 1.0) -> None:
        super().__init__()
        self.sizes, self.activation = list(sizes), activation
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            scale = 6 / math.sqrt(n_in * n_out) / init_div  # the original's init (÷100: the fix)
            self.register_parameter(f"W{i}", nn.Parameter(torch.randn(n_out, n_in) * scale))
            self.register_parameter(f"b{i}", nn.Parameter(torch.randn(n_out) * scale))

    @property
    def depth(self) -> int:
        return len(self.sizes) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward(dict(self.named_parameters()), x, self.depth, self.activation)[0]

    def __repr__(self) -> str:
        return f"ScratchNet({self.sizes}, {self.activation} hidden, sigmoid out)"


def forward(params: dict, x: torch.Tensor, depth: int, activation: str) -> tuple[torch.Tensor, list]:
    """Probabilities [N, 1] and, per layer, (input, pre-activation) for the backward pass."""
    act, _ = _act(activation)
    cache, a = [], x
    for i in range(depth):
        z = a @ params[f"W{i}"].T + params[f"b{i}"]
        cache.append((a, z))
        a = act(z) if i < depth - 1 else torch.sigmoid(z)
    return a, cache


def bce(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on probabilities clipped to [EPS, 1 - EPS], mean over samples."""
    pc = p.clamp(EPS, 1 - EPS)
    return -(y * torch.log(pc) + (1 - y) * torch.log(1 - pc)).mean()


def backward(
    params: dict, x: torch.Tensor, y: torch.Tensor, depth: int, activation: str, bugs: frozenset[str]
) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """The loss, the hand-written gradients (layer by layer from the output back), and p."""
    p, cache = forward(params, x, depth, activation)
    loss = bce(p, y)
    _, act_grad = _act(activation)
    pc = p.clamp(EPS, 1 - EPS)
    # dL/dp per sample (the clip passes no gradient where it is active, as autograd agrees).
    grad_out = (-(y / pc) + (1 - y) / (1 - pc)) * (p == pc).to(p.dtype)
    grads = {}
    for i in reversed(range(depth)):
        a_in, z = cache[i]
        d_act = (lambda t: torch.sigmoid(t) * (1 - torch.sigmoid(t))) if i == depth - 1 else act_grad
        # bug 1: derivative taken at the incoming gradient, chain rule dropped
        delta = d_act(grad_out) if "chain_rule" in bugs else grad_out * d_act(z)
        n = a_in.shape[1] if "feature_mean" in bugs else a_in.shape[0]  # bug 3: features, not batch
        grads[f"W{i}"] = delta.T @ a_in / n
        grads[f"b{i}"] = (grad_out if "bias_grad" in bugs else delta).sum(0) / n  # bug 2
        grad_out = delta @ params[f"W{i}"]
    return loss, grads, p


def relative_errors(hand: dict, auto: dict) -> dict[str, torch.Tensor]:
    """‖hand − autograd‖ / max(‖hand‖, ‖autograd‖) per tensor and replica: 0 … 2."""

    def norm(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).pow(2).sum(1).sqrt()

    return {
        k: norm(hand[k] - auto[k]) / torch.maximum(norm(hand[k]), norm(auto[k])).clamp_min(1e-300)
        for k in auto
    }


class ScratchModule(EnsembleModule):
    """Manual optimization: our backward's gradients, torch's optimizer step."""

    def __init__(
        self,
        net: Ensemble,
        optimizer: Callable[..., torch.optim.Optimizer],
        bugs: list[str] | None = None,
        check_every: int = 100,
        loss: nn.Module | None = None,
        scheduler: object = None,
    ) -> None:
        super().__init__(net, loss or nn.Identity(), optimizer)
        self.automatic_optimization = False
        template = net.template
        assert isinstance(template, ScratchNet), "ScratchModule trains ScratchNet models"
        self.bugs = frozenset(bugs or [])
        unknown = self.bugs - {"chain_rule", "bias_grad", "feature_mean"}
        if unknown:
            raise ValueError(f"unknown bugs {sorted(unknown)}")
        self.hand = partial(backward, depth=template.depth, activation=template.activation, bugs=self.bugs)
        self.check_every = check_every
        self.last_check: dict[str, torch.Tensor] = {}
        self.batch_accuracy: list[torch.Tensor] = []

    def replica_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return vmap(bce)(out, y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        opt = self.optimizers()
        params = self.net.params()
        with torch.no_grad():
            losses, grads, p = vmap(self.hand)({k: v.detach() for k, v in params.items()}, x, y)
        last = self.current_epoch == self.trainer.max_epochs - 1
        if batch_idx == 0 and (self.current_epoch % self.check_every == 0 or last):
            self.last_check = self.gradient_check(x, y)
        self.batch_losses.append(losses)
        self.batch_accuracy.append(((p > 0.5) == (y > 0.5)).float().mean((1, 2)))
        for k, v in params.items():
            v.grad = grads[k]
        opt.step()
        opt.zero_grad()

    def gradient_check(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Hand-written vs autograd gradients, float64, same weights and batch."""
        p64 = {k: v.detach().double() for k, v in self.net.params().items()}
        x64, y64 = x.double(), y.double()
        depth, activation = self.net.template.depth, self.net.template.activation

        def loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            return bce(forward(p, xi, depth, activation)[0], yi)

        auto = vmap(grad(loss))(p64, x64, y64)
        _, hand, _ = vmap(self.hand)(p64, x64, y64)
        return relative_errors(hand, auto)


class ScratchHealth(Recorder):
    """Per epoch: accuracy, and the latest hand-vs-autograd relative error per tensor (checked
    every `check_every` epochs and at the last); the worst check of the run at the end."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: ScratchModule) -> None:
        pl_module.batch_accuracy.clear()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: ScratchModule) -> None:
        self._add("accuracy", torch.stack(pl_module.batch_accuracy).mean(0))
        for name, err in pl_module.last_check.items():
            self._add(f"gradcheck_{name}", err)

    def on_train_end(self, trainer: pl.Trainer, pl_module: ScratchModule) -> None:
        self._final("train_accuracy", self.rows["accuracy"][-1])
        worst = torch.stack(
            [torch.stack(v).amax(0) for k, v in self.rows.items() if k.startswith("gradcheck_")]
        )
        self._final("gradcheck_max_rel_err", worst.amax(0))
