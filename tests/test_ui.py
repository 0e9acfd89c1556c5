"""`losslab ui`: one light server process, the experiments' links, and Ctrl-C leaves nothing."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from projects import BIN, cli_env, run_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (ppid links)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


@pytest.mark.slow  # ~30 s: a run, then the UI server up and down
def test_ui_is_one_server_that_ctrl_c_takes_down(project: Path) -> None:
    assert (
        run_cli(
            project, "run", "scenario=linear", "variant=adam", "seeds=[0]", "fit.epochs=3", "-q"
        ).returncode
        == 0
    )
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "losslab"), "ui", "--port", str(port)],
        cwd=project, env=cli_env(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "the UI did not come up"
                time.sleep(0.5)
        below = _descendants(proc.pid)
        assert 1 <= len(below) <= 2  # the mlflow command and its one uvicorn worker; no job runner
        proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "stopped by SIGINT; the UI server with it" in err
    assert f"linear: http://127.0.0.1:{port}/#/experiments/" in out
    time.sleep(1)
    assert not [p for p in below if Path(f"/proc/{p}").exists()]  # no orphan
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
