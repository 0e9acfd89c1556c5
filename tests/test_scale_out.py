"""Scale-out configs: cluster launchers, a team tracking server, server launch configs and a
DVC remote. The local paths run for real elsewhere (test_multirun, test_server); here the
cluster ones are composed against their real schemas and validated."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import instantiate
from hydra_plugins.hydra_ray_launcher._config import RayLauncherConf
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from losslab import server
from losslab.core import config
from losslab.core.errors import LosslabError
from losslab.tracking import params, uri
from projects import ROOT, copy_project, git, run_tool


@pytest.fixture
def hydra_conf() -> Iterator[None]:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        yield


def _launcher(*overrides: str) -> dict[str, Any]:
    cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    node = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert isinstance(node, dict)
    return node


def test_default_launcher_is_joblib_with_two_workers(hydra_conf: None) -> None:
    node = _launcher()
    assert node["_target_"].endswith("JoblibLauncher") and node["n_jobs"] == 2


def test_slurm_launcher_composes_against_the_submitit_schema(
    hydra_conf: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    monkeypatch.setenv("LOSSLAB_SLURM_PARTITION", "gpu-long")
    node = _launcher("hydra/launcher=slurm", "hydra.launcher.gpus_per_node=1")
    assert node["_target_"].endswith("SlurmLauncher")
    assert node["partition"] == "gpu-long" and node["gpus_per_node"] == 1
    assert node["setup"] == ["export OMP_NUM_THREADS=2"]
    assert node["submitit_folder"].startswith("multirun/") and node["submitit_folder"].endswith("/%j")
    launcher = instantiate(node)  # what Hydra does before submitting; nothing is submitted here
    assert isinstance(launcher, SlurmLauncher)


def test_slurm_launcher_rejects_a_misspelt_key(hydra_conf: None) -> None:
    with pytest.raises((HydraException, OmegaConfBaseException)):
        _launcher("hydra/launcher=slurm", "hydra.launcher.cpus_per_tsk=4")


RAY_REMOTE_OPTIONS = {"num_cpus", "num_gpus", "memory", "resources", "max_calls", "max_retries"}


def test_ray_launcher_matches_the_plugin_schema(hydra_conf: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    node = _launcher("hydra/launcher=ray_cluster")
    # The plugin's own schema (a dev dependency since the maps run on Ray): unknown keys fail.
    merged = OmegaConf.merge(OmegaConf.structured(RayLauncherConf), node)
    assert merged._target_ == RayLauncherConf._target_
    assert merged.ray.init.address == "ray://head:10001"
    assert set(merged.ray.remote) <= RAY_REMOTE_OPTIONS
    assert merged.ray.init.object_store_memory is None  # else Ray refuses a running cluster
    # Built as Hydra builds it (nothing connects until a sweep launches); Hydra's plugin scan
    # imports the module again, so compare the class by name.
    assert type(instantiate(node)).__qualname__ == "RayLauncher"


def test_team_tracking_reads_the_environment_and_never_logs_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "tok-9f8e7d"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://alice:{secret}@mlflow.example.org")
    cfg = config.compose(["tracking=team"], ROOT)
    resolved = uri.resolve_uri(cfg)
    assert resolved == f"https://alice:{secret}@mlflow.example.org"
    link = uri.compare_url(resolved, cfg.tracking.ui_url, "1", ["abc"])
    assert link.startswith("https://mlflow.example.org/#/compare-runs") and secret not in link
    assert secret not in str(params.flatten(cfg))
    assert secret not in uri.redact(resolved)


def _serve(*overrides: str) -> server.ServerCommand:
    return server.command(config.compose(list(overrides), ROOT, name="serve"))


def test_local_server_config_binds_loopback_on_the_project_store() -> None:
    cmd = _serve()
    argv = cmd.argv
    assert argv[1] == "server"
    assert argv[argv.index("--backend-store-uri") + 1] == f"sqlite:///{ROOT / 'mlflow.db'}"
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and not cmd.warnings
    assert cmd.env == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"} and cmd.needs == []


def test_postgres_s3_server_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGUSER", "tracker")
    monkeypatch.setenv("PGHOST", "db.internal")
    monkeypatch.setenv("PGPASSWORD", "pg-secret")  # read by libpq (psycopg) itself
    monkeypatch.setenv("LOSSLAB_S3_BUCKET", "team-bucket")
    cmd = _serve("mlflow_server=postgres_s3")
    argv = cmd.argv
    assert argv[argv.index("--backend-store-uri") + 1] == "postgresql://tracker@db.internal:5432/mlflow"
    assert argv[argv.index("--artifacts-destination") + 1] == "s3://team-bucket/losslab"
    assert argv[argv.index("--workers") + 1] == "4"
    assert cmd.needs == ["psycopg", "boto3"]
    assert "pg-secret" not in cmd.shown()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["mlflow_server.backend_store_uri=postgresql://u:pw@h/db"], "carries a password"),
        (["mlflow_server.backend_store_uri=redis://h/0"], "unsupported scheme 'redis'"),
        (["mlflow_server.artifacts_destination=ftp://h/x"], "unsupported scheme 'ftp'"),
        (["mlflow_server.port=0"], "mlflow_server.port must be"),
        (["mlflow_server.workers=0"], "mlflow_server.workers must be"),
    ],
)
def test_server_config_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(LosslabError, match=message):
        _serve("mlflow_server=postgres_s3", *overrides)


def test_public_bind_is_said_out_loud() -> None:
    assert "reachable from the network" in _serve("mlflow_server.host=0.0.0.0").warnings[0]


@pytest.mark.slow
def test_dvc_remote_round_trip(prepared: Path, tmp_path: Path) -> None:
    """Data pushed to a DVC remote comes back byte-identical into a clone without it."""
    proj = copy_project(tmp_path / "repo")
    git(proj, "init", "-q")
    assert run_tool(proj, "dvc", "repro", "prepare@linear").returncode == 0
    original = (proj / "data" / "linear" / "points.csv").read_bytes()
    remote = tmp_path / "remote"
    for cmd in (["remote", "add", "-d", "team", str(remote)], ["push"]):
        r = run_tool(proj, "dvc", *cmd)
        assert r.returncode == 0, r.stderr
    shutil.rmtree(proj / "data" / "linear")
    shutil.rmtree(proj / ".dvc" / "cache")
    r = run_tool(proj, "dvc", "pull", "prepare@linear")
    assert r.returncode == 0, r.stderr
    assert (proj / "data" / "linear" / "points.csv").read_bytes() == original
