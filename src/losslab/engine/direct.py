"""A variant's seeds trained on the batched engine instead of Lightning's loop, where that is
exact; compatible variants of a scenario trained as one program.

`fit` trains a variant as one `Ensemble` of its seeds. Under a Lightning Trainer every
update costs ~5 ms of framework on these tiny models (hooks, closures, autograd through
vmap) against well under 1 ms of arithmetic. This loop runs the same updates with the maps'
engine (`engine.batched`: the backward written out, `engine.updates`: torch.optim's own
arithmetic) directly on the ensemble's parameter storage, feeds it the datamodule's own
batches (each seed's own order), steps the variant's own lr scheduler, and calls the
watchers' hooks (`engine.hooks`) at the points a Trainer would: the recorders record the
same numbers with the same code. The scratch module brings its own hand-written gradients
(`ScratchModule.hand_step`); the loop applies them with the same update rule.
`train_together` does the same for several variants stacked as one (`engine.together`:
which, and their shared storage), each with its own lr, schedule, epochs and watchers.
Tests compare the loops and the groups bit for bit (tests/test_direct.py).

`why_not` says when a config needs Lightning instead: another optimizer, loss, module or
model kind, a Trainer option other than plain float32 on the CPU, or a watcher that reads
more of Lightning than the plain hooks."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from losslab.core.checks import epochs
from losslab.engine import together
from losslab.engine.batched import Stacked, layout, update_step
from losslab.engine.datamodule import TableDataModule
from losslab.engine.hooks import FitHooks, State
from losslab.engine.losses import kind_of, scale_of
from losslab.engine.module import EnsembleModule
from losslab.engine.runtime import loop_malloc
from losslab.engine.scratch import ScratchModule
from losslab.engine.together import Member
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


def stacked(template: torch.nn.Module, params: dict[str, torch.Tensor]) -> Stacked:
    """The engine's view of stacked parameters: the same storage, updated in place."""
    lin, hidden, head = layout(template)
    weights, biases = [params[f"{i}.weight"] for i in lin], [params[f"{i}.bias"] for i in lin]
    return Stacked(weights, biases, hidden, head, exact=True)


class _Deferred:
    """An update rule whose parameters change only when `apply_all` says so: the engine's
    step computes every layer's gradient first, the watchers read them, then they apply
    (in the order the step gave them: the arithmetic is the rule's own). Variants trained
    together each keep their own rule on their own rows (`rows`): the same kernels on the
    same lengths as alone, so the same bits."""

    def __init__(self, rules: list[Any], rows: list[slice], names: list[str]) -> None:
        self.rules, self.rows, self.names = rules, rows, names
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def begin(self) -> None:
        self.pending = []

    def apply(self, key: int, p: torch.Tensor, g: torch.Tensor) -> None:
        self.pending.append((key, p, g))

    def grads(self) -> dict[str, torch.Tensor]:
        got = {key: g for key, _, g in self.pending}
        return {name: got[i] for i, name in enumerate(self.names)}

    def apply_all(self) -> None:
        whole = len(self.rules) == 1  # one block: every row is its own
        for rule, rows in zip(self.rules, self.rows, strict=True):
            rule.begin()
            for key, p, g in self.pending:
                rule.apply(key, p, g) if whole else rule.apply(key, p[rows], g[rows])


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
    train_together([Member(cfg, module, dm, hooks)])


