"""2/λ_max from Hessian-vector products matches the closed form of the linear model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from losslab.models import mlp
from losslab.stability import analyse, lambda_max


def closed_form_lambda(x: np.ndarray) -> float:
    """MSE of w·x + b: Hessian = 2·[[mean x², mean x], [mean x, 1]] (test oracle only)."""
    h = 2 * np.array([[np.mean(x**2), np.mean(x)], [np.mean(x), 1.0]])
    return float(np.linalg.eigvalsh(h).max())


@pytest.mark.parametrize("n", [1, 10, 17, 20])
def test_lambda_max_matches_closed_form(n: int) -> None:
    x = torch.arange(1, n + 1, dtype=torch.float32).unsqueeze(1)
    model = mlp([1, 1])
    params = dict(model.named_parameters())
    lam = lambda_max(model, params, torch.nn.MSELoss(), x, 0.5 * x)
    assert lam == pytest.approx(closed_form_lambda(x.numpy().ravel()), rel=1e-8)


def test_smallest_diverging_size_for_the_original_is_17() -> None:
    x = torch.arange(1, 21, dtype=torch.float32).unsqueeze(1)
    model = mlp([1, 1])
    params = dict(model.named_parameters())
    s = analyse(model, params, torch.nn.MSELoss(), x, 0.5 * x, lr=0.01, scan_x=x, scan_y=0.5 * x)
    assert s.critical_lr == pytest.approx(2 / 288.539, rel=1e-4)
    assert not s.stable
    assert s.min_diverging_n == 17  # the author saw 10 points converge and 18 diverge


def test_top_of_spectrum_when_the_dominant_eigenvalue_is_negative() -> None:
    # f(a, b) = a² - 3b²: eigenvalues 2 and -6; the stability bound needs the top one (2).
    class Saddle(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(0.3))
            self.b = torch.nn.Parameter(torch.tensor(-0.2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a**2 - 3 * self.b**2 + 0 * x.sum()

    model = Saddle()
    lam = lambda_max(
        model, dict(model.named_parameters()), lambda out, y: out, torch.zeros(1), torch.zeros(1)
    )
    assert lam == pytest.approx(2.0, rel=1e-6)
