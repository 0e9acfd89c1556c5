"""An ensemble of replicas trains each seed exactly as a separate run would."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from losslab.engine.datamodule import TableDataModule
from losslab.engine.models import Ensemble, mlp
from losslab.engine.module import EnsembleModule, make_trainer
from losslab.engine.runtime import quiet_lightning
from losslab.recorders import HealthRecorder

SEEDS = [0, 1, 2]
EPOCHS = 80


def factory() -> torch.nn.Module:
    return mlp([1, 1], weight_init=torch.nn.init.xavier_uniform_, bias_init=torch.nn.init.zeros_)


def separate_run(seed: int, x: torch.Tensor, y: torch.Tensor, make_opt) -> list[float]:
    torch.manual_seed(seed)
    model = factory()
    opt = make_opt(model.parameters())
    losses = []
    for _ in range(EPOCHS):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return losses


@pytest.mark.parametrize(
    "make_opt",
    [
        partial(torch.optim.SGD, lr=0.01),
        partial(torch.optim.SGD, lr=1e-4),
        partial(torch.optim.Adam, lr=0.01),
    ],
    ids=["sgd-diverging", "sgd", "adam"],
)
def test_ensemble_equals_separate_runs(prepared, make_opt) -> None:
    quiet_lightning()
    dm = TableDataModule("data/linear/points.csv", ["x"], ["y"], root=str(prepared))
    dm.setup()
    dm.bind(SEEDS)
    module = EnsembleModule(Ensemble(factory, SEEDS), torch.nn.MSELoss(), make_opt)
    health = HealthRecorder()
    trainer = make_trainer(EPOCHS, [health])
    trainer.fit(module, datamodule=dm)
    records = health.records()
    for i, seed in enumerate(SEEDS):
        expected = separate_run(seed, dm.x, dm.y, make_opt)
        got = records["loss"][i].tolist()
        for e, (a, b) in enumerate(zip(got, expected, strict=True)):
            if math.isfinite(b):
                assert a == pytest.approx(b, rel=1e-5, abs=1e-6), f"seed {seed} epoch {e + 1}"
            else:
                assert not math.isfinite(a)
    assert set(records) >= {"loss", "grad_norm", "lr", "weight", "bias"}


def test_a_diverging_replica_does_not_touch_the_others() -> None:
    x = torch.arange(1, 21, dtype=torch.float32).unsqueeze(1)
    net = Ensemble(factory, [0, 1])
    with torch.no_grad():
        net.stacked["0__weight"][0].fill_(float("nan"))
    module = EnsembleModule(net, torch.nn.MSELoss(), partial(torch.optim.SGD, lr=1e-4))
    opt = module.configure_optimizers()
    xs = x.expand(2, *x.shape)
    losses = module.replica_losses(module(xs), 0.5 * xs)
    losses.sum().backward()
    opt.step()
    assert math.isnan(losses[0].item()) and math.isfinite(losses[1].item())
    assert torch.isfinite(net.stacked["0__weight"][1]).all()
    assert torch.isfinite(net.stacked["0__weight"].grad[1]).all()
