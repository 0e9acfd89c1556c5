"""Where a scenario's outputs go, and writing them so a crash never leaves half a result.

Files are written whole to a temporary name and renamed; before training, every output
directory is probed with a real write, so an unwritable one fails in one line instead of
after minutes of training.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from losslab.core.errors import LosslabError


def atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    tmp.replace(path)


def output_paths(root: Path, name: str) -> tuple[Path, Path, Path]:
    """A scenario stage's DVC outputs: metrics, per-epoch plot data, the static figure."""
    return (
        root / "metrics" / f"{name}.json",
        root / "plots" / f"{name}.csv",
        root / "reports" / f"{name}.png",
    )


def results_path(root: Path, name: str) -> Path:
    """Everything the judge said about each variant (outcomes, descriptions, warnings,
    numbers); metrics/<name>.json keeps a handful of numbers per variant for DVC."""
    return root / "results" / f"{name}.json"


def map_paths(root: Path, name: str) -> tuple[Path, Path]:
    """A scenario's stability map: one row per cell, and its figure (`losslab map`)."""
    return root / "maps" / f"{name}.csv", root / "maps" / f"{name}.png"


def summary_metrics_path(root: Path) -> Path:
    """The `report` stage's DVC metrics: a few numbers per scenario, for `dvc exp show`."""
    return root / "metrics" / "summary.json"


def diagnosis_path(root: Path, name: str) -> Path:
    """The doctor's report on every variant of a scenario (written by its train stage)."""
    return root / "reports" / f"{name}.diagnosis.json"


def probe_write(directory: Path) -> None:
    """Create and delete a file in `directory` (OSError if that fails): permission bits say
    nothing when running as root, or on a read-only mount such as /proc."""
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
