"""The hand-written network's accuracy and its gradient check against autograd."""

from __future__ import annotations

from typing import Any

import torch

from losslab.engine.hooks import State
from losslab.engine.scratch import ScratchModule
from losslab.probes import gradient_check
from losslab.recorders.base import Recorder


class ScratchHealth(Recorder):
    """Per epoch: accuracy, and the latest hand-vs-autograd relative error per tensor,
    checked (float64, on the weights the update is about to use) on the first batch every
    `check_every` epochs and at the last; the worst check of the run at the end. It reads
    the hand-written module's own loss and backward (`ScratchModule.loss_of`,
    `hand_grads`) and the step's `accuracy`."""

    def __init__(self, check_every: int = 100) -> None:
        super().__init__()
        self.check_every = check_every
        self._accuracy: list[torch.Tensor] = []
        self._last_check: dict[str, torch.Tensor] = {}

    def epoch_started(self, state: State) -> None:
        self._accuracy.clear()

    def batch_started(self, state: State, batch: Any, index: int) -> None:
        epoch = state.epoch
        if index == 0 and (epoch % self.check_every == 0 or epoch == state.epochs - 1):
            x, y = batch
            module: ScratchModule = state.module
            params = {k: v.detach() for k, v in state.net.params().items()}
            self._last_check = gradient_check(module.loss_of, module.hand_grads, params, x, y, batched=True)

    def batch_ended(self, state: State, outputs: dict[str, torch.Tensor]) -> None:
        self._accuracy.append(outputs["accuracy"])

    def epoch_ended(self, state: State) -> None:
        self._add("accuracy", torch.stack(self._accuracy).mean(0))
        for name, err in self._last_check.items():
            self._add(f"gradcheck_{name}", err)

    def fit_ended(self, state: State) -> None:
        self._final("train_accuracy", self.rows["accuracy"][-1])
        worst = torch.stack(
            [torch.stack(v).amax(0) for k, v in self.rows.items() if k.startswith("gradcheck_")]
        )
        self._final("gradcheck_max_rel_err", worst.amax(0))
