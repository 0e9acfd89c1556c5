"""What counts as success and what each variant is expected to do, parsed in one place.

A scenario says when one seed's run *converged* (`scenario.outcome`: a loss threshold, or
`solved`: a bound on an end-of-fit number, or a margin on the training outputs); a
variant says which outcomes it expects, in how many seeds, and bounds on the median of
its end-of-fit numbers (`variant.expect`).

One non-finite policy for every bound: NaN, or the null that JSON writes for a non-finite
number, means the run blew up and is read as +∞: it fails every `below` bound and meets
every `above` bound; ±∞ compare as themselves. Outcomes come first: a non-finite loss is
`diverged` whatever the numbers say, and the margin of an output that is not finite is
-∞ (it is on neither side), so no success criterion rewards a blow-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

MARGIN = "train_margin"  # the number `solved: {margin: …}` is judged on (see fit)
# What the doctor can name (losslab.doctor), and so what `variant.expect.diagnosis` may say.
CAUSES = (
    "lr_too_high",
    "unscaled_inputs",
    "head_range_mismatch",
    "vanishing_gradients",
    "exploding_gradients",
    "dead_relu",
    "nonfinite_data",
    "wrong_gradient",
    "shape_broadcast",
    "metric_misuse",
    "too_slow",
    "stale_gradients",
    "parameters_not_updated",
    "healthy",
)
# The default success criterion, for a scenario that names none (a user's folder): the fit
# on the training set, R² for regression and accuracy for classification, at least 0.95.
SCORE, SCORE_MIN = "train_score", 0.95


@dataclass(frozen=True)
class Bound:
    """`value < below` or `value > above` (`at_least`: `>=`, for margins)."""

    below: float | None = None
    above: float | None = None
    at_least: float | None = None

    @classmethod
    def of(cls, spec: dict) -> Bound:
        return cls(spec.get("below"), spec.get("above"), spec.get("at_least"))

    def met(self, value: float | None) -> bool:
        """The one non-finite policy: None and NaN are read as +∞."""
        v = math.inf if value is None or math.isnan(value) else value
        if self.below is not None:
            return v < self.below
        if self.above is not None:
            return v > self.above
        return v >= (self.at_least if self.at_least is not None else -math.inf)

    def __str__(self) -> str:
        if self.below is not None:
            return f"< {self.below}"
        return f"> {self.above}" if self.above is not None else f">= {self.at_least}"


@dataclass(frozen=True)
class Criterion:
    """When one seed's run counts as converged, and how its loss curve is labelled."""

    converge_below: float
    improve_factor: float
    number: str | None = None  # judged on this end-of-fit number instead of the final loss
    bound: Bound | None = None
    link: str = "identity"  # outputs -> the targets' scale, for the margin

    @classmethod
    def of(cls, cfg: DictConfig) -> Criterion:
        """`solved` if given; else a final loss below `converge_below`; else the default,
        `train_score` >= 0.95 (overridable: `scenario.outcome.solved.at_least=0.99`)."""
        rule = cfg.scenario.outcome
        solved = OmegaConf.to_container(rule.solved) if rule.get("solved") else {}
        assert isinstance(solved, dict)
        below = rule.get("converge_below")
        if not solved and below is None:
            solved = {"number": SCORE, "at_least": SCORE_MIN}
        base = {
            "converge_below": -math.inf if below is None else float(below),
            "improve_factor": float(rule.improve_factor),
        }
        if "margin" in solved:
            bound = Bound(at_least=float(solved["margin"]))
            return cls(**base, number=MARGIN, bound=bound, link=solved.get("link", "identity"))
        if "number" in solved:
            return cls(**base, number=solved["number"], bound=Bound.of(solved))
        return cls(**base)

    def solved(self, numbers: dict[str, float]) -> bool | None:
        """Whether the end-of-fit numbers meet the criterion (None: judged on the loss)."""
        if self.number is None or self.bound is None:
            return None
        return self.bound.met(numbers.get(self.number))


