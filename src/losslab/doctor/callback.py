"""`losslab.DoctorCallback`: the doctor inside any Lightning fit.

    trainer = Trainer(callbacks=[losslab.DoctorCallback()])

Per batch it reads the loss and checks the batch for NaN/inf; at a few chosen steps it
opens a `Spy` around the training step (the shapes the loss compares), counts dead and
saturated units, reads gradient norms, and measures curvature on a fixed batch through
the module's own `training_step` (at the first update, after a few steps, at the first
sharp rise). At the end of the fit, or at the first non-finite loss with
`stop_on_nonfinite=True`, it prints the doctor's table (one line when healthy), writes
`diagnosis.json` into the trainer's log dir and, under an MLFlowLogger, tags the run
(`diagnosis.cause`, `diagnosis.confidence`) and attaches `diagnosis.md`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from losslab.doctor.observer import LANCZOS, ROWS, Observer, guarded
from losslab.doctor.report import Diagnosis
from losslab.doctor.seen import sampled
from losslab.probes import top_eigenvalue


def _callback_bases() -> tuple[type, ...]:
    """Lightning ships as `pytorch_lightning` and as `lightning.pytorch`; a Trainer accepts
    only its own package's Callback, so the doctor is one of each that is installed."""
    bases: list[type] = []
    try:
        from pytorch_lightning import Callback as Classic  # Deferred: either package may be missing

        bases.append(Classic)
    except ImportError:
        pass
    try:
        from lightning.pytorch import Callback as Unified  # Deferred: either package may be missing

        bases.append(Unified)
    except ImportError:
        pass
    return tuple(bases) or (object,)


def _tensors(batch: Any) -> list[torch.Tensor]:
    """A batch's tensors in order: (x, y), [x, y], {"x": …, "y": …} or one tensor."""
    if torch.is_tensor(batch):
        return [batch]
    if isinstance(batch, dict):
        return [v for v in batch.values() if torch.is_tensor(v)]
    if isinstance(batch, (list, tuple)):
        return [v for v in batch if torch.is_tensor(v)]
    return []


def _fixed(batch: Any) -> Any:
    """The first batch, its tensors cut to ROWS rows and copied (the curvature batch)."""
    cut = lambda t: t.detach()[:ROWS].clone() if torch.is_tensor(t) else t  # noqa: E731
    if isinstance(batch, (list, tuple)):
        return type(batch)(cut(t) for t in batch)
    if isinstance(batch, dict):
        return {k: cut(v) for k, v in batch.items()}
    return cut(batch)


def _with_inputs(batch: Any, x: torch.Tensor) -> Any:
    """The batch with its first tensor replaced (the fixed batch, standardised)."""
    if isinstance(batch, (list, tuple)):
        return type(batch)([x, *batch[1:]])
    if isinstance(batch, dict):
        first = next(k for k, v in batch.items() if torch.is_tensor(v))
        return {**batch, first: x}
    return x


class _Step(nn.Module):
    """A LightningModule's training_step as a function of its parameters."""

    def __init__(self, module: nn.Module, batch: Any) -> None:
        super().__init__()
        self.m, self.batch = module, batch

    def forward(self) -> torch.Tensor:
        out = self.m.training_step(self.batch, 0)
        return out["loss"] if isinstance(out, dict) else out


def _head(module: nn.Module) -> nn.Module:
    """Where the output activation is: the module, or its only non-loss child."""
    kids = [m for m in module.children() if not isinstance(m, nn.modules.loss._Loss)]
    return kids[0] if len(kids) == 1 else module


