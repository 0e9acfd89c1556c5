"""Hydra multirun: `losslab run -m variant=broken,adam optimizer.lr=0.01,0.1`.

Each job of the sweep is one `losslab run` (one variant, or a whole scenario) on the
launcher that conf/config.yaml selects: joblib with 2 workers by default, or a cluster
launcher (conf/hydra/launcher/). Hydra owns the sweep; losslab adds two things:

- a pre-flight: every job's config is composed and validated, and its data read, before
  any job starts, so a typo in the 7th value costs one line instead of 6 wasted jobs;
- `InitStore`, a Hydra callback that creates the tracking store and the experiments in
  the launching process before the workers start. Two processes that open a *new* sqlite
  store at once race in MLflow's schema migration; after that, concurrent writers are fine.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from losslab.core.config import normalise, project_root
from losslab.core.errors import LosslabError
from losslab.core.plan import plan
from losslab.doctor.scenario import diagnose_verdict
from losslab.engine import build
from losslab.pipeline import run as run_pipeline
from losslab.report.tables import result_text
from losslab.tracking.store import Tracker
from losslab.tracking.uri import check_reachable, compare_url, resolve_uri

FAILED = "FAILED"  # marker a failed job leaves in its Hydra output directory


def _is_hydra(override: str) -> bool:
    return override.lstrip("+~").startswith("hydra")


def jobs(overrides: list[str]) -> list[list[str]]:
    """The sweep's jobs, as Hydra's basic sweeper will expand them (hydra.* overrides aside)."""
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not _is_hydra(o)])
    except HydraException as e:
        raise LosslabError(f"invalid override: {str(e).strip().splitlines()[0]}") from None
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


def preflight(overrides: list[str]) -> None:
    """Plan every job (compose, validate, read its data) and try its objects' constructors."""
    root = project_root()
    for job in jobs(overrides):
        try:
            for cfg in plan(job, root).configs:
                build.check(cfg)
        except LosslabError as e:
            raise LosslabError(f"sweep job [{' '.join(job)}]: {e}") from e


def swept_scenarios(overrides: list[str], default: str) -> list[str]:
    """The scenarios the sweep's jobs run, from their overrides (already checked by preflight)."""
    names: list[str] = []
    for job in jobs(overrides):
        name = next((o.split("=", 1)[1] for o in job if o.startswith("scenario=")), default)
        if name not in names:
            names.append(name)
    return names


class InitStore(Callback):
    """Create the tracking store and the swept scenarios' experiments once, before any job;
    at the end, print one compare link per scenario over the variants the sweep finished."""

    def __init__(self) -> None:
        self.experiments: dict[str, str] = {}
        self.since = 0
        self.tracker: Any = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        root = project_root()
        cfg = OmegaConf.create({"paths": {"root": str(root)}, "tracking": config.tracking})
        uri = resolve_uri(cfg)
        check_reachable(uri)
        self.tracker = Tracker(uri, cfg.tracking.ui_url, root)
        self.tracker.reap()
        self.since = int(time.time() * 1000)
        for name in swept_scenarios(list(config.hydra.overrides.task), config.scenario.name):
            self.experiments[name] = self.tracker.experiment(name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        t = self.tracker
        for name, exp in self.experiments.items():
            query = f"attributes.start_time >= {self.since} AND attributes.status = 'FINISHED'"
            runs = t.client.search_runs(
                [exp], query, max_results=1000, order_by=["attributes.start_time ASC"]
            )
            parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
            parents.sort(key=lambda r: r.data.tags.get("role") != "broken")  # broken first
            if parents:
                link = compare_url(t.uri, t.ui_url, exp, [r.info.run_id for r in parents])
                print(f"compare {name} runs of this sweep: {link}", flush=True)


def _job(cfg: DictConfig) -> None:
    """One job: exactly what `losslab run <this job's overrides>` does."""
    # joblib's loky workers report their start method as "loky", which a spawned child
    # (the tracking writer) cannot resolve; reset it to the standard spawn.
    if mp.get_start_method(allow_none=True) not in (None, "spawn", "fork", "forkserver"):
        mp.set_start_method("spawn", force=True)
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    marker = Path(hc.runtime.output_dir) / FAILED
    marker.unlink(missing_ok=True)
    try:
        root = project_root()
        checked = plan(overrides, root)
        diagnose = diagnose_verdict if checked.base.doctor.enabled else None
        print(result_text(run_pipeline(checked, diagnose=diagnose), root), flush=True)
    except LosslabError as e:
        # One line, like `losslab run`; the marker tells the launching process (which may
        # be on another machine than this job) that the sweep failed. The other jobs go on.
        print(f"losslab: error: sweep job [{' '.join(overrides)}]: {e}", file=sys.stderr, flush=True)
        marker.write_text(f"{e}\n")


def multirun(overrides: list[str]) -> int:
    """Run the sweep through Hydra's own entry point (launchers, sweepers, callbacks)."""
    overrides = normalise(overrides)
    preflight(overrides)  # one clear line for a bad value, before Hydra starts anything
    root = project_root()
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.sweep.dir=")]
    sweep_dir = Path(given[-1] if given else time.strftime("multirun/%Y-%m-%d/%H-%M-%S"))
    if not given:  # the config's default, pinned here so the jobs' markers can be found
        overrides = [*overrides, f"hydra.sweep.dir={sweep_dir}"]
    main = hydra.main(config_path=str(root / "conf"), config_name="config", version_base="1.3")(_job)
    argv = sys.argv
    sys.argv = [str(Path(argv[0]).name), "--multirun", *overrides]
    try:
        main()
    finally:
        sys.argv = argv
    return 2 if list(sweep_dir.glob(f"*/{FAILED}")) else 0
