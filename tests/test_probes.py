"""The probes against independent oracles: closed forms, full Hessians, numpy, plain loops."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import textwrap
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from losslab.probes import (
    class_margin,
    critical_lr,
    dead_units,
    gradient_check,
    head_range,
    hvp,
    input_stats,
    lambda_max,
    lambda_max_stacked,
    layer_norms,
    loss_broadcast,
    metric_misuse,
    nonfinite,
    saturated_units,
    smallest_unstable_prefix,
    targets_outside,
    tensor_norms,
    total_norm,
    unit_report,
)


def _line(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(1, n + 1, dtype=torch.float32).unsqueeze(1)
    return x, 0.5 * x


def closed_form_lambda(x: np.ndarray) -> float:
    """MSE of w·x + b: Hessian = 2·[[mean x², mean x], [mean x, 1]] (test oracle only)."""
    h = 2 * np.array([[np.mean(x**2), np.mean(x)], [np.mean(x), 1.0]])
    return float(np.linalg.eigvalsh(h).max())


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


# --- curvature ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 10, 17, 20])
def test_lambda_max_matches_closed_form(n: int) -> None:
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    before = _snapshot(model)
    x, y = _line(n)
    lam = lambda_max(model, nn.MSELoss(), x, y)
    assert lam == pytest.approx(closed_form_lambda(x.numpy().ravel()), rel=1e-8)
    assert _unchanged(model, before)


def test_critical_lr_and_the_smallest_unstable_prefix() -> None:
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    x, y = _line(20)
    lam = lambda_max(model, nn.MSELoss(), x, y)
    assert lam == pytest.approx(288.539, rel=1e-5)
    assert critical_lr(lam) == pytest.approx(2 / 288.539, rel=1e-5)
    assert critical_lr(0.0) == math.inf and critical_lr(-3.0) == math.inf
    # 2/λ_max(first 16 points) = 0.0102 > 0.01 > 0.0096 = 2/λ_max(first 17): the 17th point tips it
    assert smallest_unstable_prefix(model, nn.MSELoss(), x, y, lr=0.01) == 17
    assert smallest_unstable_prefix(model, nn.MSELoss(), x, y, lr=0.005) is None
    params = {k: v.detach() for k, v in model.named_parameters()}
    # just above and just below each prefix's critical lr: the scan must flip exactly there
    critical = [2 / closed_form_lambda(np.arange(1.0, n + 1)) for n in range(1, 21)]
    for n, c in [(1, critical[0]), (3, critical[2]), (17, critical[16]), (20, critical[19])]:
        for lr in (c * 1.005, c * 0.995):
            want = next((m for m, cm in enumerate(critical, 1) if cm < lr), None)
            assert want == (n if lr > c else (None if n == 20 else n + 1))
            assert smallest_unstable_prefix(model, nn.MSELoss(), x, y, lr=lr, params=params) == want


def _hessian_spectrum(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Every eigenvalue of the MSE loss' full Hessian (float64), ascending: the reference."""
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])

    def loss_of_flat(flat: torch.Tensor) -> torch.Tensor:
        parts, i = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            parts[name] = flat[i : i + shape.numel()].reshape(shape)
            i += shape.numel()
        return nn.functional.mse_loss(functional_call(model, parts, (x.double(),)), y.double())

    return torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of_flat, flat0))


def test_lambda_max_agrees_with_the_full_hessian() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    before = _snapshot(model)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    eig = _hessian_spectrum(model, x, y)
    assert eig[-1] > 0 and abs(eig[0]) < eig[-1]  # the top is dominant: no shift involved
    lam = lambda_max(model, nn.MSELoss(), x, y)
    assert lam == pytest.approx(float(eig[-1]), rel=1e-6)
    assert _unchanged(model, before)


