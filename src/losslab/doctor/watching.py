"""From what a watch saw to the doctor's report (the same `Diagnosis` as `losslab doctor`).

Watching cannot run counterfactuals, so confidence is honest about it: the decisive checks
(non-finite data, a broadcasting loss, gradients carried over from the previous step, a
parameter the optimizer does not hold, a head that cannot reach the targets) are observed
directly and stay `high`; a dynamic verdict (lr, scale, dead units, too slow) is `medium`
at best, and the report says which `losslab.diagnose(...)` call would verify it. Every
dynamic verdict is gated on a bad outcome: a loss that fell is healthy.
"""

from __future__ import annotations

import math

import torch

from losslab.doctor.curvature import LR_RATIO, UPDATE_RATIO
from losslab.doctor.evidence import (
    DEAD_SHARE,
    EXPLODE_RATIO,
    HEAD_SHARE,
    SCALE_DROP,
    VANISH_NORM,
    VANISH_RATIO,
)
from losslab.doctor.report import Diagnosis, Finding
from losslab.doctor.seen import Seen

VERIFY = (
    "watching runs no counterfactuals; to verify, `losslab.diagnose(model=lambda seed: ..., "
    "data=(X, y), loss=..., optimizer=lambda params: ...)` trains the seeds again at lr/10 and on "
    "standardised inputs (docs/doctor.md)"
)


