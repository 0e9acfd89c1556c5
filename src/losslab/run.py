"""One scenario: every variant × every seed -> fit -> outcome -> MLflow (+ DVC outputs).

Reads top to bottom like the object graph: compose configs, build and check the data
(all variants, before anything is tracked), open the tracking store, then per variant:
ensemble, module, stability bound, Trainer.fit, outcomes, runs.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from losslab.config import VariantInfo, compose, epochs, project_root, variants_of
from losslab.data import read_xy, write_table
from losslab.errors import LosslabError
from losslab.outcome import Outcome, classify, finite_or_none
from losslab.tracking import RunGroup, TrackerProcess, flatten, public_config

# torch, Lightning and MLflow load only once the inputs are known to be good, so a bad
# override or data file is answered in well under a second.
if TYPE_CHECKING:
    from losslab.datamodule import TableDataModule
    from losslab.models import Ensemble
    from losslab.stability import Stability


@dataclass
class SeedResult:
    seed: int
    outcome: Outcome
    numbers: dict[str, float]  # probes and end-of-fit measures (test MAE, dead units, …)
    stability: Stability | None
    curves: dict[str, np.ndarray]


@dataclass
class VariantResult:
    info: VariantInfo
    cfg: DictConfig
    seeds: list[SeedResult]
    runs: RunGroup | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def expected_rate(self) -> float:
        """Fraction of seeds whose outcome is one the config declares for this variant."""
        hits = [s.outcome.label in self.info.expect_outcome for s in self.seeds]
        return sum(hits) / len(hits)

    @property
    def success_rate(self) -> float:
        """Fraction of seeds that converged (for a fix: that the fix worked)."""
        return sum(s.outcome.label == "converged" for s in self.seeds) / len(self.seeds)

    def summary(self) -> dict:
        """The DVC metrics entry for this variant (numbers, and null for non-finite)."""
        counts: dict[str, int] = {}
        for s in self.seeds:
            counts[s.outcome.label] = counts.get(s.outcome.label, 0) + 1

        def median(values: list[float | None]) -> float | None:
            vals = [v for v in values if v is not None]
            return finite_or_none(statistics.median(vals)) if len(vals) == len(values) else None

        out = {
            "role": self.info.role,
            "description": self.info.description,
            "expected": "|".join(self.info.expect_outcome),
            "expected_rate": self.expected_rate,
            "success_rate": self.success_rate,
            "outcomes": counts,
            "median_final_loss": median([finite_or_none(s.outcome.final_loss) for s in self.seeds]),
            "diverged_seeds": sum(s.outcome.diverged_epoch is not None for s in self.seeds),
            "first_inf_epoch": _min([s.outcome.first_inf_epoch for s in self.seeds]),
            "first_nan_epoch": _min([s.outcome.first_nan_epoch for s in self.seeds]),
            "lr": float(self.cfg.optimizer.lr),
        }
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.seeds[0].numbers:
            out["numbers"] = {
                name: median([finite_or_none(s.numbers[name]) for s in self.seeds])
                for name in self.seeds[0].numbers
            }
        stab = [s.stability for s in self.seeds if s.stability is not None]
        if stab:
            out["lambda_max"] = statistics.median(s.lambda_max for s in stab)
            out["critical_lr"] = statistics.median(s.critical_lr for s in stab)
            out["min_diverging_n"] = stab[0].min_diverging_n
        return out


def _min(values: list[int | None]) -> int | None:
    vals = [v for v in values if v is not None]
    return min(vals) if vals else None


@dataclass
class ScenarioResult:
    scenario: str
    variants: list[VariantResult] = field(default_factory=list)
    experiment_id: str = ""
    compare_url: str = ""
    ui_command: str = ""
    outputs: list[Path] = field(default_factory=list)


# --- prepare ---------------------------------------------------------------------------


def prepare(overrides: list[str]) -> list[Path]:
    """Write every data set the scenario declares to data/<scenario>/<name>.csv."""
    cfg = compose(overrides)
    root = Path(cfg.paths.root)
    written = []
    for name, gen in (cfg.get("datasets") or {}).items():
        path = root / "data" / cfg.scenario.name / f"{name}.csv"
        write_table(path, instantiate(gen))
        written.append(path)
    return written


# --- run -------------------------------------------------------------------------------


def steady_malloc() -> None:
    """Pin glibc's mmap threshold (128 KiB) so freed tensor buffers go back to the OS.

    By default glibc raises the threshold after large blocks are freed; from then on the
    per-step and per-epoch buffers come from the heap, fragment it and are never returned:
    the relu_head stage grew past 4.5 GiB. Pinned: 0.45 GiB, same speed (measured on the
    scaled variant: 43.0 s vs 42.5 s). No-op off glibc.
    """
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def quiet_lightning() -> None:
    """Keep stdout for the verdicts: Lightning's banners and tips say nothing here."""
    for name in ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message="Using a target size")  # checks.loss_broadcast says it louder


