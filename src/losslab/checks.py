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


def before_fit(module: EnsembleModule, dm: TableDataModule) -> list[str]:
    """Run every check on the first training batch of the first replica."""
    x, y = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        out = module(x.to(module.device))
    found = [loss_broadcast(out.shape[1:], y.shape[1:])]
    return [f for f in found if f]
