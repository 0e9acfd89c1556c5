"""Tables a person reads: the verdict table of a run, the summary's markdown, verify's table."""

from __future__ import annotations

from pathlib import Path

from losslab.core.catalogue import Entry
from losslab.core.criteria import Check
from losslab.core.results import ScenarioResult
from losslab.report.outputs import results_document

HEADER = [
    "variant",
    "role",
    "what it changes",
    "outcome (seeds)",
    "converged",
    "median final loss",
    "inf / NaN epoch",
    "key numbers",
    "diagnosis",
]


def _fmt(v: object) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def diagnosis_cell(d: dict | None) -> str:
    """`cause (confidence)`, the other findings' causes in brackets."""
    if not d:
        return "—"
    also = [f for f in d.get("findings", []) if f != d["cause"]]
    return f"{d['cause']} ({d['confidence']})" + (f" [+ {', '.join(also)}]" if also else "")


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
                diagnosis_cell(s.get("diagnosis")),
            ]
        )
    return rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def result_text(result: ScenarioResult, root: Path) -> str:
    """What `losslab run` prints: outputs written, the verdict table, the stability bound,
    warnings and the MLflow links."""
    lines = [f"wrote {path.relative_to(root)}" for path in result.outputs]
    lines.append("")
    rows = table_rows(results_document(result))
    lines.append(text_table(HEADER[:2] + HEADER[3:], [r[:2] + r[3:] for r in rows]))  # no descriptions
    for v in result.verdicts:
        s = v.summary
        if s.get("critical_lr") is None:
            continue
        bound = f"  {v.name}: lr {s['lr']:g} vs 2/λ_max {s['critical_lr']:.4g} (λ_max {s['lambda_max']:.4g})"
        if not v.records.plain_gd:
            lines.append(f"{bound}: the bound is for plain gradient descent, not {v.records.optimizer}")
            continue
        verdict = "unstable" if s["lr"] > s["critical_lr"] else "stable"
        scan = f", smallest diverging data size {s['min_diverging_n']}" if s.get("min_diverging_n") else ""
        lines.append(f"{bound} -> {verdict}{scan}")
    said: dict[str, list[str]] = {}
    for v in result.verdicts:
        for w in v.records.warnings:
            said.setdefault(w, []).append(v.name)
    lines += [f"WARNING ({', '.join(names)}): {w}" for w, names in said.items()]
    lines.append(f"\nMLflow UI: {result.ui_command}")
    if result.chart_url:
        lines.append(f"loss of every {result.scenario} variant, log axis: {result.chart_url}")
    lines.append(f"compare {result.scenario} runs: {result.compare_url}")
    return "\n".join(lines)


def checks_text(checks: list[Check]) -> str:
    """What `losslab verify` prints: one row per variant expectation, then the count."""
    rows = [[c.scenario, c.variant, c.expected, c.observed, ("FAIL", "PASS")[c.ok], c.why] for c in checks]
    table = text_table(["scenario", "variant", "expected", "observed", "verdict", "why"], rows)
    failed = sum(not c.ok for c in checks)
    return f"{table}\n\n{len(checks) - failed} passed, {failed} failed"


def catalogue_text(entries: list[Entry]) -> str:
    """What `losslab list` prints: every variant, its role, expectation and description."""
    rows = [[e.scenario, e.variant, e.role, f"{e.expected} ≥ {e.min_rate:.0%}", e.description]
            for e in entries]  # fmt: skip
    return text_table(["scenario", "variant", "role", "expected", "description"], rows)
