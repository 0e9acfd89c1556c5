"""params.yaml: the few pipeline-level knobs DVC passes to `losslab run` as Hydra overrides.

conf/ holds every hyperparameter; params.yaml only what `dvc exp run -S key=value` should
change for the whole pipeline (the scenario list, seeds, the epoch scale, the accelerator).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from losslab.core.config import KNOBS, own_scenarios
from losslab.core.errors import LosslabError
from losslab.core.plan import require_scenarios


def read_params(path: str | Path | None) -> dict:
    """A params file as a mapping ({} for None), or one line saying what is wrong with it."""
    if path is None:
        return {}
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise LosslabError(f"cannot read params file {p}: {e}") from None
    if not isinstance(data, dict):
        raise LosslabError(f"params file {p} must be a mapping")
    return data


def knob_overrides(params: dict) -> list[str]:
    """The knobs present in `params` as Hydra overrides (`seeds=[0,1]`, …)."""
    out = []
    for knob, key in KNOBS.items():
        if knob in params:
            value = params[knob]
            text = "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)
            out.append(f"{key}={text}")
    return out


def scenarios(root: Path, given: list[str], params_path: str | None) -> list[str]:
    """The scenarios named on the command line, else those under `scenarios:` in the params
    file (default: the project's params.yaml), each checked to exist."""
    names = list(given)
    if not names and not (root / "conf").is_dir() and (root / "scenario").is_dir():
        names = own_scenarios(root)  # a user's folder
    if not names:
        default = root / "params.yaml"
        params = read_params(params_path or (default if default.is_file() else None))
        names = list(params.get("scenarios") or [])
    if not names:
        raise LosslabError("no scenarios given and none listed under `scenarios:` in params.yaml")
    require_scenarios(root, names)
    return names
