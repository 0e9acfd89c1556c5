"""Faults a test injects through a config (`PYTHONPATH=tests`): objects that compose and pass
every check, then fail while training, the way a user's buggy schedule or loss would."""

from __future__ import annotations

import torch


def failing_schedule(optimizer: torch.optim.Optimizer, after: int = 3) -> torch.optim.lr_scheduler.LambdaLR:
    """An lr schedule that raises on update number `after` (a constructor check cannot see it)."""

    def factor(step: int) -> float:
        if step >= after:
            raise RuntimeError(f"schedule failed at step {step}")
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
