"""The CI reproduction check: do the latest results still show what each variant declares?

Expectations live in conf/ (variant.expect), results in metrics/<scenario>.json. A
variant passes when the fraction of its seeds whose outcome is one of the expected ones
reaches expect.min_rate and its median numbers meet their bounds (`core.criteria.check`,
the same rule the pipeline's judge applies). Editing an expectation is checked against the
existing results without re-training, so a wrong expectation fails here, loudly.
"""

from __future__ import annotations

import json
from pathlib import Path

from losslab.core.config import compose, variants_of
from losslab.core.criteria import Check, Expectations, check


def check_scenario(root: Path, scenario: str) -> list[Check]:
    path = root / "metrics" / f"{scenario}.json"
    doc = json.loads(path.read_text()) if path.is_file() else None
    checks = []
    for name in variants_of(root, scenario):
        exp = Expectations.of(compose([f"scenario={scenario}", f"variant={scenario}/{name}"], root))
        result = (doc or {}).get("variants", {}).get(name)
        if result is None:
            why = f"no results in {path.relative_to(root)}: run `dvc repro`"
            checks.append(Check(scenario, name, exp.expected, "—", None, exp.min_rate, False, why))
            continue
        checks.append(check(exp, result["outcomes"], result.get("numbers") or {}))
    return checks