def test_lambda_max_finds_the_top_of_a_plus_minus_pair() -> None:
    # A ReLU net far from its targets: the cross terms between the layers times the large
    # residual give the Hessian a ± pair of nearly equal size. Power iteration drifted
    # between them and stopped at 12.4 here, where λ_max is 140.1; Lanczos must find the top.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 20), nn.ReLU(), nn.Linear(20, 1))  # 61 parameters: Lanczos
    x = torch.linspace(-1.7, 1.7, 200)[:, None]
    y = 30 * x**2 + 40
    eig = _hessian_spectrum(model, x, y)
    assert abs(eig[0]) > 0.5 * eig[-1]  # a near-tie in magnitude: the hard case
    assert lambda_max(model, nn.MSELoss(), x, y) == pytest.approx(float(eig[-1]), rel=1e-6)


def test_top_of_spectrum_when_the_dominant_eigenvalue_is_negative() -> None:
    # f(a, b) = a² - 3b²: eigenvalues 2 and -6; the stability bound needs the top one (2).
    class Saddle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Parameter(torch.tensor(0.3))
            self.b = nn.Parameter(torch.tensor(-0.2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a**2 - 3 * self.b**2 + 0 * x.sum()

    lam = lambda_max(Saddle(), lambda out, y: out, torch.zeros(1), torch.zeros(1))
    assert lam == pytest.approx(2.0, rel=1e-6)


def _replicas(factory, seeds: list[int]) -> list[nn.Module]:
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(factory())
    return out


@pytest.mark.parametrize(
    "factory",
    [partial(nn.Linear, 1, 1), lambda: nn.Sequential(nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 1))],
    ids=["linear", "mlp"],
)
def test_lambda_max_stacked_on_a_meta_template(factory) -> None:
    models = _replicas(factory, [0, 1, 2])
    stacked, _ = stack_module_state(models)
    template = copy.deepcopy(models[0]).to("meta")
    x, y = _line(20)
    got = lambda_max_stacked(template, stacked, nn.MSELoss(), x, y)
    want = np.array([lambda_max(m, nn.MSELoss(), x, y) for m in models])
    assert got.dtype == np.float64 and got.shape == (3,)
    np.testing.assert_array_equal(got, want)
    if len(list(models[0].parameters())) > 2:  # the MLP: the replicas' curvatures differ
        assert len(set(got.tolist())) == 3


def test_probes_load_without_lightning_or_mlflow_and_are_fast() -> None:
    code = textwrap.dedent(
        """
        import json, sys, time
        import torch
        import losslab.probes as probes
        heavy = ["pytorch_lightning", "lightning", "mlflow", "hydra", "omegaconf", "matplotlib"]
        loaded = [m for m in heavy if m in sys.modules]
        # A cold first call: λ_max must not pay torch.func's lazy import of torch._dynamo.
        torch.manual_seed(0)
        model = torch.nn.Linear(1, 1)
        x = torch.arange(1, 21, dtype=torch.float32).unsqueeze(1)
        t = time.perf_counter()
        lam = probes.lambda_max(model, torch.nn.MSELoss(), x, 0.5 * x)
        seconds = time.perf_counter() - t
        loaded += [m for m in heavy if m in sys.modules and m not in loaded]
        print(json.dumps({"loaded": loaded, "seconds": seconds, "lambda_max": lam}))
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert out["lambda_max"] == pytest.approx(288.539, rel=1e-5)
    assert out["seconds"] < 1.0, out


# --- gradients ---------------------------------------------------------------------------


def _mse(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ p["w"] + p["b"] - y).pow(2).mean()


def _mse_grads(p: dict, x: torch.Tensor, y: torch.Tensor, bias_bug: bool = False) -> dict:
    r = x @ p["w"] + p["b"] - y
    n = 1 if bias_bug else len(y)  # the bug: the bias gradient misses its 1/N
    return {"w": 2 * x.T @ r / len(y), "b": 2 * r.sum() / n}


def _linear_problem(replicas: int | None = None) -> tuple[dict, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    lead = () if replicas is None else (replicas,)
    p = {"w": torch.randn(*lead, 3, generator=gen), "b": torch.randn(lead, generator=gen)}
    x = torch.randn(*lead, 32, 3, generator=gen)
    return p, x, torch.randn(*lead, 32, generator=gen)


def test_gradient_check_separates_a_right_and_a_wrong_backward() -> None:
    p, x, y = _linear_problem()
    p_before = {k: v.clone() for k, v in p.items()}
    right = gradient_check(_mse, _mse_grads, p, x, y)
    wrong = gradient_check(_mse, partial(_mse_grads, bias_bug=True), p, x, y)
    assert all(e.shape == () and e.dtype == torch.float64 for e in right.values())
    assert max(float(e) for e in right.values()) < 1e-12
    assert float(wrong["b"]) > 1e-2 and float(wrong["w"]) < 1e-12
    assert float(wrong["b"]) == pytest.approx(1 - 1 / 32, rel=1e-12)  # ‖32g - g‖ / ‖32g‖
    assert all(torch.equal(p[k], v) and p[k].dtype == torch.float32 for k, v in p_before.items())


def test_gradient_check_batched_agrees_with_one_replica_at_a_time() -> None:
    p, x, y = _linear_problem(replicas=3)
    wrong = partial(_mse_grads, bias_bug=True)
    batched = gradient_check(_mse, wrong, p, x, y, batched=True)
    assert batched["b"].shape == (3,)
    for i in range(3):
        one = gradient_check(_mse, wrong, {k: v[i] for k, v in p.items()}, x[i], y[i])
        assert float(one["b"]) == pytest.approx(float(batched["b"][i]), rel=1e-12)
        assert float(one["w"]) < 1e-12 and float(batched["w"][i]) < 1e-12


def _old_relative_errors(hand: dict, auto: dict) -> dict[str, torch.Tensor]:
    """scratch.relative_errors as it was before the probes (the oracle, copied verbatim)."""

    def norm(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).pow(2).sum(1).sqrt()

    return {
        k: norm(hand[k] - auto[k]) / torch.maximum(norm(hand[k]), norm(auto[k])).clamp_min(1e-300)
        for k in auto
    }


def _old_scratch():
    try:
        from losslab import scratch
    except ImportError:
        from losslab.engine import scratch
    return scratch


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
@pytest.mark.parametrize(
    "bugs",
    [
        frozenset(),
        frozenset({"chain_rule"}),
        frozenset({"bias_grad"}),
        frozenset({"feature_mean"}),
        frozenset({"chain_rule", "bias_grad", "feature_mean"}),
    ],
    ids=["none", "chain_rule", "bias_grad", "feature_mean", "all"],
)
def test_gradient_check_equals_the_scratch_module_path(activation: str, bugs: frozenset) -> None:
    old = _old_scratch()
    nets = _replicas(partial(old.ScratchNet, [2, 5, 1], activation, init_div=10), [0, 1])
    params, _ = stack_module_state(nets)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 24, 2, generator=gen)
    y = (x[..., :1] > 0).float()
    hand = partial(old.backward, depth=2, activation=activation, bugs=bugs)

    def loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return old.bce(old.forward(p, xi, 2, activation)[0], yi)

    # ScratchModule.gradient_check, line by line
    p64 = {k: v.detach().double() for k, v in params.items()}
    x64, y64 = x.double(), y.double()
    auto = vmap(grad(loss))(p64, x64, y64)
    _, hand_grads, _ = vmap(hand)(p64, x64, y64)
    want = _old_relative_errors(hand_grads, auto)

    got = gradient_check(loss, lambda p, xi, yi: hand(p, xi, yi)[1], params, x, y, batched=True)
    assert list(got) == list(want)
    for k in want:
        assert torch.equal(got[k], want[k]), (k, got[k], want[k])
    worst = max(float(e.max()) for e in got.values())
    assert (worst < 1e-12) if not bugs else (worst > 1e-2)


def _grads() -> dict[str, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(0)
    return {
        "0.weight": torch.randn(3, 4, 2, generator=gen),
        "0.bias": torch.randn(3, 4, generator=gen),
        "frozen.weight": None,
        "2.weight": torch.randn(3, 1, 4, generator=gen, dtype=torch.float64),
        "2.bias": torch.randn(3, 1, generator=gen, dtype=torch.float64),
        "scale": torch.randn(3, generator=gen),
    }


def test_gradient_norms_against_a_loop_over_replicas() -> None:
    grads = _grads()
    present = {k: g for k, g in grads.items() if g is not None}

    def norm(ts: list[torch.Tensor], i: int) -> float:
        return float(torch.linalg.vector_norm(torch.cat([t[i].double().reshape(-1) for t in ts])))

    per_tensor = tensor_norms(grads)
    assert list(per_tensor) == list(present)
    for k, g in present.items():
        assert per_tensor[k].dtype == g.dtype
        for i in range(3):
            assert float(per_tensor[k][i]) == pytest.approx(norm([g], i), rel=1e-6)

    groups = {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"], "scale": ["scale"]}
    per_layer = layer_norms(grads)
    assert sorted(per_layer) == sorted(groups)
    total = total_norm(grads)
    for i in range(3):
        for name, members in groups.items():
            assert float(per_layer[name][i]) == pytest.approx(norm([grads[m] for m in members], i), rel=1e-6)
        assert float(total[i]) == pytest.approx(norm(list(present.values()), i), rel=1e-6)
    assert total_norm({"a": None}) is None


def test_total_norm_is_the_health_recorders_sum() -> None:
    grads = {k: g for k, g in _grads().items() if g is not None and g.dim() > 1}
    sq = None
    for g in grads.values():  # HealthRecorder.gradients, verbatim
        s = g.detach().flatten(1).pow(2).sum(1)
        sq = s if sq is None else sq + s
    assert torch.equal(total_norm(grads), sq.sqrt())


# --- units -------------------------------------------------------------------------------


def _stacked(factory, seeds: list[int]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    models = _replicas(factory, seeds)
    params, _ = stack_module_state(models)
    return copy.deepcopy(models[0]).to("meta"), {k: v.detach() for k, v in params.items()}


def test_dead_units_on_a_hand_made_network() -> None:
    template, p = _stacked(
        lambda: nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 1), nn.ReLU()), [0, 1]
    )
    # hidden pre-activations on x = 1..5: x (alive), -x (dead), 2x - 10 (<= 0: dead)
    p["0.weight"][:] = torch.tensor([[1.0], [-1.0], [2.0]])
    p["0.bias"][:] = torch.tensor([0.0, 0.0, -10.0])
    p["2.weight"][:] = torch.tensor([[1.0, 1.0, 1.0]])
    p["2.bias"][0] = -100.0  # replica 0: head pre-activation x - 100 < 0 everywhere: dead
    p["2.bias"][1] = 0.0  # replica 1: x > 0: alive
    x = torch.arange(1.0, 6.0).unsqueeze(1)
    frac, head = dead_units(template, p, x)
    assert frac.tolist() == pytest.approx([2 / 3, 2 / 3])
    assert head.tolist() == [1.0, 0.0]
    report = unit_report(template, p, x)
    assert report["dead_fraction"].tolist() == pytest.approx([2 / 3, 2 / 3])
    assert report["head_dead"].tolist() == [1.0, 0.0]
    assert report["saturated_fraction"].tolist() == [0.0, 0.0]  # no sigmoid/tanh units


@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh])
def test_saturated_units_on_a_hand_made_network(act: type[nn.Module]) -> None:
    template, p = _stacked(lambda: nn.Sequential(nn.Linear(1, 2), act(), nn.Linear(2, 1), act()), [0, 1])
    x = torch.linspace(-1.0, 1.0, 9).unsqueeze(1)
    # unit 0: z = 5x + 25 in [20, 30] on every input: saturated.
    # unit 1: z = 30x, saturated on every input but x = 0, where its derivative is the largest
    p["0.weight"][:] = torch.tensor([[5.0], [30.0]])
    p["0.bias"][:] = torch.tensor([25.0, 0.0])
    p["0.bias"][1, 1] = -25.0  # replica 1: unit 1 is z = 30x - 25 <= 5: not near 0 on [-1, 1] either
    assert saturated_units(template, p, x).tolist() == [0.5, 0.5]
    p["0.weight"][1, 1] = 1.0  # replica 1: z = x - 25 in [-26, -24]: saturated everywhere
    assert saturated_units(template, p, x).tolist() == [0.5, 1.0]
    assert saturated_units(template, p, x, threshold=0.0).tolist() == [0.0, 0.0]  # nothing is below 0
    assert "head_dead" not in unit_report(template, p, x)
    linear_only, q = _stacked(lambda: nn.Sequential(nn.Linear(1, 2), nn.Linear(2, 1), act()), [0])
    assert saturated_units(linear_only, q, x).tolist() == [0.0]  # the head is not a hidden unit


# --- inputs ------------------------------------------------------------------------------


def test_input_stats_against_numpy() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 50, 3, generator=gen) * torch.tensor([1.0, 100.0, 1e-3]) + torch.tensor([0, 5, -2])
    stats = input_stats(x)
    a = x.reshape(-1, 3).double().numpy()
    want = {"mean": a.mean(0), "std": a.std(0), "min": a.min(0), "max": a.max(0), "abs_max": np.abs(a).max(0)}
    assert sorted(stats) == sorted(want)
    for k, v in want.items():
        assert stats[k].dtype == torch.float64
        np.testing.assert_allclose(stats[k].numpy(), v, rtol=1e-12)
    column = input_stats(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert column["std"].tolist() == pytest.approx([math.sqrt(1.25)])


def test_nonfinite_counts() -> None:
    t = torch.tensor([[1.0, math.nan, 2.0], [math.inf, -math.inf, 0.0]])
    assert nonfinite(t) == 3
    assert isinstance(nonfinite(t), int)
    assert nonfinite(torch.ones(4)) == 0
    assert nonfinite({"a": t, "b": torch.tensor([math.nan])}) == 4
    assert nonfinite(t, stacked=True).tolist() == [1, 2]
    assert nonfinite({"a": t, "b": torch.tensor([math.nan, 0.0])}, stacked=True).tolist() == [2, 2]


def test_head_range() -> None:
    assert head_range(nn.Sequential(nn.Linear(2, 1), nn.ReLU())) == (0.0, math.inf)
    assert head_range(nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())) == (0.0, 1.0)
    assert head_range(nn.Sequential(nn.Linear(2, 1), nn.Tanh())) == (-1.0, 1.0)
    assert head_range(nn.Sequential(nn.Linear(2, 1), nn.ReLU6())) == (0.0, 6.0)
    assert head_range(nn.Sequential(nn.Linear(2, 1), nn.Sequential(nn.Softplus()))) == (0.0, math.inf)
    assert head_range(nn.Sequential(nn.ReLU(), nn.Linear(2, 1))) == (-math.inf, math.inf)
    assert head_range(nn.Sigmoid()) == (0.0, 1.0)
    assert head_range(nn.Linear(2, 1).to("meta")) == (-math.inf, math.inf)


def test_targets_outside() -> None:
    y = torch.tensor([-0.5, 0.0, 0.3, 1.0, 2.0, 4.0, 1998.0, 0.9])
    assert targets_outside(y, 0.0, 1.0) == 4 / 8
    assert targets_outside(y, *head_range(nn.Tanh())) == 3 / 8
    assert targets_outside(y, -math.inf, math.inf) == 0.0
    assert targets_outside(torch.zeros(0), 0.0, 1.0) == 0.0


# --- pitfalls ----------------------------------------------------------------------------


def test_loss_broadcast() -> None:
    found = loss_broadcast(torch.Size((4, 1)), torch.Size((4,)))
    assert found == (
        "the loss compares outputs of shape (4, 1) with targets of shape (4,): they broadcast to (4, 4), "
        "so every output is compared with every target; reshape the targets to (4, 1)"
    )
    assert loss_broadcast(torch.Size((4, 1)), torch.Size((4, 1))) is None
    assert loss_broadcast(torch.Size((4, 2)), torch.Size((3,))) is None  # the loss raises by itself


def test_metric_misuse() -> None:
    regression = torch.arange(2.0, 2000.0, 2.0)
    assert metric_misuse(["accuracy"], regression) == (
        "'accuracy' on a regression target is meaningless: the targets take 999 distinct values "
        "(2 … 1998); Keras' 'accuracy' here is binary accuracy, mean(y == (pred > 0.5)), which is 0 "
        "whatever the model learns. losslab reports MSE, MAE and the max relative error instead"
    )
    assert metric_misuse(["accuracy"], torch.tensor([0.0, 1.0, 1.0, 0.0])) is None
    assert metric_misuse(["mse"], regression) is None


def test_hvp_equals_torch_func_reverse_over_reverse_bit_for_bit() -> None:
    """probes.hvp (torch.autograd) is the same computation as torch.func's vjp of grad."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Sigmoid(), torch.nn.Linear(4, 1)).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)

    def f(p: dict) -> torch.Tensor:
        return torch.nn.functional.mse_loss(functional_call(model, p, (x,)), y)

    v = {k: torch.randn_like(t) for k, t in params.items()}
    ours = hvp(f, params, v)
    theirs = torch.func.vjp(grad(f), params)[1](v)[0]
    assert all(torch.equal(ours[k], theirs[k]) for k in params)


def test_class_margin_against_a_loop() -> None:
    probs = torch.tensor([[0.9, 0.2, 0.7], [0.4, 0.1, float("nan")]])
    y = torch.tensor([1.0, 0.0, 1.0])
    first = min((p - 0.5) * (1 if t > 0.5 else -1) for p, t in zip([0.9, 0.2, 0.7], y.tolist(), strict=True))
    got = class_margin(probs, y)
    assert got[0].item() == pytest.approx(first) and got[1].item() == -math.inf


def test_fit_score_is_r2_or_accuracy_per_replica_and_never_rewards_a_blow_up() -> None:
    from losslab.probes import fit_score, task_of

    y = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    outs = torch.stack([y, torch.full_like(y, 2.5), torch.full_like(y, float("nan"))])
    r2 = fit_score(outs, y, task_of(torch.nn.MSELoss(), y))
    assert r2[0] == 1.0 and r2[1] == pytest.approx(0.0) and r2[2] == -math.inf
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0])
    logits = torch.tensor([[-2.0], [3.0], [0.5], [1.0]])[None]
    assert task_of(torch.nn.BCEWithLogitsLoss(), labels) == "logits"
    assert float(fit_score(logits, labels, "logits")[0]) == 0.75
    assert task_of(torch.nn.MSELoss(), labels) == "probs"  # 0/1 targets: a classifier
    classes = torch.tensor([0, 2, 1])
    scores = torch.eye(3)[[0, 2, 2]][None]
    assert task_of(torch.nn.CrossEntropyLoss(), classes) == "classes"
    assert float(fit_score(scores, classes, "classes")[0]) == pytest.approx(2 / 3)


def test_top_eigenvalue_a_dozen_lanczos_steps_match_the_converged_lambda_max() -> None:
    """The watch's cheap λ_max (12 HVPs, the model's own dtype) against the converged one."""
    from torch.func import functional_call

    from losslab.probes import top_eigenvalue

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 1))
    x, y = torch.randn(100, 8) * 5, torch.randn(100, 1)
    exact = lambda_max(m, nn.MSELoss(), x, y)
    cheap = top_eigenvalue(
        lambda p: nn.functional.mse_loss(functional_call(m, p, (x,)), y), dict(m.named_parameters())
    )
    assert cheap == pytest.approx(exact, rel=1e-4)
