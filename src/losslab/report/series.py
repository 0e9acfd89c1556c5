"""The plain data a loss figure needs, from a verdict or from the DVC output files."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from losslab.core.files import results_path
from losslab.core.results import Verdict


@dataclass(frozen=True)
class Series:
    """One variant's per-seed losses, as plain data a figure needs (cheap to send)."""

    name: str
    role: str
    label: str
    losses: list[np.ndarray]
    diverged: list[int | None]


def series(v: Verdict) -> Series:
    s = v.summary
    parts = [f"{k} {n}/{len(v.records.seeds)}" for k, n in s["outcomes"].items()]
    label = f"{v.name}: {', '.join(parts)}"
    if s["first_inf_epoch"] or s["first_nan_epoch"]:
        label += f" (inf @{s['first_inf_epoch'] or '-'}, NaN @{s['first_nan_epoch'] or '-'})"
    losses = v.records.curves["loss"]
    return Series(
        v.name, v.role, label, [losses[i] for i in range(len(losses))], [o.diverged_epoch for o in v.outcomes]
    )


def series_from_files(root: Path, name: str) -> list[Series]:
    """Series per variant from plots/<name>.csv and results/<name>.json (for the summary)."""
    doc = json.loads(results_path(root, name).read_text())
    losses: dict[str, dict[str, list[float]]] = {}
    with (root / "plots" / f"{name}.csv").open() as f:
        for row in csv.DictReader(f):
            value = float(row["loss"]) if row["loss"] else math.nan  # float() reads inf and nan
            losses.setdefault(row["variant"], {}).setdefault(row["seed"], []).append(value)
    out = []
    for variant, s in doc["variants"].items():
        curves = [np.array(c) for c in losses.get(variant, {}).values()]
        diverged = [int(np.argmax(~np.isfinite(c))) + 1 if (~np.isfinite(c)).any() else None for c in curves]
        outcome = ", ".join(f"{k} {n}/{sum(s['outcomes'].values())}" for k, n in s["outcomes"].items())
        out.append(Series(variant, s["role"], f"{variant}: {outcome}", curves, diverged))
    return out


def scenario_title(scenario: str, verdicts: list[Verdict]) -> str:
    title = f"{scenario}: broken vs fixes"
    broken = next((v for v in verdicts if v.role == "broken"), None)
    if broken is not None:
        s = broken.summary
        if s.get("critical_lr") is not None:
            title += (
                f"\nbroken: lr = {s['lr']:g} vs 2/λ_max = {s['critical_lr']:.3g}"
                f" (λ_max = {s['lambda_max']:.4g})"
            )
            if s.get("min_diverging_n"):
                title += f"; smallest diverging data set: first {s['min_diverging_n']} points"
    return title