def _decisive(s: Seen) -> Finding | None:
    """The checks that need no counterfactual: the first that fired."""
    if s.nonfinite_batch:
        b = s.nonfinite_batch
        where = f"epoch {b['epoch']}, " if b.get("epoch") is not None else ""
        return Finding(
            "nonfinite_data", {"rows": float(b["rows"]), "step": float(b["step"])}, 0.0, math.inf,
            f"the batch at {where}step {b['step']} holds NaN/inf in {b['rows']} rows of its {b['where']}: "
            "every loss it touches is NaN; drop or impute those rows (or fix the transform that made them)",
        )  # fmt: skip
    if s.broadcast:
        out, y, call = s.broadcast
        pairs = float(math.prod(torch.broadcast_shapes(out, y)))
        return Finding(
            "shape_broadcast", {"compared_pairs": pairs, "expected_pairs": float(math.prod(out))}, 1.0,
            pairs / max(float(math.prod(out)), 1.0),
            f"{call} compares outputs of shape {out} with targets of shape {y}: they broadcast, so every "
            f"output meets every target and the loss settles at the targets' variance; reshape the "
            f"targets to {out} (e.g. y.view(-1, 1))",
        )  # fmt: skip
    if s.checked and s.carried >= max(1, s.checked // 2):
        return Finding(
            "stale_gradients",
            {"carried_steps": float(s.carried), "checked_steps": float(s.checked),
             "grad_growth": s.carry_growth},
            0.0, s.carried / s.checked,
            f"in {s.carried} of {s.checked} steps the gradients of the previous step were still there when "
            "backward ran, so they add up step after step (it diverges like a too-high lr); call "
            "optimizer.zero_grad() before each loss.backward()",
        )  # fmt: skip
    if s.missing:
        names = ", ".join(s.missing[:4]) + (" …" if len(s.missing) > 4 else "")
        return Finding(
            "parameters_not_updated", {"parameters": float(len(s.missing))}, 0.0, math.inf,
            f"{len(s.missing)} parameter(s) get gradients but are in no optimizer group ({names}): they "
            "never change; build the optimizer from model.parameters()",
        )  # fmt: skip
    if math.isfinite(s.head_outside) and s.head_outside > HEAD_SHARE:
        low, high = s.head_range
        return Finding(
            "head_range_mismatch", {"targets_outside": s.head_outside, "head_low": low, "head_high": high},
            HEAD_SHARE, s.head_outside / HEAD_SHARE,
            f"{s.head_outside:.0%} of the targets lie outside the output activation's range "
            f"[{low:g}, {high:g}]: no weights reach them; use a linear head or rescale the targets",
        )  # fmt: skip
    return None


def _ratio(s: Seen) -> tuple[float | None, dict[str, float], str]:
    """The lr against the optimizer's own bound, worst moment: (ratio, evidence, rule)."""
    if s.optimizer == "SGD":
        # The earliest moment past the bound (init: the classic quadratic bound; later: the
        # sharpening that followed); else the sharpest one measured.
        known = [m for m in s.moments if m.ratio is not None and math.isfinite(m.ratio)]
        past = [m for m in known if (m.ratio or 0.0) > LR_RATIO]
        worst = past[0] if past else max(known, key=lambda m: m.ratio or 0.0, default=None)
        if worst is None:
            return None, {}, ""
        ev = {
            "lambda_max": worst.lam,
            "critical_lr": (2 + 2 * s.momentum) / worst.lam if worst.lam > 0 else math.inf,
        }
        return worst.ratio, ev, f"(2+2μ)/λ_max at {worst.label} (step {worst.step})"
    if s.known_optimizer and math.isfinite(s.update_ratio):
        ev = {"update_ratio": s.update_ratio}
        return (
            s.update_ratio / UPDATE_RATIO,
            ev,
            f"the first update moved a layer {s.update_ratio:.3g}× its rms",
        )
    return None, {}, ""


def _flow(s: Seen) -> Finding | None:
    weights = list(s.first_grads.values())
    if len(weights) < 3:
        return None
    first, last = weights[0], weights[-1]
    ratio = first / last if last > 0 else math.inf
    ev = {"first_to_last_grad_ratio": ratio, "first_layer_grad_norm": first}
    if ratio < VANISH_RATIO and first < VANISH_NORM:
        return Finding("vanishing_gradients", ev, VANISH_RATIO, VANISH_RATIO / max(ratio, 1e-300),
                       f"at the first step the first layer's gradient is {ratio:.2g} of the last's: it "
                       "vanishes on the way down; ReLU with He init, or normalisation layers")  # fmt: skip
    if ratio > EXPLODE_RATIO:
        return Finding("exploding_gradients", ev, EXPLODE_RATIO, ratio / EXPLODE_RATIO,
                       f"at the first step the first layer's gradient is {ratio:.3g}× the last's: the init "
                       "amplifies through the layers; a fan-in-scaled init, or clip by norm")  # fmt: skip
    return None


def judge(s: Seen) -> Diagnosis:
    """The report on one watched training (`seeds` holds its one outcome)."""
    outcome = s.outcome()
    seeds = [outcome]
    notes = list(s.notes)
    pinned = {k: v for k, v in s.saturated.items() if v > 0.5}
    for name, share in pinned.items():  # not a cause of its own: it explains a stall
        notes.append(f"{share:.0%} of the units after `{name}` are saturated (pinned at their ends)")
    if not s.known_optimizer and s.optimizer:
        notes.append(f"no stability bound is known for {s.optimizer}: the lr is judged from the loss alone")
    decisive = _decisive(s)
    if decisive is not None:
        return Diagnosis(decisive.cause, "high", [decisive], None, seeds, notes)
    misuse = []
    if s.accuracy_logged and s.distinct_targets > 2:
        misuse = [Finding("metric_misuse", {"distinct_targets": float(s.distinct_targets)}, 2.0,
                          s.distinct_targets / 2.0,
                          f"an accuracy is logged on float targets with {s.distinct_targets} distinct "
                          "values: it says nothing about a regression; log MSE, MAE or R²")]  # fmt: skip
    if outcome in ("improving", "unknown"):
        if outcome == "unknown":
            notes.append("no loss was seen: was the training run between watch() and report()?")
        return Diagnosis("healthy", "high" if outcome == "improving" else "low", misuse, None, seeds, notes)

    findings: list[Finding] = list(misuse)
    ratio, evidence, rule = _ratio(s)
    init = next((m.lam for m in s.moments if m.label == "init"), math.nan)
    scaled = None
    if s.input_abs_max > 3 and math.isfinite(init) and s.lam_standardised > 0:
        drop = init / s.lam_standardised
        if drop >= SCALE_DROP:
            scaled = Finding("unscaled_inputs", {"input_abs_max": s.input_abs_max, "lambda_max": init,
                             "lambda_max_standardised": s.lam_standardised}, SCALE_DROP, drop / SCALE_DROP,
                             f"inputs up to {s.input_abs_max:.3g}: standardising them lowers λ_max "
                             f"{drop:.3g}×; "
                             "standardise on the training split")  # fmt: skip
    flow = _flow(s)
    worst_dead = max(s.dead.items(), key=lambda kv: kv[1], default=(None, 0.0))
    dead = None
    if worst_dead[1] > DEAD_SHARE:
        name, share = worst_dead
        before = s.dead_at_init.get(name, math.nan)
        dead = Finding("dead_relu", {"dead_share": share, "dead_share_at_start": before}, DEAD_SHARE,
                       share / DEAD_SHARE, f"{share:.0%} of the units after `{name}` never fire on the "
                       "latest "
                       f"batches ({before:.0%} at the start); LeakyReLU, He init, or a lower lr")  # fmt: skip
    lr_finding = None
    if ratio is not None and ratio > LR_RATIO:
        lr_finding = Finding("lr_too_high", {"lr": s.lr, **evidence, "ratio": ratio}, LR_RATIO, ratio,
                             f"{s.optimizer} at lr {s.lr:.3g} is past its stability bound by {ratio:.3g}× "
                             f"({rule}); lower the lr below lr/{ratio:.3g}")  # fmt: skip
    findings += [f for f in (lr_finding, scaled, flow, dead) if f]
    unstable = outcome in ("diverged", "rising")
    if unstable and flow is not None and flow.cause == "exploding_gradients" and lr_finding is None:
        cause, conf = flow.cause, "medium"
    elif unstable and lr_finding is not None:
        cause, conf = "lr_too_high", "medium"
    elif scaled is not None:
        cause, conf = "unscaled_inputs", "medium"
    elif dead is not None:
        cause, conf = "dead_relu", "medium"
    elif flow is not None and flow.cause == "vanishing_gradients":
        cause, conf = flow.cause, "medium"
    elif s.frozen and not unstable:
        share = s.frozen_share
        findings.append(Finding("parameters_not_updated", {"frozen_share": share}, 0.0, math.inf,
                                f"{share:.0%} of the parameters are frozen (requires_grad=False: "
                                f"{', '.join(s.frozen[:3])}) while the loss stalls; unfreeze them if "
                                "that was not meant"))  # fmt: skip
        cause, conf = "parameters_not_updated", "medium"
    elif unstable:
        cause, conf = "lr_too_high", "low"
        notes.append("the loss rose, but no measured moment put the lr past its bound")
    else:
        cause, conf = "too_slow", "low" if outcome == "stalled" else "medium"
    notes.append(VERIFY)
    return Diagnosis(cause, conf, sorted(findings, key=lambda f: f.cause != cause), None, seeds, notes)
