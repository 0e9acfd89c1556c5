"""GPU check: every scenario's variants trained on the GPU, verdicts against the committed CPU ones.

Trains each variant over its seeds through the in-process `fit` and `judge` (no MLflow,
DVC or matplotlib), on `trainer=gpu`, and prints its outcomes, success rate and verdict
(its expectation met or not) next to the committed CPU results (results/<scenario>.json),
with the GPU time and, with --cpu-time, the same fit on the CPU and the ratio GPU/CPU.
Exits 1 when a variant's verdict differs from the CPU one (outcome counts may move by a
seed in a borderline variant: marked `~`, reported, not fatal).

Runs where only PyTorch and Lightning are installed, plus hydra-core and omegaconf
(antlr4-python3-runtime) carried as wheels; losslab itself from the source tree:

    PYTHONPATH=src python bench/gpu_check.py [--cpu-time] [--scenarios linear,xor]
    PYTHONPATH=src python bench/gpu_check.py --accelerator cpu   # the same check on the CPU

A scenario's data is generated (seeded, `losslab prepare`) where data/<scenario>/ is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # losslab from the source tree, installed or not

from losslab.core.config import compose, variants_of  # noqa: E402
from losslab.core.criteria import Expectations, check  # noqa: E402
from losslab.core.data import prepare  # noqa: E402
from losslab.core.files import results_path  # noqa: E402
from losslab.core.knobs import scenarios  # noqa: E402

ROW = "{:<42} {:<32} {:<32} {:>8} {:>5} {:>12} {:>7} {:>5}"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _outcomes(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))


def _timed_verdict(overrides: list[str]):  # -> (seconds, Verdict)
    # Deferred: torch and Lightning load after the arguments were read (and --help is instant).
    from losslab.engine.runtime import prepare_process
    from losslab.fit import fit
    from losslab.judge import judge

    cfg = compose(overrides, ROOT)
    prepare_process(cfg.trainer.accelerator)
    start = time.perf_counter()
    verdict = judge(fit(cfg), Expectations.of(cfg))
    return time.perf_counter() - start, verdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default="", help="comma list (default: params.yaml's)")
    ap.add_argument("--accelerator", default="gpu", help="gpu (default) or cpu")
    ap.add_argument("--cpu-time", action="store_true", help="also fit on the CPU: the ratio GPU/CPU")
    args = ap.parse_args()
    names = [s for s in args.scenarios.split(",") if s] or scenarios(ROOT, [], None)
    import torch  # deferred like the training imports above

    if args.accelerator == "gpu" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0) if args.accelerator == "gpu" else "cpu"
    print(f"torch {torch.__version__} on {device}")
    head = ["scenario/variant", "CPU outcomes", "here outcomes", "rate cpu", "here", "verdict", "s", "/cpu"]
    print(ROW.format(*head))
    differ = 0
    for scenario in names:
        base = compose([f"scenario={scenario}"], ROOT)
        if not (ROOT / "data" / scenario).is_dir():
            prepare(base)
        committed = json.loads(results_path(ROOT, scenario).read_text())["variants"]
        for variant in variants_of(ROOT, scenario):
            overrides = [f"scenario={scenario}", f"variant={scenario}/{variant}"]
            secs, v = _timed_verdict([*overrides, f"trainer={args.accelerator}"])
            ratio = ""
            if args.cpu_time:
                cpu_secs, _ = _timed_verdict([*overrides, "trainer=cpu"])
                ratio = f"{secs / cpu_secs:.2f}"
            cpu = committed[variant]
            cpu_ok = check(v.expectations, cpu["outcomes"], cpu.get("numbers") or {}).ok
            differ += v.check.ok != cpu_ok
            mark = _verdict(v.check.ok) + ("" if v.check.ok == cpu_ok else f" (cpu {_verdict(cpu_ok)})")
            moved = v.summary["outcomes"] != cpu["outcomes"]
            here = _outcomes(v.summary["outcomes"]) + (" ~" if moved else "")
            rates = f"{cpu['success_rate']:.2f}", f"{v.success_rate:.2f}"
            name, was = f"{scenario}/{variant}", _outcomes(cpu["outcomes"])
            row = (name, was, here, *rates, mark, f"{secs:.1f}", ratio)
            print(ROW.format(*row), flush=True)
    print(f"\n{differ} verdict(s) differ from the CPU's")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
