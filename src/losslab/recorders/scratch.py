"""The hand-written network's accuracy and its gradient check against autograd."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from losslab.engine.scratch import ScratchModule
from losslab.probes import gradient_check
from losslab.recorders.base import Recorder


class ScratchHealth(Recorder):
    """Per epoch: accuracy, and the latest hand-vs-autograd relative error per tensor,
    checked (float64, on the weights the update is about to use) on the first batch every
    `check_every` epochs and at the last; the worst check of the run at the end.

    It reads the hand-written module's own methods and the batch before the step: Lightning
    hooks, not the plain ones (`engine.hooks`), so it runs under a Trainer only."""

    plain = False

    def __init__(self, check_every: int = 100) -> None:
        super().__init__()
        self.check_every = check_every
        self._accuracy: list[torch.Tensor] = []
        self._last_check: dict[str, torch.Tensor] = {}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: ScratchModule) -> None:
        self._accuracy.clear()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: ScratchModule, batch: Any, batch_idx: int
    ) -> None:
        epoch = trainer.current_epoch
        if batch_idx == 0 and (epoch % self.check_every == 0 or epoch == trainer.max_epochs - 1):
            x, y = batch
            params = {k: v.detach() for k, v in pl_module.net.params().items()}
            self._last_check = gradient_check(
                pl_module.loss_of, pl_module.hand_grads, params, x, y, batched=True
            )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: ScratchModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._accuracy.append(outputs["accuracy"])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: ScratchModule) -> None:
        self._add("accuracy", torch.stack(self._accuracy).mean(0))
        for name, err in self._last_check.items():
            self._add(f"gradcheck_{name}", err)

    def on_train_end(self, trainer: pl.Trainer, pl_module: ScratchModule) -> None:
        self._final("train_accuracy", self.rows["accuracy"][-1])
        worst = torch.stack(
            [torch.stack(v).amax(0) for k, v in self.rows.items() if k.startswith("gradcheck_")]
        )
        self._final("gradcheck_max_rel_err", worst.amax(0))
