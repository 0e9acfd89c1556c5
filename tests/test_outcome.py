"""Per-epoch losses become the verdicts a beginner recognises."""

from __future__ import annotations

import numpy as np

from losslab.core.outcome import OUTCOMES, classify, classify_many, tail_length


def test_inf_then_nan_records_both_epochs() -> None:
    losses = np.array([10.0, 100.0, np.inf, np.inf, np.nan, np.nan])
    o = classify(losses, converge_below=0.01)
    assert o.label == "diverged"
    assert (o.first_inf_epoch, o.first_nan_epoch, o.diverged_epoch) == (3, 5, 3)


def test_nan_without_inf() -> None:
    o = classify(np.array([1.0, np.nan]), converge_below=0.01)
    assert (o.label, o.first_inf_epoch, o.first_nan_epoch) == ("diverged", None, 2)


def test_finite_outcomes() -> None:
    assert classify(np.array([10.0, 1.0, 0.001]), 0.01).label == "converged"
    assert classify(np.array([1.0, 2.0, 3.0]), 0.01).label == "rising"
    assert classify(np.array([10.0, 9.5, 9.5]), 0.01, improve_factor=0.9).label == "stalled"
    assert classify(np.array([10.0, 5.0, 4.0, 3.0]), 0.01, improve_factor=0.9).label == "improving"


def test_a_plateau_after_a_blow_up_is_stalled() -> None:
    # A ReLU head that dies after an explosive first epoch: lower than epoch 1, but stuck.
    losses = np.array([1.6e18, 481200.7, 481200.7, 481200.7, 481200.7, 481200.7])
    assert classify(losses, 0.01).label == "stalled"


def test_divergence_wins_over_a_low_final_loss() -> None:
    assert classify(np.array([1.0, np.inf, 0.0]), 0.01).label == "diverged"


def test_a_loss_bouncing_without_descending_is_oscillating_not_improving() -> None:
    """Mini-batch SGD (batch 4) at lr 0.6 on y = 0.5·x + noise: the epoch loss swings
    between ~0.015 and ~0.05 for its last quarter; at lr 0.3 it sits calmly at the noise
    floor (one spike is not an oscillation)."""
    import torch
    from torch import nn

    from losslab.doctor.problem import Problem, train

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, generator=g)
    y = 0.5 * x + 0.1 * torch.randn(64, 1, generator=g)

    def losses(lr: float) -> np.ndarray:
        sgd = lambda ps: torch.optim.SGD(ps, lr=lr)  # noqa: E731
        return train(
            Problem(lambda s: nn.Linear(1, 1), x, y, nn.MSELoss(), sgd, 100, 4, True, (0,)), 0
        ).losses

    assert classify(losses(0.6), 0.0, 0.5).label == "oscillating"
    assert classify(losses(0.3), 0.0, 0.5).label == "improving"
    zigzag = 1.0 + 0.3 * (-1.0) ** np.arange(40)
    assert classify(zigzag, 0.0, 0.9).label == "oscillating"
    falling = np.exp(-0.1 * np.arange(40)) * (1 + 0.1 * (-1.0) ** np.arange(40))
    assert classify(falling, 0.0, 0.9).label == "improving"  # noisy, but descending


def _curves(rng: np.random.Generator, epochs: int) -> list[np.ndarray]:
    """Every kind of curve `classify` tells apart, with noise, at this length."""
    t = np.arange(epochs, dtype=np.float64)
    out = [
        10 * 0.9**t,  # converged
        1 + 0.01 * t,  # rising
        np.full(epochs, 3.0),  # plateau
        5 + 2 * (-1.0) ** t,  # oscillating
        10 / (1 + 0.01 * t),  # improving or stalled
        np.where(t > epochs // 2, np.inf, 1 + t),  # diverged
        np.r_[1e18, np.full(epochs - 1, 4.8e5)],  # a dead head after one blow-up
    ]
    out += [np.abs(c + rng.normal(0, s, epochs)) for c in out[:5] for s in (1e-4, 0.05, 0.5)]
    out += [np.exp(np.cumsum(rng.normal(0, 0.2, epochs))) for _ in range(40)]
    return out


def test_classify_many_labels_as_classify_does() -> None:
    """What the maps use (first, last and last quarter's losses per run) gives the label the
    single-run verdict gives, for every kind of curve and length, `solved` included."""
    rng = np.random.default_rng(0)
    for epochs in (1, 3, 7, 16, 20, 500):
        curves = _curves(rng, epochs)
        solved = rng.random(len(curves)) < 0.3
        t = tail_length(epochs)
        tail = np.stack([c[-t:] for c in curves])
        for given in (None, solved):
            got = classify_many(
                np.array([c[0] for c in curves]),
                np.array([c[-1] for c in curves]),
                tail,
                np.array([not np.all(np.isfinite(c)) for c in curves]),
                epochs,
                0.01,
                0.5,
                given,
            )
            want = [
                classify(c, 0.01, 0.5, None if given is None else bool(given[i])).label
                for i, c in enumerate(curves)
            ]
            assert [OUTCOMES[i] for i in got] == want, epochs
