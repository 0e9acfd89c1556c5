"""MLflow: one experiment per scenario, one parent run per variant, one nested run per seed.

Why the client API and not Lightning's MLFlowLogger: one fit trains every seed of a
variant at once (see engine.models.Ensemble), so one fit feeds several runs; and the logger
writes every step as its own call (~3 ms on sqlite, 10-50 ms over HTTP), while a
500-epoch curve buffered and sent with `log_batch` costs one call per 1000 points.

The MLflow client lives in a child process (`TrackerProcess`): sqlite or HTTP writes
happen on another core while training goes on, and the trainer never imports MLflow.

Runs are created before training (RUNNING) and always end FINISHED, FAILED or KILLED.
If the training process dies (SIGKILL), the writer sees its pipe close and marks the
open runs KILLED; a run left RUNNING anyway (both died: a SIGKILL to the process group,
power loss) is marked KILLED the next time losslab opens the store on that host, whatever
scenario it runs.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from losslab.core.errors import LosslabError
from losslab.tracking.params import git_commit
from losslab.tracking.uri import redact

MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100


@dataclass
class RunGroup:
    """A variant's parent run and its per-seed children."""

    experiment_id: str
    parent: str
    seeds: dict[int, str] = field(default_factory=dict)

    @property
    def all(self) -> list[str]:
        return [self.parent, *self.seeds.values()]


class Tracker:
    """Thin layer over MlflowClient that knows losslab's run layout."""

    def __init__(self, uri: str, ui_url: str, root: Path) -> None:
        # mlflow sets its loggers up on import; store migrations announce themselves at INFO.
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # MLflow prints a "View run at <tracking URI>" line per run over HTTP: noise, and
        # the URI may carry user:password. losslab prints its own, credential-free links.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        self.uri, self.ui_url, self.root = uri, ui_url.rstrip("/"), root
        self.client = MlflowClient(tracking_uri=uri)
        self.commit = git_commit(root)

    # -- experiments -------------------------------------------------------------------

    def experiment(self, name: str) -> str:
        """Get or create the experiment."""
        try:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                location = None
                if self.uri.startswith("sqlite:"):
                    location = (self.root / "mlruns").resolve().as_uri()
                try:
                    return self.client.create_experiment(name, artifact_location=location)
                except MlflowException:  # created meanwhile by a parallel worker
                    exp = self.client.get_experiment_by_name(name)
            return exp.experiment_id
        except MlflowException as e:
            raise LosslabError(f"tracking store {redact(self.uri)}: {e.message}") from None

    def reap(self) -> list[str]:
        """Mark KILLED every RUNNING run, in any experiment, whose losslab process on this
        host is gone (SIGKILL, power loss); returns their ids."""
        host = socket.gethostname()
        try:
            exps = [e.experiment_id for e in self.client.search_experiments(ViewType.ALL)]
            query = f"attributes.status = 'RUNNING' AND tags.`losslab.host` = '{host}'"
            runs = self.client.search_runs(exps, query, max_results=5000) if exps else []
            dead = []
            for run in runs:
                pid = int(run.data.tags.get("losslab.pid", "0") or 0)
                if pid and not _alive(pid):
                    self.client.set_terminated(run.info.run_id, "KILLED")
                    dead.append(run.info.run_id)
            return dead
        except MlflowException as e:
            raise LosslabError(f"tracking store {redact(self.uri)}: {e.message}") from None

    # -- runs --------------------------------------------------------------------------

    def start(
        self, experiment_id: str, run_name: str, tags: dict[str, str], seeds: Sequence[int]
    ) -> RunGroup:
        base = {
            **tags,
            "git_commit": self.commit,
            "losslab.host": socket.gethostname(),
            "losslab.pid": str(os.getpid()),
        }
        parent = self.client.create_run(experiment_id, run_name=run_name, tags=base).info.run_id
        group = RunGroup(experiment_id, parent)
        for s in seeds:
            child = {**base, "seed": str(s), "mlflow.parentRunId": parent}
            run = self.client.create_run(experiment_id, run_name=f"{run_name}/seed={s}", tags=child)
            group.seeds[s] = run.info.run_id
        return group

    def log(
        self,
        run_id: str,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        summary: dict[str, float | None] | None = None,
        curves: dict[str, Iterable[float]] | None = None,
    ) -> None:
        """Everything for one run in as few log_batch calls as MLflow's limits allow."""
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in (summary or {}).items() if v is not None]
        for name, values in (curves or {}).items():
            metrics += [Metric(name, v, now, e) for e, v in changes(values)]
        ps = [Param(k, v) for k, v in (params or {}).items()]
        ts = [RunTag(k, v) for k, v in (tags or {}).items()]
        # Pack params, tags and metrics together up to MLflow's per-call limits.
        while ps or ts or metrics:
            p_, ps = ps[:MAX_PARAMS], ps[MAX_PARAMS:]
            t_, ts = ts[:MAX_TAGS], ts[MAX_TAGS:]
            room = MAX_METRICS - len(p_) - len(t_)
            m_, metrics = metrics[:room], metrics[room:]
            self.client.log_batch(run_id, metrics=m_, params=p_, tags=t_)

    def artifact_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    def artifact_bytes(self, run_id: str, data: bytes, path: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            local = Path(d) / Path(path).name
            local.write_bytes(data)
            self.client.log_artifact(run_id, str(local), str(Path(path).parent).strip(".") or None)

    def end(self, group: RunGroup, status: str = "FINISHED") -> None:
        for run_id in group.all:
            self.client.set_terminated(run_id, status)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def changes(values: Any) -> list[tuple[int, float]]:
    """(epoch, value) where the value differs from the previous epoch's, and the last one.

    Lossless for a step function: a constant learning rate is 2 points instead of 500,
    a NaN tail after divergence 2 instead of hundreds; a changing loss keeps every epoch.
    """
    out: list[tuple[int, float]] = []
    prev: float | None = None
    n = len(values)
    for e, v in enumerate(np.asarray(values, dtype=np.float64).tolist(), start=1):
        same = prev is not None and (v == prev or (v != v and prev != prev))
        if not same or e == n:
            out.append((e, v))
        prev = v
    return out


def experiments(uri: str) -> list[tuple[str, str]]:
    """(name, id) of the store's active experiments, by name; MLflow's empty `Default` left out."""
    found = MlflowClient(uri).search_experiments(view_type=ViewType.ACTIVE_ONLY)
    return sorted((e.name, e.experiment_id) for e in found if e.name != "Default")
