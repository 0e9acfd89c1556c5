"""reports/summary.md and summary.png: every scenario's table and curves, from the files
the train stages wrote (the `report` stage reads nothing else)."""

from __future__ import annotations

import json
from pathlib import Path

from losslab.core.errors import LosslabError
from losslab.core.files import atomic_write, results_path
from losslab.report.figures import summary_png
from losslab.report.series import series_from_files
from losslab.report.tables import HEADER, markdown_table, table_rows


def write_summary(root: Path, scenarios: list[str]) -> Path:
    parts = ["# losslab summary", "", "![all scenarios](summary.png)", ""]
    for name in scenarios:
        path = results_path(root, name)
        if not path.is_file():
            raise LosslabError(f"no results for scenario '{name}' ({path} missing): run `dvc repro`")
        doc = json.loads(path.read_text())
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
    out = root / "reports" / "summary.md"
    atomic_write(out, "\n".join(parts))
    return out
