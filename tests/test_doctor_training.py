"""The doctor trains every seed at once where that is exact: the stacked program must give
each seed the numbers of its own plain loop, and fall back to the loop where it cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from losslab.doctor.problem import Problem, train, train_seeds
from losslab.doctor.repair import attempts


def _mlp(seed: int) -> nn.Module:
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))


def _problem(optimizer, model=_mlp, epochs: int = 30, batch_size: int | None = 16) -> Problem:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g) * torch.tensor([1.0, 20.0])
    y = x[:, :1] - 0.1 * x[:, 1:]
    return Problem(model, x, y, nn.MSELoss(), optimizer, epochs, batch_size, True, (0, 1, 2))


@pytest.mark.parametrize(
    ("optimizer", "model"),
    [
        (lambda ps: torch.optim.SGD(ps, lr=0.0003, momentum=0.9), _mlp),
        (lambda ps: torch.optim.Adam(ps, lr=0.01), _mlp),
        # past the bound: every seed blows up, each at its own epoch
        (lambda ps: torch.optim.SGD(ps, lr=0.05), lambda seed: nn.Linear(2, 1)),
    ],
    ids=["sgd", "adam", "diverging"],
)
def test_stacked_seeds_match_their_own_loops(optimizer, model) -> None:
    p = _problem(optimizer, model=model, epochs=60)
    stacked = train_seeds(p)
    for got, seed in zip(stacked, p.seeds, strict=True):
        alone = train(p, seed)
        finite = np.isfinite(alone.losses)
        np.testing.assert_array_equal(np.isfinite(got.losses), finite)  # blown up at the same epoch
        np.testing.assert_allclose(got.losses[finite], alone.losses[finite], rtol=1e-4)
        if finite.all():
            for a, b in zip(got.model.parameters(), alone.model.parameters(), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_a_model_vmap_cannot_run_takes_the_loop() -> None:
    def dropout(seed: int) -> nn.Module:  # random per call: vmap refuses it
        return nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.2), nn.ReLU(), nn.Linear(8, 1))

    p = _problem(lambda ps: torch.optim.SGD(ps, lr=0.001), model=dropout, epochs=3)
    got = train_seeds(p)  # no exception: each seed went through the plain loop
    assert [t.seed for t in got] == [0, 1, 2] and all(np.isfinite(t.losses).all() for t in got)


def test_a_stable_but_unsolved_repair_is_tried_again_with_a_longer_budget() -> None:
    # lr small enough to be stable, too small to converge in 5 epochs: the follow-up trains longer.
    p = _problem(lambda ps: torch.optim.Adam(ps, lr=0.01), epochs=5)
    tried = attempts([(p, {"lr": 0.01}, "lr 0.01")])
    assert tried[0].success_rate < 0.8
    assert len(tried) == 2 and tried[1].changes["epochs"] > 5 and tried[1].changes["lr"] == 0.01
