"""What a fit measured and what the judge made of it: plain data, nothing to import.

Compute and display meet only here: `fit` fills `FitRecords`, `judge` turns them into a
`Verdict`, and tracking, reports and the CLI read those without knowing how they were made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from losslab.core.criteria import Check, Expectations
from losslab.core.outcome import Outcome


@dataclass(frozen=True)
class Stability:
    """The full-batch gradient-descent bound for one seed's initial weights."""

    lambda_max: float
    critical_lr: float  # 2 / λ_max
    lr: float
    min_diverging_n: int | None  # smallest prefix of the data whose 2/λ_max < lr, if scanned

    @property
    def stable(self) -> bool:
        return self.lr < self.critical_lr


@dataclass
class FitRecords:
    """One variant trained over its seeds: per-epoch curves and end-of-fit numbers.

    `curves[name]` is [seeds, epochs], `finals[name]` is [seeds] (float64). `checks` holds
    numbers measured only for the success criterion (e.g. the training margin).
    """

    scenario: str
    variant: str
    seeds: list[int]
    curves: dict[str, np.ndarray]
    finals: dict[str, np.ndarray] = field(default_factory=dict)
    checks: dict[str, np.ndarray] = field(default_factory=dict)
    stability: list[Stability] | None = None
    warnings: list[str] = field(default_factory=list)
    lr: float = float("nan")
    optimizer: str = ""  # the optimizer's class name
    plain_gd: bool = False  # SGD without momentum: the 2/λ_max bound applies
    # The trained weights, stacked [seeds, ...] by parameter name (numpy, CPU): the doctor
    # reads dead units from them instead of training the seeds again.
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    loop: str = "lightning"  # which loop trained it: "engine" (engine.direct) or "lightning"
    group: list[str] = field(default_factory=list)  # the variants trained with it as one stack

    def seed_numbers(self, i: int) -> dict[str, float]:
        return {k: float(v[i]) for k, v in self.finals.items()}


@dataclass
class Verdict:
    """The judge's reading of one variant: an outcome per seed, rates, the metrics entry."""

    records: FitRecords
    expectations: Expectations
    outcomes: list[Outcome]
    summary: dict[str, Any]  # the DVC metrics entry (numbers, and null for non-finite)
    check: Check

    @property
    def name(self) -> str:
        return self.records.variant

    @property
    def role(self) -> str:
        return self.expectations.role

    @property
    def expected_rate(self) -> float:
        return self.summary["expected_rate"]

    @property
    def success_rate(self) -> float:
        return self.summary["success_rate"]


@dataclass
class ScenarioResult:
    """Every variant of one scenario run, and where to look at it."""

    scenario: str
    verdicts: list[Verdict] = field(default_factory=list)
    experiment_id: str = ""
    compare_url: str = ""
    chart_url: str = ""  # every variant's loss on one log-axis chart (MLflow's metric page)
    ui_command: str = ""
    outputs: list[Path] = field(default_factory=list)
    diagnoses: dict[str, dict] = field(default_factory=dict)  # variant -> the doctor's report
