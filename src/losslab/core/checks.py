"""Every value of a composed run config against its legal range, before anything trains.

Checks that need no torch live here (numbers, lists, names, data columns against layer
sizes); the values only a library constructor can judge (an optimizer's betas, a
scheduler's arguments) are tried on the real constructors by `engine.build.check`.
Each failure is one line that names the key and says what would be legal.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from losslab.core.criteria import CAUSES
from losslab.core.data import NONFINITE
from losslab.core.errors import LosslabError
from losslab.core.outcome import OUTCOMES

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
SCALES = (None, "standardize", "minmax")
TARGET_SHAPES = ("column", "flat")


def epochs(cfg: DictConfig) -> int:
    """The epoch budget after the pipeline-wide epochs_scale knob."""
    return max(0, round(cfg.fit.epochs * cfg.epochs_scale))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(cfg: DictConfig, key: str, *, positive: bool = True, integer: bool = False) -> Any:
    value = OmegaConf.select(cfg, key)
    ok = _is_number(value) and (not integer or float(value).is_integer())
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        kind = "a positive integer" if integer else "a positive finite number"
        raise LosslabError(f"{key} must be {kind}, got {value!r}")
    return value


def _fraction(cfg: DictConfig, key: str, *, closed: bool) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    ok = _is_number(value) and (0 < value <= 1 if closed else 0 <= value < 1)
    if not ok:
        legal = "in (0, 1]" if closed else "in [0, 1)"
        raise LosslabError(f"{key} must be a number {legal}, got {value!r}")


def _names(cfg: DictConfig, key: str) -> list[str]:
    value = OmegaConf.select(cfg, key)
    if not OmegaConf.is_list(value) or not value or not all(isinstance(v, str) and v for v in value):
        raise LosslabError(f"{key} must be a non-empty list of column names, got {value!r}")
    return list(value)


def _one_of(cfg: DictConfig, key: str, legal: tuple) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in legal:
        shown = ", ".join("null" if v is None else str(v) for v in legal)
        raise LosslabError(f"{key} must be one of {shown}; got {value!r}")


def _seeds(cfg: DictConfig) -> None:
    seeds = cfg.get("seeds")
    if not OmegaConf.is_list(seeds) or len(seeds) == 0:
        raise LosslabError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise LosslabError(f"seeds must be non-negative integers, got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise LosslabError(f"seeds must be distinct, got {list(seeds)}")


def _data(cfg: DictConfig) -> None:
    inputs, targets = _names(cfg, "data.inputs"), _names(cfg, "data.targets")
    for key in ("data.n_points", "data.batch_size"):
        if OmegaConf.select(cfg, key) is not None:
            _number(cfg, key, integer=True)
    _one_of(cfg, "data.scale", SCALES)
    _one_of(cfg, "data.shuffle", (True, False))
    if OmegaConf.select(cfg, "data.nonfinite") is not None:
        _one_of(cfg, "data.nonfinite", NONFINITE)
    if OmegaConf.select(cfg, "data.target_shape") is not None:
        _one_of(cfg, "data.target_shape", TARGET_SHAPES)
    if OmegaConf.select(cfg, "data.split.train") is not None:
        _number(cfg, "data.split.train", integer=True)
    _fraction(cfg, "data.split.val_fraction", closed=False)
    sizes = OmegaConf.select(cfg, "model.sizes")
    if sizes is None:
        return
    if not OmegaConf.is_list(sizes) or len(sizes) < 2:
        raise LosslabError(f"model.sizes must list at least two layer widths, got {sizes!r}")
    for i, _ in enumerate(sizes):
        _number(cfg, f"model.sizes[{i}]", integer=True)
    if sizes[0] != len(inputs) or sizes[-1] != len(targets):
        raise LosslabError(
            f"model.sizes={list(sizes)} must start with {len(inputs)} (data.inputs: {', '.join(inputs)}) "
            f"and end with {len(targets)} (data.targets: {', '.join(targets)})"
        )


def _judging(cfg: DictConfig) -> None:
    if OmegaConf.select(cfg, "scenario.outcome.converge_below") is not None:
        _number(cfg, "scenario.outcome.converge_below", positive=False)
    solved = OmegaConf.select(cfg, "scenario.outcome.solved")
    if solved is not None and not ({"number", "margin"} & set(solved)):
        raise LosslabError(
            f"scenario.outcome.solved needs `number` (with below/above/at_least) or `margin`; got {solved!r}"
        )
    _fraction(cfg, "scenario.outcome.improve_factor", closed=True)
    outcome = OmegaConf.select(cfg, "variant.expect.outcome")
    wanted = [outcome] if isinstance(outcome, str) else list(outcome or [])
    bad = [o for o in wanted if o not in OUTCOMES]
    if not wanted or bad:
        raise LosslabError(
            f"variant.expect.outcome must name outcomes among {', '.join(OUTCOMES)}; got {outcome!r}"
        )
    _fraction(cfg, "variant.expect.min_rate", closed=True)
    named = OmegaConf.select(cfg, "variant.expect.diagnosis")
    causes = [named] if isinstance(named, str) else list(named or [])
    if any(c not in CAUSES for c in causes):
        raise LosslabError(
            f"variant.expect.diagnosis must name causes among {', '.join(CAUSES)}; got {named!r}"
        )


def validate(cfg: DictConfig) -> None:
    """Reject values that would make a run meaningless, naming the key."""
    _seeds(cfg)
    _number(cfg, "optimizer.lr")
    _number(cfg, "epochs_scale")
    _number(cfg, "fit.epochs", integer=True)
    if epochs(cfg) < 1:
        raise LosslabError(f"fit.epochs × epochs_scale rounds to {epochs(cfg)} epochs; need ≥ 1")
    if cfg.trainer.accelerator not in ACCELERATORS:
        raise LosslabError(
            f"trainer.accelerator must be one of cpu, gpu, auto; got {cfg.trainer.accelerator!r}"
        )
    _data(cfg)
    _judging(cfg)
