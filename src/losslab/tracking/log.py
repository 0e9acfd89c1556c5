"""What MLflow gets for one variant, from its verdict: the one place that maps results to runs.

Parent run (what the compare view lines up): the config as params, per-epoch medians over
seeds of every record, the rates, the config and every seed's every per-epoch value as
curves.csv. Seed runs: their loss curve, outcome and numbers. (Every series of every seed
as MLflow metrics would be ~45k sqlite rows for `linear` alone, several seconds of writes
for what curves.csv holds.)
"""

from __future__ import annotations

import os

import numpy as np
from omegaconf import DictConfig, OmegaConf

from losslab.core.criteria import Expectations
from losslab.core.results import Verdict
from losslab.tracking.params import flatten, public_config
from losslab.tracking.store import Tracker
from losslab.tracking.writer import TrackerProcess

PARENT_NUMBERS = (
    "expected_rate",
    "success_rate",
    "median_final_loss",
    "lambda_max",
    "critical_lr",
    "min_diverging_n",
)


def run_name(exp: Expectations, changed: tuple[str, ...] = ()) -> str:
    """The variant's name, followed by what the user overrode: `adam optimizer.lr=0.05`."""
    return " ".join([exp.name, *changed])


def run_tags(cfg: DictConfig, exp: Expectations, changed: tuple[str, ...] = ()) -> dict[str, str]:
    """Tags every run of the variant carries from its creation. With overrides, the
    description says what ran (the variant's own text may name a value no longer there,
    "Adam at the Keras default lr 0.001"); that text stays in `variant.description`."""
    described = exp.description
    if changed:
        described = f"variant {exp.name} with {' '.join(changed)} (see the `overrides` tag and params)"
    tags = {
        "scenario": exp.scenario,
        "variant": exp.name,
        "role": exp.role,
        "description": described,
        "variant.description": exp.description,
        "mlflow.note.content": described,
        "source": cfg.scenario.source,
        # The training process (losslab.pid, set by the store, is the tracking writer's).
        "losslab.trainer_pid": str(os.getpid()),
    }
    if changed:
        tags["overrides"] = " ".join(changed)
    return tags


def log_verdict(tracker: TrackerProcess, cfg: DictConfig, v: Verdict) -> None:
    """Queue the variant's params, tags, metrics and text artifacts (the runs stay open)."""
    params = flatten(cfg)
    summary, rec, key = v.summary, v.records, v.name
    for i, (seed, o) in enumerate(zip(rec.seeds, v.outcomes, strict=True)):
        tags = {"outcome": o.label}
        if o.first_inf_epoch:
            tags["first_inf_epoch"] = str(o.first_inf_epoch)
        if o.first_nan_epoch:
            tags["first_nan_epoch"] = str(o.first_nan_epoch)
        metrics = {"initial_loss": o.initial_loss, "final_loss": o.final_loss, **rec.seed_numbers(i)}
        if rec.stability:
            s = rec.stability[i]
            metrics.update(lambda_max=s.lambda_max, critical_lr=s.critical_lr)
        seed_params = {**params, "seed": str(seed)}
        tracker.log(
            key, seed, params=seed_params, tags=tags, summary=metrics, curves={"loss": rec.curves["loss"][i]}
        )

    counts = summary["outcomes"]
    tags = {"outcome": ", ".join(f"{k} {n}/{len(rec.seeds)}" for k, n in counts.items())}
    if rec.warnings:
        tags["warnings"] = " | ".join(rec.warnings)
    for name in ("first_inf_epoch", "first_nan_epoch"):
        if summary[name] is not None:
            tags[name] = str(summary[name])
    numbers = {k: summary[k] for k in PARENT_NUMBERS if summary.get(k) is not None}
    numbers.update({k: p for k, p in (summary.get("numbers") or {}).items() if p is not None})
    # Median over seeds; a diverged seed makes it NaN rather than being hidden.
    curves = {k: np.median(a, axis=0) for k, a in rec.curves.items()}
    tracker.log(key, params=params, tags=tags, summary=numbers, curves=curves)
    tracker.artifact_text(key, OmegaConf.to_yaml(public_config(cfg)), "config.yaml")
    tracker.artifact_text(key, curves_csv(v), "curves.csv")


def curves_csv(v: Verdict) -> str:
    rec = v.records
    names = list(rec.curves)
    lines = [",".join(["seed", "epoch", *names])]
    for i, seed in enumerate(rec.seeds):  # tolist(): Python floats, without a numpy scalar each
        for e, values in enumerate(zip(*(rec.curves[n][i].tolist() for n in names), strict=True), 1):
            lines.append(",".join([str(seed), str(e), *map(repr, values)]))
    return "\n".join(lines) + "\n"


def log_repairs(store: Tracker, scenario: str, variant: str, cause: str, attempts: list[dict]) -> list[str]:
    """Every repair the doctor tried, as a finished run of the scenario's experiment (tag
    `role=repair`, the override as `repair.override`), beside the variant it repairs."""
    experiment = store.experiment(scenario)
    ids = []
    for a in attempts:
        override = " ".join(a.get("overrides") or []) or a["text"]
        seeds = a["seeds"]
        tags = {
            "scenario": scenario,
            "variant": variant,
            "role": "repair",
            "repair.override": override,
            "diagnosis.cause": cause,
            "outcome": ", ".join(f"{o} {seeds.count(o)}/{len(seeds)}" for o in dict.fromkeys(seeds)),
            "mlflow.note.content": f"losslab doctor: {a['text']}",
        }
        group = store.start(experiment, f"{variant} + {override}", tags, [])
        store.log(
            group.parent, params={"repair.override": override}, summary={"success_rate": a["success_rate"]}
        )
        store.end(group)
        ids.append(group.parent)
    return ids
