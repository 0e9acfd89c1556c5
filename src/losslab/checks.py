"""Checks made before training that catch classic silent mistakes (the doctor's first tools).

Each returns plain sentences; the run prints them loudly, repeats them under the final
table, records them as a run tag, and carries them into the metrics file.
"""

from __future__ import annotations

import torch

from losslab.datamodule import TableDataModule
from losslab.module import EnsembleModule


def loss_broadcast(out_shape: torch.Size, target_shape: torch.Size) -> str | None:
    """Outputs (N, 1) against targets (N,) broadcast to (N, N): every output meets every target.

    PyTorch only emits a UserWarning that scrolls by; training then looks calm and learns
    the mean.
    """
    if out_shape == target_shape:
        return None
    try:
        both = torch.broadcast_shapes(out_shape, target_shape)
    except RuntimeError:
        return None  # not broadcastable: the loss itself raises
    return (
        f"the loss compares outputs of shape {tuple(out_shape)} with targets of shape "
        f"{tuple(target_shape)}: they broadcast to {tuple(both)}, so every output is compared "
        f"with every target; reshape the targets to {tuple(out_shape)}"
    )


def metric_misuse(metrics: list[str], targets: torch.Tensor) -> str | None:
    """'accuracy' asked for on a regression target: it is 0 (or noise) whatever is learned."""
    if "accuracy" not in metrics:
        return None
    values = torch.unique(targets)
    if len(values) <= 2 and set(values.tolist()) <= {0.0, 1.0}:
        return None
    return (
        f"'accuracy' on a regression target is meaningless: the targets take {len(values)} distinct "
        f"values ({values.min().item():g} … {values.max().item():g}); Keras' 'accuracy' here is binary "
        "accuracy, mean(y == (pred > 0.5)), which is 0 whatever the model learns. "
        "losslab reports MSE, MAE and the max relative error instead"
    )


def before_fit(module: EnsembleModule, dm: TableDataModule, metrics: list[str] | None = None) -> list[str]:
    """Run every check on the first training batch of the first replica."""
    x, y = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        out = module(x.to(module.device))
    found = [
        loss_broadcast(out.shape[1:], y.shape[1:]),
        metric_misuse(list(metrics or []), dm.raw["train"][1]),
    ]
    return [f for f in found if f]
