"""A variant's seeds trained on the batched engine instead of Lightning's loop, where that is
exact.

`fit` trains a variant as one `Ensemble` of its seeds. Under a Lightning Trainer every
update costs ~5 ms of framework on these tiny models (hooks, closures, autograd through
vmap) against well under 1 ms of arithmetic. This loop runs the same updates with the maps'
engine (`engine.batched`: the backward written out, `engine.updates`: torch.optim's own
arithmetic) directly on the ensemble's parameter storage, feeds it the datamodule's own
batches (each seed's own order), steps the variant's own lr scheduler, and calls the
watchers' hooks (`engine.hooks`) at the points a Trainer would: the recorders record the
same numbers with the same code. The scratch module brings its own hand-written gradients
(`ScratchModule.hand_step`); the loop applies them with the same update rule. Tests
compare both loops bit for bit (tests/test_direct.py).

`why_not` says when a config needs Lightning instead: another optimizer, loss, module or
model kind, a Trainer option other than plain float32 on the CPU, or a watcher that reads
more of Lightning than the plain hooks.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from losslab.core.checks import epochs
from losslab.engine.batched import Stacked, layout, update_step
from losslab.engine.datamodule import TableDataModule
from losslab.engine.hooks import FitHooks, State
from losslab.engine.losses import kind_of, scale_of
from losslab.engine.models import Ensemble
from losslab.engine.module import EnsembleModule
from losslab.engine.runtime import loop_malloc
from losslab.engine.scratch import ScratchModule
from losslab.engine.updates import optimizer_unsupported, unsupported, update_of

# The Trainer settings under which Lightning's loop is plain float32 SGD/Adam on the CPU.
PLAIN_TRAINER = {"accelerator": "cpu", "devices": 1, "deterministic": True, "precision": "32-true"}


def why_not(cfg: DictConfig, module: object, dm: object, hooks: Sequence[object]) -> str | None:
    """Why this fit needs Lightning's loop, or None when the engine's trains it exactly."""
    if type(module) is ScratchModule:  # its own backward; the engine's update rule
        reason = optimizer_unsupported(cfg)
    else:
        reason = unsupported(cfg, schedules=True) or _layout(module)
    if reason:
        return reason
    trainer = OmegaConf.to_container(cfg.trainer) if cfg.get("trainer") is not None else {}
    if {**PLAIN_TRAINER, **trainer} != PLAIN_TRAINER:
        return f"its trainer asks for {trainer}"
    if type(dm) is not TableDataModule:
        return f"its data come from {type(dm).__name__}"
    odd = [type(h).__name__ for h in hooks if not (isinstance(h, FitHooks) and h.plain)]
    return f"{', '.join(odd)} need(s) Lightning's hooks" if odd else None


def _layout(module: EnsembleModule) -> str | None:
    try:
        layout(module.net.template)
    except ValueError as e:
        return str(e)
    return None


def stacked(net: Ensemble) -> Stacked:
    """The engine's view of an ensemble: the same storage, updated in place."""
    lin, hidden, head = layout(net.template)
    params = {k: v.data for k, v in net.params().items()}
    weights, biases = [params[f"{i}.weight"] for i in lin], [params[f"{i}.bias"] for i in lin]
    return Stacked(weights, biases, hidden, head, exact=True)


class _Deferred:
    """An update rule whose parameters change only when `apply_all` says so: the engine's
    step computes every layer's gradient first, the watchers read them, then they apply
    (in the order the step gave them: the arithmetic is the rule's own)."""

    def __init__(self, rule: Any, names: list[str]) -> None:
        self.rule, self.names = rule, names
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def begin(self) -> None:
        self.pending = []

    def apply(self, key: int, p: torch.Tensor, g: torch.Tensor) -> None:
        self.pending.append((key, p, g))

    def grads(self) -> dict[str, torch.Tensor]:
        got = {key: g for key, _, g in self.pending}
        return {name: got[i] for i, name in enumerate(self.names)}

    def apply_all(self) -> None:
        self.rule.begin()
        for key, p, g in self.pending:
            self.rule.apply(key, p, g)


