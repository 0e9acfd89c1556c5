"""`fit`'s two loops: the batched engine's (`engine.direct`, the default where it is exact)
and Lightning's Trainer give the same numbers, bit for bit; the engine's refuses what it
cannot train exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl

from losslab.core.config import compose
from losslab.core.errors import LosslabError
from losslab.core.results import FitRecords
from losslab.engine.runtime import prepare_process
from losslab.fit import fit, groups, prepare, records, train

# Every optimizer, loss, schedule and batching kind the scenarios use; linear/broken runs into
# inf/NaN, xor/bce_logits at lr 100 swings from epoch to epoch (where rounding would show).
CASES = [
    ("linear", "broken", []),
    ("linear", "adam", ["fit.epochs=200"]),
    ("xor", "small_lr", ["fit.epochs=300"]),
    ("xor", "shape_bug", ["fit.epochs=50"]),
    ("xor", "bce_logits", ["fit.epochs=50", "optimizer.lr=100"]),
    ("relu_head", "broken", ["fit.epochs=4"]),
    ("relu_head", "linear_head_standardized", ["fit.epochs=4"]),  # Keras' decay, per step
    ("relu_head", "linear_head_adam", ["fit.epochs=4"]),
    ("scratch_backprop", "broken", ["fit.epochs=150"]),  # its own wrong gradients
    ("scratch_backprop", "fixed_fast", ["fit.epochs=150"]),
]


def _records(prepared: Path, scenario: str, variant: str, extra: list[str]) -> FitRecords:
    return fit(compose([f"scenario={scenario}", f"variant={variant}", *extra], prepared))


def _equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=True), k


@pytest.mark.parametrize(("scenario", "variant", "extra"), CASES, ids=[f"{s}-{v}" for s, v, _ in CASES])
def test_the_engines_loop_records_what_lightnings_does_bit_for_bit(
    prepared: Path, scenario: str, variant: str, extra: list[str]
) -> None:
    prepare_process("cpu")
    got = _records(prepared, scenario, variant, extra)
    ref = _records(prepared, scenario, variant, [*extra, "+fit.loop=lightning"])
    assert (got.loop, ref.loop) == ("engine", "lightning")
    for part in ("curves", "finals", "checks", "weights"):
        _equal(getattr(got, part), getattr(ref, part))
    assert got.stability == ref.stability  # measured before training: the same either way
    if (scenario, variant) == ("linear", "broken"):
        assert not np.isfinite(got.curves["loss"]).all()  # the diverging case was covered


def test_what_the_engine_cannot_train_exactly_goes_to_lightning(prepared: Path) -> None:
    prepare_process("cpu")
    short = ["fit.epochs=2", "seeds=[0]"]

    def loop(scenario: str, *extra: str) -> str:
        return _records(prepared, scenario, "broken", [*short, *extra]).loop

    assert loop("scratch_backprop", "+optimizer.momentum=0.9") == "lightning"
    assert loop("linear", "+optimizer.momentum=0.9") == "lightning"
    assert loop("linear", "loss._target_=torch.nn.L1Loss") == "lightning"
    assert loop("linear", "+trainer.gradient_clip_val=1.0") == "lightning"
    cfg = compose(["scenario=linear", "variant=broken", *short], prepared)
    assert fit(cfg, callbacks=[pl.Callback()]).loop == "lightning"  # a user's own callback
    with pytest.raises(LosslabError, match=r"fit.loop=engine cannot train linear/broken: .*momentum=0.9"):
        loop("linear", "+optimizer.momentum=0.9", "+fit.loop=engine")
    with pytest.raises(LosslabError, match=r"fit\.loop must be one of auto, engine, lightning; got 'fast'"):
        loop("linear", "+fit.loop=fast")


# Variants that train as one stack on the engine's loop: two SGD lrs (one diverging), two
# epoch budgets (one leaves the stack early), SGD and Adam with two lrs each on shuffled
# mini-batches, two Keras decays; and twins (the same training but for the epochs: one
# block of replicas), with Adam, with a sigmoid, with the scratch module.
GROUPS = [
    [("linear", "broken", []), ("linear", "sgd_small_lr", [])],
    [("linear", "broken", ["fit.epochs=100"]), ("linear", "sgd_small_lr", ["fit.epochs=300"])],
    [
        ("relu_head", "broken", ["fit.epochs=2"]),
        ("relu_head", "broken", ["fit.epochs=3", "optimizer.lr=1e-5"]),
    ],
    [
        ("relu_head", "linear_head_adam", ["fit.epochs=2"]),
        ("relu_head", "linear_head_adam", ["fit.epochs=3", "optimizer.lr=1e-3"]),
    ],
    [
        ("relu_head", "linear_head_standardized", ["fit.epochs=2"]),
        ("relu_head", "linear_head_standardized", ["fit.epochs=2", "optimizer.lr=0.05"]),
    ],
    [
        ("relu_head", "linear_head_adam", ["fit.epochs=2"]),
        ("relu_head", "linear_head_adam_1000", ["fit.epochs=3"]),
    ],
    [("xor", "small_lr", ["fit.epochs=100"]), ("xor", "small_lr", ["fit.epochs=300"])],
    [
        ("scratch_backprop", "fixed_fast", ["fit.epochs=100"]),
        ("scratch_backprop", "fixed_fast", ["fit.epochs=150"]),
    ],
]


@pytest.mark.parametrize("group", GROUPS, ids=["-".join(f"{s}.{v}" for s, v, _ in g) for g in GROUPS])
def test_variants_trained_together_get_what_each_gets_alone(prepared: Path, group: list) -> None:
    prepare_process("cpu")
    cfgs = [compose([f"scenario={s}", f"variant={v}", *extra], prepared) for s, v, extra in group]
    alone = [fit(cfg) for cfg in cfgs]
    assert groups(cfgs) == [list(range(len(cfgs)))]
    ready = [prepare(cfg) for cfg in cfgs]
    train(ready)
    for got, ref in zip((records(p) for p in ready), alone, strict=True):
        assert got.group == [v for _, v, _ in group] and ref.group == []
        assert got.loop == "engine"
        for part in ("curves", "finals", "checks", "weights"):
            _equal(getattr(got, part), getattr(ref, part))
    if group[0][:2] == ("linear", "broken"):
        assert not np.isfinite(alone[0].curves["loss"]).all()  # a diverging member was covered


def test_only_compatible_variants_train_together(prepared: Path) -> None:
    """Other data, another optimizer family or model trains apart; so does a variant whose
    arithmetic is not the same bits wherever its rows are stacked."""
    prepare_process("cpu")

    def grouped(scenario: str, *variants: str) -> list[list[str]]:
        cfgs = [compose([f"scenario={scenario}", f"variant={v}", "seeds=[0]"], prepared) for v in variants]
        return [[variants[i] for i in g] for g in groups(cfgs)]

    assert grouped("linear", "broken", "adam", "standardized", "sgd_small_lr", "ten_points") == [
        ["broken", "sgd_small_lr"],
        ["adam"],
        ["standardized"],
        ["ten_points"],
    ]
    # A sigmoid (or BCE, or the scratch module) is computed in the last bit by where its
    # rows fall in a stacked tensor: such variants train apart unless they are twins.
    assert grouped("xor", "broken", "small_lr") == [["broken"], ["small_lr"]]
    assert grouped("scratch_backprop", "fixed", "fixed_fast") == [["fixed"], ["fixed_fast"]]
    assert grouped("relu_head", "broken", "linear_head_adam", "scaled", "linear_head_adam_1000") == [
        ["broken"],
        ["linear_head_adam", "linear_head_adam_1000"],
        ["scaled"],
    ]


def test_a_group_whose_variant_needs_lightning_trains_one_by_one(prepared: Path) -> None:
    """`groups` decides before the watchers exist; a user's own callback on one variant
    sends it to Lightning's loop, and its group then trains one variant after the other."""
    prepare_process("cpu")
    short = ["fit.epochs=20", "seeds=[0, 1]"]
    names = ("broken", "sgd_small_lr")
    cfgs = [compose(["scenario=linear", f"variant={v}", *short], prepared) for v in names]
    assert groups(cfgs) == [[0, 1]]
    ready = [prepare(cfgs[0]), prepare(cfgs[1], callbacks=[pl.Callback()])]
    train(ready)
    got = [records(p) for p in ready]
    assert [r.loop for r in got] == ["engine", "lightning"] and all(r.group == [] for r in got)
    for one, cfg in zip(got, cfgs, strict=True):
        _equal(one.curves, fit(cfg).curves)
