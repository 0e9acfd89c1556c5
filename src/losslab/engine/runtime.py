"""Process set-up for training: memory, quiet logs, deterministic GPU kernels."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from losslab.core.numerics import pinned_capability

# A stability map allocates the same few large buffers every epoch: kept in the heap they
# are reused with no page faults (bench/map.py: 2-4× faster than at 128 KiB, where every
# epoch maps and unmaps them). Its memory stays bounded by the chunk size.
BATCHED_MMAP_THRESHOLD = 64 * 2**20
# The engine's loop in `fit` (engine.direct) allocates per-step buffers of ~1 MiB: below this
# they come from the heap (relu_head's stage 62 s -> 40 s; peak 0.6 GiB), while Lightning's
# loop and vmap fragment a heap that size (the same stage under Lightning: 5.5 GiB).
LOOP_MMAP_THRESHOLD = 4 * 2**20
GLIBC_DEFAULT = 128 * 1024  # glibc's mmap and trim thresholds before anything pins them


def steady_malloc(threshold: int = GLIBC_DEFAULT, trim: int | None = None) -> None:
    """Pin glibc's mmap threshold (default 128 KiB) so freed tensor buffers go back to the OS.

    By default glibc raises the threshold after large blocks are freed; from then on the
    per-step and per-epoch buffers come from the heap, fragment it and are never returned:
    the relu_head stage grew past 4.5 GiB. Pinned: 0.45 GiB at the same speed (see
    bench/README.md). A map's process pins it high instead (`BATCHED_MMAP_THRESHOLD`), and
    the heap's trim threshold with it (`trim`), else the freed top of the heap goes back to
    the OS every epoch. No-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD
        if trim is not None:
            libc.mallopt(-1, trim)  # M_TRIM_THRESHOLD


@contextlib.contextmanager
def loop_malloc() -> Iterator[None]:
    """The engine loop's heap (`LOOP_MMAP_THRESHOLD`, trimmed past 4× that) while it runs;
    the pinned 128 KiB again afterwards, for whatever trains next (the doctor, Lightning)."""
    steady_malloc(LOOP_MMAP_THRESHOLD, trim=4 * LOOP_MMAP_THRESHOLD)
    try:
        yield
    finally:
        steady_malloc(GLIBC_DEFAULT, trim=GLIBC_DEFAULT)


def quiet_lightning() -> None:
    """Keep stdout for the verdicts: Lightning's banners and tips say nothing here."""
    for name in ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message="Using a target size")  # probes.loss_broadcast says it louder


def check_cpu_kernels() -> None:
    """Say so once when torch chose its CPU kernels before losslab could pin them (torch
    ran an operation before `import losslab`): the numbers may then differ in the last
    digits from other machines' (core/numerics.py)."""
    # Deferred: torch is imported by the caller already; this module stays import-light.
    import torch

    want = pinned_capability()
    have = torch.backends.cpu.get_cpu_capability().lower()
    if want is not None and have != want:
        warnings.warn(
            f"torch runs its {have} CPU kernels, not the pinned {want}: import losslab before torch "
            "runs anything for results identical across machines",
            stacklevel=2,
        )


def prepare_process(accelerator: str) -> None:
    """Everything a training process sets once, before its first fit: one intra-op thread
    on the CPU (a sum split over threads adds in another order; the ensembles here are
    small, and one thread was also faster, see bench/README.md)."""
    steady_malloc()
    quiet_lightning()
    check_cpu_kernels()
    if accelerator == "cpu":
        # Deferred like check_cpu_kernels: torch is loaded by the time a process trains.
        import torch

        torch.set_num_threads(int(os.environ.get("LOSSLAB_CPU_THREADS", "1")))
    if accelerator != "cpu":  # cuBLAS needs this for deterministic matmuls
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
