"""The stability bound of full-batch gradient descent: lr < 2 / λ_max(Hessian of the loss).

λ_max comes from power iteration on Hessian-vector products (torch.func: the vjp of the
XX
loss (the `linear` scenario) the Hessian is the same everywhere and the bound is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vjp

Params = dict[str, torch.Tensor]


def _hvp(f: Callable[[Params], torch.Tensor], params: Params, v: Params) -> Params:
    # Reverse-over-reverse: forward-over-reverse (jvp of grad) trips over ZeroTensors in
    # mse_loss's backward formula on torch 2.13.
    _, pullback = vjp(grad(f), params)
    return pullback(v)[0]


def _dot(a: Params, b: Params) -> torch.Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


def _power(
    f: Callable[[Params], torch.Tensor], params: Params, shift: float, iters: int, tol: float
) -> float:
    """Dominant eigenvalue of (H - shift·I) by power iteration, plus the shift."""
    gen = torch.Generator().manual_seed(0)
    v = {k: torch.randn(p.shape, generator=gen, dtype=p.dtype) for k, p in params.items()}
    norm = _dot(v, v).sqrt()
    v = {k: t / norm for k, t in v.items()}
    lam = 0.0
    for _ in range(iters):
        hv = _hvp(f, params, v)
        hv = {k: hv[k] - shift * v[k] for k in hv}
        new = float(_dot(v, hv))
        norm = _dot(hv, hv).sqrt()
        if not torch.isfinite(norm) or norm == 0:
            return new + shift
        v = {k: t / norm for k, t in hv.items()}
        if abs(new - lam) <= tol * max(1.0, abs(new)):
            lam = new
            break
        lam = new
    return lam + shift


def lambda_max(
    model: nn.Module,
    params: Params,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    iters: int = 200,
    tol: float = 1e-9,
) -> float:
    """Largest (algebraic) eigenvalue of the loss Hessian w.r.t. `params` at (x, y)."""
    p64 = {k: v.detach().to(torch.float64) for k, v in params.items()}
    x64, y64 = x.to(torch.float64), y.to(torch.float64)

    def f(p: Params) -> torch.Tensor:
        return loss_fn(functional_call(model, p, (x64,)), y64)

    top = _power(f, p64, 0.0, iters, tol)
    if top < 0:  # dominant by magnitude is negative: shift to find the top of the spectrum
        top = _power(f, p64, top, iters, tol)
    return top


@dataclass(frozen=True)
class Stability:
    lambda_max: float
    critical_lr: float
    lr: float
    min_diverging_n: int | None  # smallest prefix of the data whose 2/λ_max < lr, if any

    @property
    def stable(self) -> bool:
        return self.lr < self.critical_lr


def analyse(
    model: nn.Module,
    params: Params,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    scan_x: torch.Tensor | None = None,
    scan_y: torch.Tensor | None = None,
) -> Stability:
    """The bound on the training data, and (if scan data given) the smallest diverging size.

    The scan walks prefixes of the scenario's full data set (x[:1], x[:2], …) and reports
    the first whose critical learning rate falls below `lr`.
    """
    lam = lambda_max(model, params, loss_fn, x, y)
    min_n = None
    if scan_x is not None and scan_y is not None:
        for n in range(1, len(scan_x) + 1):
            if 2.0 / lambda_max(model, params, loss_fn, scan_x[:n], scan_y[:n]) < lr:
                min_n = n
                break
    return Stability(lam, 2.0 / lam if lam > 0 else float("inf"), lr, min_n)