def run(overrides: list[str]) -> ScenarioResult:
    """Run a scenario's variants (all of them, or the one named by `variant=`).

    Running all of them writes the scenario's DVC outputs (metrics, plots, figure);
    a single variant only goes to MLflow.
    """
    root = project_root()
    base = compose(overrides, root)
    scenario = base.scenario.name
    chosen = [o for o in overrides if o.startswith("variant=")]
    names = [base.variant.name] if chosen else variants_of(root, scenario)
    rest = [o for o in overrides if not o.startswith("variant=")]
    cfgs = [base] if chosen else [_compose_variant(rest, scenario, n, root) for n in names]

    # Pre-flight: every input checked before a single run is created.
    for cfg in cfgs:
        read_xy(root / cfg.data.path, list(cfg.data.inputs), list(cfg.data.targets), cfg.data.n_points)
    if not chosen:
        from losslab.report import check_writable, output_paths

        check_writable(root, output_paths(root, scenario))
    steady_malloc()
    tracker = TrackerProcess.open(base)  # connects while we import Lightning below
    try:
        modules = [instantiate(cfg.data, root=str(root)) for cfg in cfgs]
        for dm in modules:
            dm.setup()
        experiment_id = tracker.experiment(scenario)  # unreachable store: fails here, before training

        quiet_lightning()
        if base.trainer.accelerator != "cpu":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        result = ScenarioResult(scenario, experiment_id=experiment_id, ui_command=tracker.ui_command())
        for cfg, dm in zip(cfgs, modules, strict=True):
            result.variants.append(train_variant(cfg, dm, tracker, experiment_id))
        if not chosen:
            _write_outputs(result, root, tracker)
        groups = tracker.close()
    except BaseException:
        tracker.abort()
        raise
    for v in result.variants:
        v.runs = groups.get(v.info.name)
    parents = [v.runs.parent for v in result.variants if v.runs]
    result.compare_url = tracker.compare_url(experiment_id, parents)
    return result


def _compose_variant(overrides: list[str], scenario: str, name: str, root: Path) -> DictConfig:
    try:
        return compose([*overrides, f"variant={scenario}/{name}"], root)
    except LosslabError as e:
        raise LosslabError(f"{scenario}/{name}: {e}") from e


def _write_outputs(result: ScenarioResult, root: Path, tracker: TrackerProcess) -> None:
    from losslab.report import output_paths, write_data_outputs

    write_data_outputs(result, root)
    figure = output_paths(root, result.scenario)[2]
    from losslab.report import scenario_title, series

    tracker.figure(
        "scenario_figure", [series(v) for v in result.variants], scenario_title(result), dest=str(figure)
    )
    result.outputs = list(output_paths(root, result.scenario))


