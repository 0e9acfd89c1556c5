"""A user's own scenario folder (`--config-dir`): composed on losslab's conf, judged by the
default criterion, diagnosed, repaired and written back as a variant; and the pipeline's
diagnoses (tags, reports/<scenario>.diagnosis.json, verify)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml

from losslab.core.config import compose, scenario_folder, variants_of
from losslab.core.criteria import SCORE, Check, Criterion, Expectations, check
from losslab.core.errors import LosslabError
from losslab.core.plan import plan
from projects import ROOT, run_cli, run_statuses

SCENARIO = """\
# @package _global_
scenario: {name: mine}
data: {path: table.csv, inputs: [x], targets: [y]}
model: {sizes: [1, 1]}
loss: {_target_: torch.nn.MSELoss}
optimizer: {_target_: torch.optim.SGD, lr: 0.01}
fit: {epochs: 60}
seeds: [0, 1]
"""


def folder(tmp: Path, nan_rows: int = 0, scenario: str = SCENARIO) -> Path:
    """y = 0.5·x on x = 1..20 (λ_max ≈ 288: SGD at lr 0.01 is past 2/λ_max ≈ 0.0069)."""
    d = tmp / "my_runs"
    (d / "scenario").mkdir(parents=True)
    (d / "scenario" / "mine.yaml").write_text(scenario)
    x = np.arange(1.0, 21.0)
    y = 0.5 * x
    y[:nan_rows] = np.nan
    (d / "table.csv").write_text(
        "x,y\n" + "".join(f"{a},{b}\n" for a, b in zip(x.tolist(), y.tolist(), strict=True))
    )
    return d


def test_a_folder_composes_on_losslab_conf_with_the_defaults(tmp_path: Path) -> None:
    root = scenario_folder(folder(tmp_path))
    cfg = compose(["scenario=mine"], root)
    assert cfg.paths.root == str(root)  # data and outputs are relative to the folder
    assert cfg.variant.name == "base" and cfg.variant.role == "subject"  # no variants: as written
    assert cfg.data._target_.endswith("TableDataModule") and cfg.model._target_.endswith("mlp")
    crit = Criterion.of(cfg)  # no thresholds given: the default criterion
    assert crit.number == SCORE and crit.bound is not None and crit.bound.at_least == 0.95
    over = Criterion.of(
        compose(["scenario=mine", "+scenario.outcome.solved={number:train_score,at_least:0.99}"], root)
    )
    assert over.bound is not None and over.bound.at_least == 0.99
    assert [c.variant.name for c in plan(["scenario=mine"], root).configs] == ["base"]


def test_folder_variants_run_after_the_scenario_as_written(tmp_path: Path) -> None:
    d = folder(tmp_path)
    (d / "variant" / "mine").mkdir(parents=True)
    (d / "variant" / "mine" / "small_lr.yaml").write_text(
        "# @package _global_\nvariant: {name: small_lr, role: fix, description: lr 0.001,"
        " expect: {outcome: converged}}\noptimizer: {lr: 0.001}\n"
    )
    root = scenario_folder(d)
    assert variants_of(root, "mine") == ["small_lr"]
    configs = plan(["scenario=mine"], root).configs
    assert [(c.variant.name, c.optimizer.lr) for c in configs] == [("base", 0.01), ("small_lr", 0.001)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: t / "nowhere", "does not exist"),
        (lambda t: (t / "empty").mkdir() or t / "empty", "has no scenario/<name>.yaml"),
        (folder, None),
    ],
)  # fmt: skip
def test_bad_folders_are_one_line(tmp_path: Path, make, message: str | None) -> None:
    d = make(tmp_path)
    if message is None:  # a scenario named like one of losslab's own
        (d / "scenario" / "mine.yaml").rename(d / "scenario" / "linear.yaml")
        message = "shadows losslab's own scenario"
    with pytest.raises(LosslabError, match=message):
        scenario_folder(d)


def test_doctor_on_a_folder_finds_the_cause_and_writes_the_repair_as_a_variant(tmp_path: Path) -> None:
    d = folder(tmp_path)
    out = tmp_path / "d.json"
    r = run_cli(ROOT, "doctor", "--config-dir", str(d), "--json", str(out), "--write-variant", "doctor_fix")
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["cause"] == "lr_too_high" and report["repair"]["success_rate"] == 1.0
    assert report["findings"][0]["evidence"]["lambda_max"] == pytest.approx(288.54, rel=1e-3)
    written = d / "variant" / "mine" / "doctor_fix.yaml"
    doc = yaml.safe_load(written.read_text())
    assert doc["variant"]["role"] == "fix" and doc["variant"]["expect"] == {
        "outcome": "converged",
        "min_rate": 1.0,
    }
    assert doc["optimizer"]["lr"] == pytest.approx(report["repair"]["changes"]["lr"], rel=1e-3)
    # The written variant is a variant like any other: the next run carries it, and it converges.
    r = run_cli(ROOT, "run", "--config-dir", str(d))
    assert r.returncode == 0, r.stderr
    metrics = json.loads((d / "results" / "mine.json").read_text())["variants"]
    assert set(metrics["base"]["outcomes"]) <= {"rising", "diverged"}
    assert metrics["doctor_fix"]["outcomes"] == {"converged": 2}
    diagnoses = json.loads((d / "reports" / "mine.diagnosis.json").read_text())
    assert diagnoses["base"]["cause"] == "lr_too_high" and diagnoses["doctor_fix"]["cause"] == "healthy"
    assert set(run_statuses(d)) == {"FINISHED"}
    with sqlite3.connect(d / "mlflow.db") as con:
        query = (
            "SELECT t.value, t2.value FROM tags t JOIN tags t2 ON t.run_uuid = t2.run_uuid"
            " WHERE t.key = 'variant' AND t2.key = 'diagnosis.cause'"
        )
        tags = dict(con.execute(query).fetchall())
    assert tags == {"base": "lr_too_high", "doctor_fix": "healthy"}
    r = run_cli(ROOT, "verify", "--config-dir", str(d))
    assert r.returncode == 1 and "FAIL" in r.stdout  # the scenario as written does not converge: told
    assert r.stdout.count("PASS") == 1  # and the doctor's fix holds
    r = run_cli(ROOT, "doctor", "--config-dir", str(d), "--write-variant", "doctor_fix")
    assert r.returncode == 2 and "exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_nonfinite_rows_are_a_diagnosis_and_a_data_knob_repairs_them(tmp_path: Path) -> None:
    d = folder(tmp_path, nan_rows=3, scenario=SCENARIO.replace("lr: 0.01", "lr: 0.001"))
    out = tmp_path / "d.json"
    r = run_cli(ROOT, "doctor", "--config-dir", str(d), "--repair", "--json", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["cause"] == "nonfinite_data" and report["findings"][0]["evidence"]["rows"] == 3
    assert (
        report["repair"]["overrides"] == ["data.nonfinite=drop"] and report["repair"]["success_rate"] == 1.0
    )
    r = run_cli(ROOT, "run", "--config-dir", str(d))  # training on them is refused, naming the line
    assert r.returncode == 2 and "line 2 column y is nan" in r.stderr and "data.nonfinite=drop" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config-dir", "/nonexistent/runs"], "does not exist"),
        (["data.inputs=[area]"], "lacks column(s) area"),
    ],
)
def test_doctor_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    d = folder(tmp_path)
    full = args if args[0] == "--config-dir" else ["--config-dir", str(d), *args]
    r = run_cli(ROOT, "doctor", *full)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_verify_holds_the_diagnosis_to_its_expectation() -> None:
    exp = Expectations.of(compose(["scenario=linear", "variant=broken"], ROOT))
    assert exp.diagnosis == ("lr_too_high",)
    ok = check(exp, {"diverged": 5}, {}, {"cause": "lr_too_high"})
    wrong = check(exp, {"diverged": 5}, {}, {"cause": "unscaled_inputs"})
    missing = check(exp, {"diverged": 5}, {}, {})
    assert ok.ok and not wrong.ok and "diagnosed unscaled_inputs" in wrong.why
    assert not missing.ok and "no diagnosis recorded" in missing.why
    assert check(exp, {"diverged": 5}, {}).ok  # the judge, without the doctor's reports
    fix = Expectations.of(compose(["scenario=linear", "variant=standardized"], ROOT))
    assert check(fix, {"converged": 5}, {}, {"cause": "healthy"}).ok
    alarm: Check = check(fix, {"converged": 5}, {}, {"cause": "lr_too_high"})
    assert not alarm.ok and "not healthy" in alarm.why  # a converging fix raises no alarm


def test_expect_diagnosis_names_a_known_cause() -> None:
    with pytest.raises(LosslabError, match=r"variant\.expect\.diagnosis must name causes"):
        compose(["scenario=linear", "variant=broken", "variant.expect.diagnosis=too_hot"], ROOT)


@pytest.mark.slow  # ~30 s: both examples over five seeds
@pytest.mark.parametrize(("name", "cause"), [("house_prices", "lr_too_high"), ("moons", "healthy")])
def test_the_examples_are_diagnosed_as_their_comments_say(tmp_path: Path, name: str, cause: str) -> None:
    out = tmp_path / "d.json"
    r = run_cli(ROOT, "doctor", "--config-dir", str(ROOT / "examples" / name), "--json", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["cause"] == cause
    if cause == "lr_too_high":  # raw square feet: the inputs' scale is the rival, measured
        assert "unscaled_inputs" in [f["cause"] for f in report["findings"]]


def test_the_doctor_can_be_left_out_of_a_run(tmp_path: Path) -> None:
    d = folder(tmp_path)
    r = run_cli(ROOT, "run", "--config-dir", str(d), "doctor.enabled=false")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((d / "results" / "mine.json").read_text())["variants"]["base"]
    assert "diagnosis" not in metrics and not (d / "reports" / "mine.diagnosis.json").exists()
