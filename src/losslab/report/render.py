"""Figures rendered off the training process, by one spawned worker.

matplotlib costs ~0.8 s to import and ~0.4 s a figure here; a scenario draws one figure
per variant and one for all. A worker process renders them while training goes on, and
the training process never imports matplotlib. The worker ignores SIGINT/SIGTERM (the
caller decides) and exits on its own if the caller dies.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)  # orphaned: the caller was killed


def _init(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _warm() -> None:
    from losslab.report import figures  # noqa: F401  (the import is the warm-up)


def _render(name: str, *args: Any) -> bytes:
    # Imported here, in the worker only: the training process never loads matplotlib.
    from losslab.report import figures

    return getattr(figures, name)(*args)


class FigurePool:
    """`submit("variant_png", series, title)` -> a Future of PNG bytes."""

    def __init__(self) -> None:
        self._pool = ProcessPoolExecutor(
            1, mp_context=get_context("spawn"), initializer=_init, initargs=(os.getpid(),)
        )
        self._pool.submit(_warm)  # start the worker and its imports now, while training runs

    def submit(self, name: str, *args: Any) -> Future[bytes]:
        return self._pool.submit(_render, name, *args)

    def close(self, cancel: bool = False) -> None:
        """Always waits (at most the figure being drawn): on 3.11, an executor left shutting
        down at interpreter exit races its own wake-up pipe (`OSError: Bad file descriptor`
        printed by `concurrent.futures`' atexit hook), which an interrupt must not print."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)
