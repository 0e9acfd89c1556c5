"""What the doctor says: findings with their evidence numbers, a cause, a verified repair.

Plain data with a fixed JSON shape (`to_dict`, what `--json` writes) and a readable table
(`str`). Field names are a contract: cause, confidence, findings[{cause, evidence,
threshold, margin, summary}], repair{changes|overrides, success_rate, seeds, text}, seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from losslab.core.criteria import CAUSES

__all__ = ["CAUSES", "Diagnosis", "Finding", "Repair"]


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


@dataclass(frozen=True)
class Finding:
    """One cause the evidence points to: the measured number against its threshold."""

    cause: str
    evidence: dict[str, float]
    threshold: float | None
    margin: float | None  # how far past the threshold (a ratio: > 1 means past it)
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "evidence": {k: _num(v) for k, v in self.evidence.items()},
            "threshold": _num(self.threshold),
            "margin": _num(self.margin),
            "summary": self.summary,
        }


@dataclass(frozen=True)
class Repair:
    """A change tried over every seed, and how often it worked."""

    changes: dict[str, Any]
    success_rate: float
    seeds: list[str]  # per-seed outcome with the change
    text: str
    overrides: list[str] | None = None  # the same change as Hydra overrides (the config door)

    def as_overrides(self, overrides: list[str]) -> Repair:
        return replace(self, overrides=overrides, text=f"{self.text}: {' '.join(overrides)}")

    def to_dict(self) -> dict[str, Any]:
        out = {
            "changes": self.changes,
            "success_rate": self.success_rate,
            "seeds": self.seeds,
            "text": self.text,
        }
        if self.overrides is not None:
            out["overrides"] = list(self.overrides)
        return out


@dataclass
class Diagnosis:
    """The doctor's answer: the primary cause first, every finding with its numbers."""

    cause: str
    confidence: str  # high | medium | low
    findings: list[Finding] = field(default_factory=list)
    repair: Repair | None = None
    seeds: list[str] = field(default_factory=list)  # per-seed outcome of the run as given
    notes: list[str] = field(default_factory=list)
    attempts: list[Repair] = field(default_factory=list)  # every repair tried, in order

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "confidence": self.confidence,
            "findings": [f.to_dict() for f in self.findings],
            "repair": self.repair.to_dict() if self.repair else None,
            "seeds": list(self.seeds),
            "notes": list(self.notes),
            "attempts": [a.to_dict() for a in self.attempts],
        }

    def __str__(self) -> str:
        lines = [f"cause: {self.cause} (confidence {self.confidence})", f"seeds: {', '.join(self.seeds)}"]
        for f in self.findings:
            nums = ", ".join(f"{k}={v:.4g}" for k, v in f.evidence.items())
            past = f"; threshold {f.threshold:.4g}, margin {f.margin:.3g}" if f.threshold is not None else ""
            lines.append(f"  {f.cause:<20} {nums}{past}")
            lines.append(f"  {'':<20} {f.summary}")
        if self.repair:
            lines.append(f"repair: {self.repair.text} -> success {self.repair.success_rate:.0%} of seeds")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def markdown(self) -> str:
        """The report as Markdown (the `diagnosis.md` artifact of a variant's MLflow run)."""
        out = [
            f"# Diagnosis: {self.cause} (confidence {self.confidence})",
            "",
            f"Per-seed outcome: {', '.join(self.seeds) or '—'}",
            "",
        ]
        if self.findings:
            out += ["| cause | evidence | threshold | margin | summary |", "|---|---|---|---|---|"]
            for f in self.findings:
                nums = ", ".join(f"{k} = {v:.4g}" for k, v in f.evidence.items())
                thr = "—" if f.threshold is None else f"{f.threshold:.4g}"
                mar = "—" if f.margin is None else f"{f.margin:.3g}"
                out.append(f"| {f.cause} | {nums} | {thr} | {mar} | {f.summary} |")
            out.append("")
        if self.repair:
            out.append(f"Repair: {self.repair.text} (success {self.repair.success_rate:.0%} of seeds)")
        out += [f"Note: {n}" for n in self.notes]
        return "\n".join(out) + "\n"