@dataclass(frozen=True)
class Expectations:
    """What a variant is and what it must show, for verdicts, tags and verification."""

    scenario: str
    name: str
    role: str
    description: str
    outcomes: tuple[str, ...]
    min_rate: float
    numbers: dict[str, Bound] = field(default_factory=dict)  # on the median over seeds
    criterion: Criterion | None = None
    diagnosis: tuple[str, ...] = ()  # the doctor's cause(s) it must get (expect.diagnosis)

    @classmethod
    def of(cls, cfg: DictConfig) -> Expectations:
        v = cfg.variant
        outcome = v.expect.outcome
        numbers = OmegaConf.to_container(v.expect.numbers) if v.expect.get("numbers") else {}
        assert isinstance(numbers, dict)
        return cls(
            scenario=cfg.scenario.name,
            name=v.name,
            role=v.role,
            description=v.description,
            outcomes=(outcome,) if isinstance(outcome, str) else tuple(outcome),
            min_rate=float(v.expect.get("min_rate", 1.0)),
            numbers={k: Bound.of(b) for k, b in numbers.items()},
            criterion=Criterion.of(cfg),
            diagnosis=_names(v.expect.get("diagnosis")),
        )

    @property
    def expected(self) -> str:
        return "|".join(self.outcomes)


def _names(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Check:
    """One variant's results against its expectations."""

    scenario: str
    variant: str
    expected: str
    observed: str
    rate: float | None
    min_rate: float
    ok: bool
    why: str = ""


def check(
    exp: Expectations,
    outcomes: dict[str, int],
    numbers: dict[str, float | None],
    diagnosis: dict | None = None,
) -> Check:
    """Outcome counts over seeds and median numbers (None = not finite) against `exp`; with
    the doctor's `diagnosis` of the variant, also its cause against `expect.diagnosis`, and
    a fix that converged in every seed must be diagnosed `healthy`."""
    total = sum(outcomes.values())
    rate = sum(n for k, n in outcomes.items() if k in exp.outcomes) / total
    expected, observed = exp.expected, ", ".join(f"{k} {n}/{total}" for k, n in outcomes.items())
    ok = rate >= exp.min_rate
    why = "" if ok else f"only {rate:.0%} of seeds {exp.expected}, need ≥ {exp.min_rate:.0%}"
    for key, bound in exp.numbers.items():
        value = numbers.get(key)
        expected += f"; {key} {bound}"
        observed += f"; {key} = {'non-finite' if value is None else f'{value:.3g}'}"
        if not bound.met(value):
            ok = False
            why = (why + "; " if why else "") + f"{key} outside its bound"
    if diagnosis is not None:  # verify has the doctor's reports; the judge does not
        cause = diagnosis.get("cause")
        wanted = exp.diagnosis or (
            ("healthy",) if exp.role == "fix" and set(outcomes) == {"converged"} else ()
        )
        observed += f"; diagnosed {cause or '—'}"
        if wanted:
            expected += f"; diagnosis {'|'.join(wanted)}"
            if cause not in wanted:
                ok = False
                said = f"diagnosed {cause}" if cause else "no diagnosis recorded"
                why = (why + "; " if why else "") + f"{said}, not {'|'.join(wanted)}"
    return Check(exp.scenario, exp.name, expected, observed, rate, exp.min_rate, ok, why)


def check_entry(exp: Expectations, entry: dict, diagnoses: dict) -> Check:
    """A results/<s>.json entry against `exp`, the one rule `losslab verify` and the train
    stage's `expectation_met` share. `diagnoses`: the doctor's reports by variant (empty
    where it did not run); a variant that expects a cause and has none fails."""
    found = diagnoses.get(exp.name, {}) if diagnoses or exp.diagnosis else None
    return check(exp, entry["outcomes"], entry.get("numbers") or {}, found)
