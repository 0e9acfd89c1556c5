"""fit(cfg) -> FitRecords: train one variant over all its seeds and say what was measured.

Reads like its object graph: datamodule, ensemble of seeds, module, pre-fit checks,
stability bound, recorders, trainer, fit, end-of-fit numbers. No tracking, no files, no
verdicts: the caller decides what to do with the records (the pipeline tracks and judges
them; a test or the doctor just reads them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from losslab.core.criteria import MARGIN, SCORE, Criterion
from losslab.core.errors import LosslabError
from losslab.core.results import FitRecords, Stability
from losslab.engine import build, direct, together
from losslab.engine.datamodule import TableDataModule
from losslab.engine.models import Ensemble
from losslab.engine.module import EnsembleModule
from losslab.probes import (
    class_margin,
    critical_lr,
    fit_score,
    lambda_max,
    loss_broadcast,
    metric_misuse,
    smallest_unstable_prefix,
    task_of,
)
from losslab.recorders import HealthRecorder

LOOPS = ("auto", "engine", "lightning")


@dataclass
class Prepared:
    """A variant ready to train (`prepare`): ensemble, module, pre-fit findings, stability,
    watchers and loop; `records` reads it after training (`train`)."""

    cfg: DictConfig
    dm: TableDataModule
    module: EnsembleModule
    findings: list[str]
    stability: list[Stability] | None
    recorders: list
    watchers: list
    loop: str
    group: list[str] = field(default_factory=list)


def fit(
    cfg: DictConfig,
    dm: TableDataModule | None = None,
    warn: Callable[[str], None] | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> FitRecords:
    """Train every seed of the variant `cfg` describes, as one ensemble.

    `dm`: a datamodule already set up (the pipeline builds them all before tracking);
    `warn`: called with each pre-fit finding (a broadcasting loss, a misused metric) before
    training starts, so it can be said loudly while the fit runs; `callbacks`: more
    watchers of the fit (a progress bar), which record nothing.

    The loop (`fit.loop`, `_loop`) is the batched engine's (`engine.direct`: the same
    updates and recorders, bit for bit, at a fraction of the Trainer's overhead per update)
    wherever it trains the config exactly, else Lightning's.
    """
    train([prepared := prepare(cfg, dm, warn, callbacks)])
    return records(prepared)


def prepare(
    cfg: DictConfig,
    dm: TableDataModule | None = None,
    warn: Callable[[str], None] | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> Prepared:
    """Everything `fit` does before the first update (the arguments are `fit`'s)."""
    dm = dm or build.datamodule(cfg)
    dm.setup()
    pl.seed_everything(cfg.seeds[0], workers=True, verbose=False)
    dm.bind(list(cfg.seeds))
    net = build.ensemble(cfg)
    module = build.module(cfg, net)
    findings = pitfalls(module, dm, list(cfg.scenario.get("metrics") or []))
    for f in findings if warn else ():
        warn(f)
    stability = _stability(cfg, net, module.loss_fn, dm)
    extra = (instantiate(c) for c in (cfg.scenario.get("callbacks") or {}).values())
    recorders = [HealthRecorder(), *extra]
    watchers = [*recorders, *callbacks]
    loop = _loop(cfg, module, dm, watchers)
    return Prepared(cfg, dm, module, findings, stability, recorders, watchers, loop)


def groups(cfgs: Sequence[DictConfig], dms: Sequence[TableDataModule] | None = None) -> list[list[int]]:
    """Which variants `train` trains as one program (indices into `cfgs`): those on the
    engine's loop that `engine.together` finds compatible. Decided before `prepare` (each
    ensemble built once more), so a group is prepared right before it trains."""
    members = []
    for i, cfg in enumerate(cfgs):
        dm = dms[i] if dms is not None else build.datamodule(cfg)
        try:
            module = build.module(cfg, build.ensemble(cfg))
        except Exception:  # alone: `prepare` says why, where its run is marked FAILED
            continue
        if direct.why_not(cfg, module, dm, []) is None:
            members.append((i, together.Member(cfg, module, dm, [])))
    found = [[members[j][0] for j in g] for g in together.groups([m for _, m in members])]
    engine = {i for i, _ in members}
    return sorted(found + [[i] for i in range(len(cfgs)) if i not in engine], key=lambda g: g[0])


def train(prepared: Sequence[Prepared]) -> None:
    """Train prepared variants: one alone, or a group (`groups`) as one program on the
    engine's loop, each variant's numbers those it gets alone (tests/test_direct.py). A
    group with a variant that needs Lightning's loop after all (a watcher of its own)
    trains one variant after the other."""
    if len(prepared) > 1 and any(p.loop != "engine" for p in prepared):
        for p in prepared:
            train([p])
        return
    if prepared[0].loop == "engine":
        if len(prepared) > 1:
            names = [p.cfg.variant.name for p in prepared]
            for p in prepared:
                p.group = names
        direct.train_together([together.Member(p.cfg, p.module, p.dm, p.watchers) for p in prepared])
    else:
        p = prepared[0]
        build.trainer(p.cfg, p.watchers).fit(p.module, datamodule=p.dm)


def records(prepared: Prepared) -> FitRecords:
    """What a trained variant measured: its recorders' curves and finals, its end-of-fit
    predictions and checks, its weights."""
    cfg, net, dm = prepared.cfg, prepared.module.net, prepared.dm
    criterion = Criterion.of(cfg)
    finals = {
        **_predictions(cfg, net, dm, criterion),
        **{k: v for r in prepared.recorders for k, v in r.finals.items()},
    }
    opt = cfg.optimizer
    return FitRecords(
        scenario=cfg.scenario.name,
        variant=cfg.variant.name,
        seeds=list(cfg.seeds),
        curves={k: v for r in prepared.recorders for k, v in r.records().items()},
        finals=finals,
        checks=_checks(net, dm, criterion, prepared.module.loss_fn),
        stability=prepared.stability,
        warnings=prepared.findings,
        lr=float(opt.lr),
        optimizer=opt._target_.rsplit(".", 1)[-1],
        plain_gd=opt._target_.endswith(".SGD") and not opt.get("momentum"),
        weights={k: v.detach().cpu().numpy().copy() for k, v in net.params().items()},
        loop=prepared.loop,
        group=prepared.group,
    )


def _loop(cfg: DictConfig, module: EnsembleModule, dm: TableDataModule, watchers: list) -> str:
    """`fit.loop`: auto (default: the engine's where it is exact, else Lightning's),
    engine (an error naming what it cannot train) or lightning."""
    asked = (cfg.get("fit") or {}).get("loop", "auto")
    if asked not in LOOPS:
        raise LosslabError(f"fit.loop must be one of {', '.join(LOOPS)}; got {asked!r}")
    if asked == "lightning":
        return asked
    why = direct.why_not(cfg, module, dm, watchers)
    if why and asked == "engine":
        raise LosslabError(f"fit.loop=engine cannot train {cfg.scenario.name}/{cfg.variant.name}: {why}")
    return "lightning" if why else "engine"


def pitfalls(module: EnsembleModule, dm: TableDataModule, metrics: list[str]) -> list[str]:
    """The silent mistakes visible before training, on the first batch of the first replica."""
    x, y = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        out = module(x.to(module.device))
    found = [loss_broadcast(out.shape[1:], y.shape[1:]), metric_misuse(metrics, dm.raw["train"][1])]
    return [f for f in found if f]


def _stability(
    cfg: DictConfig, net: Ensemble, loss_fn: object, dm: TableDataModule
) -> list[Stability] | None:
    """2/λ_max per replica at its initial weights; the data-size scan on the first replica."""
    spec = cfg.scenario.get("stability") or {}
    if not spec.get("enabled", False):
        return None
    lr = float(cfg.optimizer.lr)
    out = []
    for i in range(len(net.seeds)):
        params = net.replica(i)
        lam = lambda_max(net.template, loss_fn, dm.x, dm.y, params=params)
        min_n = None
        if i == 0 and spec.get("prefix_scan", False):
            full_x, full_y = dm.full_data()
            min_n = smallest_unstable_prefix(net.template, loss_fn, full_x, full_y, lr, params=params)
        out.append(Stability(lam, critical_lr(lam), lr, min_n))
    return out


def _link(criterion: Criterion) -> Callable[[torch.Tensor], torch.Tensor]:
    """Outputs -> the targets' scale: identity, or sigmoid for a model trained on logits."""
    return torch.sigmoid if criterion.link == "sigmoid" else (lambda t: t)


def _outputs(net: Ensemble, x: torch.Tensor) -> torch.Tensor:
    x = x.to(next(net.parameters()).device)
    with torch.no_grad():
        return net(x.expand(len(net.seeds), *x.shape))


def _predictions(
    cfg: DictConfig, net: Ensemble, dm: TableDataModule, criterion: Criterion
) -> dict[str, np.ndarray]:
    """Each replica's prediction (on the targets' scale) at the scenario's probe inputs."""
    out = {}
    for name, spec in (cfg.scenario.get("probes") or {}).items():
        raw = spec.x if OmegaConf.is_list(spec.x) else [spec.x]
        x = dm.encode(torch.tensor([[float(v) for v in raw]]))
        pred = dm.decode_y(_link(criterion)(_outputs(net, x)))
        out[name] = pred.reshape(len(net.seeds), -1)[:, 0].double().cpu().numpy()
    return out


def _checks(net: Ensemble, dm: TableDataModule, criterion: Criterion, loss_fn: object) -> dict:
    """The end-of-fit number the success criterion is judged on, if it is one of ours."""
    if criterion.number == MARGIN:
        return {MARGIN: _margin(net, dm, criterion)}
    if criterion.number == SCORE:
        score = fit_score(_outputs(net, dm.x), dm.y, task_of(loss_fn, dm.y))
        return {SCORE: score.cpu().numpy()}
    return {}


def _margin(net: Ensemble, dm: TableDataModule, criterion: Criterion) -> np.ndarray:
    """Per replica, the smallest signed distance of a training output (through the link)
    from 0.5, towards its target's side; an output that is not finite is on neither side."""
    out = _link(criterion)(_outputs(net, dm.x)).reshape(len(net.seeds), -1).cpu()
    return class_margin(out, dm.y).double().numpy()
