"""A scenario stage's outputs, from its verdicts: results/<s>.json (everything the judge
said), metrics/<s>.json (a handful of numbers per variant, for `dvc metrics` and `dvc exp
show`) and plots/<s>.csv (the per-epoch loss)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from losslab.core.criteria import check_entry
from losslab.core.files import atomic_write, output_paths, results_path
from losslab.core.results import ScenarioResult

# Per variant in metrics/<s>.json, before the scenario's own key numbers.
RATES = ("success_rate", "expected_rate", "median_final_loss", "first_nonfinite_epoch")


def results_document(result: ScenarioResult) -> dict:
    """Every variant's judged entry (role, description, outcomes per seed, warnings, numbers)
    with the doctor's reading in brief (cause, confidence, the causes of its findings), so
    a changed diagnosis is a changed file and the `report` stage that reads it reruns."""
    variants = {}
    for v in result.verdicts:
        variants[v.name] = dict(v.summary)
        # The verdict `losslab verify` would give (the report stage's metrics/summary.json).
        variants[v.name]["expectation_met"] = check_entry(v.expectations, v.summary, result.diagnoses).ok
        d = result.diagnoses.get(v.name)
        if d is not None:
            causes = [f["cause"] for f in d["findings"]]
            variants[v.name]["diagnosis"] = {
                "cause": d["cause"],
                "confidence": d["confidence"],
                "findings": causes,
            }
    return {"scenario": result.scenario, "variants": variants}


def _first_nonfinite(entry: dict) -> int | None:
    epochs = [e for e in (entry.get("first_inf_epoch"), entry.get("first_nan_epoch")) if e is not None]
    return min(epochs) if epochs else None


def metrics_document(result: ScenarioResult, key: list[str]) -> dict:
    """Numbers only (null where not finite or not measured), the same columns for every
    variant: the rates, the median final loss, the first epoch whose loss was inf or NaN,
    and the scenario's key numbers (`scenario.key`: a results entry's own field such as
    critical_lr, or one of its recorded `numbers`)."""
    out = {}
    for v in result.verdicts:
        s = v.summary
        row: dict[str, float | int | None] = {k: s.get(k) for k in RATES[:3]}
        row["first_nonfinite_epoch"] = _first_nonfinite(s)
        for name in key:
            value = s[name] if name in s else (s.get("numbers") or {}).get(name)
            row[name] = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        out[v.name] = row
    return out


def csv_number(value: float) -> str:
    """A loss as the CSV keeps it: 9 significant digits, and inf, -inf and nan apart."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.9g}"


def plots_csv(result: ScenarioResult) -> str:
    """Per-epoch loss, long format (variant, seed, epoch, loss)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", "seed", "epoch", "loss"])
    for v in result.verdicts:
        for i, seed in enumerate(v.records.seeds):
            for e, value in enumerate(v.records.curves["loss"][i], start=1):
                w.writerow([v.name, seed, e, csv_number(float(value))])
    return buf.getvalue()


def write_data_outputs(result: ScenarioResult, root: Path, key: list[str]) -> None:
    metrics, plots, _ = output_paths(root, result.scenario)
    atomic_write(results_path(root, result.scenario), json.dumps(results_document(result), indent=2) + "\n")
    atomic_write(metrics, json.dumps(metrics_document(result, key), indent=2) + "\n")
    atomic_write(plots, plots_csv(result))
