"""MLflow: one experiment per scenario, one parent run per variant, one nested run per seed.

Why the client API and not Lightning's MLFlowLogger: one fit trains every seed of a
variant at once (see models.Ensemble), so one fit feeds several runs; and the logger
writes every step as its own call (~3 ms on sqlite, 10-50 ms over HTTP), while a
500-epoch curve buffered and sent with `log_batch` costs one call per 1000 points.

The MLflow client lives in a child process (`TrackerProcess`): sqlite or HTTP writes
happen on another core while training goes on, and the trainer never imports MLflow.

Runs are created before training (RUNNING) and always end FINISHED, FAILED or KILLED.
If the training process dies (SIGKILL), the writer sees its pipe close and marks the
open runs KILLED; a run left RUNNING anyway (both died: power loss) is marked KILLED
the next time losslab opens that experiment.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import queue
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from losslab.errors import LosslabError

MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
PARAM_VALUE_LIMIT = 6000


def resolve_uri(cfg: DictConfig) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else sqlite at the project root (absolute)."""
    root = Path(cfg.paths.root)
    uri = cfg.tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///") :]
        uri = f"sqlite:///{(root / rel).resolve()}"
    elif "://" not in uri:
        raise LosslabError(f"malformed tracking URI {redact(uri)!r}: expected sqlite:///… or http(s)://…")
    return uri


def without_userinfo(url: str) -> str:
    """The URL without user:password@ (for links and requests), no trailing slash."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")


def redact(uri: str) -> str:
    """Drop user:password@ from a URI before it is printed or logged."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    if parts.password or parts.username:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        parts = parts._replace(netloc=f"***@{host}")
    return urllib.parse.urlunsplit(parts)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail before training, in one line, if the store cannot be written or reached."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme == "sqlite":
        path = Path(uri[len("sqlite:///") :])
        if not path.parent.is_dir():
            raise LosslabError(f"tracking store directory does not exist: {path.parent}")
        _check_sqlite(path)
    elif scheme in ("http", "https"):
        parts = urllib.parse.urlsplit(uri)
        req = urllib.request.Request(without_userinfo(uri) + "/health")
        if parts.username:  # user:password@ in the URI: send it as MLflow's client would
            import base64

            pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            req.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                if r.status != 200:
                    raise LosslabError(f"tracking server {redact(uri)} answered {r.status} on /health")
        except LosslabError:
            raise
        except Exception as e:
            reason = getattr(e, "reason", e)
            raise LosslabError(f"tracking server {redact(uri)} unreachable: {reason}") from None
    elif scheme not in ("postgresql", "mysql", "mssql", "databricks", "file"):
        raise LosslabError(f"unsupported tracking URI scheme {scheme!r} in {redact(uri)}")


def _check_sqlite(path: Path) -> None:
    """Probe with a real write and a real open: MLflow itself would retry a bad store for
    ~100 s, printing a warning each time."""
    import sqlite3

    from losslab.report import probe_write

    try:
        probe_write(path.parent)
        if path.exists():
            con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
            try:
                con.execute("PRAGMA schema_version").fetchone()
            finally:
                con.close()
    except sqlite3.DatabaseError as e:
        raise LosslabError(f"tracking store {path} is not a usable sqlite database: {e}") from None
    except OSError as e:
        raise LosslabError(f"tracking store is not writable: {path} ({e.strerror or e})") from None


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
        import logging

        from mlflow import MlflowClient

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
        """Get or create the experiment; reap runs whose process died while RUNNING."""
        from mlflow.exceptions import MlflowException

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
            self._reap(exp.experiment_id)
            return exp.experiment_id
        except MlflowException as e:
            raise LosslabError(f"tracking store {redact(self.uri)}: {e.message}") from None

    def _reap(self, experiment_id: str) -> None:
        host = socket.gethostname()
        for run in self.client.search_runs(
            [experiment_id], "attributes.status = 'RUNNING'", max_results=1000
        ):
            tags = run.data.tags
            pid = int(tags.get("losslab.pid", "0") or 0)
            if tags.get("losslab.host") == host and pid and not _alive(pid):
                self.client.set_terminated(run.info.run_id, "KILLED")

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
        from mlflow.entities import Metric, Param, RunTag

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


# --- links -------------------------------------------------------------------------------


