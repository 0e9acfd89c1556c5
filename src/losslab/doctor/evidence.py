"""The measurements the doctor decides on: the decisive checks and the state at init.

Every function here returns a Finding (the number, its threshold, the margin) or None; the
thresholds are the ones named in the findings' summaries.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from losslab.doctor.problem import Problem
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
SCALE_DROP = 10.0  # λ_max before / after standardising the inputs
DEAD_SHARE = 0.5  # hidden ReLU units never active over the training set
VANISH_RATIO, VANISH_NORM = 1e-3, 1e-4  # first/last layer gradient norm; first layer's own
EXPLODE_RATIO, EXPLODE_LOSS = 70.0, 1e3  # first/last layer gradient norm; loss / Var(y) at init


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


def gradient_flow(p: Problem, model: nn.Module) -> Finding | None:
    """Gradient norms at init, full batch, first weight matrix against the last:
    vanishing when the first layer's is < 1e-3 of the last's and < 1e-4 itself; exploding
    when it is > 70× the last's, or the initial loss is > 1000 × the targets' variance
    (activations blown up forward)."""
    model.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = p.loss(model(p.x), p.y)
    loss.backward()
    weights = [
        m.weight.grad for m in model.modules() if isinstance(m, nn.Linear) and m.weight.grad is not None
    ]
    model.zero_grad()
    if len(weights) < 3:  # one or two layers: nothing for a gradient to vanish through
        return None
    first, last = float(weights[0].norm()), float(weights[-1].norm())
    ratio = first / last if last > 0 else math.inf
    scale = float(p.y.float().var(unbiased=False)) if p.y.is_floating_point() else 1.0
    rel_loss = float(loss.detach()) / max(scale, 1e-12)
    evidence = {
        "first_to_last_grad_ratio": ratio,
        "first_layer_grad_norm": first,
        "initial_loss_over_var": rel_loss,
    }
    if ratio < VANISH_RATIO and first < VANISH_NORM:
        return Finding(
            "vanishing_gradients", evidence, VANISH_RATIO, VANISH_RATIO / max(ratio, 1e-300),
            f"at init the first layer's gradient is {ratio:.2g} of the last's ({first:.2g}): the "
            f"{len(weights)} layers in between squash it; ReLU with He init, or fewer/normalised layers",
        )  # fmt: skip
    if ratio > EXPLODE_RATIO or rel_loss > EXPLODE_LOSS:
        margin = max(ratio / EXPLODE_RATIO, rel_loss / EXPLODE_LOSS)
        return Finding(
            "exploding_gradients", evidence, EXPLODE_RATIO, margin,
            f"at init the first layer's gradient is {ratio:.3g}× the last's and the loss {rel_loss:.3g}× "
            "the targets' variance: the init amplifies through the layers; a fan-in-scaled init",
        )  # fmt: skip
    return None


def standardised(x: torch.Tensor) -> torch.Tensor:
    std = x.std(0, unbiased=False).clamp_min(1e-12)
    return (x - x.mean(0)) / std


def unscaled_inputs(p: Problem, model: nn.Module, lam: float) -> Finding | None:
    """Inputs whose scale alone makes the loss sharp: λ_max drops ≥ 10× when standardised."""
    if not p.x.is_floating_point() or not math.isfinite(lam) or not p.y.is_floating_point():
        return None
    scale = float(input_stats(p.x)["abs_max"].max())
    if scale <= 3.0:  # standardised data legitimately reaches ±3
        return None
    lam_std = lambda_max(model, p.loss, standardised(p.x), p.y)
    drop = lam / lam_std if lam_std > 0 else math.inf
    if drop < SCALE_DROP:
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


def too_slow(p: Problem, curves: list[np.ndarray]) -> Finding | None:
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
