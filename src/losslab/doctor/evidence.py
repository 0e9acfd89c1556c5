"""The measurements the doctor decides on: the decisive checks and the state at init.

Every function here returns a Finding (the number, its threshold, the margin) or None; the
thresholds are the ones named in the findings' summaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from losslab.doctor.problem import Problem, train
from losslab.doctor.report import Finding
from losslab.probes import (
    dead_units,
    head_range,
    input_stats,
    lambda_max,
    loss_broadcast,
    metric_misuse,
    targets_outside,
)

HEAD_SHARE = 0.01  # targets the head cannot reach
LR_RATIO = 1.0  # lr · λ_max / (2 + 2μ): past 1, gradient descent on the local quadratic diverges
SCALE_DROP = 10.0  # λ_max before / after standardising the inputs
DEAD_SHARE = 0.5  # hidden ReLU units never active over the training set


def nonfinite_rows(p: Problem) -> torch.Tensor:
    """Mask of rows with a NaN or inf in an input or target."""
    bad = ~torch.isfinite(p.x.float()).reshape(len(p.x), -1).all(1)
    if p.y.is_floating_point():
        bad |= ~torch.isfinite(p.y).reshape(len(p.y), -1).all(1)
    return bad


def nonfinite_data(p: Problem) -> Finding | None:
    rows = int(nonfinite_rows(p).sum())
    if not rows:
        return None
    share = rows / len(p.x)
    return Finding(
        "nonfinite_data", {"rows": rows, "share": share}, 0.0, math.inf,
        f"{rows} of {len(p.x)} rows hold NaN or inf: every loss they touch is NaN",
    )  # fmt: skip


def shape_broadcast(p: Problem, model: nn.Module) -> Finding | None:
    bs = p.batch_size or len(p.x)
    with torch.no_grad():
        out = model(p.x[:bs])
    msg = loss_broadcast(out.shape, p.y[:bs].shape)
    if msg is None:
        return None
    both = torch.broadcast_shapes(out.shape, p.y[:bs].shape)
    pairs, wanted = float(math.prod(both)), float(math.prod(out.shape))
    return Finding(
        "shape_broadcast", {"compared_pairs": pairs, "expected_pairs": wanted}, 1.0, pairs / wanted, msg
    )


def head_mismatch(p: Problem, model: nn.Module) -> Finding | None:
    if not p.y.is_floating_point():
        return None
    low, high = head_range(model)
    share = targets_outside(p.y, low, high)
    if share <= HEAD_SHARE:
        return None
    return Finding(
        "head_range_mismatch", {"targets_outside": share, "head_low": low, "head_high": high},
        HEAD_SHARE, share / HEAD_SHARE,
        f"{share:.0%} of the targets lie outside the output activation's range [{low:g}, {high:g}]: "
        "no weights can reach them; use a linear head or rescale the targets",
    )  # fmt: skip


def misused_metric(p: Problem) -> Finding | None:
    msg = metric_misuse(list(p.metrics), p.y) if p.y.is_floating_point() else None
    if msg is None:
        return None
    distinct = float(len(torch.unique(p.y)))
    return Finding("metric_misuse", {"distinct_targets": distinct}, 2.0, distinct / 2.0, msg)


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


def update_ratio(p: Problem) -> float:
    """The largest rms(ΔW)/rms(W) over the weight matrices after the first update. Adaptive
    optimizers move every weight by ~lr whatever the gradient, so this is their scale of
    instability (the preconditioned sharpness, measured at steps 5-20, swings by 10^4
    between consecutive steps on small MLPs; see docs/doctor.md)."""
    before = {k: v.detach().clone() for k, v in p.model(p.seeds[0]).named_parameters()}
    after = dict(train(p.but(epochs=max(p.epochs, 1)), p.seeds[0], max_steps=1).model.named_parameters())
    ratios = [
        float((after[k].detach() - w).pow(2).mean().sqrt() / w.pow(2).mean().sqrt().clamp_min(1e-12))
        for k, w in before.items()
        if w.ndim >= 2
    ]
    return max(ratios) if ratios else math.nan


def curvature(p: Problem, model: nn.Module) -> Curvature:
    """SGD (momentum μ): r = lr·λ_max/(2+2μ) at init. Any other optimizer (Adam, RMSprop,
    ...): r = the first update's size relative to the weights / 3."""
    lam = lambda_max(model, p.loss, p.x, p.y) if p.y.is_floating_point() else math.nan
    opt = p.optimizer(model)
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


def standardised(x: torch.Tensor) -> torch.Tensor:
    std = x.std(0, unbiased=False).clamp_min(1e-12)
    return (x - x.mean(0)) / std


def unscaled_inputs(p: Problem, model: nn.Module, lam: float) -> Finding | None:
    """Inputs whose scale alone makes the loss sharp: λ_max drops ≥ 10× when standardised."""
    if not p.x.is_floating_point() or not math.isfinite(lam) or not p.y.is_floating_point():
        return None
    scale = float(input_stats(p.x)["abs_max"].max())
    lam_std = lambda_max(model, p.loss, standardised(p.x), p.y)
    drop = lam / lam_std if lam_std > 0 else math.inf
    if drop < SCALE_DROP or scale <= 3.0:  # standardised data legitimately reaches ±3
        return None
    return Finding(
        "unscaled_inputs", {"input_abs_max": scale, "lambda_max": lam, "lambda_max_standardised": lam_std},
        SCALE_DROP, drop / SCALE_DROP,
        f"inputs up to {scale:.3g}: standardising them lowers λ_max {drop:.3g}× ({lam:.4g} -> {lam_std:.4g})",
    )  # fmt: skip


def dead_relu(p: Problem, models: list[nn.Module]) -> Finding | None:
    """Dead ReLU units (never active over the training inputs) in the trained models, and
    the same count at each seed's initial weights: units that died *in training* were
    killed by the updates (typically one huge step), not by the init."""
    if not all(isinstance(m, nn.Sequential) for m in models):
        return None

    def shares(nets: list[nn.Module]) -> tuple[float, float]:
        fracs, heads = [], []
        with torch.no_grad():
            for m in nets:
                params = {k: v.detach()[None] for k, v in m.named_parameters()}
                frac, head = dead_units(m, params, p.x)
                fracs.append(float(frac[0]))
                heads.append(float(head[0]) if head is not None else 0.0)
        return sum(fracs) / len(fracs), sum(heads) / len(heads)

    share, head_share = shares(models)
    if share <= DEAD_SHARE and head_share < 0.5:
        return None
    at_init, _ = shares([p.model(seed) for seed in p.seeds])
    head = (
        f"the ReLU head is dead (output 0, gradient 0) in {head_share:.0%} of the seeds; "
        if head_share
        else ""
    )
    return Finding(
        "dead_relu",
        {"dead_hidden_share": share, "dead_hidden_share_at_init": at_init, "dead_head_share": head_share},
        DEAD_SHARE, max(share / DEAD_SHARE, 2 * head_share),
        f"{head}{share:.0%} of hidden ReLU units never fire after training ({at_init:.0%} at init)",
    )  # fmt: skip
