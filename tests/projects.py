"""Helpers for tests: temp copies of the project, and running the real CLI in them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def project_files() -> list[str]:
    """What a clone would hold: tracked files plus untracked-but-not-ignored ones."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    return [f for f in out if f and (ROOT / f).is_file()]


def git(project: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=test@losslab", "-c", "user.name=test", *args],
        cwd=project,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def copy_project(dest: Path, init_git: bool = False) -> Path:
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    if init_git:
        git(dest, "init", "-q")
        git(dest, "add", "-A")
        git(dest, "commit", "-qm", "clone")
    return dest


def cli_env(project: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LOSSLAB_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["LOSSLAB_ROOT"] = str(project)
    env.update(extra)
    return env


def run_cli(project: Path, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "losslab"), *args],
        cwd=project,
        env=cli_env(project, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_tool(project: Path, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """A tool from the venv (dvc, mlflow) in the project, as a user would run it."""
    return subprocess.run(
        [str(BIN / cmd[0]), *cmd[1:]],
        cwd=project,
        env=cli_env(project),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


FAULTY_SCHEDULE = ["scheduler={_target_:faults.failing_schedule,_partial_:true}"]


def fault_env() -> dict[str, str]:
    """Environment that lets a config name tests/faults.py objects."""
    return {"PYTHONPATH": str(ROOT / "tests")}


def run_statuses(project: Path) -> list[str]:
    """Statuses of every run in the project's sqlite store, read with plain sqlite: a run may
    still be creating the store, and a second MLflow client would race its schema migration.

    No store file, or one whose schema is not written yet, means no runs; any other database
    error (a corrupt file) raises, so a check that nothing is RUNNING cannot pass vacuously.
    """
    import sqlite3

    db = project / "mlflow.db"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=15) as con:
            return [status for (status,) in con.execute("SELECT status FROM runs")]
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # the store is being created right now
            return []
        raise