class _LightningObserver(Observer):
    name = "losslab.DoctorCallback"

    def __init__(self, module: nn.Module, curvature: bool) -> None:
        self.fixed: Any = None  # the first batch, cut to ROWS rows: curvature's batch
        super().__init__(module, curvature)

    def loss_at(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> float:
        if self.fixed is None:
            return math.nan
        step = _Step(self.model, _with_inputs(self.fixed, x))
        m = self.model
        m.log, m.log_dict = (lambda *a, **k: None), (lambda *a, **k: None)  # no metrics from our calls
        try:
            named = {f"m.{k}": v for k, v in params.items()}
            return top_eigenvalue(lambda p: functional_call(step, p, ()), named, LANCZOS)
        finally:
            del m.log, m.log_dict


class DoctorCallback(*_callback_bases()):  # type: ignore[misc]
    """The doctor on any LightningModule. `stop_on_nonfinite`: end the fit (and report) at
    the first inf/NaN loss; `curvature=False`: no Hessian-vector products; `verbose=False`:
    print nothing (the file and tags are still written)."""

    def __init__(self, stop_on_nonfinite: bool = False, curvature: bool = True, verbose: bool = True) -> None:
        super().__init__()
        self.stop_on_nonfinite, self.curvature, self.verbose = stop_on_nonfinite, curvature, verbose
        self.observer: _LightningObserver | None = None
        self.diagnosis: Diagnosis | None = None
        self.path: Path | None = None
        self._spying = False

    # -- Lightning hooks (each guarded: the callback is never why a fit fails) ------

    def on_fit_start(self, trainer: Any, pl_module: nn.Module) -> None:
        self.observer, self.diagnosis = _LightningObserver(pl_module, self.curvature), None
        if self.observer.off:
            return
        if trainer.optimizers:
            self.observer.read_optimizer(trainer.optimizers[0])

    @guarded
    def on_train_batch_start(self, trainer: Any, pl_module: nn.Module, batch: Any, batch_idx: int) -> None:
        obs = self.observer
        tensors = _tensors(batch)
        obs.this_step({("inputs" if i == 0 else f"targets ({i})" if len(tensors) > 2 else "targets"): t
                   for i, t in enumerate(tensors)})  # fmt: skip
        if obs.fixed is None and tensors:
            obs.fixed = _fixed(batch)
            obs.inputs(tensors[0])
            if len(tensors) > 1:
                obs.y = tensors[1].detach()[:ROWS].clone()
                if obs.y.is_floating_point():
                    obs.seen.distinct_targets = int(torch.unique(obs.y).numel())
        if sampled(obs.seen.steps):
            obs.spy.open(None)
            self._spying = True
            if not obs.activity.running:
                obs.activity.start()

    @guarded
    def on_before_backward(self, trainer: Any, pl_module: nn.Module, loss: torch.Tensor) -> None:
        if self._spying:
            self.observer.spy.close()
            self._spying = False

    @guarded
    def on_before_optimizer_step(self, trainer: Any, pl_module: nn.Module, optimizer: Any) -> None:
        obs = self.observer
        if obs.seen.steps == 0:
            obs.read_optimizer(optimizer)
            obs.first_step(list(trainer.optimizers), _head(pl_module))
        elif sampled(obs.seen.steps):
            obs.read_optimizer(optimizer)
        obs.maybe_moments()

    @guarded
    def on_train_batch_end(
        self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, idx: int
    ) -> None:
        obs = self.observer
        if self._spying:
            obs.spy.close()
            self._spying = False
        if obs.activity.batch_done():
            obs.activity_done()
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if torch.is_tensor(loss):
            if loss.numel() != 1:
                obs.seen.note(
                    f"training_step returned a loss of shape {tuple(loss.shape)}: its mean is watched"
                )
            obs.loss_seen(float(loss.detach().float().mean()), int(trainer.current_epoch))
        while obs.seen.steps < trainer.global_step:  # the optimizer stepped (once per accumulation)
            obs.stepped()
        bad = obs.seen.nonfinite_batch is not None or obs.seen.first_nonfinite is not None
        if self.stop_on_nonfinite and bad:
            trainer.should_stop = True
            self._finish(trainer)

    def on_fit_end(self, trainer: Any, pl_module: nn.Module) -> None:
        if self.diagnosis is None:
            self._finish(trainer)

    # -- the verdict ------------------------------------------------------------------

    def _finish(self, trainer: Any) -> None:
        obs = self.observer
        if obs is None:
            return
        try:
            obs.seen.accuracy_logged = any("acc" in k.lower() for k in trainer.callback_metrics)
            self.diagnosis = d = obs.report()
            if getattr(trainer, "is_global_zero", True):  # one report per fit, not one per rank
                self._say(d)
                self._write(trainer, d)
        except Exception as e:
            obs.fail(e)

    def _say(self, d: Diagnosis) -> None:
        if not self.verbose:
            return
        if d.cause == "healthy" and not d.findings:
            s = self.observer.seen
            span = f"{s.losses[0]:.4g} -> {s.losses[-1]:.4g}" if s.losses else "no loss seen"
            print(f"losslab doctor: healthy ({span} over {len(s.losses)} steps)")
            return
        print(d, flush=True)

    def _write(self, trainer: Any, d: Diagnosis) -> None:
        root = Path(trainer.log_dir or trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "diagnosis.json"
        self.path.write_text(json.dumps(d.to_dict(), indent=2) + "\n")
        for logger in trainer.loggers:
            if type(logger).__name__ == "MLFlowLogger" and getattr(logger, "run_id", None):
                client = logger.experiment
                client.set_tag(logger.run_id, "diagnosis.cause", d.cause)
                client.set_tag(logger.run_id, "diagnosis.confidence", d.confidence)
                client.log_text(logger.run_id, d.markdown(), "diagnosis.md")
