"""Learning-rate schedules that ports of other frameworks need."""

from __future__ import annotations

import torch


def inverse_time_decay(optimizer: torch.optim.Optimizer, decay: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Keras' legacy `SGD(decay=…)`: lr_t = lr / (1 + decay · t), t = updates so far."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1.0 + decay * step))
