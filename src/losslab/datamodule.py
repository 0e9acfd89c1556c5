"""The Lightning DataModule that feeds an ensemble: one slice of every batch per seed."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch

from losslab.data import read_xy

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
    """A table of inputs and targets from data/, prepared the way the scenario says."""

    def __init__(
        self,
        path: str,
        inputs: list[str],
        targets: list[str],
        n_points: int | None = None,
        standardize: bool = False,
        batch_size: int | None = None,
        shuffle: bool = False,
        target_shape: str = "column",
        root: str = ".",
    ) -> None:
        super().__init__()
        self.path = Path(root) / path
        self.inputs, self.targets = list(inputs), list(targets)
        self.n_points, self.standardize = n_points, standardize
        self.batch_size, self.shuffle = batch_size, shuffle
        self.target_shape = target_shape
        self.seeds: list[int] = [0]
        self.x: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        """Load and check the table once; safe to call again (Lightning does)."""
        if self.x is not None:
            return
        x, y = read_xy(self.path, self.inputs, self.targets, self.n_points)
        self._full = (x, y)
        if self.n_points is not None:
            x, y = x[: self.n_points], y[: self.n_points]
        self.raw_x = torch.tensor(x, dtype=torch.float32)
        self.mean = self.raw_x.mean(0)
        self.std = self.raw_x.std(0, unbiased=False).clamp_min(1e-12)
        self.x = self.encode(self.raw_x)
        self.y = torch.tensor(y, dtype=torch.float32)
        if self.target_shape == "flat":  # the (N,) vs (N,1) broadcasting trap
            self.y = self.y[:, 0]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs -> model inputs (standardised with training statistics if asked)."""
        return (x - self.mean) / self.std if self.standardize else x

    def full_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every row of the file (ignoring n_points), encoded like the training inputs."""
        x, y = (torch.tensor(a, dtype=torch.float32) for a in self._full)
        return self.encode(x), (y[:, 0] if self.target_shape == "flat" else y)

    def bind(self, seeds: list[int]) -> None:
        """Which replicas the batches are for (one slice per seed)."""
        self.seeds = list(seeds)

    def train_dataloader(self) -> ReplicaBatches:
        self.setup()
        return ReplicaBatches(self.x, self.y, self.seeds, self.batch_size, self.shuffle)
