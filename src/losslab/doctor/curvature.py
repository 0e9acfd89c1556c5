"""The learning rate against the optimizer's own stability threshold.

Plain SGD (momentum μ) diverges on the local quadratic once r = lr·λ_max / (2 + 2μ) > 1;
λ_max is measured at init on the sharpest seed. Adaptive optimizers (Adam, RMSprop, ...)
move every weight by ~lr whatever the curvature, so for them r is the first update's size
relative to the weights, over its threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from losslab.doctor.problem import Problem, train
from losslab.doctor.report import Finding
from losslab.probes import lambda_max

LR_RATIO = 1.0  # r past 1: past the optimizer's threshold


@dataclass(frozen=True)
class Curvature:
    """The loss' curvature against the optimizer's own stability threshold."""

    lam: float  # λ_max of the Hessian at init (plain: what input scaling changes)
    lr: float
    kind: str  # the optimizer's class name
    ratio: float | None = None  # past 1: past the threshold; None: no bound for this optimizer
    evidence: dict[str, float] = field(default_factory=dict)
    rule: str = ""

    def finding(self) -> Finding | None:
        if self.ratio is None or self.ratio <= LR_RATIO:
            return None
        bound = self.lr / self.ratio if self.ratio > 0 else math.inf
        return Finding(
            "lr_too_high", {"lr": self.lr, **self.evidence, "critical_lr": bound, "ratio": self.ratio},
            LR_RATIO, self.ratio,
            f"{self.kind} at lr {self.lr:.3g} vs its stability bound {bound:.4g} ({self.rule}): "
            f"past it by a factor {self.ratio:.3g}",
        )  # fmt: skip


UPDATE_RATIO = 3.0  # first update / weights, per layer (rms): past ~3-5 a step overshoots


def relative_update(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    """The largest rms(ΔW)/rms(W) over the weight matrices (ndim ≥ 2) of `before`."""
    ratios = [
        float((after[k].detach() - w).pow(2).mean().sqrt() / w.pow(2).mean().sqrt().clamp_min(1e-12))
        for k, w in before.items()
        if w.ndim >= 2
    ]
    return max(ratios) if ratios else math.nan


def update_ratio(p: Problem) -> float:
    """The largest rms(ΔW)/rms(W) over the weight matrices after the first update. Adaptive
    optimizers move every weight by ~lr whatever the gradient, so this is their scale of
    instability (the preconditioned sharpness, measured at steps 5-20, swings by 10^4
    between consecutive steps on small MLPs; see docs/doctor.md)."""
    before = {k: v.detach().clone() for k, v in p.model(p.seeds[0]).named_parameters()}
    after = dict(train(p.but(epochs=max(p.epochs, 1)), p.seeds[0], max_steps=1).model.named_parameters())
    return relative_update(before, after)


def sharpest_seed(p: Problem) -> tuple[nn.Module, float]:
    """The initial model (over the seeds) with the largest λ_max, and that λ_max (NaN for
    class labels): where a ReLU head starts dead, the loss is flat at that seed's init and
    says nothing about the lr or the inputs."""
    models = [p.model(s) for s in p.seeds]
    if not p.y.is_floating_point():
        return models[0], math.nan
    lams = [lambda_max(m, p.loss, p.x, p.y) for m in models]
    i = max(range(len(models)), key=lambda i: lams[i] if math.isfinite(lams[i]) else -math.inf)
    return models[i], lams[i]


def curvature(p: Problem, model: nn.Module, lam: float) -> Curvature:
    """SGD (momentum μ): r = lr·λ_max/(2+2μ) at init (`lam`: the model's λ_max). Any other
    optimizer (Adam, RMSprop, ...): r = the first update's size relative to the weights / 3."""
    opt = p.optimizer(model.parameters())
    group, kind = opt.param_groups[0], type(opt).__name__
    lr = float(group["lr"])
    if kind == "SGD" and math.isfinite(lam):
        mu = float(group.get("momentum") or 0.0)
        rule = f"= (2+2μ)/λ_max, λ_max {lam:.4g}"
        return Curvature(lam, lr, kind, lr * lam / (2 + 2 * mu), {"lambda_max": lam}, rule)
    if kind != "SGD":
        ratio = update_ratio(p)
        if math.isfinite(ratio):
            rule = (
                f"its first update moves a layer's weights by {ratio:.3g}× their rms, past {UPDATE_RATIO:g}×"
            )
            return Curvature(lam, lr, kind, ratio / UPDATE_RATIO, {"update_ratio": ratio}, rule)
    return Curvature(lam, lr, kind)
