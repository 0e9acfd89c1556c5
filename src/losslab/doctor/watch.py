"""`losslab.watch`: the doctor beside a plain PyTorch loop, with nothing in the loop changed.

    watch = losslab.watch(model, optimizer, loss_fn)
    for x, y in loader:                       # the loop exactly as it was
        optimizer.zero_grad(); loss_fn(model(x), y).backward(); optimizer.step()
    print(watch.report())                     # watch.report().to_dict(): the doctor's JSON

Hooks only: a forward pre/post hook on the model (input batches, the output), a `Spy` mode
from the output to the optimizer step (the targets, the shapes the loss compares, the
tensor `.backward()` runs on, gradients still there from the last step) and the optimizer's
step pre/post hooks (the first update, gradient norms, curvature moments).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from losslab.doctor.observer import LANCZOS, Observer, guarded
from losslab.doctor.seen import sampled
from losslab.probes import top_eigenvalue


class Watch(Observer):
    """What one plain training loop did, as the doctor reads it; `report()` at any time."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable | None = None,
                 curvature: bool = True) -> None:  # fmt: skip
        self.optimizer, self.loss_fn = optimizer, loss_fn
        self._stepped = False
        self._g0 = math.nan
        self._handles: list = []
        super().__init__(model, curvature)
        if self.off:
            return
        self.read_optimizer(optimizer)
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        trainable = [p for _, p in self.named if p.requires_grad and id(p) in held]
        self._probe = min(trainable, key=lambda p: p.numel()) if trainable else None
        if loss_fn is None:
            self.seen.note("no loss function was given to watch(): curvature was not measured")
        self._handles = [
            model.register_forward_pre_hook(self._pre),
            model.register_forward_hook(self._post),
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_step_post_hook(self._after_step),
        ]
        # A loss module is seen by its own forward hook (no mode on most steps, once it has
        # fired); a loss function, or another loss than the one given, by the Spy.
        self._hook_works = self._hook_fired = False
        if isinstance(loss_fn, nn.Module):
            self._handles.append(loss_fn.register_forward_hook(self._loss_hook))
        if self._probe is not None:  # the gradient as backward is about to add to it
            self._handles.append(self._probe.register_hook(self._incoming))

    def close(self) -> None:
        """Remove every hook (the training runs as if never watched)."""
        super().close()
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @guarded
    def _pre(self, _module: nn.Module, args: tuple) -> None:
        if not torch.is_grad_enabled():
            return
        self.spy.close()
        if args and torch.is_tensor(args[0]):
            self.this_step({"inputs": args[0]})
            self.inputs(args[0])
        if sampled(self.seen.steps) and not self.activity.running:
            self.activity.start()

    @guarded
    def _post(self, _module: nn.Module, _args: tuple, out: object) -> None:
        if not torch.is_grad_enabled():
            return
        if self.activity.batch_done():
            self.activity_done()
        self._hook_fired = False
        if not self._hook_works or sampled(self.seen.steps):
            self.spy.open(out if torch.is_tensor(out) else None)

    def backward(self, loss: torch.Tensor) -> None:
        """Called by the Spy just before `loss.backward()` runs (a loss function's value)."""
        if not self._hook_fired:
            self._loss(loss)

    @guarded
    def _loss_hook(self, _module: nn.Module, args: tuple, out: object) -> None:
        if not torch.is_grad_enabled() or not torch.is_tensor(out):
            return
        if len(args) >= 2 and torch.is_tensor(args[0]) and torch.is_tensor(args[1]):
            self.spy.compare(args[0], args[1], f"{type(_module).__name__}")
            self.target(args[1])
        self._loss(out)
        self._hook_works = self._hook_fired = True

    def _loss(self, loss: torch.Tensor) -> None:
        if loss.numel() != 1:
            self.seen.note(f"the loss has shape {tuple(loss.shape)}, not a scalar: its mean is watched")
            self.loss_seen(float(loss.detach().float().mean()))
        else:
            self.loss_seen(loss.item())

    @guarded
    def _incoming(self, grad: torch.Tensor) -> None:
        """The probe parameter's gradient hook: runs inside backward, before accumulation, so
        `.grad` still holds what earlier backward calls left. Left there across a step, it
        is stale (deliberate accumulation has no step in between)."""
        s = self.seen
        if self._stepped and sampled(s.steps):  # a few checks decide it; the rest pay nothing
            s.checked += 1
            g = self._probe.grad
            s.carried += int(g is not None and bool(g.any()))
        self._stepped = False

    @guarded
    def _before_step(self, _opt: torch.optim.Optimizer, _args: tuple, _kwargs: dict) -> None:
        self.spy.close()
        s, step = self.seen, self.seen.steps
        if step == 0:
            self.first_step([self.optimizer], self.model)
        if sampled(step):
            norms = [
                p.grad.detach().float().pow(2).sum() for p in self.model.parameters() if p.grad is not None
            ]
            g = float(torch.stack(norms).sum().sqrt()) if norms else math.nan
            self._g0 = g if step == 0 else self._g0
            s.carry_growth = g / self._g0 if self._g0 > 0 else math.nan
            self.read_optimizer(self.optimizer)
        self.maybe_moments()

    @guarded
    def _after_step(self, _opt: torch.optim.Optimizer, _args: tuple, _kwargs: dict) -> None:
        self.stepped()
        self._stepped = True

    def loss_at(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> float:
        if self.loss_fn is None or self.y is None:
            return math.nan
        loss_fn, model, y = self.loss_fn, self.model, self.y[: len(x)]
        return top_eigenvalue(lambda p: loss_fn(functional_call(model, p, (x,)), y), params, LANCZOS)


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable | None = None,
    curvature: bool = True,
) -> Watch:
    """Watch a plain PyTorch training loop; `print(watch.report())` when it is done.

    `loss_fn` (an nn.Module or a function of (outputs, targets)) is used only to measure
    curvature on a fixed batch; the loss values, targets and shapes are seen in the loop.
    `curvature=False` skips the Hessian-vector products (the lr is then judged from the
    first update and the loss alone)."""
    return Watch(model, optimizer, loss_fn, curvature)
