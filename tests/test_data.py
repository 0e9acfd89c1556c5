"""Data sets are deterministic, and every kind of broken file is named precisely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from losslab.core.data import line, load_table, write_table
from losslab.core.errors import LosslabError
from projects import run_cli


def test_prepare_is_byte_identical(project: Path) -> None:
    path = project / "data" / "linear" / "points.csv"
    first = path.read_bytes()
    path.unlink()
    assert run_cli(project, "prepare", "scenario=linear").returncode == 0
    assert path.read_bytes() == first
    assert first.splitlines()[:3] == [b"x,y", b"1.0,0.5", b"2.0,1.0"]


def test_line_is_the_original_data() -> None:
    cols = line(1, 20, 0.5)
    assert cols["x"].tolist() == [float(i) for i in range(1, 21)]
    assert np.allclose(cols["y"], 0.5 * cols["x"])


def test_round_trip(tmp_path: Path) -> None:
    write_table(tmp_path / "t.csv", {"x": np.array([0.1, 1e-300, 3.0]), "y": np.array([1.0, 2.0, 3.0])})
    back = load_table(tmp_path / "t.csv", ["x", "y"])
    assert back["x"].tolist() == [0.1, 1e-300, 3.0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "missing data file"),
        ("", "empty, expected a header row"),
        ("x,y\n", "header only, no data rows"),
        ("x,z\n1,2\n", "lacks column(s) y (has: x, z)"),
        ("x,y\n1,2\n3\n", "line 3 has 1 fields, expected 2"),
        ("x,y\n1,2\n3,abc\n", "line 3 column y: 'abc' is not a number"),
        ("x,y\n1,nan\n", "line 2 column y is nan (not finite)"),
        ("x,y\ninf,1\n", "line 2 column x is inf (not finite)"),
        (b"x,y\n\xff\xfe,1\n", "corrupt data file"),
    ],
)
def test_bad_files_are_named(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "points.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(LosslabError) as err:
        load_table(path, ["x", "y"])
    assert message in str(err.value)
    assert str(path) in str(err.value)
