"""Repairs: a candidate change trained over every seed, and how often it then works.

A candidate is (the changed Problem, the change as a dict, the change in words). They are
tried in order until one converges in at least 80% of the seeds. A candidate that made
every seed stable but left the run unsolved (an lr brought under its bound is slower, and a
small net may sit on a plateau first) is tried once more with a longer budget: the epochs
its own curves project when the loss still falls steadily, else 4× the epochs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from losslab.core.criteria import SCORE_MIN
from losslab.core.outcome import classify
from losslab.doctor import curvature as cv
from losslab.doctor import evidence as ev
from losslab.doctor.problem import Problem, train_seeds
from losslab.doctor.report import Finding, Repair
from losslab.probes import fit_score, task_of

REPAIR_RATE = 0.8
UNSTABLE = ("diverged", "rising", "oscillating")
MORE_EPOCHS, PLATEAU_EPOCHS = 10, 4  # a follow-up's budget: at most / without a projection (× epochs)
Candidate = tuple[Problem, dict, str]


def _solved(p: Problem, model: nn.Module) -> bool:
    """The default success criterion: R² ≥ 0.95 (regression) or accuracy ≥ 95% (classes)."""
    with torch.no_grad():
        out = model(p.x)
    return float(fit_score(out[None], p.y, task_of(p.loss, p.y))[0]) >= SCORE_MIN


def outcomes(p: Problem) -> tuple[list[str], list[nn.Module], list[np.ndarray]]:
    """Per-seed outcome labels, trained models and loss curves (all seeds trained at once)."""
    labels, models, curves = [], [], []
    for t in train_seeds(p):
        solved = p.solved(p, t.model, t.losses) if p.solved else _solved(p, t.model)
        labels.append(classify(t.losses, -math.inf, 0.5, solved).label)
        models.append(t.model)
        curves.append(t.losses)
    return labels, models, curves


def _verify(p: Problem, changes: dict, text: str) -> tuple[Repair, list[np.ndarray]]:
    labels, _, curves = outcomes(p)
    return Repair(changes, sum(o == "converged" for o in labels) / len(labels), labels, text), curves


def verify(p: Problem, changes: dict, text: str) -> Repair:
    return _verify(p, changes, text)[0]


def attempts(candidates: list[Candidate]) -> list[Repair]:
    """Each candidate verified over the seeds, in order, until one works in ≥ 80% of them;
    one that left every seed stable but unsolved gets a follow-up with a longer budget."""
    tried: list[Repair] = []
    for p, changes, text in candidates:
        repair, curves = _verify(p, changes, text)
        tried.append(repair)
        stable = not any(o in UNSTABLE for o in repair.seeds)
        if repair.success_rate < REPAIR_RATE and stable and "epochs" not in changes:
            slow = ev.too_slow(p, curves)
            more = PLATEAU_EPOCHS * p.epochs if slow is None else slow.evidence["projected_epochs"] * 1.2
            more = int(min(MORE_EPOCHS * p.epochs, math.ceil(more)))
            if more > p.epochs:
                longer = {**changes, "epochs": more}
                tried.append(verify(p.but(epochs=more), longer, f"{text}, {more} epochs"))
        if tried[-1].success_rate >= REPAIR_RATE:
            break
    return tried


def standardise(p: Problem, curv: cv.Curvature, scaled: Finding | None) -> Candidate:
    """Standardised inputs; for SGD also the lr at the same place under the new, lower bound
    (the run's own fraction of it, at most half): the old lr would crawl on a flat loss."""
    std = p.but(x=ev.standardised(p.x))
    lam_std = scaled.evidence["lambda_max_standardised"] if scaled else math.nan
    if curv.kind != "SGD" or curv.ratio is None or not lam_std > 0:
        return std, {"standardise_inputs": True}, "standardise the inputs"
    new = min(curv.ratio, 0.5) * curv.lr / curv.ratio * curv.lam / lam_std
    changes = {"standardise_inputs": True, "lr": new}
    return std.but(lr_scale=p.lr_scale * new / curv.lr), changes, f"standardise the inputs, lr {new:.3g}"


def helps(counterfactual: Problem, seeds: list[str]) -> bool:
    """Does the changed problem converge in more seeds than the run as given?"""
    after = outcomes(counterfactual)[0]
    return sum(o == "converged" for o in after) > sum(o == "converged" for o in seeds)