def optimizers(module: EnsembleModule) -> tuple[torch.optim.Optimizer, Any]:
    """The module's real optimizer and scheduler (None without one), as
    `configure_optimizers` gives them to Lightning (the engine's loop never steps the
    optimizer: it is the lr's source)."""
    got = module.configure_optimizers()
    if isinstance(got, dict):
        return got["optimizer"], got["lr_scheduler"]["scheduler"]
    return got, None


def train(cfg: DictConfig, module: EnsembleModule, dm: TableDataModule, hooks: Sequence[FitHooks]) -> None:
    """Train `module.net`'s replicas for the config's epochs, as `Trainer.fit` would."""
    net = module.net
    optimizer, scheduler = optimizers(module)
    lr = float(optimizer.param_groups[0]["lr"])
    rule = _Deferred(update_of(cfg, torch.full((len(net.seeds),), lr, dtype=torch.float64)), list(net.names))
    rule.rule.set_lr(lr)  # one lr for every seed: the optimizer's own arithmetic, bitwise
    step = (
        _scratch_step(module, rule)
        if isinstance(module, ScratchModule)
        else _engine_step(cfg, module, dm, rule)
    )
    batches = dm.train_dataloader()  # one object over the fit: its epoch counter orders the rows
    state = State(net, dm, epochs(cfg), lr=lr, module=module)
    try:
        with torch.no_grad(), loop_malloc():
            for h in hooks:
                h.fit_started(state)
            for epoch in range(state.epochs):
                state.epoch = epoch
                for h in hooks:
                    h.epoch_started(state)
                for index, batch in enumerate(batches):
                    for h in hooks:
                        h.batch_started(state, batch, index)
                    outputs = step(*batch)
                    grads = rule.grads()
                    for h in hooks:
                        h.gradients(state, grads)
                    rule.apply_all()
                    state.step += 1
                    if scheduler is not None:
                        state.lr = _scheduled(scheduler, optimizer)
                        rule.rule.set_lr(state.lr)
                    for h in hooks:
                        h.batch_ended(state, outputs)
                for h in hooks:
                    h.epoch_ended(state)
            for h in hooks:
                h.fit_ended(state)
    except BaseException as e:
        for h in hooks:
            h.failed(e)
        raise


Step = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def _engine_step(cfg: DictConfig, module: EnsembleModule, dm: TableDataModule, rule: _Deferred) -> Step:
    """The maps' engine on the ensemble's storage: forward, the backward written out."""
    kind, engine, n = kind_of(cfg), stacked(module.net), len(module.net.seeds)
    outs = engine.weights[-1].shape[1]
    scales: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def one(xb: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        if not dm.shuffle:  # the same rows for every replica: shared, not copied
            xb, yb = xb[0], yb[0]
        rows = xb.shape[-2]
        if rows not in scales:
            scales[rows] = scale_of(torch.full((n,), float(rows)), outs)
        return {"replica_losses": update_step(engine, xb, yb, rule, scales[rows], None, kind)}

    return one


def _scratch_step(module: ScratchModule, rule: _Deferred) -> Step:
    """The scratch module's own hand-written gradients (`ScratchModule.hand_step`)."""
    params = [v.data for v in module.net.params().values()]
    names = list(module.net.names)

    def one(xb: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        grads, outputs = module.hand_step(xb, yb)
        rule.begin()
        for key, (name, p) in enumerate(zip(names, params, strict=True)):
            rule.apply(key, p, grads[name])
        return outputs

    return one


def _scheduled(scheduler: Any, optimizer: torch.optim.Optimizer) -> float:
    """The scheduler's next lr, stepped as Lightning steps it after each update."""
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": by design
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
    return float(optimizer.param_groups[0]["lr"])