def train_variant(
    cfg: DictConfig, dm: TableDataModule, tracker: TrackerProcess, experiment_id: str
) -> VariantResult:
    """Fit all seeds of one variant as one ensemble and record what happened."""
    import pytorch_lightning as pl

    from losslab.checks import before_fit
    from losslab.health import HealthRecorder
    from losslab.models import Ensemble
    from losslab.module import make_trainer

    info = VariantInfo.of(cfg)
    seeds = list(cfg.seeds)
    pl.seed_everything(seeds[0], workers=True, verbose=False)
    dm.bind(seeds)
    net = Ensemble(instantiate(cfg.model), seeds)
    module = instantiate(cfg.module, net=net)
    loss_fn = module.loss_fn

    tags = {
        "scenario": info.scenario,
        "variant": info.name,
        "role": info.role,
        "description": info.description,
        "mlflow.note.content": info.description,
        "source": cfg.scenario.source,
    }
    tracker.start(info.name, experiment_id, info.name, tags, seeds)
    recorders = [HealthRecorder(), *(instantiate(c) for c in (cfg.scenario.get("callbacks") or {}).values())]
    try:
        warnings_found = before_fit(module, dm, cfg.scenario.get("metrics"))
        for w in warnings_found:
            print(f"losslab: WARNING [{info.scenario}/{info.name}]: {w}", file=sys.stderr, flush=True)
        stability = _stability(cfg, net, loss_fn, dm)
        trainer = make_trainer(epochs(cfg), recorders, OmegaConf.to_container(cfg.trainer))
        trainer.fit(module, datamodule=dm)
        records = {k: v for r in recorders for k, v in r.records().items()}
        numbers = {**_probes(cfg, net, dm), **{k: v for r in recorders for k, v in r.finals.items()}}
        solved = _solved(cfg, net, dm, numbers)
    except (KeyboardInterrupt, SystemExit):
        tracker.end(info.name, "KILLED")
        raise
    except Exception as e:  # a config that composes but cannot train (shapes, dtypes, …)
        tracker.end(info.name, "FAILED")
        lines = str(e).strip().splitlines()
        detail = f"{type(e).__name__}: {lines[0] if lines else ''}"
        raise LosslabError(f"training {info.scenario}/{info.name} failed: {detail}") from e

    rule = cfg.scenario.outcome
    results = []
    for i, seed in enumerate(seeds):
        outcome = classify(
            records["loss"][i], rule.converge_below, rule.improve_factor, solved[i] if solved else None
        )
        results.append(
            SeedResult(
                seed=seed,
                outcome=outcome,
                numbers={k: float(v[i]) for k, v in numbers.items()},
                stability=stability[i] if stability else None,
                curves={k: v[i] for k, v in records.items()},
            )
        )
    variant = VariantResult(info, cfg, results, warnings=warnings_found)
    _log_variant(tracker, variant, records)
    return variant


def _stability(cfg: DictConfig, net: Ensemble, loss_fn, dm: TableDataModule) -> list[Stability] | None:
    """2/λ_max per replica at its initial weights; the size scan on the first replica."""

    from losslab.stability import analyse

    spec = cfg.scenario.get("stability") or {}
    if not spec.get("enabled", False):
        return None
    lr = float(cfg.optimizer.lr)
    out = []
    for i in range(len(net.seeds)):
        scan = i == 0 and spec.get("prefix_scan", False)
        full_x, full_y = dm.full_data() if scan else (None, None)
        out.append(analyse(net.template, net.replica(i), loss_fn, dm.x, dm.y, lr, full_x, full_y))
    return out


def _link(cfg: DictConfig):
    """Outputs -> the targets' scale: identity, or sigmoid for a model trained on logits."""
    import torch

    solved = cfg.scenario.outcome.get("solved") or {}
    return torch.sigmoid if solved.get("link") == "sigmoid" else (lambda t: t)


def _probes(cfg: DictConfig, net: Ensemble, dm: TableDataModule) -> dict[str, np.ndarray]:
    """Each replica's prediction (on the targets' scale) at the scenario's probe inputs."""
    import torch

    out = {}
    device = next(net.parameters()).device
    link = _link(cfg)
    for name, spec in (cfg.scenario.get("probes") or {}).items():
        raw = spec.x if OmegaConf.is_list(spec.x) else [spec.x]
        x = dm.encode(torch.tensor([[float(v) for v in raw]])).to(device)
        with torch.no_grad():
            pred = dm.decode_y(link(net(x.expand(len(net.seeds), *x.shape))))
        out[name] = pred.reshape(len(net.seeds), -1)[:, 0].double().cpu().numpy()
    return out


