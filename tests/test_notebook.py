"""notebooks/why_does_my_loss_go_up.ipynb runs end to end, as a reader would run it."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from projects import ROOT

NOTEBOOK = ROOT / "notebooks" / "why_does_my_loss_go_up.ipynb"


def test_the_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow  # ~30 s: three linear variants, an lr sweep, the doctor on a small model
def test_the_notebook_runs_end_to_end(prepared: Path, tmp_path: Path) -> None:
    proj = shutil.copytree(prepared, tmp_path / "proj")
    path = proj / "notebooks" / NOTEBOOK.name
    nb = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}
    NotebookClient(nb, timeout=600, kernel_name="python3", resources=resources).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "broken: {'diverged': 3}" in text and "λ_max = 288.5" in text
    figures = [o for o in outputs if o.output_type == "display_data"]
    assert len(figures) == 2  # the curves beside the bound, the lr sweep against 2/λ_max
    assert "lr_too_high" in text  # the doctor on the reader's own model
    assert "cause: stale_gradients (confidence high)" in text  # the watch on a loop without zero_grad
