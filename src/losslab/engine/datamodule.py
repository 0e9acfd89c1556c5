"""The Lightning DataModule that feeds an ensemble: one slice of every batch per seed."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch

from losslab.core.data import read_xy
from losslab.core.errors import LosslabError

# --- batches for an ensemble ---------------------------------------------------------


class ReplicaBatches:
    """One epoch of batches shaped [replicas, batch, features].

    Full-batch data is shared by every replica (an expand, no copy). With shuffling, each
    replica draws its own permutation from (seed, epoch), as separate runs would; a run's
    batch order therefore does not depend on which other seeds trained beside it.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, seeds: list[int], batch_size: int | None, shuffle: bool
    ) -> None:
        self.x, self.y, self.seeds = x, y, list(seeds)
        self.batch_size = batch_size or len(x)
        self.shuffle = shuffle
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, s = len(self.x), len(self.seeds)
        if self.shuffle:
            perms = torch.stack(
                [
                    torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + self.epoch))
                    for seed in self.seeds
                ]
            )
        self.epoch += 1
        for start in range(0, n, self.batch_size):
            if self.shuffle:
                idx = perms[:, start : start + self.batch_size]
                yield self.x[idx], self.y[idx]
            else:
                sl = slice(start, start + self.batch_size)
                xb, yb = self.x[sl], self.y[sl]
                yield xb.expand(s, *xb.shape), yb.expand(s, *yb.shape)


class TableDataModule(pl.LightningDataModule):
    """A table of inputs and targets from data/, split and scaled the way the scenario says.

    `input_scale` multiplies the raw inputs (as if measured in other units) before any
    scaling; `raw` keeps the file's units: how a map varies the scale of unscaled inputs.

    Keras semantics where a port needs them: `split.train` keeps the first rows for
    fitting (the rest is the held-out test set) and `split.val_fraction` takes the *last*
    part of those, unshuffled, for validation (`validation_split`). Scaling statistics
    come from the training rows only.
    """

    def __init__(
        self,
        path: str,
        inputs: list[str],
        targets: list[str],
        n_points: int | None = None,
        scale: str | None = None,
        input_scale: float = 1.0,
        batch_size: int | None = None,
        shuffle: bool = False,
        target_shape: str = "column",
        split: dict | None = None,
        nonfinite: str = "error",
        root: str = ".",
    ) -> None:
        super().__init__()
        if scale not in (None, "standardize", "minmax"):
            raise LosslabError(f"data.scale must be null, standardize or minmax; got {scale!r}")
        self.path = Path(root) / path
        self.inputs, self.targets = list(inputs), list(targets)
        if not (isinstance(input_scale, (int, float)) and math.isfinite(input_scale) and input_scale > 0):
            raise LosslabError(f"data.input_scale must be a positive number; got {input_scale!r}")
        self.n_points, self.scale, self.input_scale = n_points, scale, float(input_scale)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.target_shape = target_shape
        self.split = dict(split or {})
        self.nonfinite = nonfinite
        self.seeds: list[int] = [0]
        self.x: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        """Load, split and scale once; safe to call again (Lightning does)."""
        if self.x is not None:
            return
        x, y = read_xy(self.path, self.inputs, self.targets, self.n_points, self.nonfinite)
        self._full = (x, y)
        if self.n_points is not None:
            x, y = x[: self.n_points], y[: self.n_points]
        x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
        n_fit = self.split.get("train") or len(x)
        n_val = math.floor(n_fit * float(self.split.get("val_fraction") or 0.0))
        if n_fit > len(x) or n_fit - n_val < 1:
            raise LosslabError(f"data.split {self.split} does not fit {len(x)} rows of {self.path}")
        tr, va, te = slice(0, n_fit - n_val), slice(n_fit - n_val, n_fit), slice(n_fit, None)
        self.raw = {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}
        xt, yt = self.raw["train"]
        xt = self._units(xt)
        self.x_shift, self.x_div = torch.zeros(xt.shape[1]), torch.ones(xt.shape[1])  # identity
        self.y_shift, self.y_div = torch.zeros(yt.shape[1]), torch.ones(yt.shape[1])
        if self.scale == "minmax":
            self.x_shift, self.x_div = xt.min(0).values, (xt.max(0).values - xt.min(0).values)
            self.y_shift, self.y_div = yt.min(0).values, (yt.max(0).values - yt.min(0).values)
        elif self.scale == "standardize":  # inputs only, as in the fixes it ports
            self.x_shift, self.x_div = xt.mean(0), xt.std(0, unbiased=False)
        self.x_div, self.y_div = self.x_div.clamp_min(1e-12), self.y_div.clamp_min(1e-12)
        self.x, self.y = self.part("train")

    def part(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs and targets of the train, val or test rows (possibly empty)."""
        x, y = self.raw[name]
        return self.encode(x), self._shape(self.encode_y(y))

    def _shape(self, y: torch.Tensor) -> torch.Tensor:
        return y[:, 0] if self.target_shape == "flat" else y  # the (N,) vs (N, 1) trap

    def _units(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs in the units the model sees them (`input_scale`)."""
        return x * self.input_scale if self.input_scale != 1.0 else x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs -> model inputs."""
        return (self._units(x) - self.x_shift) / self.x_div

    def encode_y(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.y_shift) / self.y_div

    def decode_y(self, y: torch.Tensor) -> torch.Tensor:
        """Model outputs -> the targets' original units (for MAE and relative errors)."""
        return y * self.y_div.to(y.device) + self.y_shift.to(y.device)

    def full_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every row of the file (ignoring n_points and splits), encoded like training data."""
        x, y = (torch.tensor(a, dtype=torch.float32) for a in self._full)
        return self.encode(x), self._shape(self.encode_y(y))

    def bind(self, seeds: list[int]) -> None:
        """Which replicas the batches are for (one slice per seed)."""
        self.seeds = list(seeds)

    def train_dataloader(self) -> ReplicaBatches:
        self.setup()
        return ReplicaBatches(self.x, self.y, self.seeds, self.batch_size, self.shuffle)
