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
only to check them (`recorders.ScratchHealth` with `probes.gradient_check`), in float64,
on the same weights.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.func import vmap

from losslab.engine.models import Ensemble
from losslab.engine.module import EnsembleModule

EPS = 1e-10  # the original clips probabilities to [EPS, 1 - EPS]
BUGS = frozenset({"chain_rule", "bias_grad", "feature_mean"})


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
    """Probabilities [N, 1] and, per layer, (input, pre-activation) for the backward pass.
    Every tensor may carry a leading replica dimension (params [R, ...], x [R, N, in])."""
    act, _ = _act(activation)
    cache, a = [], x
    for i in range(depth):
        z = a @ params[f"W{i}"].mT + params[f"b{i}"].unsqueeze(-2)
        cache.append((a, z))
        a = act(z) if i < depth - 1 else torch.sigmoid(z)
    return a, cache


def bce(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on probabilities clipped to [EPS, 1 - EPS], mean over samples."""
    pc = p.clamp(EPS, 1 - EPS)
    return -(y * torch.log(pc) + (1 - y) * torch.log(1 - pc)).mean((-2, -1))


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
        n = a_in.shape[-1] if "feature_mean" in bugs else a_in.shape[-2]  # bug 3: features, not batch
        grads[f"W{i}"] = delta.mT @ a_in / n
        grads[f"b{i}"] = (grad_out if "bias_grad" in bugs else delta).sum(-2) / n  # bug 2
        grad_out = delta @ params[f"W{i}"]
    return loss, grads, p


class ScratchModule(EnsembleModule):
    """Manual optimization: our backward's gradients, torch's optimizer step."""

    def __init__(
        self,
        net: Ensemble,
        optimizer: Callable[..., torch.optim.Optimizer],
        bugs: list[str] | None = None,
        loss: nn.Module | None = None,
        scheduler: object = None,
    ) -> None:
        super().__init__(net, loss or nn.Identity(), optimizer)
        self.automatic_optimization = False
        template = net.template
        if not isinstance(template, ScratchNet):
            raise ValueError(f"ScratchModule trains ScratchNet models, got {type(template).__name__}")
        self.bugs = frozenset(bugs or [])
        unknown = self.bugs - BUGS
        if unknown:
            raise ValueError(f"unknown bugs {sorted(unknown)} (known: {', '.join(sorted(BUGS))})")
        self.hand = partial(backward, depth=template.depth, activation=template.activation, bugs=self.bugs)

    def replica_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return vmap(bce)(out, y)

    def loss_of(self, params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One replica's loss as a function of its parameters (what autograd differentiates)."""
        t = self.net.template
        return bce(forward(params, x, t.depth, t.activation)[0], y)

    def hand_grads(self, params: dict, x: torch.Tensor, y: torch.Tensor) -> dict:
        """One replica's hand-written gradients (what the check compares with autograd)."""
        return self.hand(params, x, y)[1]

    def hand_step(self, x: torch.Tensor, y: torch.Tensor, params: dict | None = None) -> tuple[dict, dict]:
        """Every replica's hand-written gradients on one batch, and the step's outputs (each
        replica's loss and accuracy before the update): what a training step applies and
        reports, under Lightning or the engine's loop (`engine.direct`; `params`: the
        stacked weights of several variants trained together, else this module's)."""
        params = self.net.params() if params is None else params
        with torch.no_grad():  # written for one replica and for all at once: no vmap needed
            losses, grads, p = self.hand({k: v.detach() for k, v in params.items()}, x, y)
        accuracy = ((p > 0.5) == (y > 0.5)).float().mean((1, 2))
        return grads, {"replica_losses": losses, "accuracy": accuracy}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict:
        grads, outputs = self.hand_step(*batch)
        opt = self.optimizers()
        for k, v in self.net.params().items():
            v.grad = grads[k]
        opt.step()
        opt.zero_grad()
        return outputs
