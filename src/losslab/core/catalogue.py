"""What a project (or a user's scenario folder) holds: its scenarios and their variants.

Composed exactly as a run would compose them (defaults included), without reading any
data, so `losslab list` answers on a fresh clone before anything was prepared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from losslab.core.config import available, compose, conf_dirs, own_scenarios, runs_of
from losslab.core.criteria import Expectations
from losslab.core.errors import LosslabError


@dataclass(frozen=True)
class Entry:
    scenario: str
    variant: str
    role: str  # broken | fix | ...
    expected: str  # the outcome(s) it must show, e.g. "diverged" or "converged"
    min_rate: float  # in at least this share of the seeds
    description: str


def scenarios_here(root: Path) -> list[str]:
    """A project's scenarios; for a user's folder, only the folder's own."""
    return available(root, "scenario") if len(conf_dirs(root)) == 1 else own_scenarios(root)


def catalogue(root: Path, names: list[str] | None = None) -> list[Entry]:
    """Every variant of the named scenarios (default: all), the broken original first; a
    scenario without a `broken` variant runs first as written (`base`)."""
    known = scenarios_here(root)
    for n in names or []:
        if n not in known:
            raise LosslabError(f"unknown scenario '{n}' (available: {', '.join(known)})")
    out = []
    for scenario in names or known:
        for name in runs_of(root, scenario):
            cfg = compose([f"scenario={scenario}", *([f"variant={scenario}/{name}"] if name else [])], root)
            exp = Expectations.of(cfg)
            text = str(cfg.variant.get("description") or cfg.scenario.get("title") or "")
            out.append(Entry(scenario, exp.name, exp.role, exp.expected, exp.min_rate, text))
    return out
