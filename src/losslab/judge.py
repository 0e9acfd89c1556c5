"""judge(records, expectations) -> Verdict: outcomes per seed, rates, and the metrics entry.

Pure: numbers in, verdicts out (no torch, no tracking, no files). The success criterion and
its non-finite policy come from `core.criteria`, the outcome rules from `core.outcome`.
"""

from __future__ import annotations

import statistics

from losslab.core.criteria import Expectations, check
from losslab.core.outcome import Outcome, classify, finite_or_none
from losslab.core.results import FitRecords, Verdict


def judge(records: FitRecords, expectations: Expectations) -> Verdict:
    crit = expectations.criterion
    assert crit is not None, "expectations without a criterion: build them with Expectations.of(cfg)"
    outcomes = []
    for i in range(len(records.seeds)):
        numbers = {k: float(v[i]) for k, v in {**records.finals, **records.checks}.items()}
        outcomes.append(
            classify(
                records.curves["loss"][i], crit.converge_below, crit.improve_factor, crit.solved(numbers)
            )
        )
    summary = _summary(records, expectations, outcomes)
    verdict = check(expectations, summary["outcomes"], summary.get("numbers") or {})
    return Verdict(records, expectations, outcomes, summary, verdict)


def _median(values: list[float | None]) -> float | None:
    """Median over seeds; None (not finite) as soon as one seed's value is not finite, so a
    divergence is never averaged away."""
    vals = [v for v in values if v is not None]
    return finite_or_none(statistics.median(vals)) if len(vals) == len(values) else None


def _min(values: list[int | None]) -> int | None:
    vals = [v for v in values if v is not None]
    return min(vals) if vals else None


def _summary(records: FitRecords, exp: Expectations, outcomes: list[Outcome]) -> dict:
    """The DVC metrics entry for one variant (numbers, and null for non-finite)."""
    n = len(outcomes)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.label] = counts.get(o.label, 0) + 1
    out = {
        "role": exp.role,
        "description": exp.description,
        "expected": exp.expected,
        "expected_rate": sum(o.label in exp.outcomes for o in outcomes) / n,
        "success_rate": sum(o.label == "converged" for o in outcomes) / n,
        "outcomes": counts,
        "median_final_loss": _median([finite_or_none(o.final_loss) for o in outcomes]),
        "diverged_seeds": sum(o.diverged_epoch is not None for o in outcomes),
        "first_inf_epoch": _min([o.first_inf_epoch for o in outcomes]),
        "first_nan_epoch": _min([o.first_nan_epoch for o in outcomes]),
        "lr": records.lr,
    }
    if records.warnings:
        out["warnings"] = list(records.warnings)
    if records.finals:
        out["numbers"] = {
            name: _median([finite_or_none(float(v)) for v in values])
            for name, values in records.finals.items()
        }
    stab = records.stability or []
    if stab:
        out["lambda_max"] = statistics.median(s.lambda_max for s in stab)
        out["critical_lr"] = statistics.median(s.critical_lr for s in stab)
        out["min_diverging_n"] = stab[0].min_diverging_n
    return out
