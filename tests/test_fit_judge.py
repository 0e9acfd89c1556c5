"""`fit` and `judge` stand alone: called in-process on a composed config, with no DVC, no
MLflow and no subprocess, they give the numbers the pipeline commits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from losslab.core.config import compose
from losslab.core.criteria import Bound, Criterion, Expectations, check
from losslab.core.results import FitRecords
from losslab.engine.runtime import quiet_lightning
from losslab.fit import fit
from losslab.judge import judge
from projects import ROOT


@pytest.fixture(autouse=True)
def _quiet() -> None:
    quiet_lightning()


def _cfg(project: Path, *overrides: str):
    return compose(list(overrides), project)


def test_fit_then_judge_reproduces_the_committed_linear_broken_entry(prepared: Path) -> None:
    cfg = _cfg(prepared, "scenario=linear", "variant=broken")
    records = fit(cfg)
    assert records.curves["loss"].shape == (5, 500)
    assert set(records.curves) >= {"loss", "grad_norm", "lr", "weight", "bias"}
    assert [s.min_diverging_n for s in records.stability][:1] == [17]
    verdict = judge(records, Expectations.of(cfg))
    committed = json.loads((ROOT / "results" / "linear.json").read_text())["variants"]["broken"]
    assert committed.pop("diagnosis")["cause"] == "lr_too_high"  # the pipeline's doctor adds it
    assert committed.pop("expectation_met") is True  # and the verdict `losslab verify` would give
    assert _close(verdict.summary, committed)
    assert verdict.check.ok and [o.label for o in verdict.outcomes] == ["diverged"] * 5


def _close(a: object, b: object) -> bool:
    """Equal, floats to 1e-6 relative (the committed file may come from another CPU)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6)
    return a == b


def test_fit_reports_a_broadcasting_loss_before_training(prepared: Path) -> None:
    cfg = _cfg(prepared, "scenario=xor", "variant=shape_bug", "seeds=[0]", "fit.epochs=20")
    said: list[str] = []
    records = fit(cfg, warn=said.append)
    assert len(said) == 1 and "broadcast to (4, 4)" in said[0]
    assert records.warnings == said


def test_fit_checks_the_hand_written_backward(prepared: Path) -> None:
    cfg = _cfg(prepared, "scenario=scratch_backprop", "variant=fixed_xor", "seeds=[0,1]", "fit.epochs=50")
    records = fit(cfg)
    assert records.finals["gradcheck_max_rel_err"].max() < 1e-8
    cfg = _cfg(prepared, "scenario=scratch_backprop", "variant=only_chain_rule", "seeds=[0]", "fit.epochs=50")
    assert fit(cfg).finals["gradcheck_max_rel_err"][0] > 0.1


def _records(losses: list[list[float]], **finals: list[float]) -> FitRecords:
    return FitRecords(
        "s",
        "v",
        list(range(len(losses))),
        {"loss": np.array(losses)},
        {k: np.array(v) for k, v in finals.items()},
    )


def _expect(outcomes: tuple[str, ...] = ("diverged",), numbers: dict | None = None, **solved) -> Expectations:
    crit = Criterion(0.01, 0.5, **solved)
    return Expectations("s", "v", "broken", "d", outcomes, 1.0, numbers or {}, crit)


def test_judge_names_the_epochs_of_inf_and_nan() -> None:
    v = judge(_records([[1.0, 10.0, math.inf, math.nan], [1.0, 2.0, 3.0, 4.0]]), _expect())
    assert [o.label for o in v.outcomes] == ["diverged", "rising"]
    assert (v.summary["first_inf_epoch"], v.summary["first_nan_epoch"]) == (3, 4)
    assert v.summary["median_final_loss"] is None  # one seed diverged: never averaged away
    assert v.expected_rate == 0.5 and not v.check.ok


def test_judge_on_an_end_of_fit_number_with_the_one_non_finite_policy() -> None:
    flat = [[5.0, 4.0, 3.0, 2.0]] * 3
    exp = _expect(("converged",), number="err", bound=Bound(below=0.05))
    v = judge(_records(flat, err=[0.01, math.nan, 0.2]), exp)
    assert [o.label for o in v.outcomes] == ["converged", "improving", "improving"]
    assert v.summary["numbers"] == {"err": None}


def test_bounds_read_nan_and_null_as_a_blow_up() -> None:
    assert Bound(below=1.0).met(0.5) and not Bound(below=1.0).met(None) and not Bound(below=1.0).met(math.nan)
    assert Bound(above=1.0).met(None) and Bound(above=1.0).met(math.inf) and not Bound(above=1.0).met(0.5)
    assert not Bound(at_least=0.1).met(-math.inf) and Bound(at_least=0.1).met(0.1)


def test_check_against_committed_results_matches_verify() -> None:
    exp = Expectations.of(compose(["scenario=scratch_backprop", "variant=broken"], ROOT))
    doc = json.loads((ROOT / "results" / "scratch_backprop.json").read_text())["variants"]["broken"]
    got = check(exp, doc["outcomes"], doc["numbers"])
    assert got.ok and "gradcheck_max_rel_err = non-finite" in got.observed
