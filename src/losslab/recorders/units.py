"""Dead ReLU units and a dead ReLU head: at init, after the first update, per epoch, at the end."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from losslab.engine.module import EnsembleModule
from losslab.probes import dead_units
from losslab.recorders.base import Recorder


class DeadUnits(Recorder):
    """`probes.dead_units` on the training inputs: a unit is dead when its pre-activation is
    <= 0 on every one of them (it outputs 0 and passes no gradient)."""

    def _measure(self, pl_module: EnsembleModule) -> tuple[torch.Tensor, torch.Tensor | None]:
        dm = pl_module.trainer.datamodule
        with torch.no_grad():
            return dead_units(pl_module.net.template, pl_module.net.params(), dm.x.to(pl_module.device))

    def _finals(self, pl_module: EnsembleModule, when: str) -> None:
        frac, head = self._measure(pl_module)
        self._final(f"dead_fraction_{when}", frac)
        if head is not None:
            self._final(f"head_dead_{when}", head)

    def on_train_start(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        self._finals(pl_module, "init")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: EnsembleModule, *args: Any) -> None:
        if trainer.global_step == 1:  # right after the very first update
            self._finals(pl_module, "step1")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        frac, head = self._measure(pl_module)
        self._add("dead_fraction", frac)
        if head is not None:
            self._add("head_dead", head)

    def on_train_end(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        self._finals(pl_module, "final")
