"""Data sets: seeded generators (the `prepare` stage) and strict CSV reading/writing.

Generators return named columns; `prepare` writes them as small CSV files under
data/<scenario>/ so DVC can version them and a person can read them. Training reads
the CSV back through `load_table`, which rejects missing, truncated or non-finite data
with a message naming the file, line and column. NumPy only: checking a data file
must not cost the import of torch and Lightning.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from losslab.core.errors import LosslabError

Columns = dict[str, np.ndarray]


# --- generators (referenced by `datasets:` in conf/scenario/*.yaml) -------------------


def line(start: float, stop: float, slope: float, step: float = 1.0, intercept: float = 0.0) -> Columns:
    """x = start, start+step, …, stop and y = slope·x + intercept (deterministic)."""
    x = np.arange(start, stop + step / 2, step, dtype=np.float64)
    return {"x": x, "y": slope * x + intercept}


def normal_line(n: int, slope: float, seed: int) -> Columns:
    """x ~ N(0, 1) (n draws from a seeded generator) and y = slope·x."""
    x = np.random.default_rng(seed).standard_normal(n)
    return {"x": x, "y": slope * x}


def two_moons(n: int, noise: float, seed: int) -> Columns:
    """Two interleaved half circles (class 0 on top, class 1 below), Gaussian noise."""
    rng = np.random.default_rng(seed)
    n0 = n // 2
    t0, t1 = np.linspace(0, np.pi, n0), np.linspace(0, np.pi, n - n0)
    x1 = np.concatenate([np.cos(t0), 1 - np.cos(t1)]) + rng.normal(0, noise, n)
    x2 = np.concatenate([np.sin(t0), 0.5 - np.sin(t1)]) + rng.normal(0, noise, n)
    y = np.concatenate([np.zeros(n0), np.ones(n - n0)])
    order = rng.permutation(n)
    return {"x1": x1[order], "x2": x2[order], "y": y[order]}


def xor() -> Columns:
    """The four XOR points and their targets."""
    return {
        "x1": np.array([0.0, 0.0, 1.0, 1.0]),
        "x2": np.array([0.0, 1.0, 0.0, 1.0]),
        "y": np.array([0.0, 1.0, 1.0, 0.0]),
    }


# --- CSV files ----------------------------------------------------------------------


def write_table(path: Path, columns: Columns) -> None:
    """Write columns as CSV with `repr`-exact floats, so a re-run is byte-identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(columns)
    n = len(next(iter(columns.values())))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(names)
        for i in range(n):
            w.writerow([repr(float(columns[c][i])) for c in names])
    tmp.replace(path)


NONFINITE = ("error", "drop", "keep")  # data.nonfinite: what a NaN/inf cell does


def load_table(path: Path, columns: list[str], nonfinite: str = "error") -> Columns:
    """Read the named float columns of a CSV file, or say exactly what is wrong with it.

    A NaN or inf cell (`nan`, `inf`, or an empty cell) is an error naming its line, unless
    `nonfinite` is `drop` (its row is left out) or `keep` (read as NaN/inf: the doctor
    diagnoses such data instead of refusing it)."""
    if not path.is_file():
        raise LosslabError(
            f"missing data file {path}: run `dvc repro` (or `losslab prepare scenario=<name>`)"
        )
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LosslabError(f"corrupt data file {path}: {e}") from e
    if not rows or not any(rows[0]):
        raise LosslabError(f"corrupt data file {path}: empty, expected a header row")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in columns if c not in header]
    if missing:
        raise LosslabError(
            f"data file {path} lacks column(s) {', '.join(missing)} (has: {', '.join(header)})"
        )
    body = rows[1:]
    if not body:
        raise LosslabError(f"corrupt data file {path}: header only, no data rows")
    out = {c: np.empty(len(body)) for c in columns}
    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise LosslabError(
                f"corrupt data file {path}: line {r} has {len(row)} fields, expected {len(header)}"
            )
        for c in columns:
            cell = row[header.index(c)]
            try:
                v = float(cell) if cell.strip() else math.nan
            except ValueError:
                raise LosslabError(
                    f"corrupt data file {path}: line {r} column {c}: {cell!r} is not a number"
                ) from None
            if not math.isfinite(v) and nonfinite == "error":
                raise LosslabError(
                    f"data file {path}: line {r} column {c} is {cell or 'empty'} (not finite); "
                    "`losslab doctor` counts such rows, data.nonfinite=drop leaves them out"
                )
            out[c][r - 2] = v
    if nonfinite == "drop":
        keep = np.all([np.isfinite(v) for v in out.values()], axis=0)
        if not keep.any():
            raise LosslabError(f"data file {path}: every row has a non-finite value")
        out = {c: v[keep] for c, v in out.items()}
    return out


def read_xy(
    path: Path, inputs: list[str], targets: list[str], n_points: int | None = None, nonfinite: str = "error"
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs [N, len(inputs)] and targets [N, len(targets)] of a checked table (all rows).

    `n_points` is checked here (not applied), so a bad value is caught before training.
    """
    cols = load_table(path, [*inputs, *targets], nonfinite)
    x = np.stack([cols[c] for c in inputs], axis=1)
    y = np.stack([cols[c] for c in targets], axis=1)
    if n_points is not None and n_points > len(x):
        raise LosslabError(f"data.n_points={n_points} but {path} has only {len(x)} rows")
    return x, y


def prepare(cfg: DictConfig) -> list[Path]:
    """The `prepare` stage: every data set the scenario declares, to data/<scenario>/<name>.csv."""
    root = Path(cfg.paths.root)
    written = []
    for name, gen in (cfg.get("datasets") or {}).items():
        path = root / "data" / cfg.scenario.name / f"{name}.csv"
        write_table(path, instantiate(gen))
        written.append(path)
    return written


def check_data(cfg: DictConfig, nonfinite: str | None = None) -> None:
    """Read the variant's data file and check its columns and size (no torch needed)."""
    root = Path(cfg.paths.root)
    d = cfg.data
    read_xy(
        root / d.path, list(d.inputs), list(d.targets), d.n_points, nonfinite or d.get("nonfinite", "error")
    )
