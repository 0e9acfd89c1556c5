"""Classic silent mistakes, as sentences: a broadcast loss and 'accuracy' on a regression.

Neither raises: PyTorch only warns about the broadcast and Keras happily reports an
accuracy of 0, so training looks calm while it learns the wrong thing. Each check
returns a plain sentence (or None) for the run to print, tag and record.
"""

from __future__ import annotations

import torch


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
