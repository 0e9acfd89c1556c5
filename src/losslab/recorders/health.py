"""What every run records per epoch: loss, gradient norm, learning rate, scalar parameters."""

from __future__ import annotations

import torch

from losslab.engine.hooks import State
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
        self._scalar_names: dict[str, str] = {}

    def fit_started(self, state: State) -> None:
        self._scalar_names = self._scalars(state)  # once a fit: the model's shape does not change

    def epoch_started(self, state: State) -> None:
        self._losses.clear()
        self._grad_norms.clear()

    def gradients(self, state: State, grads: dict[str, torch.Tensor]) -> None:
        norm = total_norm(grads)
        if norm is not None:
            self._grad_norms.append(norm)

    def batch_ended(self, state: State, outputs: dict[str, torch.Tensor]) -> None:
        self._losses.append(outputs["replica_losses"].detach())

    def epoch_ended(self, state: State) -> None:
        self._add("loss", torch.stack(self._losses).mean(0))
        if self._grad_norms:
            self._add("grad_norm", torch.stack(self._grad_norms).mean(0))
        self._add("lr", torch.full((len(state.net.seeds),), state.lr, dtype=torch.float64))
        if self._scalar_names:
            params = state.net.params()
            for name, key in self._scalar_names.items():
                self._add(name, params[key].detach().reshape(-1))

    @staticmethod
    def _scalars(state: State) -> dict[str, str]:
        """One-number parameters: recorded name -> parameter name (`weight`/`bias` when
        that is unambiguous)."""
        scalars = [k for k, p in state.net.params().items() if p[0].numel() == 1]
        short = [k.rsplit(".", 1)[-1] for k in scalars]
        return dict(zip(short if len(set(short)) == len(short) else scalars, scalars, strict=True))