def train_together(members: list[Member]) -> None:
    """Train several variants as one stack (`engine.together.groups` says which may), each
    as `train` would train it alone: its own lr, schedule, epochs and watchers."""
    parts = together.blocks(members)
    params = together.combine(parts)
    for m in members:
        m.optimizer, m.scheduler = optimizers(m.module)
        lr = float(m.optimizer.param_groups[0]["lr"])
        m.state = State(m.module.net, m.dm, epochs(m.cfg), lr=lr, module=m.module)
    first = members[0]
    rules = [update_of(b[0].cfg, torch.zeros(len(b[0].module.net.seeds), dtype=torch.float64)) for b in parts]
    rule = _Deferred(rules, [b[0].rows for b in parts], list(first.module.net.names))
    _set_lrs(rule, parts)  # one lr for a block's replicas: the optimizer's own arithmetic, bitwise
    step = (
        _scratch_step(first, params, len(parts), rule)
        if isinstance(first.module, ScratchModule)
        else _engine_step(first, params, len(parts), rule)
    )
    batches = first.dm.train_dataloader()  # one object over the fit: its epoch counter orders the rows
    live = list(members)
    hooks = [(m, h) for m in members for h in m.hooks]
    try:
        with torch.no_grad(), loop_malloc():
            for m, h in hooks:
                h.fit_started(m.state)
            for epoch in range(max(m.state.epochs for m in members)):
                live = [m for m in members if epoch < m.state.epochs]
                for m in live:
                    m.state.epoch = epoch
                    for h in m.hooks:
                        h.epoch_started(m.state)
                for index, batch in enumerate(batches):
                    _one_update(live, parts, step, rule, batch, index)
                for m in live:
                    for h in m.hooks:
                        h.epoch_ended(m.state)
                    if epoch == m.state.epochs - 1:
                        for h in m.hooks:
                            h.fit_ended(m.state)
                        together.release(m)
    except BaseException as e:
        for m in live:
            for h in m.hooks:
                h.failed(e)
        raise


def _one_update(
    live: list[Member], parts: list[list[Member]], step: Step, rule: _Deferred, batch: Any, index: int
) -> None:
    """One stacked update; each live member's watchers see their own rows of it."""
    whole = len(parts) == 1  # one block: every row is each member's own
    for m in live:
        for h in m.hooks:
            h.batch_started(m.state, batch, index)
    outputs = step(*batch)
    grads = rule.grads()
    for m in live:
        own = grads if whole else {k: g[m.rows] for k, g in grads.items()}
        for h in m.hooks:
            h.gradients(m.state, own)
    rule.apply_all()
    scheduled = False
    for m in live:
        m.state.step += 1
        if m.scheduler is not None:
            m.state.lr, scheduled = _scheduled(m.scheduler, m.optimizer), True
    if scheduled:
        _set_lrs(rule, parts)
    for m in live:
        own = outputs if whole else {k: v[m.rows] for k, v in outputs.items()}
        for h in m.hooks:
            h.batch_ended(m.state, own)


def _set_lrs(rule: _Deferred, parts: list[list[Member]]) -> None:
    for block_rule, lr in zip(rule.rules, together.lrs(parts), strict=True):
        block_rule.set_lr(lr)


Step = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def _engine_step(first: Member, params: dict[str, torch.Tensor], blocks: int, rule: _Deferred) -> Step:
    """The maps' engine on the stacked storage: forward, the backward written out."""
    kind, engine, n = kind_of(first.cfg), stacked(first.module.net.template, params), len(params["0.weight"])
    shuffled, outs = first.dm.shuffle, engine.weights[-1].shape[1]
    scales: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def one(xb: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        xb, yb = together.rows_for(xb, shuffled, blocks), together.rows_for(yb, shuffled, blocks)
        rows = xb.shape[-2]
        if rows not in scales:
            scales[rows] = scale_of(torch.full((n,), float(rows)), outs)
        return {"replica_losses": update_step(engine, xb, yb, rule, scales[rows], None, kind)}

    return one


def _scratch_step(first: Member, params: dict[str, torch.Tensor], blocks: int, rule: _Deferred) -> Step:
    """The scratch module's own hand-written gradients (`ScratchModule.hand_step`)."""
    names, shuffled = list(first.module.net.names), first.dm.shuffle
    n = len(params[names[0]])

    def one(xb: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        if blocks > 1:  # every block's replicas: the same rows (stride 0) or their own
            xb = together.rows_for(xb, True, blocks) if shuffled else xb[0].expand(n, *xb.shape[1:])
            yb = together.rows_for(yb, True, blocks) if shuffled else yb[0].expand(n, *yb.shape[1:])
        grads, outputs = first.module.hand_step(xb, yb, params)
        rule.begin()
        for key, name in enumerate(names):
            rule.apply(key, params[name], grads[name])
        return outputs

    return one


def _scheduled(scheduler: Any, optimizer: torch.optim.Optimizer) -> float:
    """The scheduler's next lr, stepped as Lightning steps it after each update."""
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": by design
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
    return float(optimizer.param_groups[0]["lr"])
