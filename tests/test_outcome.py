"""Per-epoch losses become the verdicts a beginner recognises."""

from __future__ import annotations

import numpy as np

from losslab.core.outcome import classify


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
