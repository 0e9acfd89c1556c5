"""Per-epoch health records, as a Lightning callback any scenario gets for free.

Records, per replica and epoch: the loss (mean over the epoch's batches, as Keras
reports it), the gradient norm, the learning rate, and every scalar parameter (for a
one-neuron model: its weight and bias). Values stay on the device as tensors until the
fit ends, so recording costs no host sync per epoch.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch

from losslab.module import EnsembleModule


class HealthRecorder(pl.Callback):
    def __init__(self) -> None:
        self.rows: dict[str, list[torch.Tensor]] = {}
        self._grad_norms: list[torch.Tensor] = []

    def _add(self, name: str, value: torch.Tensor) -> None:
        self.rows.setdefault(name, []).append(value.detach().to(torch.float64))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        pl_module.batch_losses.clear()
        self._grad_norms.clear()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: EnsembleModule, optimizer: torch.optim.Optimizer
    ) -> None:
        sq = None
        for p in pl_module.net.stacked.values():
            if p.grad is not None:
                g = p.grad.detach().flatten(1).pow(2).sum(1)
                sq = g if sq is None else sq + g
        if sq is not None:
            self._grad_norms.append(sq.sqrt())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        self._add("loss", torch.stack(pl_module.batch_losses).mean(0))
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

    def records(self) -> dict[str, np.ndarray]:
        """name -> array [replicas, epochs]."""
        return {k: torch.stack(v, 1).cpu().numpy() for k, v in self.rows.items()}
