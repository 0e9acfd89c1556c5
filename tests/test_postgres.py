"""The team server path against a real PostgreSQL: `losslab server mlflow_server=postgres_s3`
on a throwaway cluster (Debian's postgresql, 127.0.0.1, trust auth, a temp dir), a scenario
logged over HTTP with `tracking=team`, runs read back through the REST API, and a SIGKILLed
stage's runs ending KILLED on the next start. Artifacts stay in a local directory here
(`mlflow_server.artifacts_destination`): the S3 side is not exercised."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from projects import BIN, ROOT, cli_env, run_cli

pytestmark = pytest.mark.slow


def _pg(tool: str) -> str:
    found = shutil.which(tool) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))), None)
    if found is None:
        pytest.fail(f"PostgreSQL's {tool} is not installed (.ci/run installs Debian's postgresql)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb refuses root: run the cluster as the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def database() -> Iterator[dict[str, str]]:
    # Not under pytest's tmp dir: that is private to root, and the cluster runs as postgres.
    home = Path(tempfile.mkdtemp(prefix="losslab-pg-"))
    data = home / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
        shutil.chown(data, "postgres")
    port = str(_free_port())
    run = lambda cmd: subprocess.run(_as_postgres(cmd), check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run([_pg("initdb"), "-D", str(data), "-A", "trust", "-U", "mlflow", "--no-sync"])
        opts = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
        run([_pg("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(home / "log"), "-w", "start"])
        try:
            run([_pg("createdb"), "-h", "127.0.0.1", "-p", port, "-U", "mlflow", "mlflow"])
            yield {"PGHOST": "127.0.0.1", "PGPORT": port, "PGUSER": "mlflow", "PGDATABASE": "mlflow"}
        finally:
            run([_pg("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def team_server(database: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    artifacts = tmp_path_factory.mktemp("artifacts")
    args = ["server", "mlflow_server=postgres_s3", f"mlflow_server.port={port}", "mlflow_server.workers=1",
            f"mlflow_server.artifacts_destination={artifacts}"]  # fmt: skip
    proc = subprocess.Popen(
        [str(BIN / "losslab"), *args], env=cli_env(ROOT, **database),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.time() < deadline, "the team server did not come up"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _runs(url: str, experiment: str) -> list[dict]:
    with urllib.request.urlopen(
        f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}"
    ) as r:
        exp_id = json.loads(r.read())["experiment"]["experiment_id"]
    body = json.dumps({"experiment_ids": [exp_id], "max_results": 1000}).encode()
    req = urllib.request.Request(
        f"{url}/api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read()).get("runs", [])


def test_the_backend_is_postgresql(team_server: str, database: dict[str, str]) -> None:
    import psycopg

    conninfo = f"host={database['PGHOST']} port={database['PGPORT']} user=mlflow dbname=mlflow"
    with psycopg.connect(conninfo) as con:
        found = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'runs'")
        assert found.fetchone()[0] == 1  # MLflow created its schema in this database


def test_a_scenario_logs_over_http_and_reads_back(team_server: str, prepared: Path, tmp_path: Path) -> None:
    proj = shutil.copytree(prepared, tmp_path / "proj")
    args = ("run", "scenario=xor", "variant=broken", "tracking=team", "seeds=[0,1]", "fit.epochs=20", "-q")
    r = run_cli(proj, *args, MLFLOW_TRACKING_URI=team_server)
    assert r.returncode == 0, r.stderr
    runs = _runs(team_server, "xor")
    assert len(runs) == 1 + 2 and {x["info"]["status"] for x in runs} == {"FINISHED"}
    parent = next(x for x in runs if not any(t["key"] == "mlflow.parentRunId" for t in x["data"]["tags"]))
    assert any(m["key"] == "success_rate" for m in parent["data"]["metrics"])


def test_a_sigkilled_stage_ends_killed_on_the_next_start(
    team_server: str, prepared: Path, tmp_path: Path
) -> None:
    proj = shutil.copytree(prepared, tmp_path / "proj")
    env = {"MLFLOW_TRACKING_URI": team_server}
    proc = subprocess.Popen(
        [str(BIN / "losslab"), "run", "scenario=linear", "variant=broken", "tracking=team", "seeds=[0,1]",
         "fit.epochs=100000", "-q"],
        cwd=proj, env=cli_env(proj, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not [x for x in _safe_runs(team_server, "linear") if x["info"]["status"] == "RUNNING"]:
            assert time.time() < deadline and proc.poll() is None, "the stage never started its runs"
            time.sleep(0.5)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its helpers: nobody left to clean up
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert {x["info"]["status"] for x in _runs(team_server, "linear")} == {"RUNNING"}
    r = run_cli(proj, "run", "scenario=xor", "variant=broken", "tracking=team", "seeds=[0]", "fit.epochs=3",
                "-q", **env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    statuses = [x["info"]["status"] for x in _runs(team_server, "linear")]
    assert statuses and set(statuses) == {"KILLED"}


def _safe_runs(url: str, experiment: str) -> list[dict]:
    try:
        return _runs(url, experiment)
    except OSError:  # the experiment does not exist yet (404)
        return []
