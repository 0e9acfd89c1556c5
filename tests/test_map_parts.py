"""A map trained in parts: the same numbers whichever configurations share a chunk, pieces
that must add up, and a map split over a real local Ray cluster (one worker killed mid-way)
identical to the one-process map."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import psutil
import pytest

from losslab.core.errors import LosslabError
from losslab.core.grid import map_config
from losslab.engine.runtime import prepare_process
from losslab.mapping.result import merge
from losslab.mapping.train import prepare_map, run_map, theory, train_part
from projects import BIN, cli_env, run_cli

SMALL = ["map.lr.num=24", "map.seeds=[0,1]"]


@pytest.mark.parametrize("scenario", ["linear", "xor"])
def test_a_map_in_parts_is_the_map_in_one(prepared: Path, scenario: str) -> None:
    """Parts change which configurations share a tensor, never a number: every sum runs
    within one configuration (linear: one group over sizes; xor: one group per width)."""
    prepare_process("cpu")
    over = [f"scenario={scenario}", *SMALL, "map.epochs=200"]
    whole = run_map(*map_config(over, prepared))
    split = run_map(*map_config([*over, "map.parts=7"], prepared))
    assert split.grid.parts == 7
    np.testing.assert_array_equal(split.labels, whole.labels)
    np.testing.assert_array_equal(split.risen, whole.risen)
    np.testing.assert_array_equal(split.final_loss, whole.final_loss)
    np.testing.assert_array_equal(split.bounds, whole.bounds)


def test_pieces_that_do_not_add_up_are_an_error(prepared: Path) -> None:
    prepare_process("cpu")
    cfg, grid = map_config(["scenario=linear", *SMALL, "map.epochs=20", "map.parts=3"], prepared)
    ready = prepare_map(cfg, grid)
    bounds = theory(grid, ready)
    pieces = [train_part(grid, ready, k) for k in range(3)]
    assert sum(len(p.index) for p in pieces) == grid.size and all(len(p.index) for p in pieces)
    with pytest.raises(LosslabError, match="trainings missing"):
        merge(grid, bounds, 20, pieces[:2], 0.0)
    with pytest.raises(LosslabError, match="trained twice"):
        merge(grid, bounds, 20, [*pieces, pieces[0]], 0.0)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["map.parts=0"], "map.parts must be a positive integer, got 0"),
        (["hydra/launcher=ray_cluster"], "which only -m uses: losslab map -m"),
    ],
)
def test_bad_parts_are_one_line(project: Path, args: list[str], said: str) -> None:
    r = run_cli(project, "map", "scenario=linear", *args)
    assert r.returncode == 2 and said in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head() -> Iterator[tuple[str, Path]]:
    """A real Ray head on 127.0.0.1 with two CPUs (two jobs of one CPU run at once): its
    address, and its logs folder."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    port = _free_port()
    start = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}"]
    start += ["--num-cpus=2", "--include-dashboard=false", "--object-store-memory=100000000"]
    r = subprocess.run(
        [*start, f"--temp-dir={temp}", "--disable-usage-stats"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}", Path(temp) / "session_latest" / "logs"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _jobs_running() -> list[psutil.Process]:
    """Ray workers executing a Hydra job (Ray names a busy worker after its task)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        with_title = " ".join(p.info["cmdline"] or [])
        if with_title.startswith("ray::_run_job"):
            out.append(p)
    return out


@pytest.mark.slow
def test_a_map_split_over_a_ray_cluster_survives_a_killed_worker(
    project: Path, ray_head: tuple[str, Path]
) -> None:
    address, logs = ray_head
    grid = ["scenario=linear", "map.epochs=2000"]
    one = run_cli(project, "map", *grid)
    assert one.returncode == 0, one.stderr
    csv, png = (project / "maps" / "linear.csv").read_bytes(), (project / "maps" / "linear.png").read_bytes()
    (project / "maps" / "linear.csv").unlink()

    launcher = ["hydra/launcher=ray_cluster", "hydra.launcher.ray.remote.num_cpus=1"]
    cmd = [str(BIN / "losslab"), "map", "-m", *grid, "map.parts=4", *launcher]
    env = cli_env(project, RAY_ADDRESS=address)
    proc = subprocess.Popen(
        cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed, deadline = None, time.monotonic() + 240
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        busy = _jobs_running()
        if len(busy) >= 2:  # two workers at once: kill one in the middle of its part
            busy[0].send_signal(signal.SIGKILL)
            killed = busy[0].pid
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    assert killed is not None, f"never saw two Ray workers running a part at once\n{err[-3000:]}"
    assert proc.returncode == 0, err[-3000:]
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    # Ray saw that worker die in a task, and the driver resubmitted that task.
    assert f"Worker PID: {killed}" in (logs / "events" / "event_RAYLET.log").read_text()
    assert any("Will resubmit task" in f.read_text() for f in logs.glob("python-core-driver-*.log"))
    assert "Ray Launcher is launching 4 jobs" in out + err
    assert (project / "maps" / "linear.csv").read_bytes() == csv  # complete, and the same map
    assert (project / "maps" / "linear.png").read_bytes() == png
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("linear-map").experiment_id])
    assert sorted((r.data.params["parts"], r.info.status) for r in runs) == [
        ("1", "FINISHED"),
        ("4", "FINISHED"),
    ]
