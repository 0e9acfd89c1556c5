"""`losslab server`: start an MLflow tracking server described by conf/mlflow_server/.

The config says where runs and artifacts live; this module checks it (schemes, no secret
on the command line, drivers installed, a public bind said out loud) and turns it into the
`mlflow server` command line. Validation is separate from launching so tests and
`--print` can check a cluster config (PostgreSQL + S3) on a machine that has neither.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from losslab.core.config import compose, project_root
from losslab.core.errors import LosslabError

# The driver module each backend needs in the server's environment (MLflow 3 connects to
# postgresql:// through psycopg 3, not psycopg2: tests/test_postgres.py found it).
BACKENDS = {"sqlite": None, "postgresql": "psycopg", "mysql": "pymysql", "mssql": "pyodbc"}
ARTIFACT_STORES = {"s3": "boto3", "gs": "google.cloud.storage", "wasbs": "azure.storage.blob"}


@dataclass
class ServerCommand:
    argv: list[str]
    env: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)  # modules the server process must import

    def shown(self) -> str:
        pre = " ".join(f"{k}={v}" for k, v in self.env.items())
        return f"{pre} {' '.join(self.argv)}".strip()


def _backend(uri: str, root: Path) -> tuple[str, str | None]:
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in BACKENDS:
        raise LosslabError(
            f"mlflow_server.backend_store_uri: unsupported scheme {parts.scheme!r} "
            f"(use one of {', '.join(BACKENDS)})"
        )
    if parts.password:
        raise LosslabError(
            "mlflow_server.backend_store_uri carries a password: a command line is visible to "
            "every user (ps); use PGPASSWORD / ~/.pgpass or the driver's own environment instead"
        )
    if scheme == "sqlite" and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{(root / uri[len('sqlite:///') :]).resolve()}"
    return uri, BACKENDS[scheme]


def _artifacts(dest: str, root: Path) -> tuple[str, str | None]:
    scheme = urllib.parse.urlsplit(dest).scheme
    if scheme in ARTIFACT_STORES:
        return dest, ARTIFACT_STORES[scheme]
    if scheme in ("", "file"):
        return str((root / dest.removeprefix("file://")).resolve()), None
    raise LosslabError(
        f"mlflow_server.artifacts_destination: unsupported scheme {scheme!r} "
        f"(use a local path or one of {', '.join(ARTIFACT_STORES)})"
    )


def _public(host: str) -> bool:
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name: may resolve to anything


def command(cfg: DictConfig) -> ServerCommand:
    """Validate the composed server config and build the `mlflow server` command."""
    root = Path(cfg.paths.root)
    s = cfg.mlflow_server
    backend, driver = _backend(str(s.backend_store_uri), root)
    artifacts, client = _artifacts(str(s.artifacts_destination), root)
    port, workers = s.port, s.workers
    if not isinstance(port, int) or not 0 < port < 65536:
        raise LosslabError(f"mlflow_server.port must be an integer in 1..65535, got {port!r}")
    if not isinstance(workers, int) or workers < 1:
        raise LosslabError(f"mlflow_server.workers must be a positive integer, got {workers!r}")
    mlflow = Path(sys.executable).with_name("mlflow")
    argv = [str(mlflow) if mlflow.exists() else "mlflow", "server"]
    argv += ["--backend-store-uri", backend, "--artifacts-destination", artifacts]
    argv += ["--host", str(s.host), "--port", str(port), "--workers", str(workers)]
    env = {str(k): str(v) for k, v in (s.get("env") or {}).items()}
    out = ServerCommand(argv, env, needs=[m for m in (driver, client) if m])
    if _public(str(s.host)):
        out.warnings.append(
            f"binding {s.host}: the server (no auth of its own) is reachable from the network"
        )
    return out


def missing_modules(cmd: ServerCommand) -> list[str]:
    return [m for m in cmd.needs if importlib.util.find_spec(m.split(".")[0]) is None]


def serve(overrides: list[str], dry_run: bool = False) -> int:
    cmd = command(compose(overrides, project_root(), name="serve"))
    for w in cmd.warnings:
        print(f"losslab: WARNING: {w}", file=sys.stderr)
    print(cmd.shown(), flush=True)
    if dry_run:
        return 0
    missing = missing_modules(cmd)
    if missing:
        raise LosslabError(f"this server config needs {', '.join(missing)}: pip install 'losslab[server]'")
    # exec, not a child: Ctrl-C and a service manager's SIGTERM reach the server itself.
    os.execvpe(cmd.argv[0], cmd.argv, {**os.environ, **cmd.env})
    return 0  # not reached
