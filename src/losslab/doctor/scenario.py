"""The config door: a composed scenario config as a doctor's Problem, and repairs as overrides.

`losslab doctor scenario=linear variant=broken` trains what the scenario describes (its
training split, scaling and target shape, its model factory, loss and optimizer, epochs,
batch size, seeds) with the doctor's plain loop, and turns each verified change into the
Hydra override a user pastes (`optimizer.lr=0.00347`, `data.scale=standardize`, …).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from losslab.core.checks import epochs
from losslab.core.criteria import MARGIN, Criterion
from losslab.core.errors import LosslabError
from losslab.doctor.engine import examine
from losslab.doctor.problem import Problem
from losslab.doctor.report import Diagnosis
from losslab.engine import build


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
            side = torch.where(p.y.reshape(-1) > 0.5, 1.0, -1.0)
            m = torch.where(torch.isfinite(out), (out - 0.5) * side, -torch.inf).min()
            return bound.met(float(m))

        return margin
    return None


def problem(cfg: DictConfig) -> Problem:
    """The variant as factories: a fresh model per seed, an optimizer per model."""
    if cfg.get("loss") is None:
        raise LosslabError(
            f"{cfg.scenario.name}/{cfg.variant.name} trains with a hand-written backward: the doctor's "
            "config door does not run it yet; check it with losslab.check_gradients"
        )
    dm = build.datamodule(cfg)
    dm.setup()
    factory = instantiate(cfg.model)
    return Problem(
        make_model=lambda seed: factory(),
        x=dm.x,
        y=dm.y,
        loss=instantiate(cfg.loss),
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
            out.append("# drop the rows with NaN/inf from " + str(cfg.data.path))
    return out


def diagnose_config(cfg: DictConfig, repair: bool = True) -> Diagnosis:
    report = examine(problem(cfg), repair)
    if report.repair is not None:
        report.repair = report.repair.as_overrides(overrides(cfg, report.repair.changes))
    return report
