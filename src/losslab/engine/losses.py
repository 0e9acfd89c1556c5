"""The batched engine's losses: each configuration's loss and its gradient with respect to
the outputs, as the single-run path computes them for `torch.nn.MSELoss` and
`BCEWithLogitsLoss` (mean over rows × targets; rows a configuration does not have masked
out), and for the MSE of (N, 1) outputs against flat (N,) targets: the broadcasting trap of
xor's `shape_bug`, every output against every target (N² terms)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch.func import vmap
from torch.nn import functional as F

LOSSES = {"torch.nn.MSELoss": "mse", "torch.nn.BCEWithLogitsLoss": "bce_logits"}
# Computed by autograd on the outputs alone, through vmap as the single-run path applies the
# loss per replica: written out, these differ from those kernels in the last bit, which a
# chaotic run grows past 1e-5 (the MSE is written out: it matches them bitwise).
BY_AUTOGRAD = {"bce_logits": F.binary_cross_entropy_with_logits, "mse_flat": F.mse_loss}


def kind_of(cfg: DictConfig) -> str | None:
    """The engine's name for a config's loss ("mse", "bce_logits", "mse_flat"), or None."""
    kind = LOSSES.get((cfg.get("loss") or {}).get("_target_"))
    if kind is not None and cfg.data.get("target_shape", "column") == "flat":
        kind += "_flat"
    return kind if kind == "mse" or kind in BY_AUTOGRAD else None


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
    """(loss [C], d loss / d out [C, N, k]) for outputs `out` [C, N, k] and targets y,
    shared ([N, k]; flat: [N]) or per configuration ([C, N, k]; flat: [C, N])."""
    denom, norm = scale
    if kind == "mse":
        r = out - y if mask is None else torch.where(mask, out - y, 0.0)
        return (r * r).sum((1, 2)) / denom, r * norm
    if mask is not None:
        raise ValueError("a row count per configuration needs the MSE on column targets")
    leaf = out.detach().requires_grad_(True)
    shared = y.ndim < leaf.ndim - kind.endswith("_flat")
    target = y.expand(len(leaf), *y.shape) if shared else y
    with torch.enable_grad():
        each = vmap(BY_AUTOGRAD[kind])(leaf, target)
        (g,) = torch.autograd.grad(each.sum(), leaf)
    return each.detach(), g
