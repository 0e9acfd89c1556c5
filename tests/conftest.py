"""Shared fixtures: prepared temp copies of the project."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from projects import copy_project, run_cli


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy with every scenario's data prepared (tests copy it before changing it)."""
    proj = copy_project(tmp_path_factory.mktemp("prepared"))
    for name in sorted(p.stem for p in (proj / "conf" / "scenario").glob("*.yaml")):
        r = run_cli(proj, "prepare", f"scenario={name}")
        assert r.returncode == 0, r.stderr
    return proj


@pytest.fixture
def project(prepared: Path, tmp_path: Path) -> Path:
    """A fresh, prepared project copy a test may modify."""
    dest = tmp_path / "proj"
    shutil.copytree(prepared, dest)
    return dest
