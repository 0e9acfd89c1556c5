"""The run's config as MLflow params and artifacts, minus what must never leave the machine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PARAM_VALUE_LIMIT = 6000


def public_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config, resolved, without the sections that never leave this machine:
    tracking (URIs may carry credentials) and paths (local layout)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    for private in ("tracking", "paths"):
        data.pop(private, None)
    return data


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The public config as MLflow params (dotted keys), minus nodes that only repeat
    another node (module.loss: ${loss})."""
    data = public_config(cfg)
    for parent, node in cfg.items():
        if isinstance(node, DictConfig):
            for key in node:
                if OmegaConf.is_interpolation(node, key) and isinstance(node[key], DictConfig):
                    data[parent].pop(key, None)
    out: dict[str, str] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, sub in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), sub)
        else:
            out[prefix] = json.dumps(v) if isinstance(v, list) else str(v)

    walk("", data)
    return {k: v[:PARAM_VALUE_LIMIT] for k, v in out.items()}


def git_commit(root: Path) -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
