"""diagnose(): name the cause of a rising loss with its evidence number, then verify a repair.

The order (see docs/doctor.md): decisive checks first (non-finite data, a broadcasting
loss, a head that cannot reach the targets); then the run as given, over every seed; if it
fails, the state at init (curvature against the optimizer's own threshold, input scale)
and short counterfactual runs (lr/10, standardised inputs) separate the rival causes.
Every dynamic verdict is gated on an observed bad outcome: a run that converges is
healthy, whatever a threshold says.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from losslab.core.outcome import classify
from losslab.doctor import evidence as ev
from losslab.doctor.problem import Problem, as_tensors, train
from losslab.doctor.report import Diagnosis, Finding, Repair

R2_MIN, ACCURACY_MIN, REPAIR_RATE = 0.95, 0.95, 0.8
UNSTABLE = ("diverged", "rising")


def _solved(p: Problem, model: nn.Module) -> bool:
    """The default success criterion: R² ≥ 0.95 (regression) or accuracy ≥ 95% (classes)."""
    with torch.no_grad():
        out = model(p.x)
    y = p.y
    if not torch.isfinite(out).all():
        return False
    if not y.is_floating_point():  # class labels
        return float((out.argmax(-1) == y).float().mean()) >= ACCURACY_MIN
    if out.numel() == y.numel():
        out = out.reshape(y.shape)
    if set(torch.unique(y).tolist()) <= {0.0, 1.0}:  # binary: read logits through a sigmoid
        prob = torch.sigmoid(out) if isinstance(p.loss, nn.BCEWithLogitsLoss) else out
        return float(((prob > 0.5) == (y > 0.5)).float().mean()) >= ACCURACY_MIN
    r2 = 1 - float(((out - y) ** 2).mean()) / max(float(y.var(unbiased=False)), 1e-12)
    return r2 >= R2_MIN


def _outcomes(p: Problem) -> tuple[list[str], list[nn.Module], list[np.ndarray]]:
    labels, models, curves = [], [], []
    for seed in p.seeds:
        t = train(p, seed)
        solved = p.solved(p, t.model, t.losses) if p.solved else _solved(p, t.model)
        labels.append(classify(t.losses, -math.inf, 0.5, solved).label)
        models.append(t.model)
        curves.append(t.losses)
    return labels, models, curves


def _verify(p: Problem, changes: dict, text: str) -> Repair:
    labels, _, _ = _outcomes(p)
    return Repair(changes, sum(o == "converged" for o in labels) / len(labels), labels, text)


def _first_working(candidates: list[tuple[Problem, dict, str]]) -> Repair | None:
    best = None
    for p, changes, text in candidates:
        r = _verify(p, changes, text)
        if best is None or r.success_rate > best.success_rate:
            best = r
        if r.success_rate >= REPAIR_RATE:
            return r
    return best


def _too_slow(p: Problem, curves: list[np.ndarray]) -> Finding | None:
    """Still falling steadily over the last quarter: projected epochs to the criterion."""
    falls = []
    for c in curves:
        q = max(2, len(c) // 4)
        a, b = c[-q], c[-1]
        if not (np.isfinite(a) and np.isfinite(b)) or b <= 0 or b >= a * 0.99:
            return None
        falls.append((b / a) ** (1 / (q - 1)))
    rate = float(np.median(falls))  # loss multiplier per epoch
    target = 0.05 * float(p.y.float().var(unbiased=False)) if p.y.is_floating_point() else 0.01
    final = float(np.median([c[-1] for c in curves]))
    more = math.log(target / final) / math.log(rate) if final > target else 0.0
    return Finding(
        "too_slow", {"loss_per_epoch_factor": rate, "projected_epochs": p.epochs + more},
        1.0, 1 / rate,
        f"the loss still falls ×{rate:.4f} per epoch at the end: about {p.epochs + more:.0f} epochs "
        f"in all would reach the criterion (lr too small for these inputs, or the budget too short)",
    )  # fmt: skip


def _done(
    cause: str, confidence: str, findings: list[Finding], seeds: list[str], repair: Repair | None
) -> Diagnosis:
    ordered = sorted(findings, key=lambda f: f.cause != cause)
    return Diagnosis(cause, confidence, ordered, repair, seeds)


def examine(p: Problem, repair: bool = True) -> Diagnosis:
    """The engine behind every door."""
    found = ev.nonfinite_data(p)
    if found:  # no baseline: every loss would be NaN
        keep = ~ev.nonfinite_rows(p)
        fix = (p.but(x=p.x[keep], y=p.y[keep]), {"drop_nonfinite_rows": True}, "drop the rows with NaN/inf")
        return _done("nonfinite_data", "high", [found], [], _verify(*fix) if repair else None)
    model = p.model(p.seeds[0])
    found = ev.shape_broadcast(p, model)
    if found:
        with torch.no_grad():
            shape = (-1, *model(p.x[:1]).shape[1:])
        fix = (p.but(y=p.y.reshape(shape)), {"targets_shape": list(shape)}, f"reshape the targets to {shape}")
        return _done("shape_broadcast", "high", [found], _outcomes(p)[0], _verify(*fix) if repair else None)
    found = ev.head_mismatch(p, model)
    if found:
        fix = (p.but(head=nn.Identity()), {"head": "linear"}, "drop the output activation (a linear head)")
        return _done(
            "head_range_mismatch", "high", [found], _outcomes(p)[0], _verify(*fix) if repair else None
        )
    findings = [f for f in [ev.misused_metric(p)] if f]

    seeds, models, curves = _outcomes(p)
    if all(o == "converged" for o in seeds):
        cause = "metric_misuse" if findings else "healthy"
        return _done(cause, "high", findings, seeds, None)

    lam, lr, ratio, kind = ev.curvature(p, model)
    unstable = sum(o in UNSTABLE for o in seeds) >= len(seeds) / 2
    scaled = ev.unscaled_inputs(p, model, lam)
    dead = ev.dead_relu(p, models)
    findings += [f for f in (scaled, dead) if f]
    if ratio is not None and ratio > ev.LR_RATIO:
        bound = lr / ratio if ratio > 0 else math.inf
        findings.append(Finding(
            "lr_too_high", {"lr": lr, "lambda_max": lam, "critical_lr": bound, "ratio": ratio},
            ev.LR_RATIO, ratio,
            f"{kind} at lr {lr:.3g} vs its stability bound {bound:.4g} (= (2+2μ)/λ_max, λ_max {lam:.4g}): "
            f"{'past' if ratio > 1 else 'within'} it by a factor {ratio:.3g}",
        ))  # fmt: skip
    lr_cf, _, _ = _outcomes(p.but(lr_scale=p.lr_scale * 0.1)) if unstable else ([], None, None)
    lr_helps = bool(lr_cf) and sum(o in UNSTABLE for o in lr_cf) < sum(o in UNSTABLE for o in seeds)
    if lr_helps and not any(f.cause == "lr_too_high" for f in findings):
        before, after = (float(sum(o in UNSTABLE for o in c)) for c in (seeds, lr_cf))
        findings.append(Finding(
            "lr_too_high", {"lr": lr, "unstable_seeds": before, "unstable_seeds_at_lr_over_10": after},
            None, None,
            f"{kind} at lr {lr:.3g}: {before:.0f} of {len(seeds)} seeds unstable, {after:.0f} at lr/10 "
            "(no curvature bound for this optimizer yet: the counterfactual alone, hence medium confidence)",
        ))  # fmt: skip

    head_dead = dead is not None and dead.evidence["dead_head_share"] >= 0.5
    if head_dead and not unstable:
        cause, conf = "dead_relu", "high"
        fixes = [(p.but(head=nn.Identity()), {"head": "linear"}, "drop the output ReLU (a linear head)")]
    elif unstable and ((ratio is not None and ratio > 1) or lr_helps):
        cause, conf = "lr_too_high", "high" if (ratio or 0) > 1 and lr_helps else "medium"
        scales = ([1 / (ratio * 2)] if ratio and ratio > 1 else []) + [0.1, 0.01]
        fixes = [
            (p.but(lr_scale=p.lr_scale * s), {"lr": lr * s}, f"lr {lr * s:.3g} instead of {lr:.3g}")
            for s in scales
        ]
    elif unstable and scaled:
        cause, conf = "unscaled_inputs", "medium"
        fixes = [(p.but(x=ev.standardised(p.x)), {"standardise_inputs": True}, "standardise the inputs")]
    elif (slow := _too_slow(p, curves)) is not None:
        findings.append(slow)
        cause, conf = "too_slow", "medium"
        more = int(min(10 * p.epochs, math.ceil(slow.evidence["projected_epochs"])))
        fixes = [(p.but(epochs=more), {"epochs": more}, f"train {more} epochs")]
    elif dead is not None:
        cause, conf, fixes = "dead_relu", "medium", []
    else:
        cause, conf, fixes = (findings[0].cause if findings else "healthy"), "low", []
    if scaled and cause == "lr_too_high":
        fixes.append((p.but(x=ev.standardised(p.x)), {"standardise_inputs": True}, "standardise the inputs"))
    return _done(cause, conf, findings, seeds, _first_working(fixes) if repair and fixes else None)


def diagnose(
    model: Callable[[int], nn.Module],
    data: tuple,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
    epochs: int = 100,
    batch_size: int | None = None,
    shuffle: bool = True,
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    metrics: tuple[str, ...] = (),
    repair: bool = True,
) -> Diagnosis:
    """Why does the loss of this training go up (or not down)? See `examine` for the order."""
    x, y = as_tensors(data)
    p = Problem(model, x, y, loss, optimizer, int(epochs), batch_size, shuffle, tuple(seeds), tuple(metrics))
    return examine(p, repair)