def _solved(
    cfg: DictConfig, net: Ensemble, dm: TableDataModule, numbers: dict[str, np.ndarray]
) -> list[bool] | None:
    """Per replica, the scenario's success criterion, if it has one instead of a loss threshold:
    `below` (an end-of-fit number, e.g. test_max_rel_err, under a bound) or `margin` (every
    training output on the right side of 0.5 by the margin, through `link`)."""
    import torch

    spec = cfg.scenario.outcome.get("solved")
    if not spec:
        return None
    if "below" in spec or "above" in spec:
        values = numbers[spec.number]
        if "below" in spec:
            return [bool(np.isfinite(v) and v < spec.below) for v in values]
        return [bool(np.isfinite(v) and v > spec.above) for v in values]
    x = dm.x.to(next(net.parameters()).device)
    with torch.no_grad():
        out = _link(cfg)(net(x.expand(len(net.seeds), *x.shape))).reshape(len(net.seeds), -1).cpu()
    side = torch.where(dm.y.reshape(1, -1) > 0.5, 1.0, -1.0)
    ok = ((out - 0.5) * side >= spec.margin) & torch.isfinite(out)
    return ok.all(1).tolist()


def _log_variant(tracker: TrackerProcess, v: VariantResult, records: dict[str, np.ndarray]) -> None:
    """Queue everything MLflow gets for one variant.

    Parent run (what the compare view lines up): the config as params, per-epoch medians
    over seeds of every health record, the rates, the config and figure artifacts, and
    every seed's every per-epoch value as curves.csv. Seed runs: their loss curve,
    outcome and numbers. (Every series of every seed as MLflow metrics would be ~45k
    sqlite rows for `linear` alone, several seconds of writes for what curves.csv holds.)
    """
    params = flatten(v.cfg)
    summary = v.summary()
    key = v.info.name
    for s in v.seeds:
        o = s.outcome
        tags = {"outcome": o.label}
        if o.first_inf_epoch:
            tags["first_inf_epoch"] = str(o.first_inf_epoch)
        if o.first_nan_epoch:
            tags["first_nan_epoch"] = str(o.first_nan_epoch)
        metrics = {"initial_loss": o.initial_loss, "final_loss": o.final_loss, **s.numbers}
        if s.stability:
            metrics.update(lambda_max=s.stability.lambda_max, critical_lr=s.stability.critical_lr)
        seed_params = {**params, "seed": str(s.seed)}
        tracker.log(
            key, s.seed, params=seed_params, tags=tags, summary=metrics, curves={"loss": s.curves["loss"]}
        )

    counts = summary["outcomes"]
    tags = {"outcome": ", ".join(f"{k} {n}/{len(v.seeds)}" for k, n in counts.items())}
    if v.warnings:
        tags["warnings"] = " | ".join(v.warnings)
    for name in ("first_inf_epoch", "first_nan_epoch"):
        if summary[name] is not None:
            tags[name] = str(summary[name])
    numbers = {
        k: summary[k]
        for k in (
            "expected_rate",
            "success_rate",
            "median_final_loss",
            "lambda_max",
            "critical_lr",
            "min_diverging_n",
        )
        if summary.get(k) is not None
    }
    numbers.update({k: p for k, p in (summary.get("numbers") or {}).items() if p is not None})
    # Median over seeds; a diverged seed makes it NaN rather than being hidden.
    curves = {k: np.median(a, axis=0) for k, a in records.items()}
    tracker.log(key, params=params, tags=tags, summary=numbers, curves=curves)
    tracker.artifact_text(key, OmegaConf.to_yaml(public_config(v.cfg)), "config.yaml")
    tracker.artifact_text(key, _curves_csv(v, records), "curves.csv")
    from losslab.report import series

    title = f"{v.info.scenario} / {v.info.name}"
    tracker.figure("variant_figure", series(v), title, key=key, dest="loss_curve.png")
    tracker.end(key)


def _curves_csv(v: VariantResult, records: dict[str, np.ndarray]) -> str:
    names = list(records)
    lines = [",".join(["seed", "epoch", *names])]
    for i, s in enumerate(v.seeds):
        for e in range(records[names[0]].shape[1]):
            lines.append(",".join([str(s.seed), str(e + 1), *(repr(float(records[n][i, e])) for n in names)]))
    return "\n".join(lines) + "\n"


def require_scenarios(root: Path, names: list[str]) -> None:
    from losslab.config import available

    known = available(root, "scenario")
    for n in names:
        if n not in known:
            raise LosslabError(f"unknown scenario '{n}' (available: {', '.join(known)})")
