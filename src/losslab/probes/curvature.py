"""Curvature of the loss: the largest Hessian eigenvalue and the learning rate it allows.

Full-batch gradient descent on a quadratic is stable only if lr < 2 / λ_max(Hessian): along
the top eigenvector each step multiplies the error by (1 - lr·λ_max), and once that factor
is below -1 the loss grows geometrically. So "my loss goes up" is often just a learning rate
above 2/λ_max, and λ_max grows with the data (e.g. with the mean of x² for a linear model),
which is why adding points can make a run that used to converge diverge.

λ_max comes from Hessian-vector products (reverse-over-reverse) in float64, so that the
bound is not blurred by rounding: the whole Hessian for a handful of parameters, Lanczos
(scipy's eigsh) beyond. For a quadratic loss
(a linear model with MSE) the Hessian is the same everywhere and the bound is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def hvp(f: Callable[[Params], torch.Tensor], params: Params, v: Params) -> Params:
    """H·v for the Hessian H of the scalar f at `params`, without ever forming H.

    Reverse-over-reverse with torch.autograd: the gradient of <∇f, v>. It gives the same
    numbers, bit for bit, as torch.func's vjp(grad(f)) (tests/test_probes.py), without the
    ~2 s import of torch._dynamo that torch.func.grad triggers on its first call, so a
    user's first λ_max takes milliseconds. (Forward-over-reverse, a jvp of the gradient,
    trips over ZeroTensors in mse_loss's backward formula on torch 2.13.)
    """
    p = {k: t.detach().requires_grad_(True) for k, t in params.items()}
    keys = list(p)
    with torch.enable_grad():
        g = torch.autograd.grad(f(p), [p[k] for k in keys], create_graph=True)
        dot = sum((gi * v[k]).sum() for gi, k in zip(g, keys, strict=True))
        hv = torch.autograd.grad(dot, [p[k] for k in keys], allow_unused=True)
    return {k: torch.zeros_like(p[k]) if h is None else h for k, h in zip(keys, hv, strict=True)}


def _dot(a: Params, b: Params) -> torch.Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


DENSE = 32  # up to this many parameters the Hessian is built whole (one HVP per column)


class _NonFinite(Exception):
    """An HVP came back inf/NaN (diverged weights): there is no curvature to report."""


def _top(
    f: Callable[[Params], torch.Tensor], params: Params, iters: int, tol: float, scale: Params | None
) -> float:
    """The largest algebraic eigenvalue of D·H·D (D the diagonal `scale`, identity if None).

    Small models: the whole matrix from one HVP per unit vector, then eigvalsh (exact).
    Larger ones: Lanczos (scipy's ARPACK eigsh, `which="LA"`) on the HVP as a linear
    operator. Plain power iteration finds the eigenvalue of largest *magnitude*, and a
    network's Hessian at init often has a ± pair of nearly equal size (the cross terms of
    consecutive layers times the residual): power iteration then drifts between them for
    hundreds of steps and stops nowhere near either (95.7 where λ_max is 1251.7 on
    relu_head's standardised inputs); Lanczos finds the top in ~20 products.
    """
    keys = list(params)
    shapes = [params[k].shape for k in keys]
    sizes = [params[k].numel() for k in keys]
    n = sum(sizes)
    if n == 0:
        return 0.0

    def matvec(vec: np.ndarray) -> np.ndarray:
        flat = torch.from_numpy(np.ascontiguousarray(vec, dtype=np.float64).ravel()).to(
            next(iter(params.values())).device
        )
        v = {k: c.reshape(s) for k, c, s in zip(keys, torch.split(flat, sizes), shapes, strict=True)}
        if scale is not None:
            v = {k: t * scale[k] for k, t in v.items()}
        hv = hvp(f, params, v)
        if scale is not None:
            hv = {k: t * scale[k] for k, t in hv.items()}
        out = torch.cat([hv[k].reshape(-1) for k in keys]).cpu().numpy()
        if not np.isfinite(out).all():
            raise _NonFinite
        return out

    try:
        if n <= DENSE:
            h = np.stack([matvec(col) for col in np.eye(n)], axis=1)
            return float(np.linalg.eigvalsh((h + h.T) / 2)[-1])
        # Deferred: scipy only where a model has more than DENSE parameters (bench/gpu_check.py
        # runs where torch and Lightning are installed but scipy may not be).
        from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

        op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
        v0 = np.random.default_rng(0).standard_normal(n)  # the same start on every machine
        if not matvec(v0).any():  # a flat loss (a dead head): H = 0, which ARPACK refuses
            return 0.0
        try:
            top = eigsh(op, k=1, which="LA", v0=v0, tol=tol, maxiter=iters, return_eigenvectors=False)
            return float(top[0])
        except ArpackNoConvergence as e:  # the best estimate so far, if there is one
            return float(e.eigenvalues[0]) if len(e.eigenvalues) else math.nan
    except _NonFinite:
        return math.nan


def top_eigenvalue(f: Callable[[Params], torch.Tensor], params: Params, steps: int = 12) -> float:
    """λ_max of the Hessian of any scalar function of named tensors, cheaply (to watch a
    training, doctor/observer.py): `steps` Lanczos iterations, one HVP each, on the tensors'
    own device and dtype, fully reorthogonalised. Lanczos finds the extreme eigenvalues
    first, so a dozen products pin λ_max even where a ± pair throws power iteration off."""
    p = {k: v.detach() for k, v in params.items()}
    keys = list(p)
    sizes = [p[k].numel() for k in keys]
    n = sum(sizes)
    if n == 0:
        return 0.0
    first = next(iter(p.values()))
    gen = torch.Generator(device="cpu").manual_seed(0)  # the same start on every machine
    q = torch.randn(n, generator=gen, dtype=torch.float64).to(device=first.device, dtype=first.dtype)
    basis, alphas, betas = [q / q.norm()], [], []
    for _ in range(min(steps, n)):
        v = {k: c.reshape(p[k].shape) for k, c in zip(keys, torch.split(basis[-1], sizes), strict=True)}
        hv = hvp(f, p, v)
        w = torch.cat([hv[k].reshape(-1) for k in keys])
        if not bool(torch.isfinite(w).all()):
            return math.nan
        alphas.append(float(w @ basis[-1]))
        for b in basis:  # full reorthogonalisation: a dozen vectors, cheap next to an HVP
            w = w - (w @ b) * b
        beta = float(w.norm())
        if beta < 1e-10 * max(1.0, abs(alphas[-1])):  # an invariant subspace: T is exact
            break
        betas.append(beta)
        basis.append(w / beta)
    off = betas[: len(alphas) - 1]
    return float(np.linalg.eigvalsh(np.diag(alphas) + np.diag(off, 1) + np.diag(off, -1))[-1])


def _own_params(model: nn.Module) -> Params:
    return {k: v.detach() for k, v in model.named_parameters()}


def lambda_max(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    params: Params | None = None,
    iters: int = 200,
    tol: float = 1e-9,
    precondition: Params | None = None,
) -> float:
    """Largest (algebraic) eigenvalue of the Hessian of loss_fn(model(x), y) w.r.t. the params.

    `params` default to the model's own (detached); pass others to evaluate a template
    architecture (even one on the meta device) at given weights. Neither is modified: the
    computation runs on float64 copies through functional_call.

    `precondition`: per-coordinate D = P^-1/2 (same shapes as the params); the eigenvalue
    is then that of D·H·D, i.e. of P^-1·H, the sharpness an adaptive optimizer sees
    (`adam_preconditioner`).
    """
    given = _own_params(model) if params is None else params
    p64 = {k: v.detach().to(torch.float64) for k, v in given.items()}
    x64, y64 = x.to(torch.float64), y.to(torch.float64)

    def f(p: Params) -> torch.Tensor:
        return loss_fn(functional_call(model, p, (x64,)), y64)

    d64 = None if precondition is None else {k: v.detach().to(torch.float64) for k, v in precondition.items()}
    return _top(f, p64, iters, tol, d64)


def adam_preconditioner(optimizer: torch.optim.Optimizer, model: nn.Module, floor: float = 1e-2) -> Params:
    """D = P^-1/2 of an Adam/AdamW optimizer that has taken steps, as PyTorch applies it:
    v̂ = exp_avg_sq / (1 - β2^t), P = (1 - β1^t)·(√v̂ + ε). Coordinates whose √v̂ is below
    `floor` × the median over all coordinates are masked (D = 0): a coordinate whose
    gradient has (almost) never been seen has P^-1 ≈ 1/ε, which would inflate the
    eigenvalue by directions the optimizer is not actually stepping along."""
    roots, pres = {}, {}
    names = {id(p): k for k, p in model.named_parameters()}
    for group in optimizer.param_groups:
        b1, b2 = group["betas"]
        for p in group["params"]:
            state = optimizer.state.get(p) or {}
            if id(p) not in names or "exp_avg_sq" not in state:
                continue
            t = float(state["step"])
            root = (state["exp_avg_sq"].double() / (1 - b2**t)).sqrt()
            roots[names[id(p)]] = root
            pres[names[id(p)]] = (1 - b1**t) * (root + group["eps"])
    if not roots:
        return {}
    cut = floor * float(torch.cat([r.reshape(-1) for r in roots.values()]).median())
    return {k: torch.where(roots[k] > cut, pres[k].rsqrt(), torch.zeros_like(pres[k])) for k in roots}


def adam_bound(lr: float, beta1: float) -> float:
    """The preconditioned sharpness Adam tolerates: (2 + 2β1) / ((1 - β1)·lr), 38/lr at β1 0.9
    (Cohen et al. 2022, Adaptive Gradient Methods at the Edge of Stability)."""
    return (2 + 2 * beta1) / ((1 - beta1) * lr)


def lambda_max_stacked(
    model: nn.Module, stacked: Params, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, **kw: float
) -> np.ndarray:
    """λ_max per replica of parameters stacked along a leading dimension: float64 [replicas].

    Replicas are done one after the other (each its own eigen-solve, with its own
    convergence), on `model` as an architecture only: it may live on the meta device.
    """
    n = len(next(iter(stacked.values())))
    return np.array(
        [lambda_max(model, loss_fn, x, y, {k: v[i] for k, v in stacked.items()}, **kw) for i in range(n)],
        dtype=np.float64,
    )


def critical_lr(lam: float) -> float:
    """The full-batch GD stability bound 2/λ_max; no bound (inf) unless the loss curves up."""
    return 2.0 / lam if lam > 0 else float("inf")


def smallest_unstable_prefix(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    params: Params | None = None,
) -> int | None:
    """The smallest n such that lr is above 2/λ_max on the first n points (x[:n], y[:n]), or None.

    It answers "why did 10 points converge and 18 diverge?": the critical learning rate
    shrinks as the data grows, and this is the size at which it drops below `lr`.
    """
    p = _own_params(model) if params is None else params
    for n in range(1, len(x) + 1):
        if critical_lr(lambda_max(model, loss_fn, x[:n], y[:n], p)) < lr:
            return n
    return None
