"""What every run records per epoch: loss, gradient norm, learning rate, scalar parameters."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from losslab.engine.module import EnsembleModule
from losslab.probes import total_norm
from losslab.recorders.base import Recorder


class HealthRecorder(Recorder):
    """Loss (mean over the epoch's batches, as Keras reports it), mean gradient norm over
    the epoch's updates, the learning rate, and every one-number parameter (a one-neuron
    model's weight and bias)."""

    def __init__(self) -> None:
        super().__init__()
        self._losses: list[torch.Tensor] = []
        self._grad_norms: list[torch.Tensor] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        self._losses.clear()
        self._grad_norms.clear()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: EnsembleModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._losses.append(outputs["replica_losses"])

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: EnsembleModule, optimizer: torch.optim.Optimizer
    ) -> None:
        norm = total_norm({k: p.grad for k, p in pl_module.net.stacked.items()})
        if norm is not None:
            self._grad_norms.append(norm)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        self._add("loss", torch.stack(self._losses).mean(0))
        if self._grad_norms:
            self._add("grad_norm", torch.stack(self._grad_norms).mean(0))
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self._add("lr", torch.full((len(pl_module.net.seeds),), float(lr), dtype=torch.float64))
        for name, p in self._scalars(pl_module).items():
            self._add(name, p.detach().reshape(-1))

    @staticmethod
    def _scalars(pl_module: EnsembleModule) -> dict[str, torch.Tensor]:
        """One-number parameters, named `weight`/`bias` when that is unambiguous."""
        scalars = {k: p for k, p in pl_module.net.params().items() if p[0].numel() == 1}
        short = [k.rsplit(".", 1)[-1] for k in scalars]
        if len(set(short)) == len(short):
            return dict(zip(short, scalars.values(), strict=True))
        return scalars
