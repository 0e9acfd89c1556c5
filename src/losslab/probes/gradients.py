"""Gradients as numbers: hand-written vs autograd, and norms per tensor, per layer, in total.

A loss that goes up (or stalls) with a hand-written backward pass is first a question of
whether the gradients are right at all; `gradient_check` answers it against autograd in
float64, so that a relative error of 1e-12 means "correct" and 1e-2 means "a bug", with
nothing in between to argue about. The norms show where gradient flows (or explodes).

Gradients and parameters carry a leading replica dimension where they are stacked
(torch.func.stack_module_state); every number is then one per replica.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch.func import grad, vmap

Params = dict[str, torch.Tensor]


def relative_errors(hand: dict, auto: dict) -> dict[str, torch.Tensor]:
    """‖hand − autograd‖ / max(‖hand‖, ‖autograd‖) per tensor and replica: 0 … 2."""

    def norm(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).pow(2).sum(1).sqrt()

    return {
        k: norm(hand[k] - auto[k]) / torch.maximum(norm(hand[k]), norm(auto[k])).clamp_min(1e-300)
        for k in auto
    }


def _f64(a: object) -> object:
    # Only floating tensors: integer class labels must stay integers for the loss.
    if isinstance(a, torch.Tensor) and a.is_floating_point():
        return a.detach().to(torch.float64)
    return a


def gradient_check(
    loss_fn: Callable[..., torch.Tensor],
    hand_grad_fn: Callable[..., Mapping[str, torch.Tensor]],
    params: Params,
    *args: object,
    batched: bool = False,
) -> dict[str, torch.Tensor]:
    """Relative error of hand-written gradients against autograd, per tensor, in float64.

    `loss_fn(params, *args)` is the scalar loss, `hand_grad_fn(params, *args)` the gradients
    by name. Both see the same float64 copies of the weights and the (floating) args, so a
    disagreement is the backward pass's, not rounding's. With `batched=True` params and args
    have a leading replica dimension and the result is [replicas] per tensor; otherwise it
    is a 0-dim tensor per tensor. Only the tensors autograd differentiates are compared.
    """
    p64 = {k: v.detach().to(torch.float64) for k, v in params.items()}
    a64 = tuple(_f64(a) for a in args)
    if batched:
        auto = vmap(grad(loss_fn))(p64, *a64)
        hand = vmap(hand_grad_fn)(p64, *a64)
    else:  # one replica: add the replica dimension relative_errors works on
        auto = {k: v.unsqueeze(0) for k, v in grad(loss_fn)(p64, *a64).items()}
        hand = {k: v.unsqueeze(0) for k, v in hand_grad_fn(p64, *a64).items()}
    errors = relative_errors(_rows(hand), _rows(auto))
    return errors if batched else {k: e[0] for k, e in errors.items()}


def _rows(grads: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # [replicas, -1]: the same numbers for any shape, and a scalar parameter (stacked: 1-D)
    # gets the dimension 1 that relative_errors' flatten(1) needs.
    return {k: g.reshape(g.shape[0], -1) for k, g in grads.items()}


def _squares(g: torch.Tensor) -> torch.Tensor:
    # reshape(n, -1) is what flatten(1) does, and also takes stacked scalars ([replicas]).
    return g.detach().reshape(g.shape[0], -1).pow(2).sum(1)


def tensor_norms(grads: Mapping[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
    """L2 norm per tensor and replica ([replicas] each), in the gradients' own dtype.

    Missing gradients (None: a parameter outside the graph) are left out.
    """
    return {k: _squares(g).sqrt() for k, g in grads.items() if g is not None}


def layer_norms(grads: Mapping[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
    """L2 norm per module and replica: "0.weight" and "0.bias" together as "0".

    A layer whose gradient is orders of magnitude below the others is not learning (dead
    or saturated units, a vanishing chain); one far above is where an explosion starts.
    A name without a dot is its own group.
    """
    sq: dict[str, torch.Tensor] = {}
    for k, g in grads.items():
        if g is None:
            continue
        group = k.rsplit(".", 1)[0]
        s = _squares(g)
        sq[group] = s if group not in sq else sq[group] + s
    return {k: s.sqrt() for k, s in sq.items()}


def total_norm(grads: Mapping[str, torch.Tensor | None]) -> torch.Tensor | None:
    """The global L2 norm per replica ([replicas]), or None when no tensor has a gradient.

    Summed in the mapping's order, exactly as the per-step health record does it, so the
    numbers match the recorded grad_norm bit for bit.
    """
    sq = None
    for g in grads.values():
        if g is None:
            continue
        s = _squares(g)
        sq = s if sq is None else sq + s
    return None if sq is None else sq.sqrt()


def finite_differences(
    loss: Callable[[dict[str, np.ndarray]], float], params: Mapping[str, np.ndarray], eps: float = 1e-6
) -> dict[str, np.ndarray]:
    """Central finite differences of a NumPy loss, per parameter entry, in float64.

    For a backward pass written without autograd (NumPy): 2 loss evaluations per entry, a
    step of `eps` scaled to each entry's magnitude. Truncation and rounding leave a relative
    error around 1e-8 on smooth losses: far below what a real bug gives (>= 1e-2).
    """
    p = {k: np.array(v, dtype=np.float64, copy=True) for k, v in params.items()}
    out = {}
    for name, arr in p.items():
        g = np.zeros_like(arr)
        flat, gflat = arr.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            keep = flat[i]
            h = eps * max(1.0, abs(keep))
            flat[i] = keep + h
            up = float(loss(p))
            flat[i] = keep - h
            down = float(loss(p))
            flat[i] = keep
            gflat[i] = (up - down) / (2 * h)
        out[name] = g
    return out


def relative_errors_np(hand: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]) -> dict[str, float]:
    """‖hand − ref‖ / max(‖hand‖, ‖ref‖) per tensor (0 … 2), NaN-safe: a non-finite hand
    gradient is as wrong as it gets (2.0)."""
    out = {}
    for k, r in ref.items():
        h = np.asarray(hand[k], dtype=np.float64).reshape(np.shape(r))
        if not np.all(np.isfinite(h)):
            out[k] = 2.0
            continue
        den = max(float(np.linalg.norm(h)), float(np.linalg.norm(r)), 1e-300)
        out[k] = float(np.linalg.norm(h - r)) / den
    return out
