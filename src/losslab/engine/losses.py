"""The batched engine's losses: each configuration's loss and its gradient with respect to
the outputs, as autograd computes them for `torch.nn.MSELoss` and `BCEWithLogitsLoss`
(mean over rows × targets; rows a configuration does not have masked out)."""

from __future__ import annotations

import torch
from torch.func import vmap
from torch.nn import functional as F

LOSSES = {"torch.nn.MSELoss": "mse", "torch.nn.BCEWithLogitsLoss": "bce_logits"}


def scale_of(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean's divisor [C] and the MSE gradient's factor [C, 1, 1], as mse_loss_backward
    computes it (2 / (rows·k) rounded once), for `rows` [C] rows of k targets."""
    return rows * k, (2.0 / (rows.double() * k)).to(rows.dtype).view(-1, 1, 1)


def loss_and_grad(
    kind: str,
    out: torch.Tensor,
    y: torch.Tensor,
    scale: tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss [C], d loss / d out [C, N, k]) for outputs `out` [C, N, k] and targets y."""
    denom, norm = scale
    if kind == "mse":
        r = out - y if mask is None else torch.where(mask, out - y, 0.0)
        return (r * r).sum((1, 2)) / denom, r * norm
    if mask is not None:
        raise ValueError("a row count per configuration needs the MSE")
    # BCE with logits: the loss on the outputs alone, through autograd and vmap exactly as
    # the single-run path applies it per replica (written out, (σ(z) − y)/numel differs from
    # those kernels in the last bit, which a chaotic run grows past 1e-5).
    leaf = out.detach().requires_grad_(True)
    with torch.enable_grad():
        each = vmap(F.binary_cross_entropy_with_logits)(leaf, y.expand_as(leaf))
        (g,) = torch.autograd.grad(each.sum(), leaf)
    return each.detach(), g
