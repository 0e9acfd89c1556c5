"""What a fit tells those who watch it, whichever loop runs it: Lightning's or the engine's.

Recorders and the progress bar are written once against the plain hooks of `FitHooks`.
As Lightning callbacks they get them from the Trainer's own hooks; `engine.direct`, which
trains a variant's seeds on the batched engine without a Trainer, calls them itself at the
same points of the fit. Both loops therefore record the same numbers with the same code:

    fit_started     before the first update
    epoch_started   at each epoch's start
    batch_started   with each batch ([replicas, rows, ...]) and its index in the epoch
    gradients       each update's gradients (per stacked parameter), before it is applied
    batch_ended     after each update, with the step's outputs: `replica_losses` (each
                    replica's loss on that batch, before the update) and what else the
                    module reports (the scratch module: `accuracy`)
    epoch_ended     at each epoch's end
    fit_ended       after the last epoch
    failed          when the fit raises (a bar closes itself)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch

from losslab.probes import stacked_forward

if TYPE_CHECKING:  # types only: both are engine modules that do not import this one
    from losslab.engine.datamodule import TableDataModule
    from losslab.engine.models import Ensemble


@dataclass
class State:
    """Where a fit stands: the ensemble being trained (its parameters are the live ones)."""

    net: Ensemble
    dm: TableDataModule
    epochs: int  # the fit's epoch budget
    epoch: int = 0  # the current epoch, from 0
    step: int = 0  # updates applied so far
    lr: float = 0.0  # the learning rate of the next update
    module: Any = None  # the LightningModule (its own methods: the scratch module's backward)
    _memo: tuple | None = field(default=None, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return next(iter(self.net.params().values())).device

    def forward(self, x: torch.Tensor) -> tuple | None:
        """`probes.stacked_forward` of the live weights on x [N, ...] (outputs and each
        layer's pre-activations), or None for a model it does not run. Computed once per
        update for the same rows: the recorders that read the training rows after an
        epoch (predictions, dead units) share one forward."""
        with torch.no_grad():
            x = x.to(self.device)
            memo = self._memo
            if (
                memo is not None
                and memo[0] == self.step
                and memo[1].shape == x.shape
                and torch.equal(memo[1], x)
            ):
                return memo[2]
            fast = stacked_forward(self.net.template, self.net.params(), x)
            self._memo = (self.step, x, fast)
            return fast

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Every replica's outputs on the same inputs x [N, ...]: [replicas, N, ...] (batched
        matmuls for an MLP, `forward`; else the ensemble's vmap)."""
        fast = self.forward(x)
        if fast is not None:
            return fast[0]
        with torch.no_grad():
            x = x.to(self.device)
            return self.net(x.expand(len(self.net.seeds), *x.shape))


class FitHooks(pl.Callback):
    """A watcher of fits. `plain`: it uses only the hooks above, so the engine's loop can
    drive it; a subclass that reads more of Lightning (its module's own methods, the
    batch before the step) sets it False and is only run under a Trainer."""

    plain = True

    def fit_started(self, state: State) -> None: ...

    def epoch_started(self, state: State) -> None: ...

    def batch_started(self, state: State, batch: Any, index: int) -> None: ...

    def gradients(self, state: State, grads: dict[str, torch.Tensor]) -> None: ...

    def batch_ended(self, state: State, outputs: dict[str, torch.Tensor]) -> None: ...

    def epoch_ended(self, state: State) -> None: ...

    def fit_ended(self, state: State) -> None: ...

    def failed(self, error: BaseException) -> None: ...

    # --- the same hooks from a Lightning Trainer -----------------------------------------

    @staticmethod
    def _state(trainer: pl.Trainer, pl_module: Any) -> State:
        opts = trainer.optimizers
        lr = float(opts[0].param_groups[0]["lr"]) if opts else 0.0
        at = (trainer.max_epochs, trainer.current_epoch, trainer.global_step)
        return State(pl_module.net, trainer.datamodule, *at, lr, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.fit_started(self._state(trainer, pl_module))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.epoch_started(self._state(trainer, pl_module))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.batch_started(self._state(trainer, pl_module), batch, batch_idx)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: Any, optimizer: Any) -> None:
        grads = {k: p.grad for k, p in pl_module.net.params().items() if p.grad is not None}
        if grads:
            self.gradients(self._state(trainer, pl_module), grads)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, *args: Any) -> None:
        self.batch_ended(self._state(trainer, pl_module), outputs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.epoch_ended(self._state(trainer, pl_module))

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.fit_ended(self._state(trainer, pl_module))

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        self.failed(exception)
