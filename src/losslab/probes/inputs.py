"""The data before the model: scales, non-finite values, and targets the head cannot reach.

Many rising or stuck losses are decided before the first step: features on wildly
different scales (one large feature dominates the curvature and forces a tiny learning
rate), a NaN or inf that poisons every gradient it touches, or targets outside what the
output activation can produce (a sigmoid head asked for 2, a ReLU head for -1), which
leaves a loss floor no optimizer can get under.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn


def input_stats(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per feature (last dimension): mean, std (population), min, max, abs_max; float64 [features].

    Every leading dimension counts as samples; a 1-D tensor is one feature (a column of
    targets, say). Computed in float64 so that large features do not lose the small ones.
    """
    x64 = x.detach().to(torch.float64)
    x64 = x64.reshape(-1, 1) if x64.dim() == 1 else x64.reshape(-1, x64.shape[-1])
    return {
        "mean": x64.mean(0),
        "std": x64.std(0, correction=0),
        "min": x64.amin(0),
        "max": x64.amax(0),
        "abs_max": x64.abs().amax(0),
    }


def _count(t: torch.Tensor, stacked: bool) -> torch.Tensor:
    bad = ~torch.isfinite(t.detach())
    return bad.reshape(bad.shape[0], -1).sum(1) if stacked else bad.sum()


def nonfinite(t: torch.Tensor | Mapping[str, torch.Tensor], stacked: bool = False) -> int | torch.Tensor:
    """How many entries are inf or NaN: an int, or per replica ([replicas]) with `stacked`.

    A mapping (parameters, gradients) counts over all its tensors. One non-finite value
    is enough to turn the loss (and then every weight) into NaN.
    """
    tensors = list(t.values()) if isinstance(t, Mapping) else [t]
    counts = [_count(v, stacked) for v in tensors]
    if stacked:
        return sum(counts[1:], counts[0])
    return int(sum(int(c) for c in counts))


def head_range(model: nn.Module) -> tuple[float, float]:
    """(low, high): what the model's last module can output.

    The last module of an nn.Sequential (nested Sequentials are followed down), else the
    model itself: ReLU and Softplus (0, inf), ReLU6 (0, 6), Sigmoid (0, 1), Tanh (-1, 1),
    anything else (-inf, inf). The bounds are those of the closure; whether an end is
    reached exactly (ReLU reaches 0, a sigmoid never reaches 1) is deliberately ignored:
    what matters is a target outside them, which is out of reach either way.
    """
    last = model
    while isinstance(last, nn.Sequential) and len(last) > 0:
        last = last[-1]
    if isinstance(last, nn.ReLU6):
        return (0.0, 6.0)
    if isinstance(last, nn.ReLU | nn.Softplus):
        return (0.0, math.inf)
    if isinstance(last, nn.Sigmoid):
        return (0.0, 1.0)
    if isinstance(last, nn.Tanh):
        return (-1.0, 1.0)
    return (-math.inf, math.inf)


def targets_outside(y: torch.Tensor, low: float, high: float) -> float:
    """Fraction of target entries outside [low, high], e.g. outside a head's range.

    Those targets the model cannot fit at any weights. An empty tensor gives 0; NaN
    targets are not counted here (see `nonfinite`).
    """
    if y.numel() == 0:
        return 0.0
    outside = (y.detach() < low) | (y.detach() > high)
    return float(outside.to(torch.float64).mean())


def class_margin(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per replica, the smallest signed distance of an output (a probability, [replicas, N]
    or [N]) from 0.5 towards its 0/1 target's side; an output that is not finite is on
    neither side (-inf). Positive everywhere means every point is classified right."""
    out = probs.reshape(-1, targets.numel()) if probs.ndim > 1 else probs.reshape(1, -1)
    side = torch.where(targets.reshape(1, -1).to(out.device) > 0.5, 1.0, -1.0)
    margin = torch.where(torch.isfinite(out), (out - 0.5) * side, -torch.inf)
    return margin.amin(1)


def task_of(loss: object, targets: torch.Tensor) -> str:
    """What the outputs mean, read from the loss: `logits` (BCEWithLogitsLoss,
    binary_cross_entropy_with_logits), `probs` (BCELoss, binary_cross_entropy, a function
    named bce, or any other loss on 0/1 targets), `classes` (CrossEntropyLoss, NLLLoss, or
    integer targets) or `regression`."""
    name = type(loss).__name__ if isinstance(loss, torch.nn.Module) else getattr(loss, "__name__", "")
    name = name.lower().replace("_", "")
    if "withlogits" in name:
        return "logits"
    if "bce" in name or "binarycrossentropy" in name:
        return "probs"
    if "crossentropy" in name or "nll" in name or not targets.is_floating_point():
        return "classes"
    binary = targets.numel() > 0 and bool(((targets == 0) | (targets == 1)).all())
    return "probs" if binary else "regression"


def fit_score(outputs: torch.Tensor, targets: torch.Tensor, task: str) -> torch.Tensor:
    """Per replica, how well outputs [replicas, N, ...] fit the targets [N, ...]: R² for
    `regression` (1 - SSE/SST over every target column), accuracy otherwise (argmax for
    `classes`, the 0.5 cut for `probs`, 0 for `logits`). A non-finite output scores -inf
    (R²) or counts as wrong (accuracy), so no blow-up passes for a fit."""
    y = targets.detach()
    n, r = len(y), outputs.shape[0]
    out = outputs.detach().to(y.device).reshape(r, n, -1)
    if task == "classes":
        return (out.argmax(-1) == y.reshape(1, n).long()).double().mean(1)
    t = y.reshape(1, n, -1).double()
    if task in ("probs", "logits"):
        right = (out > (0.0 if task == "logits" else 0.5)) == (t > 0.5)
        return (right & torch.isfinite(out)).double().mean((1, 2))
    sse = ((out.double() - t) ** 2).sum((1, 2))
    sst = ((t - t.mean(1, keepdim=True)) ** 2).sum((1, 2)).clamp_min(1e-12)
    r2 = 1 - sse / sst
    return torch.where(torch.isfinite(r2), r2, torch.tensor(-torch.inf, dtype=r2.dtype))
