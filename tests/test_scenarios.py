"""The hand-written backward behind scratch_backprop, and each scenario's symptom, fitted and
judged in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import grad

from losslab.core.config import compose
from losslab.core.criteria import Expectations
from losslab.core.data import two_moons
from losslab.core.results import Verdict
from losslab.engine.runtime import quiet_lightning
from losslab.engine.scratch import ScratchNet, backward, bce, forward
from losslab.fit import fit
from losslab.judge import judge
from losslab.probes import relative_errors


def _moons(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    cols = two_moons(n, noise=0.1, seed=3)
    x = torch.tensor([cols["x1"], cols["x2"]], dtype=torch.float64).T
    return x, torch.tensor(cols["y"], dtype=torch.float64).unsqueeze(1)


@pytest.mark.parametrize(
    ("bugs", "agrees"),
    [
        (frozenset(), True),
        (frozenset({"chain_rule"}), False),
        (frozenset({"bias_grad"}), False),
        (frozenset({"feature_mean"}), False),
        (frozenset({"chain_rule", "bias_grad", "feature_mean"}), False),
    ],
)
def test_hand_written_gradients_against_autograd(bugs: frozenset, agrees: bool) -> None:
    x, y = _moons()
    torch.manual_seed(0)
    net = ScratchNet([2, 5, 1], init_div=10).double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    auto = grad(lambda p: bce(forward(p, x, 2, "sigmoid")[0], y))(params)
    _, hand, _ = backward(params, x, y, 2, "sigmoid", bugs)
    errors = relative_errors(
        {k: v.unsqueeze(0) for k, v in hand.items()}, {k: v.unsqueeze(0) for k, v in auto.items()}
    )
    worst = max(e.item() for e in errors.values())
    assert (worst < 1e-12) if agrees else (worst > 1e-2), (bugs, errors)


def _judged(project: Path, *overrides: str) -> Verdict:
    """One variant fitted and judged in-process, seeds 0 and 1 (what `losslab run` does,
    without the process, the tracking store and the printed table)."""
    quiet_lightning()
    cfg = compose([*overrides, "seeds=[0,1]"], project)
    return judge(fit(cfg), Expectations.of(cfg))


def _median(v: Verdict, name: str) -> float:
    return float(np.median(v.records.finals[name]))


def test_xor_broken_rises_and_the_shape_trap_is_called_out(prepared: Path) -> None:
    assert [o.label for o in _judged(prepared, "scenario=xor", "variant=broken").outcomes] == ["rising"] * 2
    v = _judged(prepared, "scenario=xor", "variant=shape_bug")
    assert len(v.records.warnings) == 1 and "broadcast to (4, 4)" in v.records.warnings[0]
    outs = [_median(v, f"out_{k}") for k in ("00", "01", "10", "11")]
    assert outs == pytest.approx([0.5] * 4, abs=0.01)  # calm, and it learned only the mean
    assert v.check.ok


def test_relu_head_broken_is_stuck_with_a_dead_head_and_accuracy_is_refused(prepared: Path) -> None:
    v = _judged(prepared, "scenario=relu_head", "variant=broken")
    assert [o.label for o in v.outcomes] == ["stalled"] * 2
    assert v.records.finals["head_dead_final"].tolist() == [1.0, 1.0]
    assert v.records.finals["pred_x900"].tolist() == [0.0, 0.0]
    assert any("'accuracy' on a regression target is meaningless" in w for w in v.records.warnings)


def test_scratch_backprop_fixed_agrees_with_autograd_and_a_bug_does_not(prepared: Path) -> None:
    v = _judged(prepared, "scenario=scratch_backprop", "variant=fixed_xor")
    assert [o.label for o in v.outcomes] == ["converged"] * 2
    assert v.records.finals["gradcheck_max_rel_err"].max() < 1e-8
    v = _judged(prepared, "scenario=scratch_backprop", "variant=only_chain_rule", "fit.epochs=500")
    assert v.records.finals["gradcheck_max_rel_err"].min() > 0.1
