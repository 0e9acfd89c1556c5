"""Dead ReLU units and a dead ReLU head: at init, after the first update, per epoch, at the end."""

from __future__ import annotations

import torch

from losslab.engine.hooks import State
from losslab.probes import dead_units
from losslab.recorders.base import Recorder


class DeadUnits(Recorder):
    """`probes.dead_units` on the training inputs: a unit is dead when its pre-activation is
    <= 0 on every one of them (it outputs 0 and passes no gradient)."""

    @staticmethod
    def _measure(state: State) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            x = state.dm.x.to(state.device)
            return dead_units(state.net.template, state.net.params(), x, fast=state.forward(x))

    def _finals(self, state: State, when: str) -> None:
        frac, head = self._measure(state)
        self._final(f"dead_fraction_{when}", frac)
        if head is not None:
            self._final(f"head_dead_{when}", head)

    def fit_started(self, state: State) -> None:
        self._finals(state, "init")

    def batch_ended(self, state: State, outputs: dict[str, torch.Tensor]) -> None:
        if state.step == 1:  # right after the very first update
            self._finals(state, "step1")

    def epoch_ended(self, state: State) -> None:
        frac, head = self._measure(state)
        self._add("dead_fraction", frac)
        if head is not None:
            self._add("head_dead", head)

    def fit_ended(self, state: State) -> None:
        self._finals(state, "final")
