"""The optimizer step of the batched engine: torch.optim's own arithmetic, each
configuration with its own learning rate.

`SGD` and `Adam` apply, per stacked parameter [C, ...], exactly the operations of
`torch.optim.SGD` (no momentum) and `torch.optim.Adam`'s single-tensor path (the one it
takes on a CPU), in their order and precision, with lr a tensor [C] instead of one float.
SGD's own kernel is a fused multiply-add (one rounding) where the per-configuration
product rounds twice: a last-bit difference; after `set_lr` (one lr for all) both rules
are bitwise torch.optim's (tests/test_direct.py). `unsupported` says what a config asks
that the engine does not do (`engine.losses` has the losses), so a map refuses it instead
of training something else.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from losslab.engine.losses import LOSSES, kind_of

SGD_TARGET, ADAM_TARGET = "torch.optim.SGD", "torch.optim.Adam"
# Options the engine leaves out, and the value that makes each a no-op.
NO_OP = {
    "momentum": 0,
    "dampening": 0,
    "weight_decay": 0,
    "nesterov": False,
    "maximize": False,
    "amsgrad": False,
}


def _per(lr: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return lr.view(-1, *[1] * (p.ndim - 1))


class SGD:
    """p ← p − lr·g (torch.optim.SGD without momentum: `param.add_(grad, alpha=-lr)`)."""

    def __init__(self, lr: torch.Tensor, dtype: torch.dtype = torch.float32) -> None:
        self.lr = lr.to(dtype)  # the kernel's float32 lr
        self.one: float | None = None  # one lr for all: torch's own fused kernel

    def begin(self) -> None:
        """Called once per update, before its parameters."""

    def apply(self, key: int, p: torch.Tensor, g: torch.Tensor) -> None:
        if self.one is not None:  # a multiply-add in one rounding, as torch.optim.SGD's step
            p.add_(g, alpha=-self.one)
        else:  # one lr per configuration: the product rounded, then the sum (equal but for
            p.sub_(_per(self.lr, p) * g)  # a last bit where lr·g is not small beside p)

    def set_lr(self, lr: float) -> None:
        """One lr for every configuration from now on (a schedule's step): then the update
        is bitwise torch.optim.SGD's."""
        self.lr, self.one = torch.full_like(self.lr, lr), lr


class Adam:
    """torch.optim.Adam (no weight decay, no AMSGrad): moments per parameter, the bias
    corrections in double as Python floats, lr/(1-β₁ᵗ) in double then float32."""

    def __init__(
        self, lr: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.lr = lr.double()  # torch divides the float lr in double precision
        self.b1, self.b2, self.eps = float(betas[0]), float(betas[1]), float(eps)
        self.t, self.size, self.root = 0, self.lr, 1.0
        self.moments: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def begin(self) -> None:
        self.t += 1
        self.size = (self.lr / (1 - self.b1**self.t)).float()
        self.root = (1 - self.b2**self.t) ** 0.5

    def apply(self, key: int, p: torch.Tensor, g: torch.Tensor) -> None:
        if key not in self.moments:
            self.moments[key] = (torch.zeros_like(p), torch.zeros_like(p))
        m, v = self.moments[key]
        m.lerp_(g, 1 - self.b1)
        v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
        denom = (v.sqrt() / self.root).add_(self.eps)
        p.add_((-_per(self.size, p) * m) / denom)  # addcdiv_'s (value·m)/denom, value = −lr/bc1

    def set_lr(self, lr: float) -> None:
        """One lr for every configuration from now on (a schedule's step)."""
        self.lr = torch.full_like(self.lr, lr)


def optimizer_unsupported(cfg: DictConfig) -> str | None:
    """What in a config's optimizer the engine's update rules leave out, or None."""
    opt = cfg.get("optimizer") or {}
    target = opt.get("_target_")
    if target not in (SGD_TARGET, ADAM_TARGET):
        return f"its optimizer is {target}"
    for key, none in NO_OP.items():
        if opt.get(key, none) != none:
            return f"its optimizer sets {key}={opt.get(key)}"
    return None


def unsupported(cfg: DictConfig, schedules: bool = False) -> str | None:
    """What in a composed run config the engine cannot train as `losslab run` does, or None.
    `schedules`: the caller steps the config's own lr scheduler (`engine.direct` does)."""
    if cfg.module.get("_target_") != "losslab.engine.module.EnsembleModule":
        return f"it trains with {cfg.module.get('_target_')}"
    reason = optimizer_unsupported(cfg)
    if reason:
        return reason
    loss = cfg.get("loss") or {}
    if loss.get("_target_") not in LOSSES:
        return f"its loss is {loss.get('_target_')}"
    if kind_of(cfg) is None:
        return f"its targets have shape '{cfg.data.target_shape}' with {loss.get('_target_')}"
    for key, none in (("reduction", "mean"), ("weight", None), ("pos_weight", None)):
        if loss.get(key, none) != none:
            return f"its loss sets {key}={loss.get(key)}"
    if cfg.get("scheduler") is not None and not schedules:
        return "it has an lr schedule"
    return None


def update_of(cfg: DictConfig, lr: torch.Tensor) -> SGD | Adam:
    """The update rule of a config's optimizer, with lr [C] per configuration."""
    opt = cfg.optimizer
    if opt.get("_target_") == ADAM_TARGET:
        return Adam(lr, tuple(opt.get("betas", (0.9, 0.999))), float(opt.get("eps", 1e-8)))
    return SGD(lr)
