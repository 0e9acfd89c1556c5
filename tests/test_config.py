"""Every variant composes, carries what tracking and verification need, and overrides work."""

from __future__ import annotations

import pytest

from losslab.core.config import available, compose, epochs, variants_of
from losslab.core.criteria import Expectations
from losslab.core.errors import LosslabError
from losslab.core.outcome import OUTCOMES
from losslab.engine import build
from projects import ROOT

ALL = [(s, v) for s in available(ROOT, "scenario") for v in variants_of(ROOT, s)]


@pytest.mark.parametrize(("scenario", "variant"), ALL, ids=[f"{s}/{v}" for s, v in ALL])
def test_every_variant_composes(scenario: str, variant: str) -> None:
    cfg = compose([f"scenario={scenario}", f"variant={scenario}/{variant}"], ROOT)
    info = Expectations.of(cfg)
    assert (info.scenario, info.name) == (scenario, variant)
    assert info.role in ("broken", "fix")
    assert info.description
    assert set(info.outcomes) <= set(OUTCOMES)
    assert 0 < info.min_rate <= 1
    assert cfg.scenario.source and cfg.data._target_ and cfg.model._target_
    assert epochs(cfg) >= 1


def test_each_scenario_leads_with_its_broken_original_and_has_fixes() -> None:
    for scenario in available(ROOT, "scenario"):
        roles = {
            v: Expectations.of(compose([f"scenario={scenario}", f"variant={scenario}/{v}"], ROOT)).role
            for v in variants_of(ROOT, scenario)
        }
        assert variants_of(ROOT, scenario)[0] == "broken" and roles["broken"] == "broken"
        assert "fix" in roles.values()


def test_linear_broken_is_the_faithful_original() -> None:
    cfg = compose(["scenario=linear"], ROOT)
    assert cfg.variant.name == "broken"
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 0.01
    assert cfg.fit.epochs == 500 and cfg.data.batch_size is None
    assert cfg.model.sizes == [1, 1] and cfg.model.weight_init._target_ == "torch.nn.init.xavier_uniform_"
    assert list(cfg.seeds) == [0, 1, 2, 3, 4]


def test_short_variant_name_and_overrides() -> None:
    cfg = compose(["scenario=linear", "variant=adam", "optimizer.lr=0.05", "trainer.accelerator=cpu"], ROOT)
    assert cfg.variant.name == "adam"
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 0.05


def test_gpu_by_one_override() -> None:
    assert compose(["trainer=gpu"], ROOT).trainer.accelerator == "gpu"
    assert compose(["trainer.accelerator=gpu"], ROOT).trainer.accelerator == "gpu"


def test_epochs_scale() -> None:
    assert epochs(compose(["epochs_scale=0.1"], ROOT)) == 50


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scenario=nope"], "unknown scenario 'nope' (available: "),
        (["scenario=linear", "variant=nope"], "unknown variant 'nope' for scenario 'linear'"),
        (["optimizer.lr=0"], "optimizer.lr must be a positive finite number, got 0"),
        (["optimizer.lr=-1"], "optimizer.lr must be a positive finite number"),
        (["optimizer.lr=nan"], "optimizer.lr must be a positive finite number, got nan"),
        (["optimizer.lr=fast"], "optimizer.lr must be a positive finite number, got 'fast'"),
        (["fit.epochs=-3"], "fit.epochs must be a positive integer"),
        (["fit.epochs=2.5"], "fit.epochs must be a positive integer"),
        (["seeds=[0,x]"], "seeds must be non-negative integers, got 'x'"),
        (["seeds=[]"], "seeds must be a non-empty list"),
        (["seeds=[1,1]"], "seeds must be distinct"),
        (["epochs_scale=0.0001"], "rounds to 0 epochs"),
        (["trainer.accelerator=tpu9"], "trainer.accelerator must be one of"),
        (["optimizer.lr=="], "invalid override"),
        (["nosuchkey.x=1"], "invalid override"),
    ],
)
def test_bad_values_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(LosslabError, match=None) as err:
        compose(overrides, ROOT)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["variant=adam", "+optimizer.betas=[1.5,0.9]"],
            "linear/adam: optimizer: ValueError: Invalid beta parameter",
        ),
        (["variant=adam", "optimizer.eps=-1"], "Invalid epsilon value"),
        (["+optimizer.momentum=-1"], "Invalid momentum value"),
        (["+optimizer.weight_decay=-0.1"], "Invalid weight_decay value"),
        (["+optimizer.momentom=0.9"], "unexpected keyword argument 'momentom'"),
        (["optimizer._target_=torch.optim.Nope"], "linear/broken: optimizer:"),
        (["scenario=scratch_backprop", "module.bugs=[typo]"], "module: ValueError: unknown bugs ['typo']"),
        (
            ["scenario=relu_head", "variant=linear_head_standardized", "scheduler.decay=fast"],
            "scheduler: TypeError",
        ),
        (["model.weight_init._target_=torch.nn.init.nope_"], "linear/broken: model:"),
        (["trainer.precision=bogus"], "linear/broken: trainer:"),
        (["trainer.devices=0"], "linear/broken: trainer:"),
    ],
)
def test_constructors_judge_their_own_values(overrides: list[str], message: str) -> None:
    """torch's own constructors validate what only they know; the error is one line naming
    the config section, raised before any run exists."""
    with pytest.raises(LosslabError) as err:
        build.check(
            compose(["scenario=linear", *overrides] if "scenario=" not in overrides[0] else overrides, ROOT)
        )
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).endswith("values)")  # the hint: which section to fix
