"""Per-epoch health records, as Lightning callbacks any scenario gets for free.

Every instrument is a `Recorder`: per-epoch values per replica (`records()`, arrays
[replicas, epochs]) and end-of-fit numbers per replica (`finals`). Values stay on the
device as tensors until the fit ends, so recording costs no host sync per epoch.

- HealthRecorder (always on): loss (mean over the epoch's batches, as Keras reports
  it), gradient norm, learning rate, every scalar parameter (a one-neuron model's
  weight and bias).
- RegressionHealth: train/val MSE and MAE in the targets' units, test MAE and max
  relative error at the end, and optionally Keras' "accuracy" to show what it does.
- DeadUnits: fraction of dead hidden ReLU units and whether the ReLU head is dead
  (pre-activation <= 0 on every training input), at init, after step 1, per epoch.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.func import functional_call, vmap

from losslab.module import EnsembleModule


class Recorder(pl.Callback):
    def __init__(self) -> None:
        self.rows: dict[str, list[torch.Tensor]] = {}
        self.finals: dict[str, np.ndarray] = {}

    def _add(self, name: str, value: torch.Tensor) -> None:
        self.rows.setdefault(name, []).append(value.detach().to(torch.float64))

    def _final(self, name: str, value: torch.Tensor) -> None:
        self.finals[name] = value.detach().to(torch.float64).cpu().numpy()

    def records(self) -> dict[str, np.ndarray]:
        """name -> array [replicas, epochs]."""
        return {k: torch.stack(v, 1).cpu().numpy() for k, v in self.rows.items()}


class HealthRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self._grad_norms: list[torch.Tensor] = []

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


def _predict(pl_module: EnsembleModule, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        x = x.to(pl_module.device)
        return pl_module(x.expand(len(pl_module.net.seeds), *x.shape))


class RegressionHealth(Recorder):
    """Regression metrics in the targets' original units, on the train/val/test splits."""

    def __init__(self, keras_accuracy: bool = False) -> None:
        super().__init__()
        self.keras_accuracy = keras_accuracy

    def _errors(self, pl_module: EnsembleModule, part: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        dm = pl_module.trainer.datamodule
        x, _ = dm.part(part)
        if len(x) == 0:
            return None
        pred = dm.decode_y(_predict(pl_module, x)).reshape(len(pl_module.net.seeds), len(x), -1)
        truth = dm.raw[part][1].to(pred.device)
        return pred, truth

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        for part in ("train", "val"):
            got = self._errors(pl_module, part)
            if got is None:
                continue
            pred, truth = got
            err = pred - truth
            self._add(f"{part}_mse", err.pow(2).mean((1, 2)))
            self._add(f"{part}_mae", err.abs().mean((1, 2)))
            if self.keras_accuracy and part == "train":
                # Keras' "accuracy" with an MSE loss on one output is binary accuracy:
                # mean(y_true == (y_pred > 0.5)). On targets like 2, 4, …, 1998 it is 0.
                self._add("keras_accuracy", (truth == (pred > 0.5).float()).float().mean((1, 2)))

    def on_train_end(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        got = self._errors(pl_module, "test")
        if got is None:
            return
        pred, truth = got
        err = (pred - truth).abs()
        self._final("test_mae", err.mean((1, 2)))
        # MAE in units of the targets' typical magnitude: scale-free, sane for targets near 0.
        self._final("test_rel_mae", err.mean((1, 2)) / truth.abs().mean().clamp_min(1e-12))
        self._final("test_max_rel_err", (err / truth.abs().clamp_min(1e-12)).amax((1, 2)))


def preactivations(model: nn.Sequential, params: dict[str, torch.Tensor], x: torch.Tensor) -> list:
    """(pre-activation, followed_by_relu) for every Linear layer of a Sequential."""
    out = []
    layers = list(model.named_children())
    for i, (name, layer) in enumerate(layers):
        if isinstance(layer, nn.Linear):
            x = functional_call(layer, {k: params[f"{name}.{k}"] for k in ("weight", "bias")}, (x,))
            relu = i + 1 < len(layers) and isinstance(layers[i + 1][1], nn.ReLU)
            out.append((x, relu))
        else:
            x = layer(x)
    return out


def dead_units(
    model: nn.Sequential, params: dict[str, torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[replicas] dead fraction of hidden ReLU units, and [replicas] head dead (or None).

    A ReLU unit is dead when its pre-activation is <= 0 on every input: it outputs 0 and
    passes no gradient, so no update can revive it. Params are stacked ([replicas, …]).
    """
    layers = preactivations(model, {k: v[0] for k, v in params.items()}, x)  # structure only
    relu_flags = [r for _, r in layers]

    def per_replica(p: dict) -> tuple[torch.Tensor, ...]:
        return tuple((z <= 0).all(0) for z, _ in preactivations(model, p, x))

    dead = vmap(per_replica)(params)  # one [replicas, units] mask per Linear
    hidden = [d for d, relu in zip(dead[:-1], relu_flags[:-1], strict=True) if relu]
    frac = torch.cat(hidden, 1).float().mean(1) if hidden else torch.zeros(dead[0].shape[0])
    head = dead[-1].all(1).float() if relu_flags[-1] else None
    return frac, head


class DeadUnits(Recorder):
    def _measure(self, pl_module: EnsembleModule) -> tuple[torch.Tensor, torch.Tensor | None]:
        dm = pl_module.trainer.datamodule
        with torch.no_grad():
            return dead_units(pl_module.net.template, pl_module.net.params(), dm.x.to(pl_module.device))

    def on_train_start(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        frac, head = self._measure(pl_module)
        self._final("dead_fraction_init", frac)
        if head is not None:
            self._final("head_dead_init", head)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: EnsembleModule, *args: object) -> None:
        if trainer.global_step == 1:  # right after the very first update
            frac, head = self._measure(pl_module)
            self._final("dead_fraction_step1", frac)
            if head is not None:
                self._final("head_dead_step1", head)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        frac, head = self._measure(pl_module)
        self._add("dead_fraction", frac)
        if head is not None:
            self._add("head_dead", head)

    def on_train_end(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        frac, head = self._measure(pl_module)
        self._final("dead_fraction_final", frac)
        if head is not None:
            self._final("head_dead_final", head)
