"""`check_gradients`: a hand-written backward (NumPy or torch) against a reference.

NumPy params are checked against central finite differences in float64; torch params
against autograd in float64. Each tensor gets one relative error (whole tensors: a check of
random coordinates misses a bias gradient that is wrong everywhere by 1/N).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from losslab.probes import finite_differences, relative_errors_np

THRESHOLD = 1e-3  # right: ~1e-8 (finite differences) or ~1e-13 (autograd); a bug: >= 1e-2


@dataclass(frozen=True)
class GradientCheck:
    errors: dict[str, float]
    wrong: list[str]
    ok: bool
    threshold: float
    reference: str  # "finite differences" | "autograd"

    def to_dict(self) -> dict[str, Any]:
        return {"errors": dict(self.errors), "wrong": list(self.wrong), "ok": self.ok}

    def __str__(self) -> str:
        rows = [f"{k:<16} {v:.3g}{'  WRONG' if k in self.wrong else ''}" for k, v in self.errors.items()]
        verdict = "all gradients agree" if self.ok else f"wrong: {', '.join(self.wrong)}"
        return "\n".join(
            [f"hand-written gradients vs {self.reference} (threshold {self.threshold:g})", *rows, verdict]
        )


def _autograd(loss: Callable, params: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    p = {k: v.detach().to(torch.float64).requires_grad_(True) for k, v in params.items()}
    value = loss(p)
    if not isinstance(value, torch.Tensor) or not value.requires_grad:
        raise TypeError("loss(params) must return a tensor computed from the torch params")
    grads = torch.autograd.grad(value, list(p.values()), allow_unused=True)
    return {
        k: (np.zeros(tuple(p[k].shape)) if g is None else g.numpy()) for k, g in zip(p, grads, strict=True)
    }


def check_gradients(
    loss: Callable[[dict], Any],
    grad: Callable[[dict], Mapping[str, Any]],
    params: Mapping[str, Any],
    threshold: float = THRESHOLD,
) -> GradientCheck:
    """`loss(params) -> float`, `grad(params) -> {name: array}`, `params = {name: array}`.

    torch tensors are compared with autograd (float64 copies), anything else with central
    finite differences of `loss` in float64.
    """
    if all(isinstance(v, torch.Tensor) for v in params.values()):
        reference, ref = "autograd", _autograd(loss, params)
        p64 = {k: v.detach().to(torch.float64) for k, v in params.items()}
        hand = {k: (v.detach().numpy() if isinstance(v, torch.Tensor) else v) for k, v in grad(p64).items()}
    else:
        reference = "finite differences"
        p64 = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
        ref = finite_differences(loss, p64)
        hand = grad({k: v.copy() for k, v in p64.items()})
    missing = [k for k in ref if k not in hand]
    errors = relative_errors_np({**hand, **{k: np.full(np.shape(ref[k]), np.nan) for k in missing}}, ref)
    wrong = [k for k, e in errors.items() if not e <= threshold]
    return GradientCheck(errors, wrong, not wrong, threshold, reference)
