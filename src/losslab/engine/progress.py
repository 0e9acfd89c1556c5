"""Progress of a long run: a live bar per variant over its epochs on a terminal, and one
line per finished variant (what `dvc repro` and CI logs show), nothing with `quiet`.

The bar counts the fit's epochs (`engine.hooks`: under Lightning or the engine's own loop;
a variant trains all its seeds at once, so one bar covers them all); Lightning's own bar
counts batches within an epoch, which for a full-batch run of 500 epochs says nothing.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm.auto import tqdm

from losslab.engine.hooks import FitHooks, State


class EpochBar(FitHooks):
    """tqdm over the fit's epochs, removed when the fit ends (the finished line replaces it)."""

    def __init__(self, label: str, epochs: int, stream: TextIO) -> None:
        self.label, self.epochs, self.stream = label, epochs, stream
        self.bar: tqdm | None = None

    def fit_started(self, state: State) -> None:
        self.bar = tqdm(total=self.epochs, desc=self.label, unit="epoch", leave=False, file=self.stream)

    def epoch_ended(self, state: State) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def fit_ended(self, state: State) -> None:
        self.close()

    def failed(self, error: BaseException) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.refresh()  # its last state, which the rate limit may have skipped
            self.bar.close()
            self.bar = None


class Progress:
    """What a run says while it works, on stderr (stdout keeps the results)."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = not quiet and self.stream.isatty()
        self.started = time.perf_counter()

    def start(self, label: str, epochs: int) -> list[FitHooks]:
        """The callbacks for one variant's fit: a bar on a terminal, none elsewhere."""
        self.clock()
        return [EpochBar(label, epochs, self.stream)] if self.live else []

    def clock(self) -> None:
        """From now on: the next finished lines say the time since (variants trained
        together finish together)."""
        self.started = time.perf_counter()

    def done(self, label: str, text: str) -> None:
        """One line for a finished variant."""
        if not self.quiet:
            took = time.perf_counter() - self.started
            print(f"losslab: {label}: {text} ({took:.1f} s)", file=self.stream, flush=True)
