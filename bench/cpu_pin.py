"""What the pinned CPU numerics cost: ATen's AVX2 kernels and one intra-op thread
(core/numerics.py, engine/runtime.py) against the machine's own choice.

Each setting trains the same variants (in-process `fit`, every seed) in a fresh process,
settings interleaved over --repeat rounds; prints median seconds and the ratio to the
pinned setting, measured in one run.

    .venv/bin/python bench/cpu_pin.py [--repeat 3] [--variants xor/adam,relu_head/scaled]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "pinned (avx2, 1 thread)": {},
    "threads: the machine's": {"LOSSLAB_CPU_THREADS": str(os.cpu_count() or 1)},
    "kernels: native": {"LOSSLAB_CPU_CAPABILITY": "native"},
    "kernels: none (default)": {"LOSSLAB_CPU_CAPABILITY": "default"},
}
CHILD = """
import sys, time
from losslab.core.config import compose
from losslab.engine.runtime import prepare_process
from losslab.fit import fit
prepare_process("cpu")
start = time.perf_counter()
for sv in sys.argv[1].split(","):
    s, v = sv.split("/")
    fit(compose([f"scenario={s}", f"variant={s}/{v}"]))
print(time.perf_counter() - start)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--variants", default="linear/adam,xor/adam,relu_head/scaled")
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in SETTINGS}
    for _ in range(args.repeat):
        for name, env in SETTINGS.items():
            out = subprocess.run(
                [sys.executable, "-c", CHILD, args.variants],
                cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, check=True,
            )  # fmt: skip
            times[name].append(float(out.stdout.strip().splitlines()[-1]))
    base = statistics.median(times["pinned (avx2, 1 thread)"])
    print(f"{'setting':<26} {'median s':>9} {'/ pinned':>9}   ({args.variants}, {args.repeat} rounds)")
    for name, ts in times.items():
        print(f"{name:<26} {statistics.median(ts):9.2f} {statistics.median(ts) / base:9.2f}")


if __name__ == "__main__":
    main()
