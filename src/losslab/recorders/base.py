"""The recorder contract: per-epoch values and end-of-fit numbers, one per replica."""

from __future__ import annotations

import numpy as np
import torch

from losslab.engine.hooks import FitHooks


class Recorder(FitHooks):
    """Calls probes during a fit (`engine.hooks`: under Lightning or the engine's own loop)
    and keeps what they return.

    `records()` gives name -> [replicas, epochs] arrays, `finals` name -> [replicas].
    Values stay on the device as tensors until the fit ends (no host sync per epoch). A
    recorder reads the fit's state and the step's losses and gradients; it never changes them.
    """

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
