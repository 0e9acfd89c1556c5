"""The config door: a composed scenario config as a doctor's Problem, and repairs as overrides.

`losslab doctor scenario=linear variant=broken` trains what the scenario describes (its
training split, scaling and target shape, its model factory, loss and optimizer, epochs,
batch size, seeds) with the doctor's plain loop, and turns each verified change into the
Hydra override a user pastes (`optimizer.lr=0.00347`, `data.scale=standardize`, …).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from losslab.core.checks import epochs
from losslab.core.criteria import MARGIN, Criterion, Expectations
from losslab.core.results import Verdict
from losslab.doctor.engine import Baseline, examine
from losslab.doctor.problem import Problem
from losslab.doctor.report import Diagnosis, Finding
from losslab.engine import build
from losslab.engine.runtime import prepare_process
from losslab.engine.scratch import bce
from losslab.fit import fit
from losslab.judge import judge
from losslab.probes import class_margin, gradient_check
from losslab.tracking.uri import check_reachable, resolve_uri

WRONG = 1e-2  # relative error past which a hand-written gradient tensor is wrong (float64)


def _criterion(cfg: DictConfig) -> Callable[[Problem, nn.Module, np.ndarray], bool] | None:
    """The scenario's own success criterion where the plain loop can evaluate it: a final
    loss below `converge_below`, or XOR's margin on the training outputs; otherwise None
    (the doctor's default: R² or accuracy on the training set)."""
    crit = Criterion.of(cfg)
    if crit.number is None:
        return lambda p, model, losses: bool(np.isfinite(losses[-1]) and losses[-1] < crit.converge_below)
    if crit.number == MARGIN and crit.bound is not None:
        bound = crit.bound

        def margin(p: Problem, model: nn.Module, losses: np.ndarray) -> bool:
            with torch.no_grad():
                out = model(p.x).reshape(-1)
            out = torch.sigmoid(out) if crit.link == "sigmoid" else out
            return bound.met(float(class_margin(out, p.y)[0]))

        return margin
    return None


def _hand_written(cfg: DictConfig) -> bool:
    return str(cfg.module.get("_target_", "")).endswith("ScratchModule")


def wrong_gradient(cfg: DictConfig) -> Finding | None:
    """The hand-written backward against autograd (float64) at every seed's initial weights,
    on the whole training set: one relative error per tensor (the worst seed's)."""
    dm = build.datamodule(cfg)
    dm.setup()
    net = build.ensemble(cfg)
    module = build.module(cfg, net)
    n = len(net.seeds)
    params = {k: v.detach() for k, v in net.params().items()}
    x, y = dm.x.expand(n, *dm.x.shape), dm.y.expand(n, *dm.y.shape)
    errors = gradient_check(module.loss_of, module.hand_grads, params, x, y, batched=True)
    worst = {k: float(v.max()) if torch.isfinite(v).all() else math.inf for k, v in errors.items()}
    wrong = [k for k, e in worst.items() if not e <= WRONG]
    if not wrong:
        return None
    return Finding(
        "wrong_gradient", {f"rel_err_{k}": e for k, e in worst.items()}, WRONG, max(worst.values()) / WRONG,
        f"the hand-written gradient of {', '.join(wrong)} disagrees with autograd (float64, relative error "
        f"up to {max(worst.values()):.3g}; right is ~1e-13): no config change repairs that, fix the backward "
        "of those tensors or train with autograd",
    )  # fmt: skip


def _as_pipeline_trains(cfg: DictConfig) -> list[str]:
    """Per-seed outcomes of the variant exactly as the pipeline trains and judges it."""
    prepare_process(cfg.trainer.accelerator)
    return [o.label for o in judge(fit(cfg), Expectations.of(cfg)).outcomes]


def problem(cfg: DictConfig) -> Problem:
    """The variant as factories: a fresh model per seed, an optimizer per model. A
    hand-written network is trained with autograd here (its correct gradients)."""
    dm = build.datamodule(cfg)
    dm.setup()
    factory = instantiate(cfg.model)
    return Problem(
        make_model=lambda seed: factory(),
        x=dm.x,
        y=dm.y,
        loss=bce if _hand_written(cfg) else instantiate(cfg.loss),
        make_optimizer=instantiate(cfg.optimizer),
        epochs=epochs(cfg),
        batch_size=cfg.data.get("batch_size"),
        shuffle=bool(cfg.data.get("shuffle")),
        seeds=tuple(cfg.seeds),
        metrics=tuple(cfg.scenario.get("metrics") or ()),
        solved=_criterion(cfg),
    )


def overrides(cfg: DictConfig, changes: dict) -> list[str]:
    """A verified change as the Hydra overrides that make it."""
    out = []
    for key, value in changes.items():
        if key == "lr":
            out.append(f"optimizer.lr={value:.4g}")
        elif key == "standardise_inputs":
            out.append("data.scale=standardize")
        elif key == "head":
            out.append("model.output_activation=null")
        elif key == "targets_shape":
            out.append("data.target_shape=column")
        elif key == "epochs":
            out.append(f"fit.epochs={round(value / float(cfg.epochs_scale))}")
        elif key == "drop_nonfinite_rows":
            out.append("data.nonfinite=drop")
        elif key == "activation":
            out.append("model.activation={_target_:torch.nn.ReLU}")
        elif key == "init":
            init = "kaiming_uniform_,nonlinearity:relu" if value == "he" else "xavier_uniform_"
            out.append(f"model.weight_init={{_target_:torch.nn.init.{init},_partial_:true}}")
            out.append("model.bias_init={_target_:torch.nn.init.zeros_,_partial_:true}")
    return out


def diagnose_config(cfg: DictConfig, repair: bool = True, baseline: Baseline | None = None) -> Diagnosis:
    """The variant `cfg` describes, diagnosed. `baseline`: its per-seed outcomes and loss
    curves as the pipeline trained and judged them (then not trained again)."""
    if _hand_written(cfg):
        found = wrong_gradient(cfg)
        if found is not None:  # decisive, and no config repair exists
            note = "a wrong hand-written gradient has no config repair: fix the named tensors' backward"
            seeds = baseline[0] if baseline else _as_pipeline_trains(cfg)
            return Diagnosis("wrong_gradient", "high", [found], None, seeds, [note])
    # Rows with NaN/inf are a diagnosis here, not an error (unless the variant drops them).
    keep = cfg.data.get("nonfinite", "error") == "error"
    seen = OmegaConf.merge(cfg, {"data": {"nonfinite": "keep"}}) if keep else cfg
    report = examine(problem(seen), repair, baseline)
    report.attempts = [a.as_overrides(overrides(cfg, a.changes)) for a in report.attempts]
    if report.repair is not None:
        report.repair = report.repair.as_overrides(overrides(cfg, report.repair.changes))
    return report


def diagnose_verdict(cfg: DictConfig, verdict: Verdict) -> Diagnosis:
    """The pipeline's hook: a variant just trained and judged, diagnosed from its own
    per-seed outcomes and curves (no repair: the scenario's variants are the repairs)."""
    labels = [o.label for o in verdict.outcomes]
    curves = list(verdict.records.curves["loss"])
    return diagnose_config(
        cfg, repair=False, baseline=(labels, curves, _trained(cfg, verdict.records.weights))
    )


def _trained(cfg: DictConfig, weights: dict[str, np.ndarray]) -> list[nn.Module] | None:
    """Each seed's trained model, rebuilt from the pipeline's weights (None if they do not fit)."""
    factory = instantiate(cfg.model)
    models = []
    for i in range(len(cfg.seeds)):
        model = factory()
        try:
            model.load_state_dict({k: torch.as_tensor(v[i]) for k, v in weights.items()})
        except (RuntimeError, KeyError, IndexError):
            return None
        models.append(model)
    return models or None


def log_attempts(cfg: DictConfig, report: Diagnosis) -> int:
    """Each repair attempt as a finished MLflow run (role=repair, the override as a tag) in
    the scenario's experiment, beside the variant it repairs; returns how many."""
    # Deferred: MLflow (~2 s) loads only to log repairs, never in a training process.
    from losslab.tracking.log import log_repairs
    from losslab.tracking.store import Tracker  # (the same: MLflow's client)

    uri = resolve_uri(cfg)
    check_reachable(uri)
    store = Tracker(uri, cfg.tracking.ui_url, Path(cfg.paths.root))
    attempts = [a.to_dict() for a in report.attempts]
    return len(log_repairs(store, cfg.scenario.name, cfg.variant.name, report.cause, attempts))
