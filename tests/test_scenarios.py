"""The hand-written backward behind scratch_backprop, and each scenario's symptom via the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.func import grad

from losslab.core.data import two_moons
from losslab.engine.scratch import ScratchNet, backward, bce, forward
from losslab.probes import relative_errors
from projects import run_cli


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


def _run(project: Path, *args: str):
    r = run_cli(project, "run", *args, "seeds=[0,1]")
    assert r.returncode == 0, r.stderr
    return r


def test_xor_broken_rises_and_the_shape_trap_is_called_out(project: Path) -> None:
    assert "rising 2" in _run(project, "scenario=xor", "variant=broken").stdout
    r = _run(project, "scenario=xor", "variant=shape_bug")
    warning = [line for line in r.stderr.splitlines() if line.startswith("losslab: WARNING")]
    assert len(warning) == 1 and "broadcast to (4, 4)" in warning[0]
    line = next(line for line in r.stdout.splitlines() if line.startswith("shape_bug"))
    outs = [float(line.split(f"out_{k}=")[1].split(";")[0]) for k in ("00", "01", "10", "11")]
    assert outs == pytest.approx([0.5] * 4, abs=0.01)  # calm, and it learned only the mean


def test_relu_head_broken_is_stuck_with_a_dead_head_and_accuracy_is_refused(project: Path) -> None:
    r = _run(project, "scenario=relu_head", "variant=broken")
    assert "stalled 2" in r.stdout
    assert "head_dead_final=1" in r.stdout and "pred_x900=0" in r.stdout
    assert "'accuracy' on a regression target is meaningless" in r.stderr


def test_scratch_backprop_fixed_agrees_with_autograd_and_a_bug_does_not(project: Path) -> None:
    r = _run(project, "scenario=scratch_backprop", "variant=fixed_xor")
    assert "converged 2" in r.stdout
    line = next(line for line in r.stdout.splitlines() if line.startswith("fixed_xor"))
    err = float(line.split("gradcheck_max_rel_err=")[1].split(";")[0])
    assert err < 1e-8
    r = _run(project, "scenario=scratch_backprop", "variant=only_chain_rule", "fit.epochs=500")
    line = next(line for line in r.stdout.splitlines() if line.startswith("only_chain_rule"))
    assert float(line.split("gradcheck_max_rel_err=")[1].split(";")[0]) > 0.1
