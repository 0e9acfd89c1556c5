"""`losslab map -m`: a map's trainings as Hydra jobs on any launcher, merged into one map.

`map.parts=K` splits the grid's chunks into K parts (`mapping.train.units`); the sweep
`+map.part=0,…,K-1` runs one Hydra job per part on the launcher that `hydra/launcher=`
selects: joblib processes on this machine (the default), a Ray cluster
(conf/hydra/launcher/ray_cluster.yaml, Hydra's Ray launcher) or SLURM (submitit). Each job
composes the map exactly as `losslab map` does, trains its part and returns its `Piece`
through the launcher (no shared disk needed). This process computes the theory line,
merges the pieces (every training exactly once, or an error) and writes the same CSV,
figure and MLflow run as one process would: a configuration's numbers do not depend on
which others share its chunk. A part whose worker dies is rerun where the launcher does
that (Ray retries a task whose worker process died, `max_retries` in `hydra.launcher.ray.remote`).
"""

from __future__ import annotations

import time
from pathlib import Path

from hydra import version
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig

from losslab.core.config import project_root
from losslab.core.errors import LosslabError
from losslab.core.grid import Grid, map_config
from losslab.engine.runtime import BATCHED_MMAP_THRESHOLD, prepare_process, steady_malloc
from losslab.mapping.result import MapResult, Piece, merge
from losslab.mapping.track import track
from losslab.mapping.train import Ready, epochs_of, prepare_map, theory, train_part
from losslab.tracking.writer import TrackerProcess

PART = "+map.part="  # the override each job gets: which part of the grid it trains


def _root(hc: DictConfig) -> Path:
    """The project the sweep was launched from: the folder above the primary conf/."""
    for source in hc.runtime.config_sources:
        if source.provider == "main" and source.path.startswith("file://"):
            return Path(source.path.removeprefix("file://")).parent
    return project_root()


def part_job(cfg: DictConfig) -> Piece:
    """One Hydra job: the map composed from the job's overrides, its part trained."""
    hc = HydraConfig.get()
    given = [o for o in hc.overrides.task if not o.startswith((PART, "+map="))]
    mcfg, grid = map_config(given, _root(hc))
    prepare_process(grid.accelerator)
    steady_malloc(BATCHED_MMAP_THRESHOLD, trim=4 * BATCHED_MMAP_THRESHOLD)
    return train_part(grid, prepare_map(mcfg, grid), int(cfg.map.part))


def _sweep(root: Path, overrides: list[str]) -> list[JobReturn]:
    """Hydra's own multirun (sweeper, launcher, job directories), returning the jobs'
    results to this process, which `@hydra.main` would drop."""
    version.setbase("1.3")
    GlobalHydra.instance().clear()
    search = create_config_search_path(str(root / "conf"))
    hydra = Hydra.create_main_hydra2(task_name="losslab-map", config_search_path=search)
    try:
        batches = hydra.multirun(config_name="config", task_function=part_job, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    return [r for batch in batches for r in batch]


def _failure(r: JobReturn) -> str:
    err = getattr(r, "_return_value", None)
    text = str(err).strip().splitlines()[0] if err is not None and str(err).strip() else "no result"
    return f"map job [{' '.join(r.overrides or [])}] failed: {type(err).__name__}: {text}"


def map_multirun(
    cfg: DictConfig, grid: Grid, given: list[str], launcher: list[str], tracker: TrackerProcess
) -> MapResult:
    """Train the map as `grid.parts` Hydra jobs (`given`: the map's own overrides,
    `launcher`: the hydra.* ones), merge, and track it as `losslab map` does."""
    root = Path(cfg.paths.root)

    def train(ready: Ready) -> MapResult:
        start = time.perf_counter()
        bounds = theory(grid, ready)
        parts = ",".join(str(k) for k in range(grid.parts))
        # The run store's callback is for `losslab run` sweeps; this process tracks the map.
        sweep = [f"+map={grid.scenario}", *given, f"{PART}{parts}", "~hydra.callbacks.tracking_store"]
        returns = _sweep(root, [*sweep, *launcher])
        failed = [r for r in returns if r.status != JobStatus.COMPLETED]
        if failed:
            raise LosslabError(_failure(failed[0]))
        pieces = [r.return_value for r in returns]
        return merge(grid, bounds, epochs_of(grid, ready), pieces, time.perf_counter() - start)

    return track(cfg, grid, tracker, train)
