"""The same float32 numbers on any x86-64 machine: pin the CPU kernels before torch runs.

PyTorch picks its vectorised CPU kernels by the instruction set it finds (AVX2, AVX-512):
a sum over 8 lanes and one over 16 add in a different order, so the last bits of a loss
differ between machines, and over hundreds of epochs of a run at the edge of stability
those bits grow into different digits in metrics/*.json (xor's broken original changes
with ATen's capability alone; tests/test_determinism.py). losslab pins ATen to its AVX2
kernels (`ATEN_CPU_CAPABILITY`), which nearly every x86-64 machine of the last decade
has, and MKL to its AVX2 code path in strict reproducibility mode (`MKL_CBWR`: the same
result whatever the thread count). It must happen before torch's first operation, so it
is done when `losslab` is imported.

`LOSSLAB_CPU_CAPABILITY=native` leaves both alone (the machine's fastest kernels);
another value (`default`, `avx512`) pins ATen to that. A CPU without AVX2 (or not x86)
keeps its own kernels: its numbers may differ in the last digits.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

ENV = "LOSSLAB_CPU_CAPABILITY"


def has_avx2() -> bool:
    """Whether this CPU runs AVX2 (read from /proc/cpuinfo; False where that is missing)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return "avx2" in flags.split()


def pinned_capability() -> str | None:
    """The ATen capability losslab runs with, or None (the machine's own)."""
    want = os.environ.get(ENV, "avx2").strip().lower()
    if want == "native" or (want == "avx2" and not has_avx2()):
        return None
    return want


def pin_cpu_numerics() -> str | None:
    """Set the environment that selects torch's and MKL's CPU kernels (before torch's first
    operation); returns the pinned ATen capability, or None."""
    want = pinned_capability()
    if want is None:
        return None
    os.environ["ATEN_CPU_CAPABILITY"] = want
    if want == "avx2":
        os.environ.setdefault("MKL_CBWR", "AVX2,STRICT")
    return want
