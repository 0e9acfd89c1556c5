"""`losslab list` (what a project holds) and the progress a long run shows on stderr."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from losslab.core.catalogue import catalogue
from losslab.core.config import compose
from losslab.core.errors import LosslabError
from losslab.engine.progress import Progress
from losslab.fit import fit
from projects import ROOT, run_cli


def test_list_holds_every_variant_with_its_role_and_expectation() -> None:
    entries = catalogue(ROOT)
    by = {(e.scenario, e.variant): e for e in entries}
    assert len(entries) == sum(1 for _ in (ROOT / "conf" / "variant").glob("*/*.yaml"))
    assert (by["linear", "broken"].role, by["linear", "broken"].expected) == ("broken", "diverged")
    assert by["relu_head", "scaled"].min_rate == 0.6 and by["relu_head", "scaled"].role == "fix"
    assert entries[0].variant == "broken"  # the broken original first
    with pytest.raises(LosslabError, match="unknown scenario 'nope'"):
        catalogue(ROOT, ["nope"])


def test_list_of_a_users_folder_shows_its_own_scenario_only() -> None:
    entries = catalogue((ROOT / "examples" / "moons").resolve())
    assert [(e.scenario, e.variant, e.role) for e in entries] == [("moons", "base", "subject")]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream", [io.StringIO(), _Terminal()], ids=["log", "terminal"])
def test_progress_bar_on_a_terminal_and_a_line_per_finished_variant(
    stream: io.StringIO, prepared: Path
) -> None:
    cfg = compose(["scenario=xor", "variant=broken", "seeds=[0]", "fit.epochs=7"], prepared)
    progress = Progress(stream=stream)
    fit(cfg, callbacks=progress.start("xor/broken", 7))
    progress.done("xor/broken", "rising 1/1")
    text = stream.getvalue()
    assert text.rstrip().splitlines()[-1].startswith("losslab: xor/broken: rising 1/1 (")
    assert ("7/7" in text) == stream.isatty()  # the live bar counted the epochs, on a terminal only


def test_quiet_run_says_nothing_on_stderr_and_a_run_says_one_line_per_variant(project: Path) -> None:
    args = ("run", "scenario=xor", "variant=broken", "seeds=[0]", "fit.epochs=5")
    loud = run_cli(project, *args)
    assert loud.returncode == 0, loud.stderr
    lines = [s for s in loud.stderr.splitlines() if s.startswith("losslab: xor/broken: ")]
    assert len(lines) == 1 and "expected rising" in lines[0], loud.stderr
    quiet = run_cli(project, *args, "--quiet")
    assert quiet.returncode == 0 and "losslab: xor/broken" not in quiet.stderr, quiet.stderr
