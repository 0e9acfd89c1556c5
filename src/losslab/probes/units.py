"""Hidden units that no longer learn: dead ReLUs and saturated sigmoid/tanh units.

A unit passes gradient only through its activation's derivative. A ReLU whose
pre-activation is <= 0 on every input has derivative 0 everywhere: it is dead, and no
update can revive it. A sigmoid or tanh driven far into its flat tails passes almost
nothing: it is saturated. Either way the network has fewer units than it seems, and a
dead ReLU head outputs a constant, so the loss sits flat (or goes up on a schedule change).

Models are nn.Sequential templates (possibly on the meta device) evaluated with
functional_call at parameters stacked along a leading replica dimension.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

# Largest derivative of each squashing activation: sigmoid' = s(1 - s) <= 1/4, tanh' <= 1.
_SQUASH = {nn.Sigmoid: 0.25, nn.Tanh: 1.0}


def preactivations(model: nn.Sequential, params: dict[str, torch.Tensor], x: torch.Tensor) -> list:
    """(pre-activation, followed_by_relu) for every Linear layer of a Sequential."""
    out = []
    layers = list(model.named_children())
    for i, (name, layer) in enumerate(layers):
        if isinstance(layer, nn.Linear):
            x = functional_call(layer, {k: params[f"{name}.{k}"] for k in ("weight", "bias")}, (x,))
            relu = i + 1 < len(layers) and isinstance(layers[i + 1][1], nn.ReLU)
            out.append((x, relu))
        else:
            x = layer(x)
    return out


# Modules `stacked_forward` runs on all replicas at once: they act elementwise, or are Linear.
_ELEMENTWISE = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Identity)


def stacked_forward(
    model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, list] | None:
    """Every replica's outputs [replicas, N, out] on shared inputs x [N, in], and per Linear
    (pre-activation [replicas, N, units], followed_by_relu), with batched matmuls over the
    stacked params; None for a model other than a Sequential of Linear layers and
    elementwise activations. Equal to `preactivations` per replica up to float rounding
    (another kernel), and several times faster than vmap over functional_call on small
    layers: what recorders call every epoch."""
    layers = list(model.named_children()) if isinstance(model, nn.Sequential) else []
    if not layers or not all(isinstance(m, (nn.Linear, *_ELEMENTWISE)) for _, m in layers):
        return None
    first = next(iter(params.values()))
    h, out = x.to(first.dtype).expand(first.shape[0], *x.shape), []  # shared rows, no copy
    for i, (name, layer) in enumerate(layers):
        if isinstance(layer, nn.Linear):
            w, b = params[f"{name}.weight"], params.get(f"{name}.bias")
            wt = w.transpose(1, 2)
            h = torch.bmm(h, wt) if b is None else torch.baddbmm(b.unsqueeze(1), h, wt)
            out.append((h, i + 1 < len(layers) and isinstance(layers[i + 1][1], nn.ReLU)))
        else:
            h = layer(h)
    return h, out


def dead_units(
    model: nn.Sequential, params: dict[str, torch.Tensor], x: torch.Tensor, fast: tuple | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[replicas] dead fraction of hidden ReLU units, and [replicas] head dead (or None).

    A ReLU unit is dead when its pre-activation is <= 0 on every input: it outputs 0 and
    passes no gradient, so no update can revive it. Params are stacked ([replicas, …]).
    `fast`: `stacked_forward(model, params, x)` when the caller has it already.
    """
    fast = fast if fast is not None else stacked_forward(model, params, x)
    if fast is not None:  # a NaN pre-activation is not <= 0: its unit is not dead
        relu_flags = [r for _, r in fast[1]]
        dead = tuple(z.amax(1) <= 0 for z, _ in fast[1])  # one pass, no [replicas, N, units] mask
    else:
        layers = preactivations(model, {k: v[0] for k, v in params.items()}, x)  # structure only
        relu_flags = [r for _, r in layers]

        def per_replica(p: dict) -> tuple[torch.Tensor, ...]:
            return tuple((z <= 0).all(0) for z, _ in preactivations(model, p, x))

        dead = vmap(per_replica)(params)  # one [replicas, units] mask per Linear
    hidden = [d for d, relu in zip(dead[:-1], relu_flags[:-1], strict=True) if relu]
    frac = torch.cat(hidden, 1).float().mean(1) if hidden else torch.zeros(dead[0].shape[0])
    head = dead[-1].all(1).float() if relu_flags[-1] else None
    return frac, head


def _squashing(model: nn.Sequential) -> list[nn.Module | None]:
    """Per Linear layer, the Sigmoid/Tanh right after it, or None."""
    layers = list(model.children())
    return [
        layers[i + 1] if i + 1 < len(layers) and type(layers[i + 1]) in _SQUASH else None
        for i, layer in enumerate(layers)
        if isinstance(layer, nn.Linear)
    ]


def saturated_units(
    model: nn.Sequential, stacked_params: dict[str, torch.Tensor], x: torch.Tensor, threshold: float = 0.01
) -> torch.Tensor:
    """[replicas] share of hidden sigmoid/tanh units saturated on every input.

    Saturated: the activation's derivative is below `threshold` × its maximum on every
    input (|z| > ~6.9 for a sigmoid at 0.01), so the unit passes almost no gradient on the
    whole set. The share is among hidden Linear layers' units followed by a Sigmoid or
    Tanh (the output layer is not hidden); 0 where there are no such units.
    """
    acts = _squashing(model)[:-1]
    replicas = next(iter(stacked_params.values())).shape[0]
    if not any(a is not None for a in acts):
        return torch.zeros(replicas, device=x.device)

    def per_replica(p: dict) -> tuple[torch.Tensor, ...]:
        masks = []
        for (z, _), act in zip(preactivations(model, p, x), acts, strict=False):
            if act is None:
                continue
            s = act(z)
            deriv = s * (1 - s) if isinstance(act, nn.Sigmoid) else 1 - s * s
            masks.append((deriv < threshold * _SQUASH[type(act)]).all(0))
        return tuple(masks)

    saturated = vmap(per_replica)(stacked_params)  # one [replicas, units] mask per layer
    return torch.cat(saturated, 1).float().mean(1)


def unit_report(
    model: nn.Sequential, stacked_params: dict[str, torch.Tensor], x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """dead_fraction and saturated_fraction per replica, and head_dead for a ReLU head."""
    frac, head = dead_units(model, stacked_params, x)
    out = {"dead_fraction": frac, "saturated_fraction": saturated_units(model, stacked_params, x)}
    if head is not None:
        out["head_dead"] = head
    return out