def ui_base(uri: str, ui_url: str) -> str:
    """Where the MLflow UI for this store is served."""
    # A link never carries credentials.
    return without_userinfo(uri if uri.startswith(("http://", "https://")) else ui_url)


def compare_url(uri: str, ui_url: str, experiment_id: str, run_ids: Sequence[str]) -> str:
    runs = urllib.parse.quote(json.dumps(list(run_ids), separators=(",", ":")))
    exps = urllib.parse.quote(json.dumps([experiment_id], separators=(",", ":")))
    return f"{ui_base(uri, ui_url)}/#/compare-runs?runs={runs}&experiments={exps}"


def ui_command(uri: str, ui_url: str) -> str:
    if uri.startswith("sqlite:"):
        port = urllib.parse.urlsplit(ui_url).port or 5000
        return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port {port}"
    return f"open {ui_base(uri, ui_url)}"


# --- the writer process --------------------------------------------------------------------


class _Writer:
    """Child-process side: Tracker calls addressed by variant key instead of run id.

    The trainer never waits for a run id (creating runs would otherwise stall it behind
    the previous variant's logging); `close` returns the keys' RunGroups at the end.
    """

    def __init__(self) -> None:
        self.tracker: Tracker | None = None
        self.groups: dict[str, RunGroup] = {}
        self.open: set[str] = set()

    def open_store(self, uri: str, ui_url: str, root: Path) -> None:
        self.tracker = Tracker(uri, ui_url, root)

    def experiment(self, name: str) -> str:
        assert self.tracker is not None
        return self.tracker.experiment(name)

    def start(self, key: str, experiment_id: str, run_name: str, tags: dict, seeds: list[int]) -> None:
        assert self.tracker is not None
        self.groups[key] = self.tracker.start(experiment_id, run_name, tags, seeds)
        self.open.add(key)

    def _run(self, key: str, seed: int | None) -> str:
        group = self.groups[key]
        return group.parent if seed is None else group.seeds[seed]

    def log(self, key: str, seed: int | None, params: Any, tags: Any, summary: Any, curves: Any) -> None:
        assert self.tracker is not None
        self.tracker.log(self._run(key, seed), params, tags, summary, curves)

    def artifact_text(self, key: str, text: str, path: str) -> None:
        assert self.tracker is not None
        self.tracker.artifact_text(self.groups[key].parent, text, path)

    def artifact_bytes(self, key: str, data: bytes, path: str) -> None:
        assert self.tracker is not None
        self.tracker.artifact_bytes(self.groups[key].parent, data, path)

    def figure(self, fn: str, args: tuple, key: str | None, dest: str) -> None:
        """Render figures.<fn>(*args) to PNG: an artifact of `key`'s parent run, or a file."""
        from losslab import figures, report

        data = figures.png(getattr(figures, fn)(*args))
        if key is None:
            report.atomic_write(Path(dest), data)
        else:
            self.artifact_bytes(key, data, dest)

    def end(self, key: str, status: str) -> None:
        assert self.tracker is not None
        if key in self.groups:
            self.tracker.end(self.groups[key], status)
        self.open.discard(key)

    def kill_open(self) -> None:
        for key in list(self.open):
            with contextlib.suppress(Exception):
                self.end(key, "KILLED")


def _serve(conn: Any) -> None:
    """Child process: apply calls from the pipe in order; on EOF mark open runs KILLED."""
    writer = _Writer()
    deferred: str | None = None  # first error of a call nobody waited for
    while True:
        try:
            name, args, reply = conn.recv()
        except (EOFError, OSError):  # the training process died or gave up
            writer.kill_open()
            return
        try:
            if name == "close":
                if deferred:
                    raise RuntimeError(deferred)
                value = writer.groups
            elif deferred and name != "end":
                value = None  # the store already failed: skip the rest, keep ends
            else:
                value = getattr(writer, name)(*args)
            if reply:
                conn.send(("ok", value))
        except Exception as e:
            text = str(getattr(e, "message", "") or e).strip().splitlines()
            err = f"{type(e).__name__}: {text[0] if text else ''}" if name != "close" else str(e)
            if reply:
                conn.send(("error", err))
            elif deferred is None:
                deferred = err
        if name == "close":
            writer.kill_open()
            conn.close()
            return


