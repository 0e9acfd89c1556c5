"""The doctor's Python door on small hand-made cases whose answer is known, in-process."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import losslab
from losslab.core.errors import LosslabError
from losslab.probes import lambda_max

X20 = torch.arange(1.0, 21.0)[:, None]


def linear(seed: int) -> nn.Module:
    return nn.Linear(1, 1)


def sgd(lr: float, **kw: float):
    return lambda params: torch.optim.SGD(params, lr=lr, **kw)


def test_linear_past_the_bound_is_lr_too_high_with_the_number_and_a_verified_repair() -> None:
    rep = losslab.diagnose(
        linear, (X20, 0.5 * X20), nn.MSELoss(), sgd(0.01), epochs=100, shuffle=False, seeds=(0, 1)
    )
    d = rep.to_dict()
    assert (d["cause"], d["confidence"]) == ("lr_too_high", "high")
    ev = d["findings"][0]["evidence"]
    assert ev["lambda_max"] == pytest.approx(288.539, rel=1e-4) and ev["critical_lr"] == pytest.approx(
        0.0069315, rel=1e-4
    )
    assert d["findings"][0]["margin"] == pytest.approx(0.01 / 0.0069315, rel=1e-4)
    assert "unscaled_inputs" in [f["cause"] for f in d["findings"]]  # the rival, with its own number
    assert d["seeds"] == ["diverged", "diverged"]
    assert d["repair"]["success_rate"] == 1.0 and d["repair"]["changes"]["lr"] < 0.0069315


def test_momentum_moves_the_bound() -> None:
    """SGD with momentum μ is stable up to (2 + 2μ)/λ_max: lr 0.01 with μ = 0.9 is inside it."""
    rep = losslab.diagnose(
        linear, (X20, 0.5 * X20), nn.MSELoss(), sgd(0.01, momentum=0.9), epochs=300, shuffle=False, seeds=(0,)
    )
    assert rep.cause != "lr_too_high"


@pytest.mark.slow  # ~30 s: a ReLU net trained 300 epochs over two seeds
def test_healthy_controls_raise_no_alarm() -> None:
    xs = (X20 - X20.mean()) / X20.std()
    assert (
        losslab.diagnose(linear, (xs, 0.5 * X20), nn.MSELoss(), sgd(0.1), seeds=(0, 1, 2)).cause == "healthy"
    )
    # A ReLU net (many activations at zero) on standardised data that reaches beyond [-1, 1].
    gen = torch.Generator().manual_seed(0)
    x = 2.5 * torch.randn(256, 1, generator=gen)
    y = torch.sin(x)

    def relu_net(seed: int) -> nn.Module:
        return nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))

    rep = losslab.diagnose(relu_net, (x, y), nn.MSELoss(), lambda p: torch.optim.Adam(p, lr=0.01), epochs=300,
                           batch_size=64, seeds=(0, 1))  # fmt: skip
    assert rep.cause == "healthy" and rep.findings == [], str(rep)


def test_targets_of_the_wrong_shape_are_shape_broadcast() -> None:
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])  # (4,) against outputs (4, 1)

    def mlp(seed: int) -> nn.Module:
        return nn.Sequential(nn.Linear(2, 4), nn.Sigmoid(), nn.Linear(4, 1))

    rep = losslab.diagnose(mlp, (x, y), nn.MSELoss(), sgd(0.3), epochs=2000, seeds=(0, 1))
    assert (rep.cause, rep.confidence) == ("shape_broadcast", "high")
    assert rep.findings[0].evidence == {"compared_pairs": 16.0, "expected_pairs": 4.0}
    assert rep.repair is not None and rep.repair.changes == {"targets_shape": [-1, 1]}
    assert rep.repair.success_rate == 1.0  # the repair is verified, not just proposed


def test_nonfinite_data_is_a_diagnosis_with_the_row_count() -> None:
    x = X20.clone()
    x[[3, 7]] = float("nan")
    rep = losslab.diagnose(linear, (x, 0.5 * X20), nn.MSELoss(), sgd(1e-3), epochs=300, seeds=(0, 1))
    assert rep.cause == "nonfinite_data" and rep.findings[0].evidence["rows"] == 2
    assert rep.repair is not None and rep.repair.success_rate == 1.0


def test_a_relu_head_on_negative_targets_is_head_range_mismatch() -> None:
    def net(seed: int) -> nn.Module:
        return nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1), nn.ReLU())

    xs = (X20 - X20.mean()) / X20.std()
    rep = losslab.diagnose(net, (xs, -xs), nn.MSELoss(), sgd(0.05), epochs=300, seeds=(0, 1))
    assert (
        rep.cause == "head_range_mismatch" and rep.findings[0].evidence["targets_outside"] == 0.5
    )  # y = -x: half below 0
    assert rep.repair is not None and rep.repair.changes == {"head": "linear"}


def test_adam_at_a_tiny_lr_is_too_slow_with_a_projection() -> None:
    adam = lambda p: torch.optim.Adam(p, lr=1e-3)  # noqa: E731
    rep = losslab.diagnose(
        linear, (X20, 0.5 * X20), nn.MSELoss(), adam, epochs=200, shuffle=False, seeds=(0, 1)
    )
    assert rep.cause == "too_slow", str(rep)
    slow = next(f for f in rep.findings if f.cause == "too_slow")
    assert slow.evidence["projected_epochs"] > 200


def test_a_dead_relu_head_is_dead_relu() -> None:
    x = torch.arange(1.0, 751.0)[:, None]

    def net(seed: int) -> nn.Module:
        return nn.Sequential(nn.Linear(1, 128), nn.ReLU(), nn.Linear(128, 1), nn.ReLU())

    args = {"epochs": 20, "batch_size": 100, "seeds": (0, 1, 2), "metrics": ("accuracy",)}
    rep = losslab.diagnose(net, (x, 2 * x), nn.MSELoss(), sgd(0.01), **args)
    causes = [f.cause for f in rep.findings]
    assert rep.cause == "dead_relu", str(rep)
    assert "metric_misuse" in causes


def test_check_gradients_names_the_wrong_tensor_in_numpy_and_torch() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 2)), rng.normal(size=16)
    p0 = {"w": rng.normal(size=2), "b": np.zeros(1)}

    def loss(p: dict) -> float:
        return float(np.mean((x @ p["w"] + p["b"][0] - y) ** 2))

    def grad(p: dict, n: float) -> dict:
        r = x @ p["w"] + p["b"][0] - y
        return {"w": 2 * x.T @ r / len(y), "b": np.array([2 * r.sum() / n])}

    bad = losslab.check_gradients(loss, lambda p: grad(p, 1.0), p0).to_dict()  # the bias misses its 1/N
    assert bad["wrong"] == ["b"] and bad["ok"] is False and bad["errors"]["w"] < 1e-6
    good = losslab.check_gradients(loss, lambda p: grad(p, len(y)), p0)
    assert good.ok and max(good.errors.values()) < 1e-6

    xt, yt = torch.tensor(x), torch.tensor(y)
    pt = {k: torch.tensor(v) for k, v in p0.items()}

    def tloss(p: dict) -> torch.Tensor:
        return ((xt @ p["w"] + p["b"][0] - yt) ** 2).mean()

    def tgrad(p: dict) -> dict:
        r = xt @ p["w"] + p["b"][0] - yt
        return {"w": 2 * xt.T @ r / len(yt), "b": (2 * r.sum()).reshape(1)}

    check = losslab.check_gradients(tloss, tgrad, pt)
    assert check.reference == "autograd" and check.wrong == ["b"] and check.errors["w"] < 1e-12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": lambda seed: 1 / 0}, "model factory failed for seed 0: ZeroDivisionError"),
        ({"loss": lambda out, y: (out - y) ** 2}, "must return a scalar tensor"),
        ({"data": (X20, X20[:5])}, "X has 20 rows and y has 5"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs: dict, message: str) -> None:
    args = {
        "model": linear,
        "data": (X20, 0.5 * X20),
        "loss": nn.MSELoss(),
        "optimizer": sgd(1e-3),
        "epochs": 5,
    }
    with pytest.raises(LosslabError, match=None) as err:
        losslab.diagnose(**{**args, **kwargs}, seeds=(0,))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_report_json_shape() -> None:
    d = losslab.diagnose(
        linear, (X20, 0.5 * X20), nn.MSELoss(), sgd(0.01), epochs=50, seeds=(0,), repair=False
    ).to_dict()
    assert set(d) >= {"cause", "confidence", "findings", "repair", "seeds"} and d["repair"] is None
    assert all(set(f) >= {"cause", "evidence", "threshold", "margin", "summary"} for f in d["findings"])
    assert all(v is None or math.isfinite(v) for f in d["findings"] for v in f["evidence"].values())


# --- the config door: our own scenarios ---------------------------------------------------


def _doctor(project, *overrides: str, repair: bool = False):
    from losslab.core.config import compose
    from losslab.doctor.scenario import diagnose_config

    return diagnose_config(compose([*overrides, "seeds=[0,1]"], project), repair=repair)


def test_our_broken_originals_get_their_causes(prepared) -> None:
    rep = _doctor(prepared, "scenario=linear", "variant=broken", repair=True)
    assert (rep.cause, rep.confidence) == ("lr_too_high", "high")
    assert rep.repair is not None and rep.repair.success_rate == 1.0
    assert rep.repair.overrides and rep.repair.overrides[0].startswith("optimizer.lr=")
    assert _doctor(prepared, "scenario=xor", "variant=broken").cause == "lr_too_high"
    assert _doctor(prepared, "scenario=xor", "variant=shape_bug").cause == "shape_broadcast"
    relu = _doctor(prepared, "scenario=relu_head", "variant=broken")
    assert relu.cause == "dead_relu" and "metric_misuse" in [f.cause for f in relu.findings]


def test_fixes_that_converge_are_healthy(prepared) -> None:
    for overrides in (("scenario=linear", "variant=standardized"), ("scenario=xor", "variant=small_lr")):
        rep = _doctor(prepared, *overrides)
        assert rep.cause == "healthy" and rep.seeds == ["converged", "converged"], str(rep)


def test_the_doctor_command_writes_json_and_refuses_bad_input(project) -> None:
    import json

    from projects import run_cli

    out = project / "d.json"
    r = run_cli(project, "doctor", "scenario=linear", "variant=broken", "seeds=[0]", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["cause"] == "lr_too_high" and "lr_too_high" in r.stdout
    r = run_cli(project, "doctor", "scenario=nope")
    assert r.returncode == 2 and r.stderr.strip().startswith("losslab: error: unknown scenario 'nope'")
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # ~40 s: four variants trained as the pipeline trains them
def test_each_hand_written_bug_is_wrong_gradient_naming_its_tensors(prepared) -> None:
    rep = _doctor(prepared, "scenario=scratch_backprop", "variant=only_bias_grad", "fit.epochs=200")
    assert (rep.cause, rep.confidence, rep.repair) == ("wrong_gradient", "high", None)
    ev = rep.findings[0].evidence
    assert ev["rel_err_b0"] > 0.1 and ev["rel_err_b1"] > 0.1  # the bias tensors, named
    assert ev["rel_err_W0"] < 1e-10 and ev["rel_err_W1"] < 1e-10  # and only them
    for variant in ("broken", "only_chain_rule", "only_feature_mean"):
        assert _doctor(
            prepared, "scenario=scratch_backprop", f"variant={variant}", "fit.epochs=200"
        ).cause == ("wrong_gradient")
    fixed = _doctor(prepared, "scenario=scratch_backprop", "variant=fixed_xor", "fit.epochs=2000")
    assert fixed.cause == "healthy", str(fixed)


def _zero_bias_relu_net(seed: int) -> nn.Module:
    m = nn.Sequential(nn.Linear(1, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    for layer in m:
        if isinstance(layer, nn.Linear):
            nn.init.zeros_(layer.bias)
    return m


def test_adam_past_its_own_threshold_is_lr_too_high_where_the_sgd_bound_looks_safe() -> None:
    """The trap: lr·λ_max/2 ≈ 0.34 says 'stable' for SGD, but Adam's first update moves the
    weights 3.6× their size (every coordinate by ~lr): most seeds rise, lr/10 trains."""
    x = 0.1 * torch.randn(128, 1, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    lam = lambda_max(_zero_bias_relu_net(0), nn.MSELoss(), x, 3 * x)
    assert 0.3 * lam / 2 < 1  # the plain-SGD bound looks safe
    adam = lambda p: torch.optim.Adam(p, lr=0.3)  # noqa: E731
    rep = losslab.diagnose(_zero_bias_relu_net, (x, 3 * x), nn.MSELoss(), adam, epochs=100, seeds=(0, 1, 2))
    assert (rep.cause, rep.confidence) == ("lr_too_high", "high"), str(rep)
    ev = rep.findings[0].evidence
    assert ev["update_ratio"] > 3 and rep.findings[0].threshold == 1.0
    assert rep.repair is not None and rep.repair.success_rate >= 0.8 and rep.repair.changes["lr"] < 0.3


def test_a_catapult_spike_that_recovers_is_healthy() -> None:
    """SGD at 3/λ_max on a wide two-layer linear net: the loss rises ~600× in six epochs,
    the curvature drops, and it converges to 1e-15. Past the quadratic bound, yet healthy."""
    x = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))

    def uv(seed: int) -> nn.Module:
        return nn.Sequential(nn.Linear(1, 256, bias=False), nn.Linear(256, 1, bias=False))

    torch.manual_seed(0)
    lam = lambda_max(uv(0), nn.MSELoss(), x, 0.5 * x)
    rep = losslab.diagnose(uv, (x, 0.5 * x), nn.MSELoss(), sgd(3.0 / lam), epochs=100, shuffle=False,
                           seeds=(0, 1, 2))  # fmt: skip
    assert rep.cause == "healthy" and rep.findings == [], str(rep)


X4 = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
Y4 = torch.sin(X4.sum(1, keepdim=True))


def _deep(act: type[nn.Module], gain: float | None = None):
    def make(seed: int) -> nn.Module:
        layers: list[nn.Module] = [nn.Linear(4, 32), act()]
        for _ in range(8):
            layers += [nn.Linear(32, 32), act()]
        m = nn.Sequential(*layers, nn.Linear(32, 1))
        for layer in m:
            if gain is not None and isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=gain / layer.in_features**0.5)
        return m

    return make


def test_ten_sigmoid_layers_are_vanishing_gradients() -> None:
    rep = losslab.diagnose(_deep(nn.Sigmoid), (X4, Y4), nn.MSELoss(), sgd(0.1), epochs=100, batch_size=32,
                           seeds=(0, 1), repair=False)  # fmt: skip
    assert (rep.cause, rep.confidence, rep.seeds) == ("vanishing_gradients", "high", ["stalled", "stalled"])
    ev = rep.findings[0].evidence
    assert ev["first_to_last_grad_ratio"] < 1e-3 and ev["first_layer_grad_norm"] < 1e-4


def test_an_init_that_amplifies_is_exploding_gradients_not_the_lr() -> None:
    """ReLU layers drawn at 2.5/√fan_in: activations grow ×~1.8 per layer, the first loss is
    ~10^4 × Var(y); it diverges at lr and at lr/10 alike. A Glorot init trains."""
    rep = losslab.diagnose(_deep(nn.ReLU, gain=2.5), (X4, Y4), nn.MSELoss(), sgd(0.1), epochs=100,
                           batch_size=32, seeds=(0, 1))  # fmt: skip
    assert (rep.cause, rep.confidence) == ("exploding_gradients", "high"), str(rep)
    assert rep.findings[0].evidence["initial_loss_over_var"] > 1e3
    assert (
        rep.repair is not None and rep.repair.changes == {"init": "glorot"} and rep.repair.success_rate == 1.0
    )


def test_raw_square_feet_beside_bedrooms_is_unscaled_inputs_repaired_by_standardising() -> None:
    """y = 40·bedrooms + 0.01·sqft: SGD at half its bound (set by sqft ~ 10^3) cannot move
    the bedrooms weight (it learns at lr·λ_min); nothing is unstable, the lr is not past its
    bound, yet it stalls. Standardised inputs, at the same fraction of the new bound, fit."""
    g = np.random.default_rng(0)
    sqft, beds = g.uniform(500, 3500, 200), g.integers(1, 6, 200).astype(float)
    x, y = np.stack([sqft, beds], 1), (40 * beds + 0.01 * sqft + g.normal(0, 5, 200))[:, None]
    torch.manual_seed(0)
    lam = lambda_max(nn.Linear(2, 1), nn.MSELoss(), torch.tensor(x).float(), torch.tensor(y).float())
    rep = losslab.diagnose(lambda s: nn.Linear(2, 1), (x, y), nn.MSELoss(), sgd(1.0 / lam), epochs=200,
                           seeds=(0, 1, 2))  # fmt: skip
    assert (rep.cause, rep.confidence) == ("unscaled_inputs", "high"), str(rep)
    assert not any(f.cause == "lr_too_high" for f in rep.findings)  # within the bound: not the lr
    assert rep.findings[0].evidence["lambda_max_standardised"] < 3 and rep.repair is not None
    assert rep.repair.changes["standardise_inputs"] and rep.repair.success_rate == 1.0
