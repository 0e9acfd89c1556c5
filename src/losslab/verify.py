"""The CI reproduction check: do the latest results still show what each variant declares?

Expectations live in conf/ (variant.expect), results in results/<scenario>.json. A
variant passes when the fraction of its seeds whose outcome is one of the expected ones
reaches expect.min_rate and its median numbers meet their bounds (`core.criteria.check`,
the same rule the pipeline's judge applies); with the doctor's reports/<scenario>.diagnosis.json,
its cause must match `expect.diagnosis`, and a fix converging in every seed must be `healthy`.
Editing an expectation is checked against the existing results without re-training, so a
wrong expectation fails here, loudly.
"""

from __future__ import annotations

import json
from pathlib import Path

from losslab.core.config import compose, runs_of
from losslab.core.criteria import Check, Expectations, check_entry
from losslab.core.files import diagnosis_path, results_path


def check_scenario(root: Path, scenario: str) -> list[Check]:
    path = results_path(root, scenario)
    doc = json.loads(path.read_text()) if path.is_file() else None
    dx = diagnosis_path(root, scenario)
    diagnoses = json.loads(dx.read_text()) if dx.is_file() else {}
    checks = []
    for name in runs_of(root, scenario):
        chosen = [f"variant={scenario}/{name}"] if name else []
        exp = Expectations.of(compose([f"scenario={scenario}", *chosen], root))
        name = exp.name
        result = (doc or {}).get("variants", {}).get(name)
        if result is None:
            how = f"`dvc repro` or `losslab run scenario={scenario}`"
            why = f"no results in {path.relative_to(root)}: run {how}"
            checks.append(Check(scenario, name, exp.expected, "—", None, exp.min_rate, False, why))
            continue
        checks.append(check_entry(exp, result, diagnoses))
    return checks
