"""`--write-variant NAME`: a verified repair as a variant YAML, so the next run carries it.

The file is what a person would write by hand: the overrides as nested keys, role `fix`,
and the expectation the verification measured (converged in at least that share of seeds),
so `losslab verify` holds the repair to what the doctor saw.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml
from omegaconf import DictConfig

from losslab.core.config import conf_dirs
from losslab.core.errors import LosslabError
from losslab.core.files import atomic_write
from losslab.doctor.report import Diagnosis

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def variant_path(cfg: DictConfig, name: str) -> Path:
    """Where variant `name` of the config's scenario lives: conf/variant/<scenario>/ in a
    project, variant/<scenario>/ in a user's scenario folder."""
    if not NAME.fullmatch(name):
        raise LosslabError(f"--write-variant {name!r}: use letters, digits, _ and - (e.g. doctor_fix)")
    return conf_dirs(Path(cfg.paths.root))[0] / "variant" / cfg.scenario.name / f"{name}.yaml"


def variant_yaml(cfg: DictConfig, report: Diagnosis, name: str) -> str:
    """The YAML text of the repair as variant `name` (needs a verified repair)."""
    rep = report.repair
    if rep is None or not rep.overrides or rep.success_rate < 0.8:
        why = "no repair was tried (add --repair)" if rep is None else "no repair worked in ≥ 80% of seeds"
        raise LosslabError(f"nothing to write for --write-variant: {why}")
    body: dict = {}
    for o in rep.overrides:
        key, _, value = o.partition("=")
        node = body
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    seeds = len(rep.seeds)
    variant = {
        "name": name,
        "role": "fix",
        "description": f"{rep.text.split(':')[0]} (losslab doctor: {report.cause})",
        "expect": {"outcome": "converged", "min_rate": math.floor(rep.success_rate * seeds) / seeds},
    }
    head = (
        "# @package _global_\n"
        f"# Written by `losslab doctor --repair --write-variant {name}`: the repair of {report.cause},\n"
        f"# verified to converge in {rep.success_rate:.0%} of seeds ({', '.join(rep.seeds)}).\n"
    )
    return head + yaml.safe_dump({"variant": variant, **body}, sort_keys=False, allow_unicode=True)


def write_variant(cfg: DictConfig, report: Diagnosis, name: str) -> Path:
    path = variant_path(cfg, name)
    if path.exists():
        raise LosslabError(f"{path} exists: choose another --write-variant name or delete it")
    text = variant_yaml(cfg, report, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    return path
