"""Regression metrics in the targets' own units, on the train/val/test splits."""

from __future__ import annotations

import torch

from losslab.engine.hooks import State
from losslab.recorders.base import Recorder


class RegressionHealth(Recorder):
    """Regression metrics in the targets' original units, on the train/val/test splits."""

    def __init__(self, keras_accuracy: bool = False) -> None:
        super().__init__()
        self.keras_accuracy = keras_accuracy
        self._split: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # inputs, truth: once a fit

    def _errors(self, state: State, part: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if part not in self._split:
            self._split[part] = (state.dm.part(part)[0], state.dm.raw[part][1].to(state.device))
        x, truth = self._split[part]
        if len(x) == 0:
            return None
        pred = state.dm.decode_y(state.predict(x)).reshape(len(state.net.seeds), len(x), -1)
        return pred, truth

    def epoch_ended(self, state: State) -> None:
        for part in ("train", "val"):
            got = self._errors(state, part)
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

    def fit_ended(self, state: State) -> None:
        got = self._errors(state, "test")
        if got is None:
            return
        pred, truth = got
        err = (pred - truth).abs()
        self._final("test_mae", err.mean((1, 2)))
        # MAE in units of the targets' typical magnitude: scale-free, sane for targets near 0.
        self._final("test_rel_mae", err.mean((1, 2)) / truth.abs().mean().clamp_min(1e-12))
        self._final("test_max_rel_err", (err / truth.abs().clamp_min(1e-12)).amax((1, 2)))
