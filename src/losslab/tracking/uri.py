"""Where runs go: the tracking URI, its reachability, and credential-free links to the UI."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from losslab.core.errors import LosslabError
from losslab.core.files import probe_write


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


def ui_base(uri: str, ui_url: str) -> str:
    """Where the MLflow UI for this store is served."""
    # A link never carries credentials.
    return without_userinfo(uri if uri.startswith(("http://", "https://")) else ui_url)


def compare_url(uri: str, ui_url: str, experiment_id: str, run_ids: Sequence[str]) -> str:
    runs = urllib.parse.quote(json.dumps(list(run_ids), separators=(",", ":")))
    exps = urllib.parse.quote(json.dumps([experiment_id], separators=(",", ":")))
    return f"{ui_base(uri, ui_url)}/#/compare-runs?runs={runs}&experiments={exps}"


def loss_chart_url(
    uri: str, ui_url: str, experiment_id: str, run_ids: Sequence[str], metric: str = "loss"
) -> str:
    """MLflow's metric page for `metric` over the runs, one line per run on a log y axis:
    broken and fixed variants drawn together with no clicks (the compare page shows tables)."""

    def q(value: object) -> str:
        return urllib.parse.quote(json.dumps(value, separators=(",", ":")))

    query = (
        f"runs={q(list(run_ids))}&metric={q(metric)}&experiments={q([experiment_id])}"
        f"&plot_metric_keys={q([metric])}&plot_layout={q({})}&x_axis=step&y_axis_scale=log"
        f"&line_smoothness=1&show_point=false&deselected_curves={q([])}&last_linear_y_axis_range={q([])}"
    )
    return f"{ui_base(uri, ui_url)}/#/metric?{query}"


def ui_command(uri: str, ui_url: str) -> str:
    if uri.startswith("sqlite:"):
        port = urllib.parse.urlsplit(ui_url).port or 5000
        return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port {port}"
    return f"open {ui_base(uri, ui_url)}"
