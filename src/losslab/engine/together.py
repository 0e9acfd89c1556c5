"""Which variants of a scenario train as one program on the engine's loop, and their storage.

A scenario's variants often differ only in a learning rate, an init or an epoch budget
(linear's broken and sgd_small_lr). On these tiny models an update costs its framework
overhead more than its arithmetic, so k variants in one stacked update cost less than k
updates. `groups` puts together the variants the engine's loop trains as one stack bit for
bit as it trains each alone: the same batches (data config and seeds), model shape, module,
loss and optimizer family with its options, and an update made only of correctly rounded
elementwise arithmetic (`stackable`); per variant stay its lr and update rule (on its own
rows, `engine.direct`), its lr scheduler, its initial weights and its epochs (at its end it
leaves the stack, its weights frozen there). Twins, whose training is identical but for the
epoch budget (relu_head's linear_head_adam and its 1000-epoch twin), share one block of
replicas whatever the model: the shorter one is the longer one's prefix.

`combine` lays every block's parameters into one tensor per parameter name and points each
variant's ensemble at its block's rows: the loop updates the combined tensors in place and
every recorder reads its own variant's live weights. tests/test_direct.py checks that a
group trains each variant bit for bit as it trains alone."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from losslab.engine.batched import layout
from losslab.engine.hooks import FitHooks, State
from losslab.engine.losses import kind_of
from losslab.engine.module import EnsembleModule

# What decides a variant's training arithmetic, beside its epoch budget.
TRAINING = ("data", "model", "loss", "optimizer", "scheduler", "module", "seeds")


@dataclass
class Member:
    """One variant in a fit on the engine's loop: its config, module (whose `net` is
    trained), datamodule and watchers; `state` and `rows` are the loop's."""

    cfg: DictConfig
    module: Any
    dm: Any
    hooks: Sequence[FitHooks]
    state: State | None = None
    rows: slice = field(default_factory=lambda: slice(None))
    optimizer: Any = None
    scheduler: Any = None


def _plain(cfg: DictConfig, key: str) -> Any:
    value = cfg.get(key)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _key(cfg: DictConfig, keys: Sequence[str], drop: dict[str, set[str]] | None = None) -> str:
    """The config's values under `keys` as one comparable string, `drop` = {key: fields}
    left out."""
    out = {}
    for k in keys:
        value = _plain(cfg, k)
        if drop and k in drop and isinstance(value, dict):
            value = {f: v for f, v in value.items() if f not in drop[k]}
        out[k] = value
    return json.dumps(out, sort_keys=True, default=str)


def _shapes(module: Any) -> tuple:
    """The model's kind and shape: what the stacked update sees (not its init)."""
    shapes = tuple((k, tuple(v.shape)) for k, v in module.net.params().items())
    return (type(module).__name__, repr(module.net.template), shapes)


# Elementwise functions that ATen computes with a vectorized (Sleef) kernel on most of a
# tensor and with the scalar libm function on its last (size mod 2·vector width) elements:
# the two differ in the last bit, so a replica's result would depend on where its rows
# fall in a stacked tensor, i.e. on which variants train beside it.
TRANSCENDENTAL = frozenset({"sigmoid", "tanh"})


def stackable(member: Member) -> bool:
    """Whether this member's update uses only correctly rounded elementwise arithmetic
    (+, −, ×, ÷, max, select: the same bits in either kernel), so it can share stacked
    tensors with other variants bit for bit: an `mlp` with ReLU or no activations under
    the MSE; not a sigmoid, tanh, a BCE (exp, log) or the scratch module (sigmoid)."""
    if type(member.module) is not EnsembleModule or kind_of(member.cfg) != "mse":
        return False
    try:
        _, hidden, head = layout(member.module.net.template)
    except ValueError:
        return False
    return not {hidden, head} & TRANSCENDENTAL


def signature(member: Member) -> tuple:
    """Members with equal signatures train as one stack: for a `stackable` one, everything
    but lr, init, schedule and epochs equal; for another, everything but epochs (twins that
    share one block of replicas: no stacked tensor mixes variants)."""
    if not stackable(member):
        return ("twins", _key(member.cfg, TRAINING), _shapes(member.module))
    keys = ("data", "loss", "optimizer", "module", "seeds")  # the module's own options: its bugs
    drop = {"optimizer": {"lr"}, "module": {"optimizer", "scheduler"}}
    return (_key(member.cfg, keys, drop), _shapes(member.module))


def _same_start(a: Member, b: Member) -> bool:
    pa, pb = a.module.net.params(), b.module.net.params()
    return all(torch.equal(pa[k], pb[k]) for k in pa)


def groups(members: Sequence[Member]) -> list[list[int]]:
    """Indices of the members that train together, each group in the members' order, the
    groups in the order of their first member. Twins that do not start from the same
    weights (a custom init that ignores the seed) train apart."""
    found: dict[tuple, list[int]] = {}
    for i, m in enumerate(members):
        found.setdefault(signature(m), []).append(i)
    out = []
    for key, group in found.items():
        if key[0] != "twins":
            out.append(group)
            continue
        for block in blocks([members[i] for i in group]):  # twins: one block, no mixed tensor
            out.append([i for i in group if any(members[i] is m for m in block)])
    return sorted(out, key=lambda g: g[0])


def blocks(members: Sequence[Member]) -> list[list[Member]]:
    """A group's members in blocks of replicas: members that train identically (the same
    config but for the epoch budget, the same initial weights) share one."""
    out: list[tuple[str, list[Member]]] = []
    for m in members:
        key = _key(m.cfg, TRAINING)
        for known, block in out:
            if known == key and _same_start(block[0], m):
                block.append(m)
                break
        else:
            out.append((key, [m]))
    return [block for _, block in out]


def combine(parts: list[list[Member]]) -> dict[str, torch.Tensor]:
    """One tensor per parameter name over every block's replicas; each member's ensemble
    then holds views of its block's rows (`Member.rows`). A variant alone keeps its own
    storage."""
    first = parts[0][0].module.net
    if len(parts) == 1 and len(parts[0]) == 1:
        return {k: v.data for k, v in first.params().items()}
    combined = {k: torch.cat([b[0].module.net.params()[k].data for b in parts]) for k in first.names}
    start = 0
    for block in parts:
        n = len(block[0].module.net.seeds)
        for m in block:
            m.rows = slice(start, start + n)
            for k, p in m.module.net.params().items():
                p.data = combined[k][m.rows]
        start += n
    return combined


def release(member: Member) -> None:
    """A member at its last epoch: its weights get their own storage, so the updates that
    go on for the others leave them as they are (a variant alone has its own already)."""
    if member.rows == slice(None):
        return
    for p in member.module.net.params().values():
        p.data = p.data.clone()


def lrs(parts: list[list[Member]]) -> list[float]:
    """Each block's lr: its members share one schedule; the longest-training one has
    stepped it as far as the block has trained."""
    return [max(block, key=lambda m: m.state.epochs).state.lr for block in parts]


def rows_for(x: torch.Tensor, shuffled: bool, blocks: int) -> torch.Tensor:
    """A batch [seeds, rows, ...] for every block: the rows shared when every replica
    reads the same ones (`x[0]`), else each block its seeds' own."""
    if not shuffled:
        return x[0]
    return x if blocks == 1 else x.repeat(blocks, *[1] * (x.ndim - 1))
