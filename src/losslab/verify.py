"""The CI reproduction check: do the latest results still show what each variant declares?

Expectations live in conf/ (variant.expect), results in metrics/<scenario>.json. A
variant passes when the fraction of its seeds whose outcome is one of the expected ones
reaches expect.min_rate. Editing an expectation is checked against the existing results
without re-training, so a wrong expectation fails here, loudly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from losslab.config import VariantInfo, compose, variants_of


@dataclass(frozen=True)
class Check:
    scenario: str
    variant: str
    expected: str
    observed: str
    rate: float | None
    min_rate: float
    ok: bool
    why: str = ""


def check_scenario(root: Path, scenario: str) -> list[Check]:
    path = root / "metrics" / f"{scenario}.json"
    doc = json.loads(path.read_text()) if path.is_file() else None
    checks = []
    for name in variants_of(root, scenario):
        info = VariantInfo.of(compose([f"scenario={scenario}", f"variant={scenario}/{name}"], root))
        expected = "|".join(info.expect_outcome)
        result = (doc or {}).get("variants", {}).get(name)
        if result is None:
            why = f"no results in {path.relative_to(root)}: run `dvc repro`"
            checks.append(Check(scenario, name, expected, "—", None, info.expect_min_rate, False, why))
            continue
        counts: dict[str, int] = result["outcomes"]
        total = sum(counts.values())
        rate = sum(n for k, n in counts.items() if k in info.expect_outcome) / total
        observed = ", ".join(f"{k} {n}/{total}" for k, n in counts.items())
        ok = rate >= info.expect_min_rate
        why = "" if ok else f"only {rate:.0%} of seeds {expected}, need ≥ {info.expect_min_rate:.0%}"
        numbers = result.get("numbers") or {}
        for key, bound in info.expect_numbers.items():
            value = numbers.get(key)  # median over seeds; null = not finite in some seed
            expected += f"; {key} {'<' if 'below' in bound else '>'} {bound.get('below', bound.get('above'))}"
            observed += f"; {key} = {'non-finite' if value is None else f'{value:.3g}'}"
            if "below" in bound:
                good = value is not None and value < bound["below"]
            else:  # a non-finite error is as wrong as it gets
                good = value is None or value > bound["above"]
            if not good:
                ok = False
                why = (why + "; " if why else "") + f"{key} outside its bound"
        checks.append(Check(scenario, name, expected, observed, rate, info.expect_min_rate, ok, why))
    return checks