class TrackerProcess:
    """The tracking API, served by a child process so logging overlaps training.

    Only `experiment` and `close` wait for an answer; everything else is queued. Figures
    are rendered there too: matplotlib never loads in the training process.
    """

    def __init__(self, uri: str, ui_url: str, root: Path) -> None:
        self.uri, self.ui_url = uri, ui_url
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="losslab-tracking")
        self._proc.start()
        child.close()
        self._pending: list[str] = []
        # A pipe blocks once ~64 KB are unread; a thread feeds it from an unbounded queue
        # so training never waits for the store. The pipe stays: its EOF tells the writer
        # that this process died.
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._send_error: BaseException | None = None
        self._sender = threading.Thread(target=self._pump, daemon=True, name="losslab-tracking-send")
        self._sender.start()
        # Connecting (importing MLflow, migrating a new store) overlaps the caller's own
        # start-up; its result is collected by the next call that waits for a reply.
        self._send("open_store", uri, ui_url, root, reply=True)

    @classmethod
    def open(cls, cfg: DictConfig) -> TrackerProcess:
        uri = resolve_uri(cfg)
        check_reachable(uri)
        return cls(uri, cfg.tracking.ui_url, Path(cfg.paths.root))

    def _pump(self) -> None:
        while (msg := self._outbox.get()) is not None:
            try:
                self._conn.send(msg)
            except BaseException as e:  # writer gone: report on the next waiting call
                self._send_error = e
                return

    def _send(self, name: str, *args: Any, reply: bool) -> None:
        if self._send_error is not None:
            raise LosslabError(f"tracking writer for {redact(self.uri)} died") from None
        self._outbox.put((name, args, reply))
        if reply:
            self._pending.append(name)

    def _call(self, name: str, *args: Any, reply: bool = True) -> Any:
        """Send a call; with reply=True wait for it (and any earlier unanswered call)."""
        self._send(name, *args, reply=reply)
        value = None
        while reply and self._pending:
            self._pending.pop(0)
            try:
                status, value = self._conn.recv()
            except (EOFError, OSError):
                raise LosslabError(f"tracking writer for {redact(self.uri)} died") from None
            if status == "error":
                raise LosslabError(f"tracking store {redact(self.uri)}: {value}")
        return value

    def experiment(self, name: str) -> str:
        return self._call("experiment", name)

    def start(self, key: str, experiment_id: str, run_name: str, tags: dict, seeds: Sequence[int]) -> None:
        self._call("start", key, experiment_id, run_name, tags, list(seeds), reply=False)

    def log(
        self,
        key: str,
        seed: int | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        summary: dict[str, float | None] | None = None,
        curves: dict[str, Any] | None = None,
    ) -> None:
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in (curves or {}).items()}
        self._call("log", key, seed, params, tags, summary, arrays, reply=False)

    def artifact_text(self, key: str, text: str, path: str) -> None:
        self._call("artifact_text", key, text, path, reply=False)

    def artifact_bytes(self, key: str, data: bytes, path: str) -> None:
        self._call("artifact_bytes", key, data, path, reply=False)

    def figure(self, fn: str, *args: Any, key: str | None = None, dest: str) -> None:
        """Queue a figure, losslab.figures.<fn>(*args), for rendering off the training process.

        Send plain data (arrays, small dataclasses): pickling happens on a thread that
        shares the GIL with training.
        """
        self._call("figure", fn, args, key, dest, reply=False)

    def end(self, key: str, status: str = "FINISHED") -> None:
        self._call("end", key, status, reply=False)

    def _stop_sender(self) -> None:
        self._outbox.put(None)
        self._sender.join(timeout=60)

    def close(self) -> dict[str, RunGroup]:
        """Wait for every queued write; return the runs by key; raise if a write failed."""
        try:
            return self._call("close")
        finally:
            self._stop_sender()
            self._proc.join(timeout=60)

    def abort(self) -> None:
        """Stop the writer after a failure: queued calls (FAILED ends among them) are still
        applied, then it sees EOF and marks any run still open KILLED."""
        try:
            self._stop_sender()
            self._conn.close()
        finally:
            self._proc.join(timeout=60)

    def compare_url(self, experiment_id: str, run_ids: Sequence[str]) -> str:
        return compare_url(self.uri, self.ui_url, experiment_id, run_ids)

    def ui_command(self) -> str:
        return ui_command(self.uri, self.ui_url)
