"""What a `losslab run` will do, checked before anything heavy loads.

Composes every variant the overrides select, reads and checks their data, and probes the
outputs for writing: a bad override, variant, data file or output directory is one line in
well under a second, before torch, Lightning or MLflow are imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from losslab.core.config import KNOBS, available, compose, project_root, runs_of
from losslab.core.data import check_data
from losslab.core.errors import LosslabError
from losslab.core.files import check_writable, diagnosis_path, output_paths, results_path


@dataclass
class Plan:
    root: Path
    scenario: str
    configs: list[DictConfig]  # one per variant, in order: the broken original first
    whole: bool  # every variant of the scenario: also write its DVC outputs
    # What the user changed on top of the variants (not scenario=, variant= or a params.yaml
    # knob): the runs are named and tagged with it, e.g. `adam optimizer.lr=0.05`.
    changed: tuple[str, ...] = ()

    @property
    def base(self) -> DictConfig:
        return self.configs[0]


def plan(overrides: list[str], root: Path | None = None) -> Plan:
    root = root or project_root()
    base = compose(overrides, root)
    scenario = base.scenario.name
    chosen = any(o.startswith("variant=") for o in overrides)
    rest = [o for o in overrides if not o.startswith("variant=")]
    # One variant chosen: that one; else every run of the scenario (`base` = as written).
    names = [None] if chosen else runs_of(root, scenario)
    configs = [_variant(rest, scenario, n, root) if n else base for n in names]
    for cfg in configs:
        check_data(cfg)
    if not chosen:
        check_writable(
            root,
            [*output_paths(root, scenario), results_path(root, scenario), diagnosis_path(root, scenario)],
        )
    return Plan(root, scenario, configs, whole=not chosen, changed=changed_by_user(overrides))


def changed_by_user(overrides: list[str]) -> tuple[str, ...]:
    """The overrides that change a variant's own settings, in the order given."""
    fixed = ("scenario", "variant", *KNOBS.values())
    return tuple(
        o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in fixed and not o.startswith("hydra.")
    )


def _variant(overrides: list[str], scenario: str, name: str, root: Path) -> DictConfig:
    try:
        return compose([*overrides, f"variant={scenario}/{name}"], root)
    except LosslabError as e:
        raise LosslabError(f"{scenario}/{name}: {e}") from e


def require_scenarios(root: Path, names: list[str]) -> None:
    known = available(root, "scenario")
    for n in names:
        if n not in known:
            raise LosslabError(f"unknown scenario '{n}' (available: {', '.join(known)})")
