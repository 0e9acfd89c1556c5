"""`losslab.watch` beside plain PyTorch loops written here (not our models), in-process.

Each loop is the way people write it; the watch is the two lines around it. The verdict,
its confidence and its evidence number are asserted, and a healthy loop raises nothing.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import losslab
from losslab.doctor import Diagnosis, Watch


def _data(
    n: int = 256, flat: bool = False, nan_rows: tuple[int, ...] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    y = x[:, 0] - 0.5 * x[:, 1]
    for r in nan_rows:
        x[r, 0] = float("nan")
    return x, (y if flat else y[:, None])


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))


def _train(model: nn.Module, opt: torch.optim.Optimizer, loss_fn, x, y, epochs: int = 20, zero: bool = True,
           batch: int = 32) -> None:  # fmt: skip
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            if zero:
                opt.zero_grad()
            loss_fn(model(x[i : i + batch]), y[i : i + batch]).backward()
            opt.step()


def _watched(data: tuple[torch.Tensor, torch.Tensor], lr: float = 0.05, head_left_out: bool = False,
             **train) -> tuple[Watch, Diagnosis]:  # fmt: skip
    """The MLP trained by `_train` on `data` with SGD at `lr`, watched; (watch, report)."""
    m = _mlp()
    opt = torch.optim.SGD(m[0].parameters() if head_left_out else m.parameters(), lr=lr)
    w = losslab.watch(m, opt, nn.MSELoss())
    _train(m, opt, nn.MSELoss(), *data, **train)
    return w, w.report()


def test_healthy_loop_is_healthy_with_no_finding() -> None:
    _, d = _watched(_data())
    assert (d.cause, d.confidence, d.findings, d.seeds) == ("healthy", "high", [], ["improving"])
    json.dumps(d.to_dict(), allow_nan=False)  # the doctor's JSON, strict


def test_too_high_sgd_lr_is_lr_too_high_with_the_curvature_number() -> None:
    _, d = _watched(_data(), lr=3.0)
    assert d.cause == "lr_too_high" and d.confidence == "medium"  # no counterfactual ran
    f = d.findings[0]
    assert f.evidence["ratio"] > 1 and f.evidence["critical_lr"] < 3.0
    assert f.evidence["ratio"] == pytest.approx(3.0 / f.evidence["critical_lr"], rel=1e-6)
    assert any("losslab.diagnose(" in n for n in d.notes)  # says how to verify


def test_targets_of_shape_n_against_outputs_n_1_is_shape_broadcast() -> None:
    with pytest.warns(UserWarning):  # PyTorch's own warning, which scrolls by
        _, d = _watched(_data(flat=True), epochs=3)
    assert (d.cause, d.confidence) == ("shape_broadcast", "high")
    assert d.findings[0].evidence == {"compared_pairs": 32.0 * 32, "expected_pairs": 32.0}


def test_a_hand_written_loss_that_broadcasts_is_seen_too() -> None:
    m = _mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    w = losslab.watch(m, opt)  # no loss_fn: curvature is skipped, the loop is still watched

    def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((out - y) ** 2).mean()

    _train(m, opt, mse, *_data(flat=True), epochs=3)
    d = w.report()
    assert d.cause == "shape_broadcast" and "outputs - targets" in d.findings[0].summary


def test_nan_rows_are_nonfinite_data_at_the_first_bad_batch() -> None:
    _, d = _watched(_data(nan_rows=(100, 101)), epochs=2)
    assert (d.cause, d.confidence) == ("nonfinite_data", "high")
    assert d.findings[0].evidence == {"rows": 2.0, "step": 3.0}  # rows 100, 101: the 4th batch of 32


def test_a_loop_without_zero_grad_is_stale_gradients_not_lr_too_high() -> None:
    _, d = _watched(_data(), zero=False)
    assert d.seeds[0] in ("diverged", "rising")  # it blows up like a too-high lr would
    assert (d.cause, d.confidence) == ("stale_gradients", "high")
    ev = d.findings[0].evidence
    assert ev["carried_steps"] == ev["checked_steps"] > 0
    assert "zero_grad" in d.findings[0].summary


def test_a_layer_left_out_of_the_optimizer_is_parameters_not_updated() -> None:
    _, d = _watched(_data(), head_left_out=True, epochs=3)  # the head is forgotten
    assert (d.cause, d.confidence) == ("parameters_not_updated", "high")
    assert "2.weight" in d.findings[0].summary and d.findings[0].evidence == {"parameters": 2.0}


def test_gradient_accumulation_is_not_stale() -> None:
    m = _mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    w = losslab.watch(m, opt, nn.MSELoss())
    x, y = _data()
    for _ in range(20):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            for j in (i, i + 32):  # two micro-batches, one step: deliberate accumulation
                (nn.functional.mse_loss(m(x[j : j + 32]), y[j : j + 32]) / 2).backward()
            opt.step()
    assert w.report().cause == "healthy"


def test_bad_input_is_one_line_and_never_breaks_the_loop(capsys: pytest.CaptureFixture[str]) -> None:
    w = losslab.watch(nn.ReLU(), torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["losslab.watch: stopped watching (the model has no parameters: there is nothing to watch)"]
    assert w.report().confidence == "low"

    m = _mlp()
    opt = torch.optim.LBFGS(m.parameters(), lr=0.1)  # no stability bound known for it
    w = losslab.watch(m, opt, nn.MSELoss())
    x, y = _data()
    for _ in range(3):
        opt.step(lambda: (opt.zero_grad(), (loss := nn.functional.mse_loss(m(x), y)).backward(), loss)[-1])
    d = w.report()
    assert any("no stability bound is known for LBFGS" in n for n in d.notes)

    m = _mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    w = losslab.watch(m, opt, nn.MSELoss())
    for _ in range(5):
        opt.zero_grad()
        per_row = (m(x) - y) ** 2  # not reduced: backward needs its gradient argument
        per_row.backward(torch.ones_like(per_row) / len(x))
        opt.step()
    d = w.report()
    assert any("not a scalar" in n for n in d.notes) and math.isfinite(w.seen.losses[-1])


def test_saturated_tanh_units_are_noted() -> None:
    x, y = _data()
    w, d = _watched((x * 1000, y), lr=1e-4, epochs=2)  # every tanh input far past ±4
    assert w.seen.saturated["1"] > 0.5
    assert any("units after `1` are saturated" in n for n in d.notes)
