"""The LightningModule: one scenario's loss and optimizer around an Ensemble of replicas."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torch.func import vmap

from losslab.engine.models import Ensemble


class EnsembleModule(pl.LightningModule):
    """Trains every replica of `net` on its own slice of each batch.

    The training loss is the *sum* of the replicas' losses: replicas share no parameter,
    so each one's gradient is exactly that of its own loss, and SGD/Adam (elementwise)
    update each replica as a separate run would. A replica that diverges to inf/NaN stays
    in its own slice; the others train on.
    """

    def __init__(
        self,
        net: Ensemble,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.loss_fn = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def replica_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[replicas] losses: the scenario's loss applied to each replica's slice."""
        return vmap(self.loss_fn)(out, y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict:
        """The summed loss to optimise, and each replica's loss for the recorders (Lightning
        hands this dict to callbacks' `on_train_batch_end` as `outputs`)."""
        x, y = batch
        losses = self.replica_losses(self(x), y)
        return {"loss": losses.sum(), "replica_losses": losses.detach()}

    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def make_trainer(epochs: int, callbacks: list[pl.Callback], trainer_cfg: dict | None = None) -> pl.Trainer:
    """A Trainer for losslab's fits: no checkpoints, bars or logger (tracking is ours)."""
    opts = {"accelerator": "cpu", "devices": 1, "deterministic": True, **(trainer_cfg or {})}
    return pl.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **opts,
    )
