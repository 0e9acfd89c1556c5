"""A scenario stage's DVC outputs: metrics/<s>.json and plots/<s>.csv, from its verdicts."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from losslab.core.files import atomic_write, output_paths
from losslab.core.results import ScenarioResult


def metrics_document(result: ScenarioResult) -> dict:
    """The metrics file; with the doctor's reading of each variant in brief (cause,
    confidence, the causes of its findings), so a changed diagnosis is a changed metric
    and the `report` stage that reads it reruns."""
    variants = {}
    for v in result.verdicts:
        variants[v.name] = dict(v.summary)
        d = result.diagnoses.get(v.name)
        if d is not None:
            causes = [f["cause"] for f in d["findings"]]
            variants[v.name]["diagnosis"] = {
                "cause": d["cause"],
                "confidence": d["confidence"],
                "findings": causes,
            }
    return {"scenario": result.scenario, "variants": variants}


def plots_csv(result: ScenarioResult) -> str:
    """Per-epoch loss, long format (variant, seed, epoch, loss); empty for non-finite."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", "seed", "epoch", "loss"])
    for v in result.verdicts:
        for i, seed in enumerate(v.records.seeds):
            for e, value in enumerate(v.records.curves["loss"][i], start=1):
                w.writerow([v.name, seed, e, f"{value:.9g}" if math.isfinite(value) else ""])
    return buf.getvalue()


def write_data_outputs(result: ScenarioResult, root: Path) -> None:
    metrics, plots, _ = output_paths(root, result.scenario)
    atomic_write(metrics, json.dumps(metrics_document(result), indent=2) + "\n")
    atomic_write(plots, plots_csv(result))
