"""reports/summary.md and summary.png: every scenario's table and curves, and
metrics/summary.json: the headline numbers `dvc exp show` lists, from the files the train
stages wrote (the `report` stage reads nothing else)."""

from __future__ import annotations

import json
from pathlib import Path

from losslab.core.errors import LosslabError
from losslab.core.files import atomic_write, results_path, summary_metrics_path
from losslab.report.figures import summary_png
from losslab.report.series import series_from_files
from losslab.report.tables import HEADER, markdown_table, table_rows


def headline(docs: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per scenario, the share of its variants whose expectation held (`met`, 1.0 = all): one
    column per scenario in `dvc exp show`, where the per-variant numbers of metrics/<s>.json
    (about a hundred columns) could not be read; `dvc metrics show -R metrics` lists those."""
    out = {}
    for name, doc in docs.items():
        met = [v.get("expectation_met") for v in doc["variants"].values()]
        if None in met:
            raise LosslabError(f"results/{name}.json predates `expectation_met`: run `dvc repro`")
        out[name] = {"met": sum(met) / len(met) if met else 0.0}
    return out


def write_summary(root: Path, scenarios: list[str]) -> Path:
    parts = ["# losslab summary", "", "![all scenarios](summary.png)", ""]
    docs = {}
    for name in scenarios:
        path = results_path(root, name)
        if not path.is_file():
            raise LosslabError(f"no results for scenario '{name}' ({path} missing): run `dvc repro`")
        doc = docs[name] = json.loads(path.read_text())
        table = markdown_table(HEADER, table_rows(doc))
        parts += [f"## {name}", "", f"![{name}]({name}.png)", "", table, ""]
        said: dict[str, list[str]] = {}
        for variant, v in doc["variants"].items():
            for w in v.get("warnings", []):
                said.setdefault(w, []).append(variant)
        parts += [f"**Warning** ({', '.join(names)}): {w}" for w, names in said.items()]
        parts += [""] if said else []
    panels = [(name, series_from_files(root, name)) for name in scenarios]
    atomic_write(root / "reports" / "summary.png", summary_png(panels))
    atomic_write(summary_metrics_path(root), json.dumps(headline(docs), indent=2) + "\n")
    out = root / "reports" / "summary.md"
    atomic_write(out, "\n".join(parts))
    return out
