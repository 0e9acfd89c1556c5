"""Seeing inside someone else's training step without changing a line of it.

`Spy` is a TorchFunctionMode opened between the model's forward and the optimizer step (or
around one Lightning training step): it sees only the few torch calls of the loss, so it
costs microseconds, and it sees what no hook can: the targets, the shapes a loss compares
(`F.mse_loss` and friends, or a hand-written `out - y`), and the tensor `.backward()` is
called on. `Activity` counts, over a burst of batches, which ReLU units ever fire and which
tanh/sigmoid units sit pinned at their ends, through forward hooks on those modules.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack

# Losses whose first two arguments are (outputs, targets) of the same shape.
LOSSES = (
    F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss,
    F.binary_cross_entropy, F.binary_cross_entropy_with_logits,
)  # fmt: skip
DIFFERENCES = ("sub", "__sub__", "__rsub__", "rsub")


def widened(a: torch.Size, b: torch.Size) -> torch.Size | None:
    """The broadcast shape of a and b when it is larger than both (outputs (N, 1) against
    targets (N,) -> (N, N)); None when the shapes agree or one simply broadcasts into the other."""
    if a == b:
        return None
    try:
        both = torch.broadcast_shapes(a, b)
    except RuntimeError:
        return None
    return both if both.numel() > max(a.numel(), b.numel()) else None


class Spy(TorchFunctionMode):
    """The loss calls of one training step. `on_backward(loss)` is called with the tensor
    `.backward()` is called on, before the backward runs; `on_target(y)` with the targets."""

    def __init__(
        self,
        on_target: Callable[[torch.Tensor], None],
        on_backward: Callable[[torch.Tensor], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        super().__init__()
        self.on_target, self.on_backward, self.on_error = on_target, on_backward, on_error
        self.output: torch.Tensor | None = None  # the model's output, where a hook saw it
        self.broadcast: tuple[tuple[int, ...], tuple[int, ...], str] | None = None
        self.open_ = False
        self._targets_seen = False
        self._compared: set[tuple[torch.Size, torch.Size]] = set()  # each pair of shapes once

    def open(self, output: torch.Tensor | None = None) -> None:
        if self.open_:
            self.close()
        self.output, self._targets_seen, self.open_ = output, False, True
        self.__enter__()

    def close(self) -> None:
        """Leave the mode, only if it is the innermost one (a user's own mode stays)."""
        if not self.open_:
            return
        stack = _get_current_function_mode_stack()
        if stack and stack[-1] is self:
            self.__exit__(None, None, None)
            self.open_ = False
        self.output = None

    def see_target(self, y: object) -> None:
        if not self._targets_seen and torch.is_tensor(y):
            self._targets_seen = True
            self.on_target(y)

    def compare(self, out: torch.Tensor, y: torch.Tensor, call: str) -> None:
        pair = (out.shape, y.shape)
        if self.broadcast is not None or pair in self._compared:
            return
        self._compared.add(pair)
        if widened(*pair) is not None:
            self.broadcast = (tuple(out.shape), tuple(y.shape), call)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            if func is torch.Tensor.backward and self.on_backward is not None and args:
                self.on_backward(args[0])
            elif func in LOSSES and len(args) >= 2 and torch.is_tensor(args[0]) and torch.is_tensor(args[1]):
                self.compare(args[0], args[1], func.__name__)
                self.see_target(args[1])
            elif getattr(func, "__name__", "") in DIFFERENCES and len(args) == 2 and self.output is not None:
                a, b = args
                if a is self.output and torch.is_tensor(b):
                    self.compare(a, b, "outputs - targets")
                    self.see_target(b)
                elif b is self.output and torch.is_tensor(a):
                    self.compare(b, a, "targets - outputs")
                    self.see_target(a)
        except Exception as e:  # the user's training must never fail because of the watch
            if self.on_error is not None:
                self.on_error(e)
        return func(*args, **kwargs)


SQUASHING = (nn.Tanh, nn.Sigmoid)
PINNED = 0.999  # |tanh| (or a sigmoid's distance from 0.5, doubled) past this: saturated


class Activity:
    """Per activation module over a burst of batches: units never active (ReLU) and units
    pinned at their ends on nearly every sample (tanh, sigmoid). Hooks exist only during a
    burst (`start` … `stop`), so the other steps pay nothing."""

    def __init__(self, model: nn.Module, rows: int = 512, batches: int = 8) -> None:
        self.modules = {name: m for name, m in model.named_modules() if isinstance(m, (nn.ReLU, *SQUASHING))}
        self.rows_wanted, self.batches_wanted = rows, batches
        self._handles: list = []
        self.alive: dict[str, torch.Tensor] = {}
        self.pinned: dict[str, torch.Tensor] = {}
        self.rows = 0
        self.batches = 0
        self.paused = False  # the watch's own forward passes (curvature) are not counted

    @property
    def running(self) -> bool:
        return bool(self._handles)

    def start(self) -> None:
        if self.running or not self.modules:
            return
        self.alive, self.pinned, self.rows, self.batches = {}, {}, 0, 0
        for name, m in self.modules.items():
            self._handles.append(m.register_forward_hook(self._hook(name, isinstance(m, nn.ReLU))))

    def _hook(self, name: str, relu: bool) -> Callable:
        def hook(_m: nn.Module, _inp: object, out: object) -> None:
            if self.paused or not torch.is_grad_enabled() or not torch.is_tensor(out) or out.ndim < 2:
                return
            o = out.detach()
            if relu:
                fired = (o > 0).flatten(1).any(0)
                self.alive[name] = fired if name not in self.alive else self.alive[name] | fired
            else:
                centred = o if isinstance(self.modules[name], nn.Tanh) else 2 * o - 1
                pinned = (centred.abs() > PINNED).flatten(1).float().sum(0)
                self.pinned[name] = pinned if name not in self.pinned else self.pinned[name] + pinned
            if name == next(iter(self.modules)):
                self.rows += len(o)

        return hook

    def batch_done(self) -> bool:
        """Count a batch; True once the burst has seen enough rows (or batches)."""
        if not self.running:
            return False
        self.batches += 1
        return self.rows >= self.rows_wanted or self.batches >= self.batches_wanted

    def stop(self) -> tuple[dict[str, float], dict[str, float]]:
        """Remove the hooks; (dead share per ReLU module, saturated share per squashing one)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        dead = {k: float((~v).float().mean()) for k, v in self.alive.items()}
        rows = max(self.rows, 1)
        sat = {k: float((v / rows > 0.99).float().mean()) for k, v in self.pinned.items()}
        return dead, sat
