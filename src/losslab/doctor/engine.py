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

from losslab.doctor import curvature as cv
from losslab.doctor import evidence as ev
from losslab.doctor.problem import Problem, as_tensors, train_seeds
from losslab.doctor.repair import REPAIR_RATE, UNSTABLE, attempts, helps, outcomes, standardise, verify
from losslab.doctor.report import Diagnosis, Finding, Repair


def _done(
    cause: str,
    confidence: str,
    findings: list[Finding],
    seeds: list[str],
    attempts: list[Repair] | None = None,
) -> Diagnosis:
    """The report: the primary cause's finding first; the repair is the first attempt that
    worked (else the best one), and every attempt is kept (`attempts`)."""
    ordered = sorted(findings, key=lambda f: f.cause != cause)
    tried = list(attempts or [])
    working = [r for r in tried if r.success_rate >= REPAIR_RATE]
    best = working[0] if working else max(tried, key=lambda r: r.success_rate, default=None)
    return Diagnosis(cause, confidence, ordered, best, seeds, attempts=tried)


# The run as given, trained by the caller: per-seed outcomes, loss curves, and the trained
# models (or None: rebuilt where a finding needs them).
Baseline = tuple[list[str], list[np.ndarray], list[nn.Module] | None]


def examine(p: Problem, repair: bool = True, baseline: Baseline | None = None) -> Diagnosis:
    """The engine behind every door. `baseline`: the run as given, already trained and judged
    by the caller (the pipeline's own fit), so it is not trained again; the trained models
    are then rebuilt only where a finding needs them (dead units of a failing run)."""
    found = ev.nonfinite_data(p)
    if found:  # no baseline: every loss would be NaN
        keep = ~ev.nonfinite_rows(p)
        fix = (p.but(x=p.x[keep], y=p.y[keep]), {"drop_nonfinite_rows": True}, "drop the rows with NaN/inf")
        # A NaN that reaches the loss makes every weight NaN: no need to train to know.
        seeds = baseline[0] if baseline else ["diverged"] * len(p.seeds)
        return _done("nonfinite_data", "high", [found], seeds, [verify(*fix)] if repair else None)
    model = p.model(p.seeds[0])
    found = ev.shape_broadcast(p, model)
    if found:
        with torch.no_grad():
            shape = (-1, *model(p.x[:1]).shape[1:])
        fix = (p.but(y=p.y.reshape(shape)), {"targets_shape": list(shape)}, f"reshape the targets to {shape}")
        seeds = baseline[0] if baseline else outcomes(p)[0]
        return _done("shape_broadcast", "high", [found], seeds, [verify(*fix)] if repair else None)
    found = ev.head_mismatch(p, model)
    if found:
        fix = (p.but(head=nn.Identity()), {"head": "linear"}, "drop the output activation (a linear head)")
        seeds = baseline[0] if baseline else outcomes(p)[0]
        return _done("head_range_mismatch", "high", [found], seeds, [verify(*fix)] if repair else None)
    findings = [f for f in [ev.misused_metric(p)] if f]

    if baseline is None:
        seeds, models, curves = outcomes(p)
    else:
        seeds, curves, trained = baseline
        models = list(trained or [])
    if all(o == "converged" for o in seeds):
        # The loss is fine; a misused metric stays among the findings (a warning, not the cause).
        return _done("healthy", "high", findings, seeds, None)

    sharpest, lam = cv.sharpest_seed(p)  # a seed whose head is dead at init has no curvature
    curv = cv.curvature(p, sharpest, lam)
    lam, lr, ratio, kind = curv.lam, curv.lr, curv.ratio, curv.kind
    unstable = sum(o in UNSTABLE for o in seeds) >= len(seeds) / 2
    scaled = ev.unscaled_inputs(p, sharpest, lam)
    flow = ev.gradient_flow(p, sharpest)
    findings += [flow] if flow else []
    # The trained models, for dead units: rebuilt only for a ReLU Sequential (what it reads).
    relu = isinstance(sharpest, nn.Sequential) and any(isinstance(m, nn.ReLU) for m in sharpest)
    dead = ev.dead_relu(p, models or [t.model for t in train_seeds(p)]) if relu else None
    findings += [f for f in (scaled, dead) if f]
    # Hidden units alive at init and dead after training: the updates killed them.
    killed = dead is not None and (
        dead.evidence["dead_hidden_share"]
        >= max(ev.DEAD_SHARE, dead.evidence["dead_hidden_share_at_init"] + 0.25)
    )
    found = curv.finding()
    findings += [found] if found else []
    lr_cf = outcomes(p.but(lr_scale=p.lr_scale * 0.1))[0] if unstable or killed else []
    lr_helps = bool(lr_cf) and (
        sum(o in UNSTABLE for o in lr_cf) < sum(o in UNSTABLE for o in seeds)
        or sum(o == "converged" for o in lr_cf) > sum(o == "converged" for o in seeds)
    )
    if lr_helps and not any(f.cause == "lr_too_high" for f in findings):
        before, after = (float(sum(o in UNSTABLE for o in c)) for c in (seeds, lr_cf))
        findings.append(Finding(
            "lr_too_high", {"lr": lr, "unstable_seeds": before, "unstable_seeds_at_lr_over_10": after},
            None, None,
            f"{kind} at lr {lr:.3g}: {before:.0f} of {len(seeds)} seeds unstable, {after:.0f} at lr/10 "
            "(no curvature bound for this optimizer yet: the counterfactual alone, hence medium confidence)",
        ))  # fmt: skip

    std_fix = standardise(p, curv, scaled)
    head_dead = dead is not None and dead.evidence["dead_head_share"] >= 0.5
    flows = flow.cause if flow else None
    if flows == "vanishing_gradients" and not unstable:
        cause, conf = flows, "high"
        fixes = [
            (p.but(rebuild="relu"), {"activation": "relu", "init": "he"}, "ReLU hidden units with He init")
        ]
    elif flows == "exploding_gradients" and (unstable or killed) and not lr_helps:
        cause, conf = flows, "high"  # it persists as lr -> 0: not the lr
        fixes = [(p.but(rebuild="fan_in"), {"init": "glorot"}, "a fan-in-scaled (Glorot) init")]
    elif head_dead and not unstable:
        cause, conf = "dead_relu", "high"
        linear = "drop the output ReLU (a linear head)"
        fixes = [(p.but(head=nn.Identity()), {"head": "linear"}, linear)]
        if scaled:  # a live head on unscaled inputs meets the sharp loss the ReLU hid
            q, changes, text = std_fix
            fixes.append((q.but(head=nn.Identity()), {"head": "linear", **changes}, f"{linear}, {text}"))
    elif (unstable or killed) and ((ratio is not None and ratio > 1) or lr_helps):
        cause, conf = "lr_too_high", "high" if (ratio or 0) > 1 and lr_helps else "medium"
        scales = [1 / (ratio * 2)] if ratio and ratio > 1 else []
        fixes = [
            (p.but(lr_scale=p.lr_scale * s), {"lr": lr * s}, f"lr {lr * s:.3g} instead of {lr:.3g}")
            for s in scales
        ]
        fixes += [std_fix] if scaled else []  # at the bound, badly scaled inputs train slowly
        fixes += [
            (p.but(lr_scale=p.lr_scale * s), {"lr": lr * s}, f"lr {lr * s:.3g} instead of {lr:.3g}")
            for s in (0.1, 0.01)
        ]
    elif scaled and (unstable or helps(std_fix[0], seeds)):
        # Within the lr bound, yet failing: the scale makes the loss ill-conditioned (the
        # small features learn at lr·λ_min); standardised inputs train in the same budget.
        cause, conf = "unscaled_inputs", "high" if not unstable else "medium"
        fixes = [std_fix]
    elif not killed and (slow := ev.too_slow(p, curves)) is not None:
        findings.append(slow)
        cause, conf = "too_slow", "medium"
        more = int(min(10 * p.epochs, math.ceil(slow.evidence["projected_epochs"])))
        fixes = [(p.but(epochs=more), {"epochs": more}, f"train {more} epochs")]
    elif dead is not None:
        cause, conf, fixes = "dead_relu", "medium", []
    elif findings:
        cause, conf, fixes = findings[0].cause, "low", []
    else:  # it failed, and nothing measured explains it: never call a failing run healthy
        cause, conf, fixes = ("lr_too_high" if unstable else "too_slow"), "low", []

    return _done(cause, conf, findings, seeds, attempts(fixes) if repair else None)


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
