"""What a person reads: the DVC metrics/plots files, the tables, and the figures' data.

Everything here is derived from run results or from metrics/*.json; nothing trains.
Drawing lives in losslab.figures (matplotlib loads only where figures are rendered).
Files are written whole to a temporary name and renamed, so a crash never leaves a
half-written file that looks like a result.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from losslab.errors import LosslabError

if TYPE_CHECKING:
    from losslab.run import ScenarioResult, VariantResult


def atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    tmp.replace(path)


@dataclass(frozen=True)
class Series:
    """One variant's per-seed losses, as plain data a figure needs (cheap to send)."""

    name: str
    role: str
    label: str
    losses: list[np.ndarray]
    diverged: list[int | None]


def series(v: VariantResult) -> Series:
    s = v.summary()
    parts = [f"{k} {n}/{len(v.seeds)}" for k, n in s["outcomes"].items()]
    label = f"{v.info.name}: {', '.join(parts)}"
    if s["first_inf_epoch"] or s["first_nan_epoch"]:
        label += f" (inf @{s['first_inf_epoch'] or '-'}, NaN @{s['first_nan_epoch'] or '-'})"
    return Series(
        v.info.name,
        v.info.role,
        label,
        [r.curves["loss"] for r in v.seeds],
        [r.outcome.diverged_epoch for r in v.seeds],
    )


def scenario_title(result: ScenarioResult) -> str:
    title = f"{result.scenario}: broken vs fixes"
    broken = next((v for v in result.variants if v.info.role == "broken"), None)
    if broken is not None:
        s = broken.summary()
        if s.get("critical_lr") is not None:
            title += (
                f"\nbroken: lr = {s['lr']:g} vs 2/λ_max = {s['critical_lr']:.3g}"
                f" (λ_max = {s['lambda_max']:.4g})"
            )
            if s.get("min_diverging_n"):
                title += f"; smallest diverging data set: first {s['min_diverging_n']} points"
    return title


def metrics_document(result: ScenarioResult) -> dict:
    return {
        "scenario": result.scenario,
        "variants": {v.info.name: v.summary() for v in result.variants},
    }


def output_paths(root: Path, name: str) -> tuple[Path, Path, Path]:
    """A scenario stage's DVC outputs: metrics, per-epoch plot data, the static figure."""
    return (
        root / "metrics" / f"{name}.json",
        root / "plots" / f"{name}.csv",
        root / "reports" / f"{name}.png",
    )


def probe_write(directory: Path) -> None:
    """Create and delete a file in `directory` (OSError if that fails): permission bits say
    nothing when running as root, or on a read-only mount such as /proc."""
    import tempfile

    with tempfile.NamedTemporaryFile(dir=directory, prefix=".losslab-probe-"):
        pass


def check_writable(root: Path, paths: Iterable[Path]) -> None:
    """Fail before training if an output cannot be written."""
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            probe_write(path.parent)
            if path.exists() and (path.is_dir() or not os.access(path, os.W_OK)):
                raise PermissionError(f"{path} is not a writable file")
        except OSError as e:
            shown = path.relative_to(root) if path.is_relative_to(root) else path
            raise LosslabError(f"output {shown} is not writable: {e.strerror or e}") from None


def write_data_outputs(result: ScenarioResult, root: Path) -> None:
    """metrics/<s>.json and plots/<s>.csv (per-epoch loss, long format)."""
    metrics, plots, _ = output_paths(root, result.scenario)
    atomic_write(metrics, json.dumps(metrics_document(result), indent=2) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", "seed", "epoch", "loss"])
    for v in result.variants:
        for s in v.seeds:
            for e, value in enumerate(s.curves["loss"], start=1):
                w.writerow([v.info.name, s.seed, e, f"{value:.9g}" if math.isfinite(value) else ""])
    atomic_write(plots, buf.getvalue())


# --- tables ---------------------------------------------------------------------------


def _fmt(v: object) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table_rows(doc: dict) -> list[list[str]]:
    rows = []
    for name, s in doc["variants"].items():
        outcome = ", ".join(f"{k} {n}" for k, n in s["outcomes"].items())
        key = "; ".join(f"{k}={_fmt(v)}" for k, v in (s.get("numbers") or {}).items())
        if s.get("critical_lr") is not None:
            key += f"; lr={_fmt(s['lr'])} vs 2/λ_max={_fmt(s['critical_lr'])}"
        rows.append(
            [
                name,
                s["role"],
                s.get("description", ""),
                outcome,
                f"{s['success_rate']:.0%}",
                _fmt(s["median_final_loss"]),
                _fmt(s["first_inf_epoch"]) + " / " + _fmt(s["first_nan_epoch"]),
                key.strip("; "),
            ]
        )
    return rows


def series_from_files(root: Path, name: str) -> list[Series]:
    """Series per variant from plots/<name>.csv and metrics/<name>.json (for the summary)."""
    doc = json.loads((root / "metrics" / f"{name}.json").read_text())
    losses: dict[str, dict[str, list[float]]] = {}
    with (root / "plots" / f"{name}.csv").open() as f:
        for row in csv.DictReader(f):
            value = float(row["loss"]) if row["loss"] else math.nan
            losses.setdefault(row["variant"], {}).setdefault(row["seed"], []).append(value)
    out = []
    for variant, s in doc["variants"].items():
        curves = [np.array(c) for c in losses.get(variant, {}).values()]
        diverged = [int(np.argmax(~np.isfinite(c))) + 1 if (~np.isfinite(c)).any() else None for c in curves]
        outcome = ", ".join(f"{k} {n}/{sum(s['outcomes'].values())}" for k, n in s["outcomes"].items())
        out.append(Series(variant, s["role"], f"{variant}: {outcome}", curves, diverged))
    return out


HEADER = [
    "variant",
    "role",
    "what it changes",
    "outcome (seeds)",
    "converged",
    "median final loss",
    "inf / NaN epoch",
    "key numbers",
]


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def write_summary(root: Path, scenarios: list[str]) -> Path:
    """reports/summary.md and summary.png from every scenario's metrics and plot data."""
    from losslab.errors import LosslabError

    parts = ["# losslab summary", "", "![all scenarios](summary.png)", ""]
    for name in scenarios:
        path = root / "metrics" / f"{name}.json"
        if not path.is_file():
            raise LosslabError(f"no results for scenario '{name}' ({path} missing): run `dvc repro`")
        doc = json.loads(path.read_text())
        parts += [f"## {name}", "", f"![{name}]({name}.png)", "", markdown_table(HEADER, table_rows(doc)), ""]
        said: dict[str, list[str]] = {}
        for variant, v in doc["variants"].items():
            for w in v.get("warnings", []):
                said.setdefault(w, []).append(variant)
        parts += [f"**Warning** ({', '.join(names)}): {w}" for w, names in said.items()]
        parts += [""] if said else []
    from losslab.figures import png, summary_figure

    panels = [(name, series_from_files(root, name)) for name in scenarios]
    atomic_write(root / "reports" / "summary.png", png(summary_figure(panels)))
    out = root / "reports" / "summary.md"
    atomic_write(out, "\n".join(parts))
    return out
